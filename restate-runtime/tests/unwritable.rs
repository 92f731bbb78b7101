//! An attempt stopped by a write it could not make (a state value that does not encode) does
//! not end as if the write had been made, even when the handler returns in the same poll: it
//! is retried, then paused, and nothing of it is stored.

use std::collections::HashMap;
use std::time::Duration;

use restate_runtime::prelude::*;
use restate_runtime::testing::TestRuntime;

#[derive(Default)]
pub struct Ledger;

#[object]
impl Ledger {
    /// Sets a map with tuple keys (JSON object keys are strings: it does not encode), then
    /// answers at once.
    #[handler(retry(max_attempts = 2, initial_interval = "1s"))]
    async fn record(&self, ctx: ObjectContext<'_>) -> HandlerResult<String> {
        let mut pairs = HashMap::new();
        pairs.insert((1u32, 2u32), "x");
        ctx.set("pairs", pairs);
        Ok("recorded".into())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_that_cannot_be_made_stops_the_attempt_even_when_the_handler_returns_at_once() {
    let t = TestRuntime::builder().bind(Ledger).build().await;
    let id = t
        .handle()
        .object::<Ledger>("k")
        .record()
        .send()
        .await
        .unwrap()
        .invocation_id();
    t.advance(Duration::from_secs(10)).await;
    let view = t.invocation(id).unwrap();
    assert_eq!(view.status(), "paused", "{view:?}");
    assert_eq!(view.record.attempts, 2);
    let error = view.record.last_error.clone().unwrap_or_default();
    assert!(error.contains("pairs"), "{error}");
    assert_eq!(t.state::<serde_json::Value>("Ledger", "k", "pairs"), None);
}
