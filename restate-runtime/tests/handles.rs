//! Typed invocation handles and clients named by their service type, inside handlers
//! (journaled, so replays agree) and outside them (through a `RuntimeHandle`).

mod common;

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

    /// Calls a counter and a workflow through clients named by type.
    #[handler]
    async fn named(&self, ctx: Context<'_>, key: String) -> HandlerResult<(u64, String)> {
        let count = ctx.object::<Tally>(key.clone()).add(5).call().await?;
        let flow = ctx.workflow::<Flow>(key).run().call().await?;
        Ok((count, flow))
    }
}

/// Awakeables and promises rejected with a code: the waiter sees that code.
#[derive(Default)]
pub struct Approvals;

#[service]
impl Approvals {
    #[handler]
    async fn ask(&self, ctx: Context<'_>) -> HandlerResult<(u16, String)> {
        let (id, answer) = ctx.awakeable::<bool>();
        ctx.client::<Approvals>().deny(id).send();
        let denied = answer.await.unwrap_err();
        let by_message = ctx.awakeable::<bool>();
        ctx.reject_awakeable(&by_message.0, "no reason")?;
        let plain = by_message.1.await.unwrap_err();
        Ok((
            denied.code(),
            format!(
                "{} / {} {}",
                denied.message(),
                plain.code(),
                plain.message()
            ),
        ))
    }

    #[handler]
    async fn deny(&self, ctx: Context<'_>, id: String) -> HandlerResult<()> {
        ctx.reject_awakeable(&id, TerminalError::new_with_code(403, "not allowed"))?;
        Ok(())
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

#[tokio::test]
async fn rejections_carry_their_code() {
    let s = TestServer::start().await;
    let (code, text) = s.handle.client::<Approvals>().ask().call().await.unwrap();
    assert_eq!((code, text.as_str()), (403, "not allowed / 500 no reason"));
    s.stop().await;
}
