//! Webhook schemes over real HTTP: GitHub and Standard Webhooks signatures checked at the
//! ingress (forgeries get 401 and run nothing), and the sender's event id as idempotency key
//! unless an `idempotency-key` header says otherwise.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;

use common::TestServer;
use restate_runtime::prelude::*;
use restate_runtime::webhook::{Webhook, github_signature, standard_signature};
use serde_json::Value;

const GITHUB_SECRET: &str = "gh-secret";
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Runs per event id. Every test uses its own ids: tests share this process.
static RUNS: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);

fn record_run(event: Option<&str>) -> u32 {
    let mut runs = RUNS.lock().unwrap();
    let count = runs
        .get_or_insert_with(HashMap::new)
        .entry(event.unwrap_or("<none>").to_owned())
        .or_default();
    *count += 1;
    *count
}

fn runs(event: &str) -> u32 {
    RUNS.lock()
        .unwrap()
        .as_ref()
        .and_then(|r| r.get(event).copied())
        .unwrap_or(0)
}

#[derive(Default)]
pub struct Hooks;

#[service]
impl Hooks {
    /// Returns the how-manieth run this is for the delivery id.
    #[handler]
    async fn github(&self, _ctx: Context<'_>, input: RawInput) -> HandlerResult<u32> {
        Ok(record_run(input.header("x-github-delivery")))
    }

    #[handler]
    async fn standard(&self, _ctx: Context<'_>, input: RawInput) -> HandlerResult<u32> {
        Ok(record_run(input.header("webhook-id")))
    }
}

async fn start() -> TestServer {
    TestServer::start_with(tempfile::tempdir().unwrap(), |b| {
        b.webhook(
            "Hooks",
            "github",
            Webhook::github(Some(GITHUB_SECRET.into())),
        )
        .webhook(
            "Hooks",
            "standard",
            Webhook::standard(Some(STANDARD_SECRET.into())),
        )
    })
    .await
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Status, `x-restate-id` and body of a delivery.
async fn deliver(req: reqwest::RequestBuilder) -> (u16, Option<String>, Value) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let id = r
        .headers()
        .get("x-restate-id")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, id, r.json().await.unwrap())
}

fn github(
    s: &TestServer,
    delivery: &str,
    signature: Option<String>,
    body: &[u8],
) -> reqwest::RequestBuilder {
    let mut req = reqwest::Client::new()
        .post(s.url("/Hooks/github"))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .body(body.to_vec());
    if let Some(sig) = signature {
        req = req.header("x-hub-signature-256", sig);
    }
    req
}

/// A Standard Webhooks request; `None` headers are left out.
fn standard(
    s: &TestServer,
    id: Option<&str>,
    timestamp: Option<i64>,
    signature: Option<String>,
    body: &[u8],
) -> reqwest::RequestBuilder {
    let mut req = reqwest::Client::new()
        .post(s.url("/Hooks/standard"))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(id) = id {
        req = req.header("webhook-id", id);
    }
    if let Some(ts) = timestamp {
        req = req.header("webhook-timestamp", ts.to_string());
    }
    if let Some(sig) = signature {
        req = req.header("webhook-signature", sig);
    }
    req
}

fn assert_refused((status, id, body): (u16, Option<String>, Value), why: &str) {
    assert_eq!(status, 401, "{why}: {body}");
    assert_eq!(id, None, "{why}: no invocation exists");
    assert_eq!(body["code"], 401, "{why}: {body}");
    assert_eq!(body["source"], "ingress", "{why}: {body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("invalid webhook signature: "),
        "{why}: {body}"
    );
}

#[tokio::test]
async fn github_deliveries_are_verified_and_deduplicated() {
    let s = start().await;
    let body = br#"{"ref":"refs/heads/main"}"#;
    let tampered = br#"{"ref":"refs/heads/evil"}"#;
    let forged = [
        (
            github_signature(GITHUB_SECRET, tampered).into(),
            "tampered body",
        ),
        (github_signature("other", body).into(), "wrong secret"),
        (Some("sha256=not-hex".to_owned()), "malformed"),
        (None, "missing"),
    ];
    for (sig, why) in forged {
        assert_refused(deliver(github(&s, "gh-1", sig, body)).await, why);
    }
    assert_eq!(runs("gh-1"), 0, "forgeries ran nothing");
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body))
    );
    let r = reqwest::get(s.url(&format!("/restate/invocation/Hooks/github/{digest}/output")))
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "forgeries claimed no idempotency key");

    let sig = |body: &[u8]| Some(github_signature(GITHUB_SECRET, body));
    let (status, first, out) = deliver(github(&s, "gh-1", sig(body), body)).await;
    assert_eq!((status, out), (200, 1.into()));
    // GitHub redelivers the same body: the stored result, no second run.
    let (status, again, out) = deliver(github(&s, "gh-1", sig(body), body)).await;
    assert_eq!((status, out), (200, 1.into()));
    assert_eq!(again, first);
    assert_eq!(runs("gh-1"), 1);
    // X-GitHub-Delivery is not signed: a captured delivery replayed under a fresh delivery id
    // (or idempotency key) is the same invocation.
    let replay = github(&s, "gh-2", sig(body), body).header("idempotency-key", "fresh");
    let (status, replayed, _) = deliver(replay).await;
    assert_eq!(status, 200);
    assert_eq!(replayed, first);
    assert_eq!(runs("gh-2"), 0, "the replay ran nothing");
    // Another signed body is another invocation.
    let other_body = br#"{"action":"closed"}"#;
    let (status, other, out) = deliver(github(&s, "gh-3", sig(other_body), other_body)).await;
    assert_eq!((status, out), (200, 1.into()));
    assert_ne!(other, first);
}

#[tokio::test]
async fn standard_deliveries_are_verified_and_deduplicated() {
    let s = start().await;
    let body = br#"{"type":"invoice.paid"}"#;
    let now = now_secs();
    let sign =
        |id: &str, ts: i64, body: &[u8]| Some(standard_signature(STANDARD_SECRET, id, ts, body));
    let stale = now - 600;
    let forged = [
        (
            Some("msg_1"),
            Some(now),
            sign("msg_1", now, b"{}"),
            "tampered body",
        ),
        (
            Some("msg_1"),
            Some(now),
            Some(standard_signature("whsec_b3RoZXI=", "msg_1", now, body)),
            "wrong secret",
        ),
        (
            Some("msg_1"),
            Some(stale),
            sign("msg_1", stale, body),
            "stale",
        ),
        (
            Some("msg_1"),
            Some(now),
            sign("msg_2", now, body),
            "id not the signed one",
        ),
        (
            None,
            Some(now),
            sign("msg_1", now, body),
            "missing webhook-id",
        ),
        (
            Some("msg_1"),
            None,
            sign("msg_1", now, body),
            "missing webhook-timestamp",
        ),
        (Some("msg_1"), Some(now), None, "missing webhook-signature"),
    ];
    for (id, ts, sig, why) in forged {
        assert_refused(deliver(standard(&s, id, ts, sig, body)).await, why);
    }
    assert_eq!(runs("msg_1"), 0, "forgeries ran nothing");

    // A sender rotating secrets signs with both; one valid signature is enough.
    let rotated = format!(
        "{} {}",
        standard_signature("whsec_b3RoZXI=", "msg_1", now, body),
        sign("msg_1", now, body).unwrap()
    );
    let (status, first, out) =
        deliver(standard(&s, Some("msg_1"), Some(now), Some(rotated), body)).await;
    assert_eq!((status, out), (200, 1.into()));
    // A retry is signed afresh (new timestamp) with the same webhook-id: one invocation.
    let later = now + 30;
    let retry = standard(
        &s,
        Some("msg_1"),
        Some(later),
        sign("msg_1", later, body),
        body,
    );
    let (status, again, out) = deliver(retry).await;
    assert_eq!((status, out), (200, 1.into()));
    assert_eq!(again, first);
    // Concurrent duplicates of a new message: all answered with the one invocation.
    let deliveries = (0..3).map(|_| {
        deliver(standard(
            &s,
            Some("msg_2"),
            Some(now),
            sign("msg_2", now, body),
            body,
        ))
    });
    let results = futures::future::join_all(deliveries).await;
    assert!(
        results
            .iter()
            .all(|(status, _, out)| *status == 200 && *out == 1),
        "{results:?}"
    );
    assert!(results.iter().all(|(_, id, _)| id == &results[0].1));
    assert_ne!(results[0].1, first);
    assert_eq!((runs("msg_1"), runs("msg_2")), (1, 1));
}

/// A captured signed request replayed with fresh `idempotency-key` headers stays one
/// invocation: on a verified webhook the key comes from the signed material only.
#[tokio::test]
async fn an_idempotency_key_header_cannot_split_a_signed_event() {
    let s = start().await;
    let body = br#"{"type":"ping"}"#;
    let now = now_secs();
    let sig = || Some(standard_signature(STANDARD_SECRET, "msg_k", now, body));
    let (_, by_event, out) = deliver(standard(&s, Some("msg_k"), Some(now), sig(), body)).await;
    assert_eq!(out, 1);
    for key in ["my-key", "other-key"] {
        let keyed =
            standard(&s, Some("msg_k"), Some(now), sig(), body).header("idempotency-key", key);
        let (status, by_key, out) = deliver(keyed).await;
        assert_eq!(
            (status, out),
            (200, 1.into()),
            "the stored result, no second run"
        );
        assert_eq!(by_key, by_event);
    }
    assert_eq!(runs("msg_k"), 1);
    // The same for GitHub; the signature is still required.
    let gh_body = br#"{"zen":"k"}"#;
    let gh_sig = || Some(github_signature(GITHUB_SECRET, gh_body));
    let (_, gh_event, _) = deliver(github(&s, "gh-k", gh_sig(), gh_body)).await;
    let (_, gh_key, out) =
        deliver(github(&s, "gh-k", gh_sig(), gh_body).header("idempotency-key", "gh-key")).await;
    assert_eq!(out, 1);
    assert_eq!(gh_key, gh_event);
    assert_refused(
        deliver(github(&s, "gh-k", None, gh_body).header("idempotency-key", "gh-key")).await,
        "a key header does not replace the signature",
    );
    assert_eq!(runs("gh-k"), 1);
    // Ignored means ignored: a header that would be refused elsewhere (empty, too long) does
    // not turn a signed event away.
    for key in ["", &"k".repeat(1000)] {
        let keyed =
            standard(&s, Some("msg_k"), Some(now), sig(), body).header("idempotency-key", key);
        let (status, by_key, out) = deliver(keyed).await;
        assert_eq!((status, out), (200, 1.into()), "key {key:?}");
        assert_eq!(by_key, by_event);
    }
    assert_eq!(runs("msg_k"), 1);
}
