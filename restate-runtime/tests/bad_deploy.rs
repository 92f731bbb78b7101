//! After a bad deploy: invocations paused by non-determinism are listed together
//! (`?reason=non_determinism`), restarted as new in bulk (from the start, or after a journal
//! prefix whose steps do not run again), or killed in bulk; a bulk action needs a filter.

mod common;

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use common::{TestServer, accepted_id, wait_until};
use restate_runtime::RuntimeBuilder;
use restate_runtime::prelude::*;
use serde_json::Value;

/// The deployed code: 2 adds a step before the wait, without a patch marker.
static CODE: AtomicU8 = AtomicU8::new(1);
/// Times the first step's body ran.
static FIRST_STEPS: AtomicUsize = AtomicUsize::new(0);
/// The tests change [`CODE`], so they take turns.
static DEPLOYS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Default)]
pub struct Jobs;

#[object]
impl Jobs {
    #[handler]
    async fn work(&self, ctx: ObjectContext<'_>) -> HandlerResult<Vec<String>> {
        let mut steps = vec![
            ctx.run(|| async {
                FIRST_STEPS.fetch_add(1, SeqCst);
                Ok("a".to_owned())
            })
            .name("a")
            .await?,
        ];
        if CODE.load(SeqCst) == 2 {
            steps.push(ctx.run(|| async { Ok("b".to_owned()) }).name("b").await?);
        }
        // Long enough that none wakes before the test has set up the rest and switched
        // the code, however slow the machine.
        ctx.sleep(Duration::from_secs(3)).await?;
        steps.push(ctx.run(|| async { Ok("c".to_owned()) }).name("c").await?);
        let mut log: Vec<String> = ctx.get("log").await?.unwrap_or_default();
        log.push("work".into());
        ctx.set("log", log);
        Ok(steps)
    }

    /// Appends `label` to the key's log.
    #[handler]
    async fn mark(&self, ctx: ObjectContext<'_>, label: String) -> HandlerResult<Vec<String>> {
        let mut log: Vec<String> = ctx.get("log").await?.unwrap_or_default();
        log.push(label);
        ctx.set("log", log.clone());
        Ok(log)
    }

    #[handler]
    async fn idle(&self, ctx: ObjectContext<'_>) -> HandlerResult<()> {
        ctx.sleep(Duration::from_secs(3600)).await?;
        Ok(())
    }
}

/// A handler under a concurrency limit of one.
#[derive(Default)]
pub struct Limited;

#[service]
impl Limited {
    /// Holds the permit for a moment: a second one sent at once waits for it.
    #[handler(concurrency = 1)]
    async fn job(&self, ctx: Context<'_>, n: u32) -> HandlerResult<u32> {
        ctx.run(|| async { Ok(()) }).name("step").await?;
        ctx.sleep(Duration::from_millis(200)).await?;
        Ok(n)
    }
}

async fn admin(server: &TestServer, method: reqwest::Method, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method, format!("{}{path}", server.admin))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn listed(server: &TestServer, query: &str) -> Vec<Value> {
    let (_, page) = admin(
        server,
        reqwest::Method::GET,
        &format!("/invocations?{query}"),
    )
    .await;
    page["invocations"].as_array().unwrap().clone()
}

async fn output(server: &TestServer, id: &str) -> Value {
    let (status, body) = server.attach(id).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_by_a_bad_deploy_are_listed_and_restarted_or_killed_in_bulk() {
    let _turn = DEPLOYS.lock().await;
    CODE.store(1, SeqCst);
    let configure = |b: RuntimeBuilder| b.suspend_after(Duration::from_millis(50));
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), configure).await;
    let send = |path: &str| reqwest::Client::new().post(server.url(path)).send();
    let mut old = Vec::new();
    for key in ["k1", "k2", "k3"] {
        let id = accepted_id(send(&format!("/Jobs/{key}/work/send")).await.unwrap()).await;
        server.wait_status(&id, "suspended").await;
        old.push(id);
    }
    let idle = accepted_id(send("/Jobs/i/idle/send").await.unwrap()).await;
    server.wait_status(&idle, "suspended").await;

    // The bad deploy: the step added before the wait breaks the three as they wake.
    CODE.store(2, SeqCst);
    wait_until(Duration::from_secs(30), || async {
        listed(&server, "status=paused&reason=non_determinism")
            .await
            .len()
            == 3
    })
    .await;
    for view in listed(&server, "reason=non_determinism").await {
        assert_eq!(view["paused_reason"], "non_determinism");
        assert!(old.contains(&view["id"].as_str().unwrap().to_owned()));
    }
    assert!(listed(&server, "reason=retries_exhausted").await.is_empty());

    // A bulk action names its invocations; one over everything is refused.
    let (status, _) = admin(&server, reqwest::Method::PATCH, "/invocations?action=kill").await;
    assert_eq!(status, 400);
    let (status, _) = admin(
        &server,
        reqwest::Method::PATCH,
        "/invocations?action=explode&status=paused",
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = admin(&server, reqwest::Method::GET, "/invocations?reason=typo").await;
    assert_eq!(status, 400);
    // Malformed parameters are 400 in the API's JSON error form.
    let (status, error) = admin(&server, reqwest::Method::GET, "/invocations?limit=many").await;
    assert_eq!(
        (status, error["code"].as_u64()),
        (400, Some(400)),
        "{error}"
    );
    let (status, error) = admin(
        &server,
        reqwest::Method::PATCH,
        &format!("/invocations/{}/kill?from=1", old[0]),
    )
    .await;
    assert_eq!(
        (status, error["code"].as_u64()),
        (400, Some(400)),
        "{error}"
    );
    // A delayed one has not started: nothing to restart.
    let delayed = accepted_id(send("/Jobs/d/idle/send?delay=1h").await.unwrap()).await;
    let (status, _) = admin(
        &server,
        reqwest::Method::PATCH,
        &format!("/invocations/{delayed}/restart"),
    )
    .await;
    assert_eq!(status, 409);

    // A misspelt parameter is refused by name, not read as no `from` (a restart from the
    // start).
    let (status, refused) = admin(
        &server,
        reqwest::Method::PATCH,
        &format!("/invocations/{}/restart?frm=1", old[0]),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused.to_string().contains("`frm`"), "{refused}");
    assert_eq!(server.inspect(&old[0]).await["status"], "paused");

    // One restarted after its first step: the step's result is kept, its body does not run.
    let (status, refused) = admin(
        &server,
        reqwest::Method::PATCH,
        &format!("/invocations/{}/restart?from=5", old[0]),
    )
    .await;
    assert_eq!(status, 409, "{refused}");
    let ran = FIRST_STEPS.load(SeqCst);
    let (status, restarted) = admin(
        &server,
        reqwest::Method::PATCH,
        &format!("/invocations/{}/restart?from=1", old[0]),
    )
    .await;
    assert_eq!(status, 200, "{restarted}");
    let copy = restarted["invocationId"].as_str().unwrap().to_owned();
    assert_ne!(copy, old[0]);
    assert_eq!(
        output(&server, &copy).await,
        serde_json::json!(["a", "b", "c"])
    );
    assert_eq!(FIRST_STEPS.load(SeqCst), ran);
    assert_eq!(server.inspect(&old[0]).await["status"], "completed");
    // Restarted again (a retried request): the same copy, not a second one.
    let (status, again) = admin(
        &server,
        reqwest::Method::PATCH,
        &format!("/invocations/{}/restart", old[0]),
    )
    .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["invocationId"], copy.as_str());

    // The other two, in bulk, from the start.
    let (status, bulk) = admin(
        &server,
        reqwest::Method::PATCH,
        "/invocations?action=restart&status=paused&reason=non_determinism",
    )
    .await;
    assert_eq!(status, 200, "{bulk}");
    assert!(bulk["failed"].as_array().unwrap().is_empty(), "{bulk}");
    let done = bulk["done"].as_array().unwrap();
    assert_eq!(done.len(), 2, "{bulk}");
    for restarted in done {
        let id = restarted["invocationId"].as_str().unwrap();
        assert_eq!(
            output(&server, id).await,
            serde_json::json!(["a", "b", "c"])
        );
        let old_id = restarted["id"].as_str().unwrap();
        let (status, killed) = server.attach(old_id).await;
        assert_eq!(status, 409, "{killed}");
    }
    assert_eq!(FIRST_STEPS.load(SeqCst), ran + 2);
    assert!(listed(&server, "status=paused").await.is_empty());

    // Kill in bulk, by any filter.
    let (status, bulk) = admin(
        &server,
        reqwest::Method::PATCH,
        "/invocations?action=kill&status=suspended&handler=idle",
    )
    .await;
    assert_eq!(status, 200, "{bulk}");
    assert_eq!(bulk["done"].as_array().unwrap().len(), 1, "{bulk}");
    server.wait_status(&idle, "completed").await;
    drop(server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_copy_takes_the_originals_place_on_its_key() {
    let _turn = DEPLOYS.lock().await;
    CODE.store(1, SeqCst);
    let configure = |b: RuntimeBuilder| b.suspend_after(Duration::from_millis(50));
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), configure).await;
    let original = accepted_id(
        reqwest::Client::new()
            .post(server.url("/Jobs/q/work/send"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    server.wait_status(&original, "suspended").await;
    CODE.store(2, SeqCst);
    server.wait_status(&original, "paused").await;
    // Queued behind the paused original, which holds the key.
    let behind = accepted_id(
        server
            .post("/Jobs/q/mark/send", serde_json::json!("after"))
            .await,
    )
    .await;
    // Restarted four times at once: one copy, which each restart answers with once it is
    // durable, and the original ends once.
    let path = format!("/invocations/{original}/restart");
    let restarts = (0..4).map(|_| admin(&server, reqwest::Method::PATCH, &path));
    let answers = futures::future::join_all(restarts).await;
    for (status, restarted) in &answers {
        assert_eq!(*status, 200, "{restarted}");
    }
    let copy = answers[0].1["invocationId"].as_str().unwrap().to_owned();
    for (_, restarted) in &answers {
        assert_eq!(restarted["invocationId"].as_str(), Some(copy.as_str()));
    }
    assert_eq!(
        output(&server, &copy).await,
        serde_json::json!(["a", "b", "c"])
    );
    server.wait_status(&original, "completed").await;
    // The copy ran before what waited behind the original.
    assert_eq!(
        output(&server, &behind).await,
        serde_json::json!(["work", "after"])
    );
    let copy_view = server.inspect(&copy).await;
    let behind_view = server.inspect(&behind).await;
    // Compared as times: RFC 3339 text drops trailing zeros (".25Z" is after ".251Z" as text).
    let completed = |view: &serde_json::Value| {
        view["completed_at"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
    };
    assert!(
        completed(&copy_view) <= completed(&behind_view),
        "{copy_view} {behind_view}"
    );
    drop(server.stop().await);
}

/// A copy that kept the permit of its handler's concurrency limit would run without one (the
/// original's went back when it ended): found from outside, a restart `?from=2` ran beside the
/// limit's holders. Such a prefix is refused; from the start, the copy waits for its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_never_keeps_a_concurrency_permit_the_original_held() {
    let server = TestServer::start().await;
    // The second waits for the first's permit: its gate's awakeable has the permit.
    let first = accepted_id(server.post("/Limited/job/send", serde_json::json!(6)).await).await;
    let id = accepted_id(server.post("/Limited/job/send", serde_json::json!(7)).await).await;
    assert_eq!(output(&server, &first).await, serde_json::json!(6));
    assert_eq!(output(&server, &id).await, serde_json::json!(7));
    let journal = server.inspect(&id).await["journal"].clone();
    assert_eq!(journal[1]["kind"], "awakeable", "{journal}");
    assert!(journal[1]["result"].is_object(), "waited: {journal}");
    for from in [2, 3, 4] {
        let (status, refused) = admin(
            &server,
            reqwest::Method::PATCH,
            &format!("/invocations/{id}/restart?from={from}"),
        )
        .await;
        assert_eq!(status, 409, "from={from}: {refused}");
        let message = refused["message"].as_str().unwrap();
        assert!(
            message.contains("`Limited/job`") && message.contains("at most 0"),
            "from={from}: {message}"
        );
    }
    let (status, listed) = admin(
        &server,
        reqwest::Method::PATCH,
        "/invocations?action=restart&service=Limited&from=2",
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    assert!(
        listed.to_string().contains("`Limited/job`"),
        "the bulk form says why: {listed}"
    );
    let (status, restarted) = admin(
        &server,
        reqwest::Method::PATCH,
        &format!("/invocations/{id}/restart"),
    )
    .await;
    assert_eq!(status, 200, "{restarted}");
    let copy = restarted["invocationId"].as_str().unwrap().to_owned();
    assert_eq!(output(&server, &copy).await, serde_json::json!(7));
}
