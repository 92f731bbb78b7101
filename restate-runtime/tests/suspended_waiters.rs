//! Suspended invocations and what else points at them: a duplicate request for a suspended
//! invocation finds it (no second copy), and an attach from a suspended handler is completed
//! after a restart, when no in-memory task is left to forward the result.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::TestServer;
use restate_runtime::prelude::*;
use serde_json::{Value, json};

/// Awakeable ids, by the key of the `Gate` that made them.
static GATES: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
/// Runs of `Approval::run` started from the beginning (attempts after a suspension replay).
static RUN_STARTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[derive(Default)]
pub struct Approval;

#[workflow]
impl Approval {
    #[handler]
    async fn run(&self, ctx: WorkflowContext<'_>, note: String) -> HandlerResult<String> {
        RUN_STARTS.lock().unwrap().push(note.clone());
        let verdict: String = ctx.promise("verdict").await?;
        Ok(format!("{note}: {verdict}"))
    }

    #[handler]
    async fn decide(&self, ctx: SharedWorkflowContext<'_>, verdict: String) -> HandlerResult<()> {
        ctx.resolve_promise("verdict", verdict).await?;
        Ok(())
    }
}

#[derive(Default)]
pub struct Gate;

#[service]
impl Gate {
    /// Waits for an awakeable resolved over HTTP.
    #[handler]
    async fn wait(&self, ctx: Context<'_>, tag: String) -> HandlerResult<String> {
        let (id, opened) = ctx.awakeable::<String>();
        GATES.lock().unwrap().push((tag, id));
        Ok(opened.await?)
    }

    /// Attaches to the invocation `id` and returns its result.
    #[handler]
    async fn follow(&self, ctx: Context<'_>, id: String) -> HandlerResult<String> {
        let handle = InvocationHandle::from(id.parse::<restate_runtime::InvocationId>()?);
        Ok(ctx.attach::<String>(handle).await?)
    }
}

fn quick_suspend(b: restate_runtime::RuntimeBuilder) -> restate_runtime::RuntimeBuilder {
    b.suspend_after(Duration::from_millis(50))
}

#[tokio::test]
async fn a_duplicate_of_a_suspended_workflow_run_finds_it() {
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), quick_suspend).await;
    let first = s.post("/Approval/dup/run/send", json!("first")).await;
    let id = common::accepted_id(first).await;
    s.wait_status(&id, "suspended").await;
    // Sent again while suspended: the same invocation, not a second copy with new input.
    let again = s.post("/Approval/dup/run/send", json!("second")).await;
    assert_eq!(again.status(), 202);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["invocationId"], id.as_str());
    assert_eq!(body["status"], "PreviouslyAccepted");
    // Called while suspended: a conflict, as for a running `run`.
    let call = s.post("/Approval/dup/run", json!("third")).await;
    assert_eq!(call.status(), 409);
    assert_eq!(
        s.post("/Approval/dup/decide", json!("yes")).await.status(),
        200
    );
    assert_eq!(s.attach(&id).await, (200, json!("first: yes")));
    let starts = RUN_STARTS.lock().unwrap().clone();
    assert!(starts.iter().all(|n| n == "first"), "{starts:?}");
    s.stop().await;
}

#[tokio::test]
async fn an_attach_from_a_suspended_handler_completes_after_a_restart() {
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), quick_suspend).await;
    let gate = common::accepted_id(s.post("/Gate/wait/send", json!("g1")).await).await;
    let follower = common::accepted_id(s.post("/Gate/follow/send", json!(gate)).await).await;
    s.wait_status(&gate, "suspended").await;
    s.wait_status(&follower, "suspended").await;
    let dir = s.stop().await;
    let s = TestServer::start_with(dir, quick_suspend).await;
    let awakeable = GATES
        .lock()
        .unwrap()
        .iter()
        .find(|(t, _)| t == "g1")
        .unwrap()
        .1
        .clone();
    let resolved = s
        .post(&format!("/restate/a/{awakeable}/resolve"), json!("open"))
        .await;
    assert_eq!(resolved.status(), 202);
    assert_eq!(s.attach(&gate).await, (200, json!("open")));
    // Nothing in memory forwards the gate's result to the follower after the restart: the
    // durable result waiter does.
    let followed = tokio::time::timeout(Duration::from_secs(30), s.attach(&follower)).await;
    assert_eq!(
        followed.expect("the follower completes"),
        (200, json!("open"))
    );
    s.stop().await;
}
