//! Traces of invocations started in-process (a client of the runtime's handle), exported by
//! `init_tracing` over OTLP to a receiver in this test: the invocation gets an `invoke` span
//! under the application's current span, and every attempt, before and after a suspension,
//! is its child, in one trace.

mod support;

use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::Span;
use restate_runtime::prelude::*;
use restate_runtime::testing::TestRuntime;
use tracing::Instrument;

#[derive(Default)]
pub struct Naps;

#[service]
impl Naps {
    /// Sleeps a minute (it suspends meanwhile), then returns.
    #[handler]
    async fn nap(&self, ctx: Context<'_>) -> HandlerResult<String> {
        ctx.sleep(Duration::from_secs(60)).await?;
        Ok("rested".into())
    }
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invocation_from_the_handle_is_one_trace_under_the_callers_span() {
    let (endpoint, received) = support::otlp::receiver().await;
    // SAFETY: set before anything reads the environment, in this test binary's only test.
    unsafe {
        std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint);
        std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "20");
    }
    restate_runtime::init_tracing();
    let t = TestRuntime::builder()
        .bind(Naps)
        .suspend_after(Duration::from_secs(1))
        .build()
        .await;
    let checkout = tracing::info_span!("checkout");
    let id = async { t.handle().client::<Naps>().nap().send().await.unwrap() }
        .instrument(checkout)
        .await
        .invocation_id();
    t.advance(Duration::from_secs(120)).await;
    assert_eq!(t.invocation(id).unwrap().status(), "completed");

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans: Vec<Span> = received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s)| s.clone())
            .collect();
        let attempts = named(&spans, "Naps/nap");
        if attempts.len() >= 2 && !named(&spans, "checkout").is_empty() {
            break spans;
        }
        assert!(std::time::Instant::now() < deadline, "spans: {spans:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let checkout = named(&spans, "checkout")[0];
    let invoke = named(&spans, "invoke Naps/nap");
    assert_eq!(invoke.len(), 1);
    assert_eq!(
        invoke[0].parent_span_id, checkout.span_id,
        "under the caller's span"
    );
    let attempts = named(&spans, "Naps/nap");
    for attempt in &attempts {
        assert_eq!(attempt.trace_id, checkout.trace_id, "one trace");
        assert_eq!(attempt.parent_span_id, invoke[0].span_id);
    }
    // The sleep is the first attempt's step (it suspended there), not the second's.
    let sleeps = named(&spans, "sleep 60s");
    assert_eq!(sleeps.len(), 1, "{spans:?}");
    assert!(
        attempts
            .iter()
            .any(|a| a.span_id == sleeps[0].parent_span_id)
    );
}
