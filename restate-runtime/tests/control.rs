//! Invocation control and the admin API: cancel with compensation (propagating to calls), kill,
//! purge, pause and resume, listing with filters and paging, the admin token.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use common::TestServer;
use restate_runtime::prelude::*;
use serde_json::{Value, json};

static COMPENSATIONS: AtomicU32 = AtomicU32::new(0);
static KILLED_COMPENSATIONS: AtomicU32 = AtomicU32::new(0);
static BROKEN: AtomicBool = AtomicBool::new(true);
static TALLIES: AtomicU32 = AtomicU32::new(0);
static FLAKY_ATTEMPTS: std::sync::Mutex<std::collections::BTreeMap<u32, u32>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

#[derive(Default)]
pub struct Ops;

#[service]
impl Ops {
    /// Reserves, then waits for an approval that never comes; on cancellation, undoes.
    #[handler]
    async fn book(&self, ctx: Context<'_>) -> HandlerResult<String> {
        ctx.run(|| async { Ok(()) }).name("reserve").await?;
        let (_id, approval) = ctx.awakeable::<String>();
        match approval.await {
            Ok(v) => Ok(v),
            Err(e) => {
                ctx.run(|| async {
                    COMPENSATIONS.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                })
                .name("undo reservation")
                .await?;
                Err(e.into())
            }
        }
    }

    /// Calls `book` and waits for it.
    #[handler]
    async fn outer(&self, ctx: Context<'_>) -> HandlerResult<String> {
        Ok(ctx.client::<Ops>().book().call().await?)
    }

    #[handler]
    async fn nap(&self, ctx: Context<'_>) -> HandlerResult<()> {
        if let Err(e) = ctx.sleep(Duration::from_secs(3600)).await {
            KILLED_COMPENSATIONS.fetch_add(1, Ordering::SeqCst);
            return Err(e.into());
        }
        Ok(())
    }

    #[handler(retry(initial_interval = "10ms", max_attempts = 2))]
    async fn fragile(&self, _ctx: Context<'_>) -> HandlerResult<String> {
        if BROKEN.load(Ordering::SeqCst) {
            return Err("still broken".into());
        }
        Ok("fixed".into())
    }

    #[handler]
    async fn quick(&self, _ctx: Context<'_>, n: u32) -> HandlerResult<u32> {
        Ok(n)
    }

    #[handler]
    async fn hold(&self, ctx: Context<'_>) -> HandlerResult<()> {
        ctx.sleep(Duration::from_secs(2)).await?;
        Ok(())
    }

    #[handler]
    async fn doze(&self, ctx: Context<'_>) -> HandlerResult<()> {
        ctx.sleep(Duration::from_secs(3600)).await?;
        Ok(())
    }

    /// Sends `doze`, cancels it, and returns its id.
    #[handler]
    async fn stop_doze(&self, ctx: Context<'_>) -> HandlerResult<String> {
        let doze = ctx.client::<Ops>().doze().send();
        ctx.cancel(doze);
        Ok(doze.invocation_id().to_string())
    }

    /// Counts its runs (a restarted copy runs again).
    #[handler]
    async fn tally(&self, ctx: Context<'_>) -> HandlerResult<()> {
        ctx.run(|| async {
            TALLIES.fetch_add(1, Ordering::SeqCst);
            Ok(())
        })
        .await?;
        Ok(())
    }

    /// Fails its first two attempts for each `n` (then it is paused), succeeds after.
    #[handler(retry(initial_interval = "1ms", max_attempts = 2))]
    async fn flaky(&self, _ctx: Context<'_>, n: u32) -> HandlerResult<u32> {
        let attempts = {
            let mut seen = FLAKY_ATTEMPTS.lock().unwrap();
            let attempts = seen.entry(n).or_default();
            *attempts += 1;
            *attempts
        };
        if attempts <= 2 {
            return Err(format!("attempt {attempts} of {n} fails").into());
        }
        Ok(n)
    }

    /// Sleeps an hour; nothing counts what ends it.
    #[handler]
    async fn idle(&self, ctx: Context<'_>) -> HandlerResult<()> {
        ctx.sleep(Duration::from_secs(3600)).await?;
        Ok(())
    }

    #[handler]
    async fn refuse(&self, _ctx: Context<'_>) -> Result<(), TerminalError> {
        Err(TerminalError::new_with_code(402, "payment required"))
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn send(s: &TestServer, handler: &str) -> String {
    let r = client()
        .post(s.url(&format!("/Ops/{handler}/send")))
        .send()
        .await
        .unwrap();
    common::accepted_id(r).await
}

/// Sends `flaky(n)`, which is paused after its first two attempts fail.
async fn send_flaky(s: &TestServer, n: u32) -> String {
    let r = client()
        .post(s.url("/Ops/flaky/send"))
        .json(&n)
        .send()
        .await
        .unwrap();
    common::accepted_id(r).await
}

async fn control(s: &TestServer, id: &str, action: &str) -> u16 {
    control_answer(s, id, action).await.0
}

/// The status and the error message (empty on success) of an admin control request.
async fn control_answer(s: &TestServer, id: &str, action: &str) -> (u16, String) {
    let r = client()
        .patch(format!("{}/invocations/{id}/{action}", s.admin))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let message = body["message"].as_str().unwrap_or_default().to_owned();
    (status, message)
}

#[tokio::test]
async fn cancel_runs_compensation_and_propagates_to_calls() {
    let quick = |b: restate_runtime::RuntimeBuilder| b.suspend_after(Duration::from_millis(100));
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), quick).await;
    let id = send(&s, "book").await;
    s.wait_status(&id, "suspended").await;
    assert_eq!(control(&s, &id, "cancel").await, 202);
    let (status, body) = s.attach(&id).await;
    assert_eq!((status, body["message"].as_str()), (409, Some("cancelled")));
    let view = s.inspect(&id).await;
    let names: Vec<_> = view["journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].clone())
        .collect();
    assert!(names.contains(&json!("undo reservation")), "{view}");
    assert_eq!(COMPENSATIONS.load(Ordering::SeqCst), 1);
    // Finished: cancel and kill conflict, each refusal naming what was asked; purge forgets it.
    for (action, done) in [("cancel", "cancelled"), ("kill", "killed")] {
        let (status, message) = control_answer(&s, &id, action).await;
        assert_eq!(status, 409, "{message}");
        assert!(
            message.contains(&format!("cannot be {done}")),
            "{action}: {message}"
        );
    }
    assert_eq!(control(&s, &id, "purge").await, 200);
    let r = reqwest::get(s.url(&format!("/restate/invocation/{id}/output")))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(control(&s, &id, "purge").await, 404);

    // Cancelling a caller cancels the call it waits on.
    let outer = send(&s, "outer").await;
    s.wait_status(&outer, "suspended").await;
    let callee = s.inspect(&outer).await["journal"][0]["invocationId"]
        .as_str()
        .unwrap()
        .to_owned();
    s.wait_status(&callee, "suspended").await;
    assert_eq!(control(&s, &outer, "cancel").await, 202);
    assert_eq!(s.attach(&outer).await.0, 409);
    assert_eq!(s.attach(&callee).await.0, 409);
    assert_eq!(
        COMPENSATIONS.load(Ordering::SeqCst),
        2,
        "the callee compensated"
    );
    s.stop().await;
}

#[tokio::test]
async fn kill_stops_at_once_without_compensation() {
    let s = TestServer::start().await;
    let id = send(&s, "nap").await;
    common::wait_until(Duration::from_secs(20), || async {
        s.inspect(&id).await["journal"][0]["kind"] == "sleep"
    })
    .await;
    assert_eq!(control(&s, &id, "kill").await, 200);
    let (status, body) = s.attach(&id).await;
    assert_eq!((status, body["message"].as_str()), (409, Some("killed")));
    assert_eq!(KILLED_COMPENSATIONS.load(Ordering::SeqCst), 0);
    let unknown = format!("inv_1{}1", "0".repeat(32));
    assert_eq!(control(&s, &unknown, "kill").await, 404);
    assert_eq!(control(&s, "inv_1bad", "kill").await, 400);
    s.stop().await;
}

/// A killed invocation's calls are killed with it, as Restate kills an invocation's children:
/// the callee ends killed, not cancelled (no compensation runs).
#[tokio::test]
async fn a_kill_kills_the_calls_its_invocation_waits_on() {
    let s = TestServer::start().await;
    let outer = send(&s, "outer").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let callee = loop {
        let entry = s.inspect(&outer).await["journal"][0].clone();
        if entry["kind"] == "call" {
            break entry["invocationId"].as_str().unwrap().to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no call journaled");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // The callee waits on its approval, its reservation made.
    common::wait_until(Duration::from_secs(20), || async {
        s.inspect(&callee).await["journal"][1]["kind"] == "awakeable"
    })
    .await;
    assert_eq!(control(&s, &outer, "kill").await, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (status, body) = loop {
        let r = reqwest::get(s.url(&format!("/restate/invocation/{callee}/output")))
            .await
            .unwrap();
        if r.status() != 470 {
            break (r.status().as_u16(), r.json::<Value>().await.unwrap());
        }
        assert!(std::time::Instant::now() < deadline, "the callee runs on");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        (status, body["message"].as_str()),
        (409, Some("killed")),
        "{body}"
    );
    let view = s.inspect(&callee).await;
    let steps: Vec<&Value> = (view["journal"].as_array().unwrap().iter())
        .filter(|e| e["kind"] == "run")
        .collect();
    assert_eq!(steps.len(), 1, "no compensation ran: {view}");
    s.stop().await;
}

#[derive(Default)]
pub struct Desk;

#[object]
impl Desk {
    /// Holds its key for an hour.
    #[handler]
    async fn occupy(&self, ctx: ObjectContext<'_>) -> HandlerResult<()> {
        ctx.sleep(Duration::from_secs(3600)).await?;
        Ok(())
    }
}

/// A message to a busy key is `pending` (as Restate shows it), not running, until its key
/// frees; the status filter finds it by that name.
#[tokio::test]
async fn a_message_waiting_for_its_key_is_pending_until_it_starts() {
    let s = TestServer::start().await;
    let occupy = || async {
        let r = client()
            .post(s.url("/Desk/a/occupy/send"))
            .send()
            .await
            .unwrap();
        common::accepted_id(r).await
    };
    let first = occupy().await;
    common::wait_until(Duration::from_secs(20), || async {
        s.inspect(&first).await["journal"][0]["kind"] == "sleep"
    })
    .await;
    let second = occupy().await;
    let view = s.inspect(&second).await;
    assert_eq!(
        (&view["status"], &view["attempts"]),
        (&json!("pending"), &json!(0))
    );
    // The ids of a page of `GET /invocations?service=Desk&<query>`, and its `next` cursor.
    let page = |query: String| {
        let url = format!("{}/invocations?service=Desk&{query}", s.admin);
        async move {
            let page: Value = client()
                .get(url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let ids: Vec<String> = page["invocations"]
                .as_array()
                .unwrap_or_else(|| panic!("{page}"))
                .iter()
                .map(|v| v["id"].as_str().unwrap().to_owned())
                .collect();
            (ids, page["next"].as_str().map(str::to_owned))
        }
    };
    let listed = |status: &'static str| {
        let page = &page;
        async move { page(format!("status={status}")).await.0 }
    };
    assert_eq!(listed("pending").await, std::slice::from_ref(&second));
    assert!(!listed("running").await.contains(&second));
    // A call waits in memory only (nobody was told of it yet): it is listed all the same.
    let call = tokio::spawn(client().post(s.url("/Desk/a/occupy")).send());
    common::wait_until(Duration::from_secs(20), || async {
        listed("pending").await.len() == 2
    })
    .await;
    let waiting = listed("pending").await;
    let called = waiting.iter().find(|id| **id != second).unwrap().clone();
    assert_eq!(s.inspect(&called).await["status"], "pending");
    // Paging walks the store and memory in one order.
    let (mut paged, mut next) = page("limit=1".into()).await;
    while let Some(after) = next {
        let (ids, more) = page(format!("limit=1&after={after}")).await;
        paged.extend(ids);
        next = more;
    }
    let mut all = vec![first.clone(), second.clone(), called.clone()];
    all.sort();
    paged.sort();
    assert_eq!(paged, all, "each once");
    assert_eq!(control(&s, &first, "kill").await, 200);
    common::wait_until(Duration::from_secs(20), || async {
        s.inspect(&second).await["journal"][0]["kind"] == "sleep"
    })
    .await;
    assert_ne!(s.inspect(&second).await["status"], "pending");
    assert_eq!(listed("pending").await, [called]);
    call.abort();
    s.stop().await;
}

#[tokio::test]
async fn a_cancel_from_a_handler_is_journaled_and_delivered() {
    let s = TestServer::start().await;
    let r = client().post(s.url("/Ops/stop_doze")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-restate-id"].to_str().unwrap().to_owned();
    let doze: String = r.json().await.unwrap();
    let (status, body) = s.attach(&doze).await;
    assert_eq!(status, 409, "{body}");
    let view = s.inspect(&id).await;
    let kinds: Vec<_> = view["journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["send", "cancel"], "{view}");
    assert_eq!(view["journal"][1]["invocationId"], doze.as_str());
    s.stop().await;
}

#[tokio::test]
async fn paused_invocations_resume() {
    let s = TestServer::start().await;
    let id = send(&s, "fragile").await;
    s.wait_status(&id, "paused").await;
    assert_eq!(control(&s, &id, "purge").await, 409, "unfinished");
    BROKEN.store(false, Ordering::SeqCst);
    let (status, message) = control_answer(&s, &id, "resume").await;
    assert_eq!(status, 200, "{message}");
    assert_eq!(s.attach(&id).await, (200, json!("fixed")));
    let (status, message) = control_answer(&s, &id, "resume").await;
    assert_eq!(status, 409, "completed: {message}");
    assert!(message.contains("cannot be resumed"), "{message}");
    s.stop().await;
}

/// A resume sent as soon as the invocation shows as paused is taken, also while the attempt
/// that paused it is still ending (its pause committing): it used to be refused as "paused,
/// not paused" (within the first five of these 300 in each of three runs beside two busy
/// loops).
#[tokio::test]
async fn a_resume_right_after_the_pause_shows_is_taken() {
    let s = TestServer::start().await;
    for n in 0..300u32 {
        let id = send_flaky(&s, n).await;
        // Looked at without pausing between looks, to resume as early as it shows.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while s.inspect(&id).await["status"] != "paused" {
            assert!(std::time::Instant::now() < deadline, "{n} never paused");
        }
        let (status, message) = control_answer(&s, &id, "resume").await;
        assert_eq!(status, 200, "invocation {n}: {message}");
        assert_eq!(s.attach(&id).await, (200, json!(n)));
    }
    s.stop().await;
}

/// A kill and a resume sent together to a paused invocation both answer, and it ends one way
/// or the other: a resume never waits on an ending that a kill (not the pausing attempt)
/// carries out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_and_a_resume_of_a_paused_invocation_both_answer() {
    let s = TestServer::start().await;
    for n in 1000..1060u32 {
        let id = send_flaky(&s, n).await;
        s.wait_status(&id, "paused").await;
        let both = futures::future::join(
            control_answer(&s, &id, "kill"),
            control_answer(&s, &id, "resume"),
        );
        let ((killed, kill_says), (resumed, resume_says)) =
            tokio::time::timeout(Duration::from_secs(30), both)
                .await
                .unwrap_or_else(|_| {
                    panic!("invocation {n}: the kill or the resume never answered")
                });
        assert!(
            matches!(killed, 200 | 409),
            "kill of {n}: {killed} {kill_says}"
        );
        assert!(
            matches!(resumed, 200 | 409),
            "resume of {n}: {resumed} {resume_says}"
        );
        let (status, _) = s.attach(&id).await;
        assert!(matches!(status, 200 | 409), "{n} ended with {status}");
    }
    s.stop().await;
}

/// A bulk action whose query names a parameter it does not take (a misspelt filter) is a 400
/// that names it, and acts on nothing: ignored, the typo would widen what it acts on. The
/// listing refuses it as well.
#[tokio::test]
async fn a_bulk_action_with_an_unknown_parameter_is_refused_and_does_nothing() {
    let quick = |b: restate_runtime::RuntimeBuilder| b.suspend_after(Duration::from_millis(100));
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), quick).await;
    let (id, other) = (send(&s, "idle").await, send(&s, "idle").await);
    s.wait_status(&id, "suspended").await;
    s.wait_status(&other, "suspended").await;
    let bulk = |query: &str| {
        let url = format!("{}/invocations?{query}", s.admin);
        async move {
            let r = client().patch(url).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = bulk("action=cancel&status=suspended&servce=Nope").await;
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("`servce`"), "{message}");
    assert!(
        message.contains("service"),
        "lists what it takes: {message}"
    );
    assert_eq!(s.inspect(&id).await["status"], "suspended");
    // A limit of zero is refused, not read as one.
    let (status, body) = bulk("action=cancel&status=suspended&handler=idle&limit=0").await;
    assert_eq!(status, 400, "{body}");
    let listed = client()
        .get(format!("{}/invocations?handler=idle&limit=0", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 400);
    // A listing with a misspelt filter is refused too, rather than listing everything.
    let listed = client()
        .get(format!("{}/invocations?stauts=suspended", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 400);
    let message = listed.json::<Value>().await.unwrap()["message"].to_string();
    assert!(
        message.contains("`stauts`") && message.contains("after"),
        "{message}"
    );
    assert_eq!(s.inspect(&id).await["status"], "suspended");
    assert_eq!(s.inspect(&other).await["status"], "suspended");
    // Spelt right, the same action acts on what it names, `limit` at a time.
    let (status, body) = bulk("action=cancel&status=suspended&handler=idle&limit=1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["done"].as_array().unwrap().len(), 1, "{body}");
    let next = body["next"].as_str().expect("a second round").to_owned();
    let (status, body) = bulk(&format!(
        "action=cancel&status=suspended&handler=idle&after={next}"
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["done"].as_array().unwrap().len(), 1, "{body}");
    for cancelled in [&id, &other] {
        assert_eq!(s.attach(cancelled).await.0, 409);
    }
    s.stop().await;
}

/// A bulk restart over more than one round acts on what matched when it began: the copies
/// it makes match the same filters, and some sort after its cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_restart_followed_round_by_round_restarts_each_original_once() {
    let s = TestServer::start().await;
    const ORIGINALS: usize = 1_100;
    let ops = s.handle.client::<Ops>();
    for chunk in 0..ORIGINALS / 100 {
        let calls: Vec<_> = (0..100).map(|_| ops.tally().call()).collect();
        for done in futures::future::join_all(calls).await {
            done.unwrap();
        }
        assert_eq!(TALLIES.load(Ordering::SeqCst) as usize, (chunk + 1) * 100);
    }
    let bulk = |after: Option<String>| {
        let mut url = format!(
            "{}/invocations?action=restart&handler=tally&status=completed",
            s.admin
        );
        if let Some(after) = after {
            url.push_str(&format!("&after={after}"));
        }
        async move {
            let r = client().patch(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let (mut restarted, mut copies, mut rounds) = (Vec::new(), Vec::new(), 0);
    let mut round = bulk(None).await;
    loop {
        rounds += 1;
        assert!(round["failed"].as_array().unwrap().is_empty(), "{round}");
        for done in round["done"].as_array().unwrap() {
            restarted.push(done["id"].as_str().unwrap().to_owned());
            copies.push(done["invocationId"].as_str().unwrap().to_owned());
        }
        match round["next"].as_str() {
            Some(next) => round = bulk(Some(next.to_owned())).await,
            None => break,
        }
    }
    assert!(rounds >= 2, "more than one round: {rounds}");
    assert_eq!(restarted.len(), ORIGINALS, "each original once, no copy");
    assert!(restarted.iter().all(|id| !copies.contains(id)));
    common::wait_until(Duration::from_secs(30), || async {
        TALLIES.load(Ordering::SeqCst) as usize == 2 * ORIGINALS
    })
    .await;
    s.stop().await;
    assert_eq!(TALLIES.load(Ordering::SeqCst) as usize, 2 * ORIGINALS);
}

#[tokio::test]
async fn invocations_are_listed_with_filters_and_paging() {
    let s = TestServer::start().await;
    for n in 0..5 {
        let r = client()
            .post(s.url("/Ops/quick"))
            .header("idempotency-key", format!("evt_{n}"))
            .json(&n)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let list = |query: &str| {
        let url = format!("{}/invocations?{query}", s.admin);
        async move {
            reqwest::get(url)
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let all = list("service=Ops&handler=quick&status=completed").await;
    assert_eq!(all["invocations"].as_array().unwrap().len(), 5, "{all}");
    assert!(all["next"].is_null());
    // A cursor only while more match: none after a page filled exactly.
    let exact = list("service=Ops&handler=quick&status=completed&limit=5").await;
    assert_eq!(exact["invocations"].as_array().unwrap().len(), 5, "{exact}");
    assert!(exact["next"].is_null(), "{exact}");
    let short = list("service=Ops&handler=quick&status=completed&limit=4").await;
    assert!(short["next"].is_string(), "{short}");
    let mut seen = Vec::new();
    let mut page = list("handler=quick&limit=2").await;
    loop {
        for inv in page["invocations"].as_array().unwrap() {
            assert_eq!(inv["handler"], "quick");
            seen.push(inv["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => page = list(&format!("handler=quick&limit=2&after={next}")).await,
            None => break,
        }
    }
    seen.dedup();
    assert_eq!(seen.len(), 5);
    // By the idempotency key it was sent with (a webhook event's id): that one alone.
    let one = list("idempotency_key=evt_3").await;
    let found = one["invocations"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{one}");
    let id = found[0]["id"].as_str().unwrap();
    let view = reqwest::get(format!("{}/invocations/{id}", s.admin))
        .await
        .unwrap();
    let view: Value = view.json().await.unwrap();
    assert_eq!(view["idempotency_key"], "evt_3", "{view}");
    assert_eq!(view["result"], json!({"success": 3}), "{view}");
    assert!(
        list("idempotency_key=evt_9").await["invocations"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        list("status=running&handler=quick").await["invocations"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    s.stop().await;
}

#[tokio::test]
async fn the_admin_token_guards_everything_but_health() {
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), |b| b.admin_token("s3cret")).await;
    let get = |path: &str, token: Option<&str>| {
        let mut req = client().get(format!("{}{path}", s.admin));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get("/health", None).await, 200);
    assert_eq!(get("/services", None).await, 401);
    assert_eq!(get("/services", Some("wrong")).await, 401);
    assert_eq!(get("/services", Some("s3cret")).await, 200);
    assert_eq!(get("/invocations", Some("s3cret")).await, 200);
    s.stop().await;
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text() {
    let s = TestServer::start().await;
    let r = client()
        .post(s.url("/Ops/quick"))
        .json(&1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::get(format!("{}/metrics", s.admin)).await.unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    let mut values = std::collections::HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let metric = name.split('{').next().unwrap();
        assert!(
            metric
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        values.insert(name.to_owned(), value);
    }
    assert!(text.ends_with("# EOF\n"), "OpenMetrics terminator");
    assert!(values["restate_invocations_started_total"] >= 1.0, "{text}");
    assert!(
        values[r#"restate_invocations_completed_total{result="success"}"#] >= 1.0,
        "{text}"
    );
    assert!(values["restate_journal_commits_total"] >= 1.0, "{text}");
    assert!(
        values.contains_key("restate_journal_commit_seconds_total"),
        "{text}"
    );
    assert!(values.contains_key("restate_timers_pending"), "{text}");
    for checkpoint in [
        "restate_journal_checkpoints_total",
        "restate_journal_checkpoint_seconds_total",
        "restate_journal_checkpoint_max_seconds",
    ] {
        assert!(values.contains_key(checkpoint), "{text}");
    }
    s.stop().await;
}

/// The admin API's documented fields for an invocation.
fn assert_shape(view: &Value, status: &str) {
    for field in [
        "id",
        "target",
        "service",
        "handler",
        "key",
        "status",
        "attempts",
        "last_error",
        "idempotency_key",
        "created_at",
        "modified_at",
        "completed_at",
        "result",
        "journal",
    ] {
        assert!(view.get(field).is_some(), "missing {field} in {view}");
    }
    assert_eq!(view["status"], status, "{view}");
    assert!(
        view["created_at"].as_str().unwrap().ends_with('Z'),
        "{view}"
    );
}

#[tokio::test]
async fn admin_json_for_running_suspended_failed_and_completed() {
    let s = TestServer::start().await;
    let running = send(&s, "hold").await;
    common::wait_until(Duration::from_secs(20), || async {
        s.inspect(&running).await["journal"][0]["kind"] == "sleep"
    })
    .await;
    let view = s.inspect(&running).await;
    assert_shape(&view, "running");
    assert_eq!(
        (view["attempts"].as_u64(), view["result"].is_null()),
        (Some(1), true)
    );
    assert!(view["journal"][0]["wakeAt"].as_str().is_some(), "{view}");

    let r = client().post(s.url("/Ops/refuse")).send().await.unwrap();
    let failed = r.headers()["x-restate-id"].to_str().unwrap().to_owned();
    let view = s.inspect(&failed).await;
    assert_shape(&view, "completed");
    assert_eq!(
        view["result"],
        json!({"failure": {"code": 402, "message": "payment required"}})
    );

    let r = client()
        .post(s.url("/Ops/quick"))
        .json(&7)
        .send()
        .await
        .unwrap();
    let done = r.headers()["x-restate-id"].to_str().unwrap().to_owned();
    let view = s.inspect(&done).await;
    assert_shape(&view, "completed");
    assert_eq!(view["result"], json!({"success": 7}));
    assert!(view["completed_at"].as_str().is_some());
    s.stop().await;

    let quick = |b: restate_runtime::RuntimeBuilder| b.suspend_after(Duration::from_millis(100));
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), quick).await;
    let suspended = send(&s, "book").await;
    let view = s.wait_status(&suspended, "suspended").await;
    assert_shape(&view, "suspended");
    let kinds: Vec<_> = view["journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert_eq!(kinds, vec![json!("run"), json!("awakeable")]);
    let unknown = format!("inv_1{}1", "0".repeat(32));
    let r = reqwest::get(format!("{}/invocations/{unknown}", s.admin))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    s.stop().await;
}

/// `GET /services` lists each service with its name, kind (Restate's `ty`, and `kind`) and
/// handlers with their kinds, types and options; `GET /services/{name}` shows one.
#[tokio::test]
async fn services_are_listed_with_their_kind_handlers_and_types() {
    let s = TestServer::start().await;
    let get = |path: &str| {
        let url = format!("{}{path}", s.admin);
        async move {
            let r = reqwest::get(url).await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, listed) = get("/services").await;
    assert_eq!(status, 200);
    let ops = listed["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "Ops")
        .unwrap_or_else(|| panic!("{listed}"))
        .clone();
    assert_eq!(
        (&ops["ty"], &ops["kind"]),
        (&json!("Service"), &json!("Service"))
    );
    let quick = ops["handlers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "quick")
        .unwrap_or_else(|| panic!("{ops}"));
    assert_eq!(quick["public"], true, "{quick}");
    assert_eq!(quick["input_type"], "u32", "{quick}");
    assert_eq!(quick["output_type"], "u32", "{quick}");
    assert_eq!(get("/services/Ops").await, (200, ops));
    let (status, missing) = get("/services/Nope").await;
    assert_eq!(status, 404, "{missing}");
}
