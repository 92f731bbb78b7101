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

/// Runs of `Slow::nap`'s step, and naps past that step.
static NAP_STEPS: AtomicU32 = AtomicU32::new(0);
static NAPPING: AtomicU32 = AtomicU32::new(0);
/// Calls of `Slow::stall` begun.
static STALLING: AtomicU32 = AtomicU32::new(0);

#[derive(Default)]
pub struct Slow;

#[service]
impl Slow {
    /// A step, then a nap long enough for the test to stop the server during it.
    #[handler]
    async fn nap(&self, ctx: Context<'_>, v: Value) -> HandlerResult<Value> {
        ctx.run(|| async {
            NAP_STEPS.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .await?;
        NAPPING.fetch_add(1, Ordering::SeqCst);
        ctx.sleep(Duration::from_secs(3)).await?;
        Ok(v)
    }

    /// Waits outside its context: nothing of it is stored while it does.
    #[handler]
    async fn stall(&self, _ctx: Context<'_>, v: Value) -> HandlerResult<Value> {
        STALLING.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(3)).await;
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

/// A call whose process shuts down while the invocation runs was accepted: its client hears
/// 503 with the invocation's id and "attach", not "lost" with a retry, and the invocation
/// goes on after the restart, once.
#[tokio::test]
async fn a_call_cut_short_by_a_shutdown_names_its_invocation_to_attach_to() {
    let s = TestServer::start().await;
    let call = tokio::spawn(client().post(s.url("/Slow/nap")).json(&"woke").send());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while NAPPING.load(Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "the nap never began");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dir = s.stop().await;
    let r = call.await.unwrap().unwrap();
    assert_eq!(r.status(), 503);
    assert!(
        r.headers().get("retry-after").is_none(),
        "{:?}",
        r.headers()
    );
    let id = r.headers()["x-restate-id"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains(&id) && message.contains("attach"),
        "{message}"
    );

    let s = TestServer::start_with(dir, |b| b).await;
    assert_eq!(s.attach(&id).await, (200, Value::from("woke")));
    assert_eq!(NAP_STEPS.load(Ordering::SeqCst), 1, "the step ran once");
    s.stop().await;
}

/// A call cut short by a shutdown before anything of it was stored was not accepted: it is
/// never answered as one to attach to (no `x-restate-id`; a retry is safe).
#[tokio::test]
async fn a_call_cut_short_before_anything_was_stored_is_not_named_to_attach_to() {
    let s = TestServer::start().await;
    let call = tokio::spawn(client().post(s.url("/Slow/stall")).json(&"x").send());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while STALLING.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stall never began"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dir = s.stop().await;
    // Answered "lost", to be retried: 503 with Retry-After, and no id to attach to.
    let r = call.await.unwrap().unwrap();
    assert_eq!(r.status(), 503);
    assert!(
        r.headers().get("x-restate-id").is_none(),
        "{:?}",
        r.headers()
    );
    assert!(
        r.headers().get("retry-after").is_some(),
        "{:?}",
        r.headers()
    );
    let s = TestServer::start_with(dir, |b| b).await;
    let listed: Value = reqwest::get(format!("{}/invocations", s.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["invocations"], serde_json::json!([]), "{listed}");
    s.stop().await;
}
