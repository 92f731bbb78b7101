//! Drain before a deploy: under load, `PATCH /drain` refuses new invocations with 503 and
//! `Retry-After`, lets the running attempts finish, holds back every attempt that would start
//! (a handler's own sends included), and reports ready once no handler runs; `PATCH /undrain`
//! runs what was held back and serves again. A kill reaches an invocation held back.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use common::{TestServer, accepted_id, wait_until};
use restate_runtime::RuntimeBuilder;
use restate_runtime::prelude::*;
use serde_json::{Value, json};

/// Handler bodies executing now (a suspended or finished one is not).
static RUNNING: AtomicUsize = AtomicUsize::new(0);
/// Attempts of `work` started, and follow-ups run.
static STARTED: AtomicUsize = AtomicUsize::new(0);
static FOLLOW_UPS: AtomicUsize = AtomicUsize::new(0);

struct Live;

impl Live {
    fn enter() -> Self {
        RUNNING.fetch_add(1, SeqCst);
        Live
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, SeqCst);
    }
}

#[derive(Default)]
pub struct Jobs;

#[service]
impl Jobs {
    /// Works `ms` in a step, then sends a follow-up.
    #[handler]
    async fn work(&self, ctx: Context<'_>, ms: u64) -> HandlerResult<u64> {
        let _live = Live::enter();
        STARTED.fetch_add(1, SeqCst);
        ctx.run(|| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(ms)
        })
        .name("io")
        .await?;
        ctx.client::<Jobs>().follow_up().send();
        Ok(ms)
    }

    #[handler]
    async fn follow_up(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        let _live = Live::enter();
        FOLLOW_UPS.fetch_add(1, SeqCst);
        Ok(())
    }

    #[handler]
    async fn double(&self, _ctx: Context<'_>, n: u64) -> HandlerResult<u64> {
        Ok(2 * n)
    }

    #[handler]
    async fn idle(&self, ctx: Context<'_>) -> HandlerResult<()> {
        ctx.sleep(Duration::from_secs(3600)).await?;
        Ok(())
    }
}

async fn admin(server: &TestServer, method: reqwest::Method, path: &str) -> Value {
    let r = reqwest::Client::new()
        .request(method, format!("{}{path}", server.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_under_load_lets_running_attempts_finish_and_starts_none_until_undrained() {
    let server = TestServer::start().await;
    let calls: Vec<_> = (0..40)
        .map(|_| {
            let url = server.url("/Jobs/work");
            // A call that reaches the ingress only after the drain began is refused
            // with 503 and retried as `Retry-After` says, as a client would.
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                for _ in 0..120 {
                    let r = client.post(&url).json(&json!(400)).send().await.unwrap();
                    if r.status() != 503 {
                        return (r.status().as_u16(), r.text().await.unwrap());
                    }
                    assert_eq!(r.headers()["retry-after"], "1");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                panic!("still refused after two minutes of retries");
            })
        })
        .collect();
    wait_until(Duration::from_secs(30), || async {
        STARTED.load(SeqCst) >= 10
    })
    .await;
    let drain = admin(&server, reqwest::Method::PATCH, "/drain").await;
    assert_eq!(drain["draining"], true);

    // New work is refused with a retry hint; readiness fails.
    let refused = server.post("/Jobs/work", json!(1)).await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let refused_send = server.post("/Jobs/work/send", json!(1)).await;
    assert_eq!(refused_send.status(), 503);
    let health = reqwest::get(server.url("/restate/health")).await.unwrap();
    assert_eq!(health.status(), 503);

    // Ready once no handler runs: those running finished, nothing else started.
    wait_until(Duration::from_secs(30), || async {
        admin(&server, reqwest::Method::GET, "/drain").await["ready"] == true
    })
    .await;
    assert_eq!(RUNNING.load(SeqCst), 0);
    let started = STARTED.load(SeqCst);
    assert_eq!(
        FOLLOW_UPS.load(SeqCst),
        0,
        "a follow-up started while draining"
    );
    let metrics = reqwest::get(format!("{}/metrics", server.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("restate_draining 1"), "{metrics}");
    assert!(metrics.contains("restate_attempts_running 0"), "{metrics}");
    let status = admin(&server, reqwest::Method::GET, "/drain").await;
    assert_eq!(status["running_attempts"], 0);
    assert_eq!(STARTED.load(SeqCst), started);

    // Undrained: what was held back runs, every call is answered, new work is served.
    let undrain = admin(&server, reqwest::Method::PATCH, "/undrain").await;
    assert_eq!(undrain["draining"], false);
    for call in calls {
        let (status, body) = call.await.unwrap();
        assert_eq!((status, body.as_str()), (200, "400"));
    }
    assert_eq!(STARTED.load(SeqCst), 40);
    wait_until(Duration::from_secs(30), || async {
        FOLLOW_UPS.load(SeqCst) == 40
    })
    .await;
    let served = server.post("/Jobs/work", json!(1)).await;
    assert_eq!(served.status(), 200);
    let health = reqwest::get(server.url("/restate/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    drop(server.stop().await);
}

/// A drain refuses new invocations, not duplicates it can answer: a retried request whose
/// idempotency key finished before the drain gets its answer, as `GET .../output` does; a
/// send of an unfinished one gets its id; a call of one would wait, and is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_of_a_finished_request_is_answered_while_draining() {
    let configure = |b: RuntimeBuilder| b.suspend_after(Duration::from_millis(50));
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), configure).await;
    let request = |key: &str, n: u64| {
        reqwest::Client::new()
            .post(server.url("/Jobs/double"))
            .header("idempotency-key", key)
            .json(&n)
            .send()
    };
    let first = request("k1", 21).await.unwrap();
    assert_eq!(first.status(), 200);
    let id = first.headers()["x-restate-id"].clone();
    // One not finished: its next attempt is what the drain holds back.
    let idle = |path: &str| {
        reqwest::Client::new()
            .post(server.url(path))
            .header("idempotency-key", "waiting")
            .send()
    };
    let waiting = common::accepted_id(idle("/Jobs/idle/send").await.unwrap()).await;
    server.wait_status(&waiting, "suspended").await;
    admin(&server, reqwest::Method::PATCH, "/drain").await;
    // A call would wait for it: refused at once; a send gets its id.
    assert_eq!(idle("/Jobs/idle").await.unwrap().status(), 503);
    let again = idle("/Jobs/idle/send").await.unwrap();
    assert_eq!(again.status(), 202);
    assert_eq!(
        again.json::<Value>().await.unwrap()["invocationId"],
        waiting.as_str()
    );
    let again = request("k1", 21).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["x-restate-id"], id);
    assert_eq!(again.json::<u64>().await.unwrap(), 42);
    let send = reqwest::Client::new()
        .post(server.url("/Jobs/double/send"))
        .header("idempotency-key", "k1")
        .json(&21)
        .send()
        .await
        .unwrap();
    assert_eq!(send.status(), 202);
    let accepted: Value = send.json().await.unwrap();
    assert_eq!(accepted["status"], "PreviouslyAccepted");
    // A new key, or none, starts something: refused.
    for key in [Some("k2"), None] {
        let mut r = reqwest::Client::new()
            .post(server.url("/Jobs/double"))
            .json(&1);
        if let Some(key) = key {
            r = r.header("idempotency-key", key);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 503, "{key:?}");
        assert!(r.headers().contains_key("retry-after"));
    }
    drop(server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invocation_held_back_by_a_drain_can_be_killed_and_survives_a_restart() {
    let configure = |b: RuntimeBuilder| b.suspend_after(Duration::from_millis(50));
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), configure).await;
    let send = |path: &str| reqwest::Client::new().post(server.url(path)).send();
    let napping = accepted_id(send("/Jobs/idle/send").await.unwrap()).await;
    server.wait_status(&napping, "suspended").await;
    // Due only after the drain began, however slow the machine.
    let delayed = accepted_id(send("/Jobs/idle/send?delay=3s").await.unwrap()).await;
    let killed = accepted_id(send("/Jobs/idle/send?delay=3s").await.unwrap()).await;
    admin(&server, reqwest::Method::PATCH, "/drain").await;
    // Both come due while draining: held back, not started.
    wait_until(Duration::from_secs(30), || async {
        server.inspect(&delayed).await["status"] != "scheduled"
            && server.inspect(&killed).await["status"] != "scheduled"
    })
    .await;
    assert_eq!(server.inspect(&delayed).await["attempts"], 0);
    let r = reqwest::Client::new()
        .patch(format!("{}/invocations/{killed}/kill", server.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.wait_status(&killed, "completed").await;
    // Stopped while draining: the one held back starts in the next process.
    let dir = server.stop().await;
    let server = TestServer::start_with(dir, configure).await;
    server.wait_status(&delayed, "suspended").await;
    assert_eq!(server.inspect(&delayed).await["attempts"], 1);
    assert_eq!(server.inspect(&napping).await["status"], "suspended");
    drop(server.stop().await);
}
