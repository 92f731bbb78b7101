//! Typed invocation handles and clients named by their service type, inside handlers
//! (journaled, so replays agree) and outside them (through a `RuntimeHandle`).

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{TestServer, wait_until};
use restate_runtime::prelude::*;
use restate_runtime::{ClientError, InvocationId};
use serde_json::{Value, json};

#[derive(Default)]
pub struct Jobs;

#[service]
impl Jobs {
    #[handler]
    async fn square(&self, _ctx: Context<'_>, n: u64) -> HandlerResult<u64> {
        Ok(n * n)
    }

    /// Sleeps `ms` (durably), then answers.
    #[handler]
    async fn nap(&self, ctx: Context<'_>, ms: u64) -> HandlerResult<String> {
        ctx.sleep(Duration::from_millis(ms)).await?;
        Ok(format!("slept {ms}"))
    }

    /// Sends jobs and uses their handles: attach, output before and after, cancel.
    #[handler]
    async fn manage(&self, ctx: Context<'_>) -> HandlerResult<Value> {
        let jobs = ctx.client::<Jobs>();
        let square = jobs.square(7).send();
        let long = jobs.nap(60_000).send();
        let squared: u64 = square.attach().await?;
        let seen_done = square.output().await?;
        let seen_running = long.output().await?;
        long.cancel();
        let cancelled = long.attach().await.unwrap_err();
        // Handles are `Copy`: the same one used again, and by id.
        let again: u64 = ctx.attach(square).await?;
        Ok(json!({
            "squared": squared,
            "seen_done": seen_done,
            "seen_running": seen_running,
            "cancelled": cancelled.code(),
            "again": again,
        }))
    }

    /// Counts its start, then sleeps (durably) for an hour.
    #[handler]
    async fn linger(&self, ctx: Context<'_>) -> HandlerResult<()> {
        LINGERING.fetch_add(1, Ordering::SeqCst);
        ctx.sleep(Duration::from_secs(3600)).await?;
        Ok(())
    }

    /// Calls a counter and a workflow through clients named by type.
    #[handler]
    async fn named(&self, ctx: Context<'_>, key: String) -> HandlerResult<(u64, String)> {
        let count = ctx.object::<Tally>(key.clone()).add(5).call().await?;
        let flow = ctx.workflow::<Flow>(key).run().call().await?;
        Ok((count, flow))
    }
}

/// Awakeables rejected with a code and metadata: the waiter sees both; handler failures
/// carry their metadata to callers, to the journal and to the ingress's error body.
#[derive(Default)]
pub struct Approvals;

#[service]
impl Approvals {
    #[handler]
    async fn ask(&self, ctx: Context<'_>) -> HandlerResult<(u16, String)> {
        let (id, answer) = ctx.awakeable::<bool>();
        ctx.client::<Approvals>().deny(id).send();
        let denied = answer.await.unwrap_err();
        let (by_message, plain) = ctx.awakeable::<bool>();
        ctx.awakeable_handle(by_message.clone())
            .reject("no reason")
            .await?;
        // The first completion wins; a later one changes nothing and is no error.
        ctx.awakeable_handle(by_message).resolve(true).await?;
        let plain = plain.await.unwrap_err();
        let bad = ctx
            .awakeable_handle("sign_nonsense")
            .resolve(true)
            .await
            .unwrap_err();
        Ok((
            denied.code(),
            format!(
                "{} {:?} / {} {} / {}",
                denied.message(),
                denied.metadata(),
                plain.code(),
                plain.message(),
                bad.code()
            ),
        ))
    }

    #[handler]
    async fn deny(&self, ctx: Context<'_>, id: String) -> HandlerResult<()> {
        let error = TerminalError::new_with_code(403, "not allowed").with_metadata("by", "deny");
        ctx.awakeable_handle(id).reject(error).await?;
        Ok(())
    }

    #[handler]
    async fn decline(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Err(TerminalError::new_with_code(402, "declined")
            .with_metadata("decline_code", "insufficient_funds")
            .into())
    }

    /// Waits on an awakeable whose id it hands out in its journal (read by the test).
    #[handler]
    async fn wait(&self, ctx: Context<'_>) -> HandlerResult<String> {
        let (id, answer) = ctx.awakeable::<String>();
        ctx.run(|| {
            let id = id.clone();
            async move { Ok(id) }
        })
        .name("id")
        .await?;
        Ok(answer.await?)
    }

    /// What a caller sees of `decline`'s error.
    #[handler]
    async fn relay(&self, ctx: Context<'_>) -> HandlerResult<String> {
        let e = ctx
            .client::<Approvals>()
            .decline()
            .call()
            .await
            .unwrap_err();
        Ok(format!("{} {:?}", e.code(), e.metadata()))
    }
}

#[derive(Default)]
pub struct Tally;

#[object]
impl Tally {
    #[handler]
    async fn add(&self, ctx: ObjectContext<'_>, n: u64) -> HandlerResult<u64> {
        let total = ctx.get::<u64>("total").await?.unwrap_or(0) + n;
        ctx.set("total", total);
        Ok(total)
    }
}

#[derive(Default)]
pub struct Flow;

#[workflow]
impl Flow {
    #[handler]
    async fn run(&self, ctx: WorkflowContext<'_>) -> HandlerResult<String> {
        Ok(format!("flow {}", ctx.key()))
    }
}

#[tokio::test]
async fn handles_inside_a_handler_attach_peek_and_cancel() {
    let s = TestServer::start().await;
    let out = s.handle.client::<Jobs>().manage().call().await.unwrap();
    assert_eq!(
        out,
        json!({
            "squared": 49,
            "seen_done": 49,
            "seen_running": null,
            "cancelled": 409,
            "again": 49,
        })
    );
    s.stop().await;
}

#[tokio::test]
async fn clients_named_by_type_inside_and_outside_handlers() {
    let s = TestServer::start().await;
    let (count, flow) = s
        .handle
        .client::<Jobs>()
        .named("k1".into())
        .call()
        .await
        .unwrap();
    assert_eq!((count, flow.as_str()), (5, "flow k1"));
    // A client clones, also into a spawned task.
    let tally = s.handle.object::<Tally>("k-clone");
    let moved = tally.clone();
    let added = tokio::spawn(async move { moved.add(2).call().await.unwrap() });
    assert_eq!(added.await.unwrap(), 2);
    assert_eq!(tally.add(3).call().await.unwrap(), 5);
    assert_eq!(
        s.handle.object::<Tally>("k1").add(1).call().await.unwrap(),
        6
    );
    let run = s.handle.workflow::<Flow>("k2").run().send().await.unwrap();
    assert_eq!(run.attach().await.unwrap(), "flow k2");
    s.stop().await;
}

#[tokio::test]
async fn handles_outside_handlers_attach_peek_cancel_and_rebuild() {
    let s = TestServer::start().await;
    let jobs = s.handle.client::<Jobs>();

    let square = jobs.square(9).send().await.unwrap();
    let typed: u64 = square.attach().await.unwrap();
    assert_eq!(typed, 81);
    assert_eq!(square.output().await.unwrap(), Some(81));
    // Still `Copy`, and today's `RuntimeHandle::attach` takes it as before.
    let old_style: u64 = s.handle.attach(square).await.unwrap();
    assert_eq!(
        (old_style, square.invocation_id()),
        (81, square.invocation_id())
    );

    let long = jobs.nap(60_000).send().await.unwrap();
    assert_eq!(long.output().await.unwrap(), None, "still running");
    long.cancel().await.unwrap();
    match long.attach().await {
        Err(ClientError::Terminal(e)) => assert_eq!(e.code(), 409),
        other => panic!("expected a cancellation, got {other:?}"),
    }

    // Rebuilt from a bare id (kept in a database, say), with the output type set again.
    let id: InvocationId = square.invocation_id().to_string().parse().unwrap();
    let rebuilt = s.handle.invocation(id).typed::<u64>();
    assert_eq!(rebuilt, square);
    assert_eq!(rebuilt.attach().await.unwrap(), 81);
    let unknown: InvocationId = format!("inv_1{}1", "0".repeat(32)).parse().unwrap();
    match s.handle.invocation(unknown).output().await {
        Err(ClientError::Terminal(e)) => assert_eq!(e.code(), 404),
        other => panic!("expected 404, got {other:?}"),
    }
    s.stop().await;
}

#[tokio::test]
async fn a_handle_outlives_its_runtime_without_keeping_it() {
    let s = TestServer::start().await;
    let sent = s.handle.client::<Jobs>().square(3).send().await.unwrap();
    assert_eq!(sent.attach().await.unwrap(), 9);
    s.stop().await;
    // Once the runtime's tasks have ended, the handle reports it instead of hanging.
    wait_until(Duration::from_secs(30), || async {
        matches!(sent.attach().await, Err(ClientError::Engine(e)) if e.to_string().contains("shut down"))
    })
    .await;
}

/// Starts of `Jobs::linger`.
static LINGERING: AtomicU32 = AtomicU32::new(0);

/// A runtime shut down under a call through its handle, and a call made through the handle
/// afterwards: both fail at once, as over a dropped connection, instead of waiting for a
/// handler that will never run in this runtime; the invocation stays for the next start.
#[tokio::test]
async fn calls_through_a_handle_kept_past_the_shutdown_fail() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::builder()
        .without_env()
        .data_dir(dir.path())
        .build()
        .unwrap();
    let handle = runtime.handle();
    let caller = handle.clone();
    let waiting = tokio::spawn(async move { caller.client::<Jobs>().linger().call().await });
    wait_until(Duration::from_secs(30), || async {
        LINGERING.load(Ordering::SeqCst) == 1
    })
    .await;
    runtime.shutdown();
    let lost = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the waiting call ends")
        .unwrap();
    match lost {
        Err(ClientError::Engine(e)) => assert!(e.to_string().contains("shut down"), "{e}"),
        other => panic!("expected the call lost, got {other:?}"),
    }
    for (what, late) in [
        (
            "call",
            handle.client::<Jobs>().square(2).call().await.map(drop),
        ),
        (
            "send",
            handle.client::<Jobs>().square(2).send().await.map(drop),
        ),
    ] {
        assert!(
            matches!(late, Err(ClientError::Engine(_))),
            "{what}: {late:?}"
        );
    }
}

/// A test runtime dropped under a call through its handle, and a call made afterwards: both
/// fail instead of waiting.
#[tokio::test]
async fn calls_through_a_handle_kept_past_a_dropped_test_runtime_fail() {
    let t = restate_runtime::testing::TestRuntime::builder()
        .build()
        .await;
    let handle = t.handle();
    let caller = handle.clone();
    let waiting = tokio::spawn(async move { caller.client::<Jobs>().nap(60_000).call().await });
    t.run_until_idle().await;
    drop(t);
    let lost = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the waiting call ends")
        .unwrap();
    assert!(matches!(lost, Err(ClientError::Engine(_))), "{lost:?}");
    let late = tokio::time::timeout(
        Duration::from_secs(30),
        handle.client::<Jobs>().square(2).call(),
    )
    .await
    .expect("a call after the drop ends");
    assert!(matches!(late, Err(ClientError::Engine(_))), "{late:?}");
}

#[tokio::test]
async fn rejections_carry_their_code_and_metadata() {
    let s = TestServer::start().await;
    let (code, text) = s.handle.client::<Approvals>().ask().call().await.unwrap();
    assert_eq!(
        (code, text.as_str()),
        (403, r#"not allowed {"by": "deny"} / 500 no reason / 400"#)
    );
    let seen = s.handle.client::<Approvals>().relay().call().await.unwrap();
    assert_eq!(seen, r#"402 {"decline_code": "insufficient_funds"}"#);
    match s.handle.client::<Approvals>().decline().call().await {
        Err(ClientError::Terminal(e)) => {
            assert_eq!(e.metadata()["decline_code"], "insufficient_funds")
        }
        other => panic!("expected the terminal error, got {other:?}"),
    }
    let r = reqwest::Client::new()
        .post(s.url("/Approvals/decline"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 402);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body["metadata"],
        serde_json::json!({"decline_code": "insufficient_funds"})
    );
    s.stop().await;
}

/// The awakeable id a `wait` invocation published, once it has.
async fn published_id(s: &TestServer, invocation: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let view = s.inspect(invocation).await;
        let published = view["journal"].as_array().and_then(|entries| {
            entries
                .iter()
                .find(|e| e["name"] == "id")
                .and_then(|e| e["result"]["success"].as_str().map(str::to_owned))
        });
        if let Some(id) = published {
            return id;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no id published: {view}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn awakeables_complete_from_outside_handlers() {
    let s = TestServer::start().await;
    let approvals = s.handle.client::<Approvals>();
    let first = approvals.wait().send().await.unwrap();
    let id = published_id(&s, &first.invocation_id().to_string()).await;
    s.handle.resolve_awakeable(&id, "yes").await.unwrap();
    // Accepted and ignored: the first completion won.
    s.handle.reject_awakeable(&id, "too late").await.unwrap();
    assert_eq!(first.attach().await.unwrap(), "yes");

    let second = approvals.wait().send().await.unwrap();
    let id = published_id(&s, &second.invocation_id().to_string()).await;
    let gone = TerminalError::new_with_code(410, "reviewer left").with_metadata("who", "ada");
    s.handle.reject_awakeable(&id, gone.clone()).await.unwrap();
    match second.attach().await {
        Err(ClientError::Terminal(e)) => assert_eq!(e, gone),
        other => panic!("expected the rejection, got {other:?}"),
    }

    match s.handle.resolve_awakeable("sign_nonsense", 1).await {
        Err(ClientError::Terminal(e)) => assert_eq!(e.code(), 400),
        other => panic!("expected 400, got {other:?}"),
    }
    // Well formed but not ours (its tag does not verify): unknown.
    let last = if id.ends_with('A') { "B" } else { "A" };
    let forged = format!("{}{last}", &id[..id.len() - 1]);
    match s.handle.resolve_awakeable(&forged, 1).await {
        Err(ClientError::Terminal(e)) => assert!(matches!(e.code(), 400 | 404), "{e}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    s.stop().await;
}
