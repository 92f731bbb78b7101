//! Workflows: `run` once per key, durable promises (resolved before or after `run` waits,
//! first completion wins), workflow attach/output, all across a restart.

mod common;

use std::time::Duration;

use common::TestServer;
use restate_runtime::{ClientError, EngineError, prelude::*};
use serde_json::{Value, json};

#[derive(Default)]
pub struct Signup;

#[workflow]
impl Signup {
    #[handler]
    async fn run(&self, ctx: WorkflowContext<'_>, email: String) -> HandlerResult<String> {
        ctx.set("status", "waiting for click");
        let code = ctx.promise::<String>("email.clicked").await?;
        ctx.set("status", "verified");
        Ok(format!("{email} verified with {code}"))
    }

    #[handler]
    async fn click(&self, ctx: SharedWorkflowContext<'_>, code: String) -> HandlerResult<()> {
        ctx.resolve_promise("email.clicked", code).await?;
        Ok(())
    }

    /// A shared handler waiting on the same promise as `run`.
    #[handler]
    async fn watch(&self, ctx: SharedWorkflowContext<'_>) -> HandlerResult<String> {
        Ok(ctx.promise::<String>("email.clicked").await?)
    }

    #[handler]
    async fn status(
        &self,
        ctx: SharedWorkflowContext<'_>,
    ) -> HandlerResult<(Option<String>, Option<String>)> {
        Ok((
            ctx.get("status").await?,
            ctx.peek_promise("email.clicked").await?,
        ))
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post(s: &TestServer, path: &str, body: Value) -> (u16, Value) {
    let mut req = client().post(s.url(path));
    if !body.is_null() {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn run_once_per_key_with_promises_and_attach() {
    let s = TestServer::start().await;
    let (status, first) = post(&s, "/Signup/ada/run/send", json!("ada@example.com")).await;
    assert_eq!((status, first["status"].as_str()), (202, Some("Accepted")));
    let (_, again) = post(&s, "/Signup/ada/run/send", json!("other@example.com")).await;
    assert_eq!(again["status"], "PreviouslyAccepted");
    assert_eq!(again["invocationId"], first["invocationId"]);
    let (status, body) = post(&s, "/Signup/ada/run", json!("x")).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (409, Some("the workflow method was already invoked"))
    );
    let r = client()
        .post(s.url("/Signup/bob/run"))
        .header("idempotency-key", "k")
        .json(&"b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // The in-process client refuses it alike, instead of ignoring the key: nothing starts.
    let refused = s
        .handle
        .workflow::<Signup>("bob")
        .run("b".into())
        .idempotency_key("k")
        .send()
        .await;
    assert!(
        matches!(
            &refused,
            Err(ClientError::Engine(EngineError::BadTarget(m))) if m.contains("idempotency key")
        ),
        "{refused:?}"
    );
    let r = reqwest::get(s.url("/restate/workflow/Signup/bob/output"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the refused run created nothing");

    let r = reqwest::get(s.url("/restate/workflow/Signup/ada/output"))
        .await
        .unwrap();
    assert_eq!(r.status(), 470);
    let attachers: Vec<_> = (0..2)
        .map(|_| tokio::spawn(reqwest::get(s.url("/restate/workflow/Signup/ada/attach"))))
        .collect();
    common::wait_until(Duration::from_secs(20), || async {
        post(&s, "/Signup/ada/status", Value::Null).await.1[0] == "waiting for click"
    })
    .await;
    assert_eq!(post(&s, "/Signup/ada/click", json!("c0de")).await.0, 200);
    for a in attachers {
        let r = a.await.unwrap().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.json::<String>().await.unwrap(),
            "ada@example.com verified with c0de"
        );
    }
    // The first completion wins; a later one is refused clearly.
    let (status, body) = post(&s, "/Signup/ada/click", json!("late")).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("already completed")
    );
    assert_eq!(
        post(&s, "/Signup/ada/status", Value::Null).await.1,
        json!(["verified", "c0de"])
    );
    s.stop().await;
}

#[tokio::test]
async fn a_promise_resolved_before_run_waits_is_kept() {
    let s = TestServer::start().await;
    assert_eq!(post(&s, "/Signup/early/click", json!("first")).await.0, 200);
    let (status, body) = post(&s, "/Signup/early/run", json!("e@x")).await;
    assert_eq!((status, body), (200, json!("e@x verified with first")));
    s.stop().await;
}

#[tokio::test]
async fn a_suspended_run_is_woken_by_a_promise_after_restart() {
    let quick = |b: restate_runtime::RuntimeBuilder| b.suspend_after(Duration::from_millis(100));
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), quick).await;
    let (_, body) = post(&s, "/Signup/later/run/send", json!("l@x")).await;
    let id = body["invocationId"].as_str().unwrap().to_owned();
    s.wait_status(&id, "suspended").await;
    let dir = s.stop().await;
    let s = TestServer::start_with(dir, quick).await;
    assert_eq!(
        post(&s, "/Signup/later/click", json!("after-restart"))
            .await
            .0,
        200
    );
    let r = reqwest::get(s.url("/restate/workflow/Signup/later/attach"))
        .await
        .unwrap();
    assert_eq!(
        r.json::<String>().await.unwrap(),
        "l@x verified with after-restart"
    );
    let r = reqwest::get(s.url("/restate/workflow/Signup/later/output"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.stop().await;
}

#[tokio::test]
async fn a_finished_workflow_is_purged_with_its_state_after_retention() {
    let short = |b: restate_runtime::RuntimeBuilder| {
        // Long enough for the status read to come within it however slow the machine.
        b.default_retention(Duration::from_secs(2))
            .purge_interval(Duration::from_millis(50))
    };
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), short).await;
    assert_eq!(post(&s, "/Signup/gone/click", json!("k")).await.0, 200);
    assert_eq!(post(&s, "/Signup/gone/run", json!("g@x")).await.0, 200);
    assert_eq!(
        post(&s, "/Signup/gone/status", Value::Null).await.1,
        json!(["verified", "k"])
    );
    common::wait_until(Duration::from_secs(20), || async {
        reqwest::get(s.url("/restate/workflow/Signup/gone/output"))
            .await
            .unwrap()
            .status()
            == 404
    })
    .await;
    // State and promises went with the run: the key starts afresh.
    assert_eq!(
        post(&s, "/Signup/gone/status", Value::Null).await.1,
        json!([null, null])
    );
    s.stop().await;
}

#[tokio::test]
async fn a_suspended_shared_waiter_is_woken_after_restart_too() {
    let quick = |b: restate_runtime::RuntimeBuilder| b.suspend_after(Duration::from_millis(100));
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), quick).await;
    let (status, body) = post(&s, "/Signup/shared/watch/send", Value::Null).await;
    assert_eq!(status, 202, "{body}");
    let id = body["invocationId"].as_str().unwrap().to_owned();
    s.wait_status(&id, "suspended").await;
    let dir = s.stop().await;
    let s = TestServer::start_with(dir, quick).await;
    assert_eq!(post(&s, "/Signup/shared/click", json!("seen")).await.0, 200);
    assert_eq!(s.attach(&id).await, (200, json!("seen")));
    s.stop().await;
}
