//! Durable execution in-process: journal replay, retries, panics, pauses, non-determinism,
//! run steps with their own retry policy, calls and sends between services, in-process clients.

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use common::TestServer;
use restate_runtime::prelude::*;
use serde_json::{Value, json};

static FLAKY: AtomicU32 = AtomicU32::new(0);
static PANICS: AtomicU32 = AtomicU32::new(0);
static RUN_BODIES: AtomicU32 = AtomicU32::new(0);
static RUN_ATTEMPTS: AtomicU32 = AtomicU32::new(0);
static ALWAYS: AtomicU32 = AtomicU32::new(0);
static DRIFT: AtomicU32 = AtomicU32::new(0);
static DOOMED: AtomicU32 = AtomicU32::new(0);
static COMPENSATIONS: AtomicU32 = AtomicU32::new(0);
static CALLEE_RUNS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static CALLER_ATTEMPTS: AtomicU32 = AtomicU32::new(0);

#[derive(Default)]
pub struct Exec;

#[service(retry(initial_interval = "10ms", max_interval = "50ms"))]
impl Exec {
    /// Fails twice, then succeeds.
    #[handler]
    async fn flaky(&self, _ctx: Context<'_>) -> HandlerResult<u32> {
        let n = FLAKY.fetch_add(1, Ordering::SeqCst) + 1;
        if n < 3 {
            return Err(format!("attempt {n} failed").into());
        }
        Ok(n)
    }

    #[handler]
    async fn panicky(&self, _ctx: Context<'_>) -> HandlerResult<String> {
        if PANICS.fetch_add(1, Ordering::SeqCst) == 0 {
            panic!("first attempt panics");
        }
        Ok("recovered".into())
    }

    /// A journaled step, then a retryable failure on the first attempt: the step is not re-run.
    #[handler]
    async fn replay(&self, ctx: Context<'_>) -> HandlerResult<u32> {
        let v: u32 = ctx
            .run(|| async { Ok(RUN_BODIES.fetch_add(1, Ordering::SeqCst) + 100) })
            .name("step")
            .await?;
        if RUN_ATTEMPTS.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err("fail after the step".into());
        }
        Ok(v)
    }

    /// Fails each attempt with its number.
    #[handler(retry(max_attempts = 2, on_max_attempts = "kill"))]
    async fn doomed(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        let attempt = DOOMED.fetch_add(1, Ordering::SeqCst) + 1;
        Err(format!("never works either ({attempt})").into())
    }

    #[handler(retry(max_attempts = 2))]
    async fn always(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        ALWAYS.fetch_add(1, Ordering::SeqCst);
        Err("never works".into())
    }

    #[handler]
    async fn noop(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }

    /// Fails, then waits an hour before its next attempt (an operator's view of the wait).
    #[handler(retry(initial_interval = "1h", max_interval = "1h"))]
    async fn patient(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Err("the bank is closed".into())
    }

    /// Pauses after its one attempt.
    #[handler(retry(max_attempts = 1))]
    async fn stuck(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Err("stuck for good".into())
    }

    /// The code "changes" between attempts: the step's name differs on replay.
    #[handler]
    async fn drift(&self, ctx: Context<'_>) -> HandlerResult<()> {
        let n = DRIFT.fetch_add(1, Ordering::SeqCst);
        let name = if n == 0 { "first" } else { "second" };
        ctx.run(|| async { Ok(()) }).name(name).await?;
        Err("retry me".into())
    }

    /// A step whose own policy gives up: the handler compensates.
    #[handler]
    async fn saga(&self, ctx: Context<'_>) -> HandlerResult<String> {
        let charged: Result<(), TerminalError> = ctx
            .run(|| async { Err::<(), _>("card service down".into()) })
            .name("charge")
            .retry_policy(RetryPolicy {
                initial_interval: std::time::Duration::from_millis(5),
                max_attempts: Some(3),
                ..RetryPolicy::default()
            })
            .await;
        match charged {
            Ok(()) => Ok("charged".into()),
            Err(e) => {
                ctx.run(|| async {
                    COMPENSATIONS.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .name("refund")
                .await?;
                Ok(format!("compensated: {}", e.message()))
            }
        }
    }

    #[handler]
    async fn callee(&self, _ctx: Context<'_>, tag: String) -> HandlerResult<String> {
        CALLEE_RUNS.lock().unwrap().push(tag.clone());
        Ok(format!("done {tag}"))
    }

    /// Calls and sends, then fails once: on retry the call and the send are not repeated.
    #[handler]
    async fn caller(&self, ctx: Context<'_>, tag: String) -> HandlerResult<String> {
        let client = ctx.client::<Exec>();
        let answer = client.callee(format!("{tag}-call")).call().await?;
        let handle = client.callee(format!("{tag}-send")).send();
        if CALLER_ATTEMPTS.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err("caller fails once".into());
        }
        Ok(format!("{answer} / sent {}", handle.invocation_id()))
    }

    #[handler]
    async fn rng(&self, ctx: Context<'_>) -> HandlerResult<(u64, String)> {
        Ok((ctx.rand().next_u64(), ctx.rand_uuid()))
    }
}

async fn send(s: &TestServer, handler: &str) -> String {
    let r = reqwest::Client::new()
        .post(s.url(&format!("/Exec/{handler}/send")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    body["invocationId"].as_str().unwrap().to_owned()
}

async fn call(s: &TestServer, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(s.url(path));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn retryable_errors_and_panics_are_retried() {
    let s = TestServer::start().await;
    assert_eq!(call(&s, "/Exec/flaky", None).await, (200, json!(3)));
    assert_eq!(FLAKY.load(Ordering::SeqCst), 3);
    assert_eq!(
        call(&s, "/Exec/panicky", None).await,
        (200, json!("recovered"))
    );
    assert_eq!(PANICS.load(Ordering::SeqCst), 2);
    s.stop().await;
}

#[tokio::test]
async fn journaled_steps_are_not_rerun_on_retry() {
    let s = TestServer::start().await;
    assert_eq!(call(&s, "/Exec/replay", None).await, (200, json!(100)));
    assert_eq!(RUN_BODIES.load(Ordering::SeqCst), 1, "the step ran once");
    assert_eq!(
        RUN_ATTEMPTS.load(Ordering::SeqCst),
        2,
        "the handler ran twice"
    );
    s.stop().await;
}

#[tokio::test]
async fn exhausted_retries_pause_the_invocation() {
    let s = TestServer::start().await;
    let id = send(&s, "always").await;
    let view = s.wait_status(&id, "paused").await;
    assert_eq!(view["attempts"], 2);
    assert!(
        view["last_error"].as_str().unwrap().contains("never works"),
        "{view}"
    );
    assert_eq!(ALWAYS.load(Ordering::SeqCst), 2);
    let r = reqwest::get(s.url(&format!("/restate/invocation/{id}/output")))
        .await
        .unwrap();
    assert_eq!(r.status(), 470);
    s.stop().await;
}

/// Between attempts an invocation is `backing-off`, as Restate shows it, with the time of its
/// next attempt; the filter finds it, and a kill ends it at once.
#[tokio::test]
async fn an_invocation_between_attempts_is_shown_backing_off_with_its_next_attempt() {
    let s = TestServer::start().await;
    let id = send(&s, "patient").await;
    let view = s.wait_status(&id, "backing-off").await;
    assert_eq!(view["attempts"], 1, "{view}");
    assert!(
        view["last_error"]
            .as_str()
            .unwrap()
            .contains("bank is closed"),
        "{view}"
    );
    let next: jiff::Timestamp = view["next_retry_at"].as_str().unwrap().parse().unwrap();
    let until = next.as_millisecond() - jiff::Timestamp::now().as_millisecond();
    assert!(
        (55 * 60_000..=60 * 60_000).contains(&until),
        "next attempt in {until} ms: {view}"
    );
    let listed = |status: &'static str| {
        let url = format!("{}/invocations?status={status}", s.admin);
        async move {
            let page: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
            page["invocations"].as_array().unwrap().clone()
        }
    };
    let rows = listed("backing-off").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["id"], id.as_str());
    assert_eq!(rows[0]["next_retry_at"], view["next_retry_at"]);
    let running = listed("running").await;
    assert!(
        !running.iter().any(|r| r["id"] == id.as_str()),
        "{running:?}"
    );
    // A resume starts the next attempt now, as in Restate (it fails, and backs off again).
    assert_eq!(s.act(&id, "resume").await, 200);
    common::wait_until(std::time::Duration::from_secs(30), || async {
        let view = s.inspect(&id).await;
        view["attempts"] == 2 && view["status"] == "backing-off"
    })
    .await;
    let view = s.inspect(&id).await;
    assert_ne!(view["next_retry_at"], rows[0]["next_retry_at"], "{view}");
    assert_eq!(s.act(&id, "kill").await, 200);
    let view = s.wait_status(&id, "completed").await;
    assert!(view["next_retry_at"].is_null(), "{view}");
    s.stop().await;
}

/// A call to an invocation that pauses waits for an operator without its slot under the
/// in-flight cap: with a cap of one, other calls still get in; the call then hears the
/// operator's kill.
#[tokio::test]
async fn a_call_to_a_paused_invocation_does_not_hold_the_in_flight_cap() {
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), |b| b.max_in_flight(1)).await;
    let waiting = {
        let url = s.url("/Exec/stuck");
        tokio::spawn(async move { reqwest::Client::new().post(url).send().await.unwrap() })
    };
    let listed = format!("{}/invocations?handler=stuck&status=paused", s.admin);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let id = loop {
        let page: Value = reqwest::get(&listed).await.unwrap().json().await.unwrap();
        if let Some(first) = page["invocations"].as_array().unwrap().first() {
            break first["id"].as_str().unwrap().to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "never paused");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    // One slot, and the paused call does not hold it: these get in at once, one at a time.
    for _ in 0..3 {
        let (status, body) = call(&s, "/Exec/noop", None).await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(!waiting.is_finished());
    let killed = reqwest::Client::new()
        .patch(format!("{}/invocations/{id}/kill", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(killed.status(), 200);
    assert_eq!(waiting.await.unwrap().status(), 409);
    s.stop().await;
}

/// Killed after its last attempt, with that attempt's error as its last error (it was the
/// one before).
#[tokio::test]
async fn exhausted_retries_kill_when_the_policy_says_so() {
    let s = TestServer::start().await;
    let id = send(&s, "doomed").await;
    let view = s.wait_status(&id, "completed").await;
    assert_eq!(view["result"]["failure"]["code"], 409, "{view}");
    let message = view["result"]["failure"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("killed after 2 attempts") && message.contains("never works either"),
        "{view}"
    );
    assert_eq!(view["last_error"], "never works either (2)", "{view}");
    s.stop().await;
}

#[tokio::test]
async fn non_determinism_is_detected_and_pauses() {
    let s = TestServer::start().await;
    let id = send(&s, "drift").await;
    let view = s.wait_status(&id, "paused").await;
    let error = view["last_error"].as_str().unwrap();
    assert!(error.contains("non-determinism"), "{error}");
    assert!(
        error.contains("entry 0") && error.contains("first") && error.contains("second"),
        "{error}"
    );
    assert_eq!(view["journal"][0]["name"], "first");
    s.stop().await;
}

#[tokio::test]
async fn run_with_policy_resolves_to_terminal_error_for_compensation() {
    let s = TestServer::start().await;
    let (status, body) = call(&s, "/Exec/saga", None).await;
    assert_eq!(status, 200);
    assert!(
        body.as_str()
            .unwrap()
            .starts_with("compensated: run `charge` failed after 3 attempts"),
        "{body}"
    );
    assert_eq!(COMPENSATIONS.load(Ordering::SeqCst), 1);
    s.stop().await;
}

#[tokio::test]
async fn calls_and_sends_from_a_retried_handler_happen_once() {
    let s = TestServer::start().await;
    let (status, body) = call(&s, "/Exec/caller", Some(json!("t1"))).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.as_str()
            .unwrap()
            .starts_with("done t1-call / sent inv_1"),
        "{body}"
    );
    common::wait_until(std::time::Duration::from_secs(20), || async {
        CALLEE_RUNS.lock().unwrap().contains(&"t1-send".to_owned())
    })
    .await;
    let runs = CALLEE_RUNS.lock().unwrap().clone();
    assert_eq!(
        runs.iter().filter(|t| *t == "t1-call").count(),
        1,
        "{runs:?}"
    );
    assert_eq!(
        runs.iter().filter(|t| *t == "t1-send").count(),
        1,
        "{runs:?}"
    );
    assert_eq!(CALLER_ATTEMPTS.load(Ordering::SeqCst), 2);
    s.stop().await;
}

#[tokio::test]
async fn in_process_clients_call_send_and_attach() {
    let s = TestServer::start().await;
    let client = s.handle.client::<Exec>();
    assert_eq!(
        client.callee("direct".into()).call().await.unwrap(),
        "done direct"
    );
    let handle = client
        .callee("sent".into())
        .idempotency_key("k")
        .send()
        .await
        .unwrap();
    let out: String = s.handle.attach(handle).await.unwrap();
    assert_eq!(out, "done sent");
    // Same key: same invocation.
    let again = client
        .callee("ignored".into())
        .idempotency_key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(again.invocation_id(), handle.invocation_id());
    // Deterministic random values are the same when replayed from the stored result.
    let a = client.rng().idempotency_key("r").call().await.unwrap();
    let b = client.rng().idempotency_key("r").call().await.unwrap();
    assert_eq!(a, b);
    assert_eq!(a.1.len(), 36);
    s.stop().await;
}
