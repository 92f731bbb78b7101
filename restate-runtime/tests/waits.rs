//! Long waits: suspension (task released, resumed by replay), awakeables over HTTP and between
//! handlers (first completion wins), calls to slow callees, all across a restart.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use common::TestServer;
use futures::StreamExt as _;
use restate_runtime::prelude::*;
use serde_json::Value;

/// Awakeable ids by tag, recorded by the handler that created them.
static IDS: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);

static RACES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn record_id(tag: &str, id: &str) {
    IDS.lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(tag.to_owned(), id.to_owned());
}

fn id_of(tag: &str) -> Option<String> {
    IDS.lock()
        .unwrap()
        .as_ref()
        .and_then(|m| m.get(tag).cloned())
}

#[derive(Default)]
pub struct Waits;

#[service]
impl Waits {
    #[handler]
    async fn approval(&self, ctx: Context<'_>, tag: String) -> HandlerResult<String> {
        let (id, answer) = ctx.awakeable::<String>();
        let t = tag.clone();
        ctx.run(|| {
            let (t, id) = (t.clone(), id.clone());
            async move {
                record_id(&t, &id);
                Ok(())
            }
        })
        .name("publish id")
        .await?;
        let answer = answer.await?;
        Ok(format!("{tag}: {answer}"))
    }

    /// Resolves another invocation's awakeable from a handler.
    #[handler]
    async fn approve(&self, ctx: Context<'_>, tag: String) -> HandlerResult<()> {
        let id = id_of(&tag).ok_or_else(|| TerminalError::new("no such tag"))?;
        ctx.awakeable_handle(id)
            .resolve("approved by handler".to_owned())
            .await?;
        Ok(())
    }

    #[handler]
    async fn slow(&self, ctx: Context<'_>, ms: u64) -> HandlerResult<u64> {
        ctx.sleep(Duration::from_millis(ms)).await?;
        Ok(ms)
    }

    /// A call raced against a timeout; after the race the handler fails once, and by the
    /// retry the call has finished too: the journaled winner keeps the replay on the timeout.
    #[handler]
    async fn race(&self, ctx: Context<'_>) -> HandlerResult<String> {
        let call = ctx.client::<Waits>().slow(600).call();
        let timeout = ctx.sleep(Duration::from_millis(100));
        let result = match ctx.select(call, timeout).await {
            restate_runtime::Either::Left(v) => format!("value {}", v?),
            restate_runtime::Either::Right(_) => "timeout".to_owned(),
        };
        ctx.sleep(Duration::from_millis(800)).await?;
        if RACES.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            return Err("fail once after the race".into());
        }
        Ok(result)
    }

    #[handler]
    async fn send_then_attach(&self, ctx: Context<'_>) -> HandlerResult<u64> {
        let handle = ctx.client::<Waits>().slow(50).send();
        let v: u64 = ctx.attach(handle).await?;
        Ok(v * 2)
    }

    #[handler]
    async fn caller(&self, ctx: Context<'_>, ms: u64) -> HandlerResult<u64> {
        let v = ctx.client::<Waits>().slow(ms).call().await?;
        Ok(v + 1)
    }
}

fn quick_suspend(b: restate_runtime::RuntimeBuilder) -> restate_runtime::RuntimeBuilder {
    b.suspend_after(Duration::from_millis(100))
}

async fn send(s: &TestServer, path: &str, body: Value) -> String {
    let r = reqwest::Client::new()
        .post(s.url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    common::accepted_id(r).await
}

async fn wait_for_id(tag: &str) -> String {
    common::wait_until(Duration::from_secs(20), || async { id_of(tag).is_some() }).await;
    id_of(tag).unwrap()
}

#[tokio::test]
async fn awakeable_resolved_over_http_after_suspension_and_restart() {
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), quick_suspend).await;
    let inv = send(&s, "/Waits/approval/send", "http".into()).await;
    let awk = wait_for_id("http").await;
    assert!(awk.starts_with("sign_1") && awk.len() == 65, "{awk}");
    s.wait_status(&inv, "suspended").await;
    let dir = s.stop().await;
    let s = TestServer::start_with(dir, quick_suspend).await;
    assert_eq!(s.inspect(&inv).await["status"], "suspended");
    let client = reqwest::Client::new();
    // The id's invocation and index are public; its tag is not: an id computed from them with
    // any other tag is unknown (404) and completes nothing.
    // (A character inside the tag: the last one also carries unused bits, and changing those
    // makes an ill-formed id, a 400, rather than a forged one.)
    let mut forged = awk.clone();
    let other = if &forged[60..61] == "A" { "B" } else { "A" };
    forged.replace_range(60..61, other);
    let r = client
        .post(s.url(&format!("/restate/a/{forged}/resolve")))
        .json(&"forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "{forged}");
    assert_eq!(s.inspect(&inv).await["status"], "suspended");
    // A value said to be JSON that is not is refused and completes nothing (it was accepted,
    // and the handler failed for good decoding it).
    let r = client
        .post(s.url(&format!("/restate/a/{awk}/resolve")))
        .header("content-type", "application/json")
        .body("{bad")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let message = r.json::<Value>().await.unwrap()["message"].to_string();
    assert!(message.contains("JSON"), "{message}");
    assert_eq!(s.inspect(&inv).await["status"], "suspended");
    let r = client
        .post(s.url(&format!("/restate/a/{awk}/resolve")))
        .json(&"yes")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(r.headers().get("content-type").is_none());
    assert_eq!(s.attach(&inv).await, (200, Value::from("http: yes")));
    // Later completions are accepted and change nothing.
    let r = client
        .post(s.url(&format!("/restate/awakeables/{awk}/resolve")))
        .json(&"no")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(s.attach(&inv).await, (200, Value::from("http: yes")));
    // Malformed ids are a 400 that says what an awakeable id looks like; unknown invocations
    // a 404.
    for (malformed, reason) in [
        ("sign_1nope", "bad length"),
        ("foo", "starts with `sign_1`"),
        ("sign_1!!!", "not base64url"),
    ] {
        let r = client
            .post(s.url(&format!("/restate/a/{malformed}/resolve")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{malformed}");
        let message = r.json::<Value>().await.unwrap()["message"].to_string();
        assert!(message.contains(reason), "{malformed}: {message}");
        assert!(!message.contains("inv_1"), "{malformed}: {message}");
    }
    let unknown = awk.replace(&awk[8..14], "AAAAAA");
    let r = client
        .post(s.url(&format!("/restate/a/{unknown}/resolve")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "{unknown}");
    s.stop().await;
}

#[tokio::test]
async fn awakeable_rejected_and_resolved_from_a_handler() {
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), quick_suspend).await;
    let rejected = send(&s, "/Waits/approval/send", "rej".into()).await;
    let awk = wait_for_id("rej").await;
    let r = reqwest::Client::new()
        .post(s.url(&format!("/restate/a/{awk}/reject")))
        .body("nope, rejected")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let (status, body) = s.attach(&rejected).await;
    assert_eq!(status, 500);
    assert_eq!(body["message"], "nope, rejected");

    let inv = send(&s, "/Waits/approval/send", "handler".into()).await;
    wait_for_id("handler").await;
    let r = reqwest::Client::new()
        .post(s.url("/Waits/approve"))
        .json(&"handler")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.attach(&inv).await,
        (200, Value::from("handler: approved by handler"))
    );
    s.stop().await;
}

#[tokio::test]
async fn callers_and_sleepers_suspend_and_resume() {
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), quick_suspend).await;
    let inv = send(&s, "/Waits/caller/send", 1200.into()).await;
    s.wait_status(&inv, "suspended").await;
    let callee = s.inspect(&inv).await["journal"][0]["invocationId"]
        .as_str()
        .unwrap()
        .to_owned();
    s.wait_status(&callee, "suspended").await;
    let dir = s.stop().await;
    let s = TestServer::start_with(dir, quick_suspend).await;
    assert_eq!(s.attach(&inv).await, (200, Value::from(1201)));
    assert_eq!(s.inspect(&callee).await["status"], "completed");
    s.stop().await;
}

#[tokio::test]
async fn select_is_deterministic_on_replay_and_attach_waits_for_a_sent_invocation() {
    let s = TestServer::start().await;
    let client = s.handle.client::<Waits>();
    assert_eq!(client.race().call().await.unwrap(), "timeout");
    assert_eq!(
        RACES.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "the handler was replayed"
    );
    assert_eq!(client.send_then_attach().call().await.unwrap(), 100);
    s.stop().await;
}

static HEAP_RELEASES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn count_heap_release() {
    HEAP_RELEASES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

/// The runtime calls the configured heap release (the allocator's way to give freed pages
/// back) once it has opened the store and recovered, and after a burst of invocations in
/// memory that then finish, not before they finish.
#[tokio::test]
async fn the_configured_heap_release_runs_after_a_burst() {
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), |b| {
        b.release_heap(count_heap_release)
    })
    .await;
    let releases = || HEAP_RELEASES.load(std::sync::atomic::Ordering::SeqCst);
    common::wait_until(Duration::from_secs(30), || async { releases() == 1 }).await;
    let client = s.handle.client::<Waits>();
    // 8 s: all 1100 are sleeping in memory for seconds after the last send (the runtime samples
    // every 2 s), and suspension only comes after 10 s.
    // Sent 64 at a time, so that their commits group and all are in memory at once however
    // slow the disk.
    let sends = futures::stream::iter(0..1100).map(|_| client.slow(8000).send());
    let sent: Vec<_> = sends.buffer_unordered(64).collect().await;
    assert!(sent.iter().all(Result::is_ok));
    assert_eq!(releases(), 1, "released while the burst was in memory");
    common::wait_until(Duration::from_secs(60), || async { releases() > 1 }).await;
    s.stop().await;
}
