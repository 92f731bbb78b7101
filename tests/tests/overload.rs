//! Bounded under load: clients that send nothing, or never finish their headers, neither stop
//! service nor stay connected past the header timeout; a request over the in-flight cap and a connection over
//! the connection cap are answered `429` with `Retry-After` (their bodies read, never a reset);
//! and 3,000 concurrent 256 KiB sends to the example app get only `202` or `429`, keep peak
//! memory under a bound, and every acknowledged event is processed once.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{App, example_bin, poll};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_crash_app");

fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

/// A metric's value for one listener, from the admin API's `/metrics`.
async fn listener_metric(app: &App, name: &str, listener: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", app.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("{name}{{listener=\"{listener}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Reads until the server closes the connection (or `deadline` passes: `None`).
async fn read_to_close(stream: &mut TcpStream, deadline: Instant) -> Option<Vec<u8>> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) => return Some(all),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => return Some(all),
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn clients_that_never_finish_their_headers_are_closed_and_block_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("RESTATE_HEADER_TIMEOUT", "2s".to_owned())];
    let app = App::start(BIN, &dir.path().join("data"), &env).await;
    let mut slow = Vec::new();
    // Nothing at all, the start of an HTTP/2 preface, or a head that never ends.
    let starts: [&[u8]; 3] = [
        b"",
        b"PRI * HTTP",
        b"POST /Waits/busy HTTP/1.1\r\nHost: x\r\n",
    ];
    for i in 0..1000 {
        let mut stream = TcpStream::connect(addr(&app.ingress)).await.unwrap();
        stream.write_all(starts[i % 3]).await.unwrap();
        slow.push(stream);
    }
    // A normal request is served meanwhile.
    let r = reqwest::Client::new()
        .post(format!("{}/Waits/busy", app.ingress))
        .json(&1u64)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<u64>().await.unwrap(), 1);
    // Every slow connection is closed by the server after the header timeout.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, stream) in slow.iter_mut().enumerate() {
        assert!(
            read_to_close(stream, deadline).await.is_some(),
            "slow connection {i} still open after 30 s"
        );
    }
}

#[tokio::test]
async fn requests_over_the_in_flight_cap_get_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("RESTATE_MAX_IN_FLIGHT", "2".to_owned())];
    let app = App::start(BIN, &dir.path().join("data"), &env).await;
    let client = reqwest::Client::new();
    let busy = |ms: u64| {
        client
            .post(format!("{}/Waits/busy", app.ingress))
            .json(&ms)
            .send()
    };
    let held: Vec<_> = (0..2).map(|_| tokio::spawn(busy(3000))).collect();
    poll(Duration::from_secs(10), || async {
        listener_metric(&app, "restate_requests_in_flight", "ingress").await == 2
    })
    .await;
    let refused = busy(1).await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    let v: Value = refused.json().await.unwrap();
    assert_eq!(v["code"], 429, "{v}");
    assert!(listener_metric(&app, "restate_requests_refused_total", "ingress").await >= 1);
    for h in held {
        assert_eq!(h.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(busy(1).await.unwrap().status(), 200, "admitted again");
}

#[tokio::test]
async fn a_connection_over_the_cap_is_answered_429_after_its_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("RESTATE_MAX_CONNECTIONS", "16".to_owned()),
        ("RESTATE_HEADER_TIMEOUT", "10s".to_owned()),
    ];
    let app = App::start(BIN, &dir.path().join("data"), &env).await;
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut stream = TcpStream::connect(addr(&app.ingress)).await.unwrap();
        stream.write_all(b"GET /restate/hea").await.unwrap();
        held.push(stream);
    }
    poll(Duration::from_secs(10), || async {
        listener_metric(&app, "restate_connections_open", "ingress").await == 16
    })
    .await;
    // A 256 KiB request on one connection too many: read whole, then 429 and closed.
    let body = vec![b'7'; 256 * 1024];
    let mut stream = TcpStream::connect(addr(&app.ingress)).await.unwrap();
    let head = format!(
        "POST /Waits/busy HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let answer = read_to_close(&mut stream, Instant::now() + Duration::from_secs(30))
        .await
        .expect("the connection is closed after the answer");
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 429"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(listener_metric(&app, "restate_connections_refused_total", "ingress").await >= 1);
    drop(held);
}

/// A Stripe event of about 256 KiB (the padding is a field the handler ignores), built by
/// copying, so that 3,000 senders start at once.
fn big_event(i: usize) -> String {
    static PADDING: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| "x".repeat(256 * 1024));
    format!(
        r#"{{"id":"evt_{i}","type":"invoice.payment_failed","data":{{"object":{{"id":"in_{i}"}}}},"padding":"{}"}}"#,
        *PADDING
    )
}

/// The example app with its default limits under 3,000 concurrent 256 KiB sends: `202` or
/// `429` only, the process lives, its peak resident memory stays under 512 MiB (the bound for
/// these defaults: 128 admitted bodies of 256 KiB with their copies are about 100 MiB, 3,000
/// connections' read buffers at most 48 MiB, the store's cache 64 MiB), every acknowledged
/// event is processed once and a refused one left nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_concurrent_large_sends_stay_bounded_and_lose_nothing() {
    const EVENTS: usize = 3000;
    const BOUND: u64 = 512 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let env = [("PAYMENT_REMINDER_DELAY", "1h".to_owned())];
    let mut app = App::start(&example_bin("webhooks"), &dir.path().join("data"), &env).await;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let url = format!("{}/WebhookCallbackRouter/onStripeEvent/send", app.ingress);
    let send = |i: usize| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .post(url)
                .header("content-type", "application/json")
                .body(big_event(i))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    let started = Instant::now();
    let first: Vec<_> = (0..EVENTS).map(|i| tokio::spawn(send(i))).collect();
    let mut acknowledged = Vec::new();
    let mut refused = Vec::new();
    for (i, answer) in first.into_iter().enumerate() {
        match answer.await.unwrap() {
            Ok(202) => acknowledged.push(i),
            Ok(429) => refused.push(i),
            other => panic!("event {i}: {other:?} (only 202 or 429 allowed)"),
        }
    }
    assert!(app.running(), "the process lives");
    let peak = app.peak_rss();
    eprintln!(
        "{} of {EVENTS} acknowledged, {} refused with 429 in {:?}; peak RSS {} MiB",
        acknowledged.len(),
        refused.len(),
        started.elapsed(),
        peak >> 20
    );
    assert!(
        peak < BOUND,
        "peak resident memory {peak} bytes over {BOUND}"
    );
    assert!(!acknowledged.is_empty(), "some are admitted");
    // Every acknowledged event is processed once; a refused one left nothing behind.
    let events = |i: usize| {
        let (client, url) = (
            client.clone(),
            format!("{}/PaymentTracker/in_{i}/status", app.ingress),
        );
        async move {
            let v: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            v["events"].clone()
        }
    };
    for &i in &acknowledged {
        let expected = json!([format!("evt_{i}")]);
        poll(Duration::from_secs(60), || {
            let (events, expected) = (events(i), expected.clone());
            async move { events.await == expected }
        })
        .await;
    }
    for &i in refused.iter().take(100) {
        assert_eq!(
            events(i).await,
            json!([]),
            "refused event {i} was processed"
        );
    }
}
