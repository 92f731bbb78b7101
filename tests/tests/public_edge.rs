//! The public edge of the webhook example: the public webhook listener serves the signed
//! Stripe endpoint and nothing else, keys come from the signed event and not from a client's
//! header, forged events leave nothing, slow, stalled or oversized bodies lock no signed event
//! out, and the ingress with a token refuses requests without it.

mod support;

use std::time::Duration;

use restate_runtime::webhook::stripe_signature;
use serde_json::{Value, json};
use support::{App, example_bin, free_port, invocations, now_secs, poll};

const SECRET: &str = "whsec_edge";
const TOKEN: &str = "ingress-token";

fn event(id: &str, invoice: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id,
        "type": "invoice.payment_failed",
        "data": {"object": {"id": invoice, "amount": 1}},
    }))
    .unwrap()
}

/// The example with a signing secret, a public webhook listener and an ingress token.
async fn start(dir: &std::path::Path) -> (App, String) {
    start_with(dir, &[]).await
}

/// As [`start`], with more settings.
async fn start_with(dir: &std::path::Path, more: &[(&'static str, &str)]) -> (App, String) {
    let public = free_port();
    let mut env = vec![
        ("STRIPE_WEBHOOK_SECRET", SECRET.to_owned()),
        ("PAYMENT_REMINDER_DELAY", "1h".to_owned()),
        ("RESTATE_WEBHOOK_ADDR", format!("127.0.0.1:{public}")),
        ("RESTATE_INGRESS_TOKEN", TOKEN.to_owned()),
    ];
    env.extend(more.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let app = App::start(&example_bin("webhooks"), &dir.join("data"), &env).await;
    (app, format!("http://127.0.0.1:{public}"))
}

#[tokio::test]
async fn slow_or_oversized_bodies_on_the_public_listener_lock_no_signed_event_out() {
    let dir = tempfile::tempdir().unwrap();
    let settings = [
        ("RESTATE_MAX_IN_FLIGHT", "4"),
        ("RESTATE_WEBHOOK_MAX_BODY_BYTES", "65536"),
    ];
    let (app, public) = start_with(dir.path(), &settings).await;
    let client = reqwest::Client::new();
    let path = "/WebhookCallbackRouter/onStripeEvent";
    // The public listener's own count: the admin connections the polls make come and go.
    const OPEN: &str = "restate_connections_open{listener=\"webhooks\"}";
    let [before] = support::metrics(&client, &app.admin, [OPEN]).await;

    // Twice as many senders as there are slots, each trickling a body: one byte of 1,000.
    let head = |length: usize| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n\
             content-length: {length}\r\n\r\n"
        )
    };
    let mut slow = Vec::new();
    for _ in 0..8 {
        slow.push(support::raw_request(&public, format!("{}{{", head(1000)).as_bytes()).await);
    }
    poll(Duration::from_secs(30), || {
        let (client, admin) = (client.clone(), app.admin.clone());
        async move {
            let [open] = support::metrics(&client, &admin, [OPEN]).await;
            open >= before + 8
        }
    })
    .await;

    // A signed event, sent to the public listener: it must be served.
    let served = |id: &'static str| {
        let body = event(id, &id.replace("evt", "in"));
        let request = client
            .post(format!("{public}{path}"))
            .header("content-type", "application/json")
            .header(
                "stripe-signature",
                stripe_signature(SECRET, now_secs(), &body),
            )
            .body(body)
            .send();
        async move {
            let r = request.await.unwrap();
            assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        }
    };
    // Served meanwhile (it was 429 while the trickles held every slot).
    served("evt_slow").await;

    // A declared length over the public listener's limit: 413 before any of the body is sent.
    let mut large = support::raw_request(&public, head(100_000).as_bytes()).await;
    assert_eq!(support::status_line(&mut large).await, "HTTP/1.1 413");
    drop((slow, large));
    // The trickles' bytes given back with their connections.
    poll(Duration::from_secs(30), || {
        let (client, admin) = (client.clone(), app.admin.clone());
        async move {
            let [open] = support::metrics(&client, &admin, [OPEN]).await;
            open <= before
        }
    })
    .await;

    // Senders stalling bodies one byte short of the limit until the budget of bytes read ahead
    // is spent (the next such body is refused): a signed event of a few hundred bytes is still
    // served (found from outside: it was 429 while four stalled bodies held the budget).
    const REFUSED: &str = "restate_requests_refused_total{listener=\"webhooks\"}";
    let mut stalled = Vec::new();
    loop {
        assert!(stalled.len() < 32, "the budget never ran out");
        let [refused_before] = support::metrics(&client, &app.admin, [REFUSED]).await;
        let mut bytes = head(65_536).into_bytes();
        bytes.extend(std::iter::repeat_n(b' ', 65_535));
        let mut stream = support::raw_request(&public, &bytes).await;
        // Refused as its bytes come when the budget is spent (then read to its end, so that
        // the client sees the answer); otherwise it waits for its last byte.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let refused = loop {
            let [refused] = support::metrics(&client, &app.admin, [REFUSED]).await;
            if refused > refused_before || std::time::Instant::now() > deadline {
                break refused > refused_before;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if refused {
            tokio::io::AsyncWriteExt::write_all(&mut stream, b" ")
                .await
                .unwrap();
            assert_eq!(support::status_line(&mut stream).await, "HTTP/1.1 429");
            break;
        }
        stalled.push(stream);
    }
    served("evt_stalled").await;
    drop(stalled);
    let routed = invocations(&client, &app.admin).await;
    assert_eq!(
        routed
            .iter()
            .filter(|i| i["service"] == "WebhookCallbackRouter")
            .count(),
        2,
        "only the signed events: {routed:?}"
    );
}

#[tokio::test]
async fn the_public_listener_serves_signed_webhooks_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let (app, public) = start(dir.path()).await;
    let client = reqwest::Client::new();
    let url = format!("{public}/WebhookCallbackRouter/onStripeEvent");

    // Everything but the webhook's own path: the same bare 404, and nothing created.
    let not_found = client
        .post(format!("{public}/nothing/here"))
        .send()
        .await
        .unwrap();
    assert_eq!(not_found.status(), 404);
    let bare = not_found.text().await.unwrap();
    let probes = [
        ("GET", "/restate/health".to_owned()),
        (
            "GET",
            "/restate/invocation/inv_1kSH1Bu0pwUO7oXK9wrX23a4O6iWszypSs/output".to_owned(),
        ),
        ("GET", "/restate/workflow/X/y/output".to_owned()),
        ("POST", "/restate/a/sign_1abc/resolve".to_owned()),
        ("GET", "/PaymentTracker/in_1/status".to_owned()),
        ("POST", "/PaymentTracker/in_1/status".to_owned()),
        (
            "POST",
            "/WebhookCallbackRouter/onStripeEvent/send".to_owned(),
        ),
        ("GET", "/WebhookCallbackRouter/onStripeEvent".to_owned()),
        ("POST", "/Unknown/handler".to_owned()),
        (
            "POST",
            "/restate/call/WebhookCallbackRouter/onStripeEvent".to_owned(),
        ),
        ("POST", "/WebhookCallbackRouter/onStripeEvent/".to_owned()),
        ("POST", "//WebhookCallbackRouter/onStripeEvent".to_owned()),
        (
            "POST",
            "/WebhookCallbackRouter/onStripeEvent?delay=1s".to_owned(),
        ),
    ];
    for (method, path) in &probes {
        let r = client
            .request(method.parse().unwrap(), format!("{public}{path}"))
            .header("content-type", "application/json")
            .header(
                "stripe-signature",
                stripe_signature(SECRET, now_secs(), b"{}"),
            )
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{method} {path}");
        assert_eq!(
            r.text().await.unwrap(),
            bare,
            "{method} {path} says no more"
        );
    }
    assert!(
        invocations(&client, &app.admin).await.is_empty(),
        "probes created nothing"
    );

    // A forged event: 401, nothing created.
    let body = event("evt_pub", "in_pub");
    for signature in [
        stripe_signature("whsec_other", now_secs(), &body),
        stripe_signature(SECRET, now_secs() - 3600, &body),
    ] {
        let r = client
            .post(&url)
            .header("content-type", "application/json")
            .header("stripe-signature", signature)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    assert!(
        invocations(&client, &app.admin).await.is_empty(),
        "forgeries created nothing"
    );

    // One signed request, replayed 100 times with fresh idempotency keys: one invocation.
    let signature = stripe_signature(SECRET, now_secs(), &body);
    for i in 0..100 {
        let r = client
            .post(&url)
            .header("content-type", "application/json")
            .header("stripe-signature", &signature)
            .header("idempotency-key", format!("fresh-{i}"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "delivery {i}");
    }
    let routed: Vec<Value> = invocations(&client, &app.admin)
        .await
        .into_iter()
        .filter(|i| i["service"] == "WebhookCallbackRouter")
        .collect();
    assert_eq!(routed.len(), 1, "{routed:?}");
    // Processed once: the tracker counted one failed payment.
    let status_url = format!("{}/PaymentTracker/in_pub/status", app.ingress);
    poll(Duration::from_secs(30), || {
        let (client, status_url) = (client.clone(), status_url.clone());
        async move {
            let r = client
                .get(status_url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap_or_default();
            v["status"] == "failed"
        }
    })
    .await;
    let v: Value = client
        .get(&status_url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["events"], json!(["evt_pub"]), "{v}");
    assert_eq!(v["failures"], 1, "{v}");
}

#[tokio::test]
async fn the_ingress_with_a_token_refuses_requests_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let (app, _) = start(dir.path()).await;
    let client = reqwest::Client::new();
    let url = format!("{}/PaymentTracker/in_tok/status", app.ingress);
    let missing = client.get(&url).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let v: Value = missing.json().await.unwrap();
    assert!(
        v["message"].as_str().unwrap().contains("ingress token"),
        "{v}"
    );
    let wrong = client.get(&url).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let longer = client
        .get(&url)
        .bearer_auth(format!("{TOKEN}x"))
        .send()
        .await
        .unwrap();
    assert_eq!(longer.status(), 401);
    let right = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(right.status(), 200);
    // A stranger's body is not read (nor waited for, nor held in memory): 401 at once,
    // though only one byte of it came.
    let head = "POST /PaymentTracker/in_tok/status HTTP/1.1\r\nHost: x\r\n\
                content-type: application/json\r\ncontent-length: 100000\r\n\r\n{";
    let mut stranger = support::raw_request(&app.ingress, head.as_bytes()).await;
    // Well before the body timeout (30 s), after which a body read would end.
    let answer = tokio::time::timeout(Duration::from_secs(15), support::status_line(&mut stranger));
    assert_eq!(answer.await.expect("answered at once"), "HTTP/1.1 401");
    // Probes need no token.
    let health = client
        .get(format!("{}/restate/health", app.ingress))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let head = client
        .head(format!("{}/restate/health", app.ingress))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    // The admin API on loopback answers loopback names only (DNS rebinding).
    let rebound = client
        .get(format!("{}/services", app.admin))
        .header("host", "evil.example:9070")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 403);
    let local = client
        .get(format!("{}/services", app.admin))
        .header("host", "localhost:9070")
        .send()
        .await
        .unwrap();
    assert_eq!(local.status(), 200);
    let services: Value = local.json().await.unwrap();
    let router = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "WebhookCallbackRouter")
        .unwrap();
    assert_eq!(
        router["handlers"][0]["webhook"],
        json!({"scheme": "stripe", "verified": true})
    );
}
