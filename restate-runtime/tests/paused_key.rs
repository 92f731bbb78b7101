//! A paused invocation keeps its object key across a restart (law 5): those queued behind it on
//! the key wait until it is resumed and finished, as they did before the restart.

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use common::TestServer;
use restate_runtime::prelude::*;

static BROKEN: AtomicBool = AtomicBool::new(true);
/// Handlers in the order they finished.
static FINISHED: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());

#[derive(Default)]
pub struct Locker;

#[object]
impl Locker {
    #[handler(retry(initial_interval = "10ms", max_attempts = 2))]
    async fn fragile(&self, _ctx: ObjectContext<'_>) -> HandlerResult<()> {
        if BROKEN.load(Ordering::SeqCst) {
            return Err("still broken".into());
        }
        FINISHED.lock().unwrap().push("fragile");
        Ok(())
    }

    #[handler]
    async fn after(&self, _ctx: ObjectContext<'_>) -> HandlerResult<()> {
        FINISHED.lock().unwrap().push("after");
        Ok(())
    }
}

async fn send(s: &TestServer, handler: &str) -> String {
    let r = reqwest::Client::new()
        .post(s.url(&format!("/Locker/k/{handler}/send")))
        .send()
        .await
        .unwrap();
    common::accepted_id(r).await
}

#[tokio::test]
async fn a_paused_invocation_keeps_its_key_across_a_restart() {
    let s = TestServer::start().await;
    let fragile = send(&s, "fragile").await;
    s.wait_status(&fragile, "paused").await;
    let after = send(&s, "after").await;
    let dir = s.stop().await;
    BROKEN.store(false, Ordering::SeqCst);
    let s = TestServer::start_with(dir, |b| b).await;
    // `after` is queued behind the paused invocation, not started by the restart.
    assert_eq!(s.inspect(&after).await["attempts"], 0);
    let r = reqwest::Client::new()
        .patch(format!("{}/invocations/{fragile}/resume", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.attach(&after).await.0, 200);
    assert_eq!(s.attach(&fragile).await.0, 200);
    assert_eq!(*FINISHED.lock().unwrap(), ["fragile", "after"]);
    s.stop().await;
}
