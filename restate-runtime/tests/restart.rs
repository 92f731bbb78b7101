//! What survives a graceful restart on the same data folder, delayed sends, and retention.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::TestServer;
use restate_runtime::prelude::*;
use serde_json::Value;

/// Runs of `echo` with the value the retention test sends (tests run concurrently).
static SHORT_RUNS: AtomicU32 = AtomicU32::new(0);

#[derive(Default)]
pub struct Echo;

#[service]
impl Echo {
    #[handler]
    async fn echo(&self, _ctx: Context<'_>, v: Value) -> HandlerResult<Value> {
        if v == "short" {
            SHORT_RUNS.fetch_add(1, Ordering::SeqCst);
        }
        Ok(v)
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test]
async fn results_and_delayed_sends_survive_restart() {
    let s = TestServer::start().await;
    let r = client()
        .post(s.url("/Echo/echo"))
        .header("idempotency-key", "keep")
        .json(&"kept")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-restate-id"].to_str().unwrap().to_owned();
    let r = client()
        .post(s.url("/Echo/echo/send?delay=5s"))
        .json(&"later")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["executionTime"].as_str().unwrap().ends_with('Z'),
        "{body}"
    );
    let delayed = body["invocationId"].as_str().unwrap().to_owned();
    let out = reqwest::get(s.url(&format!("/restate/invocation/{delayed}/output")))
        .await
        .unwrap();
    assert_eq!(out.status(), 470, "not run before its time");

    let dir = s.stop().await;
    let s = TestServer::start_with(dir, |b| b).await;
    for path in [
        format!("/restate/invocation/{id}/output"),
        format!("/restate/invocation/{id}/attach"),
        "/restate/invocation/Echo/echo/keep/output".to_owned(),
    ] {
        let r = reqwest::get(s.url(&path)).await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.json::<String>().await.unwrap(), "kept");
    }
    let r = reqwest::get(s.url(&format!("/restate/invocation/{delayed}/attach")))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<String>().await.unwrap(), "later");
    s.stop().await;
}

#[tokio::test]
async fn idempotency_keys_expire_after_retention() {
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), |b| {
        // Long enough for the second call to come within it however slow the machine.
        b.default_retention(Duration::from_secs(2))
            .purge_interval(Duration::from_millis(50))
    })
    .await;
    let call = || {
        client()
            .post(s.url("/Echo/echo"))
            .header("idempotency-key", "short")
            .json(&"short")
            .send()
    };
    let before = SHORT_RUNS.load(Ordering::SeqCst);
    assert_eq!(call().await.unwrap().status(), 200);
    assert_eq!(call().await.unwrap().status(), 200);
    assert_eq!(
        SHORT_RUNS.load(Ordering::SeqCst),
        before + 1,
        "deduplicated"
    );
    common::wait_until(Duration::from_secs(20), || async {
        reqwest::get(s.url("/restate/invocation/Echo/echo/short/output"))
            .await
            .unwrap()
            .status()
            == 404
    })
    .await;
    assert_eq!(call().await.unwrap().status(), 200);
    assert_eq!(
        SHORT_RUNS.load(Ordering::SeqCst),
        before + 2,
        "a new invocation after expiry"
    );
    s.stop().await;
}
