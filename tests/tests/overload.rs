//! Bounded under load: clients that send nothing, or never finish their headers, neither stop
//! service nor stay connected past the header timeout; a request over the in-flight cap and a connection over
//! the connection cap are answered `429` with `Retry-After` (their bodies read, never a reset);
//! and 3,000 concurrent 256 KiB sends to the example app, or an open-loop load over its
//! capacity, get only `202` or `429`, keep peak memory under a bound, and every acknowledged
//! event is processed once.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{App, example_bin, poll, try_metrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_crash_app");

fn addr(base: &str) -> String {
    base.trim_start_matches("http://").to_owned()
}

/// A metric's value for one listener, from the admin API's `/metrics`.
async fn listener_metric(app: &App, name: &str, listener: &str) -> u64 {
    labelled_metric(app, name, "listener", listener).await
}

/// The value of the series of `name` whose one label `label` is `value` (0 when absent).
async fn labelled_metric(app: &App, name: &str, label: &str, value: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", app.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let prefix = format!("{name}{{{label}=\"{value}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Sends `Waits/hold(payload)` with idempotency key `key` (the payload a JSON string).
async fn send_hold(app: &App, payload: &str, key: String) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/Waits/hold/send", app.ingress))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(payload.to_owned())
        .send()
        .await
        .unwrap()
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
    // Each was counted as a header timeout (the one served request was not).
    poll(Duration::from_secs(10), || async {
        listener_metric(&app, "restate_header_timeouts_total", "ingress").await == 1000
    })
    .await;
}

/// An HTTP/2 connection that sends no request, answering the server's pings, is closed after
/// about the header timeout, as an idle HTTP/1 connection is (it used to stay open for good).
#[tokio::test]
async fn an_idle_http2_connection_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("RESTATE_HEADER_TIMEOUT", "1s".to_owned())];
    let app = App::start(BIN, &dir.path().join("data"), &env).await;
    // The client preface and an empty SETTINGS frame.
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    let mut stream = support::raw_request(&app.ingress, preface).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let closed = loop {
        let mut head = [0u8; 9];
        match tokio::time::timeout_at(deadline, stream.read_exact(&mut head)).await {
            Err(_) => break false,
            Ok(Err(_)) => break true,
            Ok(Ok(_)) => {}
        }
        let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; length];
        if stream.read_exact(&mut payload).await.is_err() {
            break true;
        }
        // Acknowledge SETTINGS and answer PINGs, as a live client does.
        let answer = match (head[3], head[4] & 1) {
            (4, 0) => b"\0\0\0\x04\x01\0\0\0\0".to_vec(),
            (6, 0) => [&[0, 0, 8, 6, 1, 0, 0, 0, 0][..], &payload].concat(),
            _ => continue,
        };
        if stream.write_all(&answer).await.is_err() {
            break true;
        }
    };
    assert!(closed, "an idle HTTP/2 connection stayed open for 30 s");
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
    // Two calls of a handler that works for a while hold both slots.
    let held: Vec<_> = (0..2).map(|_| tokio::spawn(busy(8000))).collect();
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
    for call in held {
        assert_eq!(call.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(busy(1).await.unwrap().status(), 200, "admitted again");
}

/// Clients trickling bodies, and HTTP/2 streams that send their heads and no body, hold
/// connections, not slots in flight: with four times as many of them as the cap, a call is
/// served at once (found from outside: 128 senders trickling bodies had every other request
/// answered `429`, for as long as they kept it up). A body that does not arrive within the
/// body timeout gets `408`, with the CORS headers a browser needs to see it.
#[tokio::test]
async fn slow_bodies_and_bodiless_http2_streams_hold_no_slot() {
    use futures::StreamExt as _;
    use http_body_util::StreamBody;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("RESTATE_MAX_IN_FLIGHT", "4".to_owned()),
        ("RESTATE_BODY_TIMEOUT", "5s".to_owned()),
    ];
    let app = App::start(BIN, &dir.path().join("data"), &env).await;
    let head = "POST /Waits/busy HTTP/1.1\r\nHost: x\r\nOrigin: http://page.example\r\n\
                Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n1";
    let mut trickles = Vec::new();
    for _ in 0..8 {
        trickles.push(support::raw_request(&app.ingress, head.as_bytes()).await);
    }
    // HTTP/2 connections take as many streams at once as the cap: two connections full of
    // streams with no body, and one more.
    let mut senders = Vec::new();
    for _ in 0..3 {
        let stream = TcpStream::connect(addr(&app.ingress)).await.unwrap();
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        senders.push(sender);
    }
    type Frames = futures::stream::BoxStream<
        'static,
        Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>,
    >;
    let h2_call = |connection: usize, body: Frames| {
        let mut sender = senders[connection].clone();
        let request = hyper::Request::post(format!("{}/Waits/busy", app.ingress))
            .header("content-type", "application/json")
            .body(StreamBody::new(body))
            .unwrap();
        async move { sender.send_request(request).await.unwrap().status() }
    };
    let bodiless: Vec<_> = (0..8)
        .map(|i| tokio::spawn(h2_call(i % 2, futures::stream::pending().boxed())))
        .collect();
    poll(Duration::from_secs(10), || async {
        listener_metric(&app, "restate_request_bodies_arriving", "ingress").await == 16
    })
    .await;
    assert_eq!(
        listener_metric(&app, "restate_requests_in_flight", "ingress").await,
        0
    );
    // Served meanwhile, on HTTP/1 and on HTTP/2.
    let served = reqwest::Client::new()
        .post(format!("{}/Waits/busy", app.ingress))
        .json(&1)
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    let one = hyper::body::Frame::data(bytes::Bytes::from_static(b"1"));
    assert_eq!(
        h2_call(2, futures::stream::iter([Ok(one)]).boxed()).await,
        200
    );
    // The body timeout ends each: 408, with the CORS headers for the page that sent it.
    for mut trickle in trickles {
        let answer = read_to_close_or_answer(&mut trickle).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        let answer = answer.to_ascii_lowercase();
        assert!(
            answer.contains("access-control-allow-origin: http://page.example"),
            "{answer}"
        );
    }
    for stream in bodiless {
        assert_eq!(stream.await.unwrap(), 408);
    }
    assert_eq!(
        listener_metric(&app, "restate_request_bodies_arriving", "ingress").await,
        0
    );
}

/// The admin API's sign-in form reads a body from anyone (it has no token yet): senders
/// trickling it hold connections, not slots, so the admin API serves its operator meanwhile
/// (they held every slot, with no body timeout, for as long as they kept it up).
#[tokio::test]
async fn strangers_trickling_the_sign_in_form_hold_no_admin_slot() {
    const TOKEN: &str = "admin-secret";
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("RESTATE_MAX_IN_FLIGHT", "4".to_owned()),
        ("RESTATE_ADMIN_TOKEN", TOKEN.to_owned()),
    ];
    let app = App::start(BIN, &dir.path().join("data"), &env).await;
    let host = addr(&app.admin);
    let head = format!(
        "POST /ui/login HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nt"
    );
    let mut trickles = Vec::new();
    for _ in 0..8 {
        trickles.push(support::raw_request(&app.admin, head.as_bytes()).await);
    }
    let client = reqwest::Client::new();
    let operator = |path: &str| {
        client
            .get(format!("{}{path}", app.admin))
            .bearer_auth(TOKEN)
            .send()
    };
    let arriving = "restate_request_bodies_arriving{listener=\"admin\"} 8";
    poll(Duration::from_secs(10), || async {
        let metrics = operator("/metrics").await.unwrap().text().await.unwrap();
        metrics.lines().any(|l| l == arriving)
    })
    .await;
    assert_eq!(operator("/services").await.unwrap().status(), 200);
    // A stranger gets no share of the budget of bodies read ahead, only its connection's own
    // few KiB: a larger sign-in form is refused before any of it is read.
    let large = head.replace("Content-Length: 1000", "Content-Length: 100000");
    let mut large = support::raw_request(&app.admin, large.as_bytes()).await;
    assert_eq!(support::status_line(&mut large).await, "HTTP/1.1 413");
    drop(trickles);
}

/// The first line and what came with it of the answer on `stream` (within 30 s).
async fn read_to_close_or_answer(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("{e}"),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Attaches wait without a slot: more of them than the cap do not keep out the request that
/// would end their waits (Restate has no such cap at all).
#[tokio::test]
async fn attaches_do_not_hold_the_in_flight_cap() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("RESTATE_MAX_IN_FLIGHT", "2".to_owned())];
    let app = App::start(BIN, &dir.path().join("data"), &env).await;
    let client = reqwest::Client::new();
    let sent: Value = client
        .post(format!("{}/Waits/busy/send", app.ingress))
        .header("connection", "close")
        .json(&5000)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = sent["invocationId"].as_str().unwrap().to_owned();
    let attaches: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{}/restate/invocation/{id}/attach", app.ingress);
            tokio::spawn(reqwest::get(url))
        })
        .collect();
    // Each on a connection of its own: all four are in, none holds a slot.
    poll(Duration::from_secs(10), || async {
        listener_metric(&app, "restate_connections_open", "ingress").await == 4
            && listener_metric(&app, "restate_requests_in_flight", "ingress").await == 0
    })
    .await;
    assert!(attaches.iter().all(|a| !a.is_finished()));
    // Four attaches wait: and yet requests get in at once, two at a time as the cap says.
    for _ in 0..3 {
        let r = client
            .post(format!("{}/Waits/busy", app.ingress))
            .header("connection", "close")
            .json(&1)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    for waited in attaches {
        assert_eq!(waited.await.unwrap().unwrap().status(), 200);
    }
}

/// Responses their clients never read hold a bounded number of bytes for a bounded time: an
/// output over `RESTATE_UNSENT_RESPONSE_BYTES` is answered `429` with `Retry-After` (a call's
/// result is sent all the same), and a body
/// nobody takes for the body timeout closes its connection and gives its bytes back (found
/// from outside: 200 such readers of a 10 MB output held 2.15 GB, for good).
#[tokio::test]
async fn responses_nobody_reads_hold_bounded_bytes_for_a_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("RESTATE_UNSENT_RESPONSE_BYTES", (16 << 20).to_string()),
        ("RESTATE_BODY_TIMEOUT", "2s".to_owned()),
    ];
    let app = App::start(BIN, &dir.path().join("data"), &env).await;
    let client = reqwest::Client::new();
    let big = "x".repeat(8 << 20);
    let called = client
        .post(format!("{}/Waits/echo", app.ingress))
        .header("idempotency-key", "big")
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(called.status(), 200);
    assert_eq!(called.json::<String>().await.unwrap(), big);
    let output = "/restate/invocation/Waits/echo/big/output";
    // Eight readers that take nothing, each with a small receive buffer.
    let mut silent = Vec::new();
    for _ in 0..8 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket
            .connect(addr(&app.ingress).parse().unwrap())
            .await
            .unwrap();
        let head = format!("GET {output} HTTP/1.1\r\nhost: x\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        silent.push(stream);
    }
    // About 64 MiB asked against a budget of 16 (the kernel's buffers take up to 4 MiB of
    // each): reads are refused while they hold it.
    let get = || client.get(format!("{}{output}", app.ingress)).send();
    poll(Duration::from_secs(10), || async {
        let r = get().await.unwrap();
        r.status() == 429 && r.headers().get("retry-after").is_some()
    })
    .await;
    // An invocation's result is sent all the same: it cannot be asked for again.
    let result = client
        .post(format!("{}/Waits/echo", app.ingress))
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(result.status(), 200);
    assert_eq!(result.json::<String>().await.unwrap(), big);
    // Nothing taken for the body timeout: their connections are closed, the bytes given back.
    poll(Duration::from_secs(20), || async {
        let r = get().await.unwrap();
        r.status() == 200 && r.json::<String>().await.is_ok_and(|out| out == big)
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    for stream in &mut silent {
        let read = read_to_close(stream, deadline).await;
        assert!(
            read.is_some(),
            "a reader that took nothing is still connected"
        );
    }
}

/// Calls whose invocations suspended wait without a slot (workflows awaiting an approval,
/// called): more of them than the cap do not keep out new requests, the approvals among
/// them, and each call is answered when its workflow ends. Until it suspends, a call holds
/// its slot.
#[tokio::test]
async fn calls_waiting_on_suspended_invocations_do_not_hold_the_in_flight_cap() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("RESTATE_MAX_IN_FLIGHT", "2".to_owned()),
        ("RESTATE_SUSPEND_AFTER", "50ms".to_owned()),
        ("STEPS_FILE", dir.path().join("steps").display().to_string()),
        ("STEP_MS", "1".to_owned()),
    ];
    let app = App::start(BIN, &dir.path().join("data"), &env).await;
    let in_flight = || listener_metric(&app, "restate_requests_in_flight", "ingress");
    // A call whose handler runs (here for 3 s, never suspending) holds its slot throughout.
    let url = format!("{}/Waits/busy", app.ingress);
    let busy =
        tokio::spawn(async move { reqwest::Client::new().post(url).json(&3000).send().await });
    poll(Duration::from_secs(10), || async { in_flight().await == 1 }).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(in_flight().await, 1, "a running call gave its slot back");
    assert_eq!(busy.await.unwrap().unwrap().status(), 200);
    let mut calls = Vec::new();
    for n in 0..4 {
        let url = format!("{}/Approval/a{n}/run", app.ingress);
        calls.push(tokio::spawn(async move {
            reqwest::Client::new().post(url).send().await.unwrap()
        }));
        // The call gives its slot back once its workflow suspended on the promise.
        let suspended = format!(
            "{}/invocations?service=Approval&status=suspended",
            app.admin
        );
        poll(Duration::from_secs(10), || async {
            let listed: Value = reqwest::get(&suspended)
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            listed["invocations"].as_array().unwrap().len() == n + 1 && in_flight().await == 0
        })
        .await;
    }
    // Four calls wait, more than the cap: requests still get in, as many at once as it says.
    for n in 0..4 {
        let r = reqwest::Client::new()
            .post(format!("{}/Approval/a{n}/approve", app.ingress))
            .header("connection", "close")
            .json(&format!("yes {n}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    for (n, call) in calls.into_iter().enumerate() {
        let answer = call.await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(
            answer.json::<String>().await.unwrap(),
            format!("approved: yes {n}")
        );
    }
}

/// The crash app with a cap of 16 connections and `header_timeout`, all 16 taken by
/// connections that have sent `prefix` of a request (and nothing more yet).
async fn app_at_its_connection_cap(
    dir: &std::path::Path,
    header_timeout: &str,
    prefix: &[u8],
) -> (App, Vec<TcpStream>) {
    let env = [
        ("RESTATE_MAX_CONNECTIONS", "16".to_owned()),
        ("RESTATE_HEADER_TIMEOUT", header_timeout.to_owned()),
    ];
    let app = App::start(BIN, &dir.join("data"), &env).await;
    // The start's health check has closed its connection (else one of the 16 is over the cap).
    poll(Duration::from_secs(10), || async {
        listener_metric(&app, "restate_connections_open", "ingress").await == 0
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut stream = TcpStream::connect(addr(&app.ingress)).await.unwrap();
        stream.write_all(prefix).await.unwrap();
        held.push(stream);
    }
    poll(Duration::from_secs(10), || async {
        listener_metric(&app, "restate_connections_open", "ingress").await == 16
    })
    .await;
    (app, held)
}

#[tokio::test]
async fn a_connection_over_the_cap_is_answered_429_after_its_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let (app, held) = app_at_its_connection_cap(dir.path(), "10s", b"GET /restate/hea").await;
    // A 256 KiB request on one connection too many: read whole, then 429 and closed.
    let body = vec![b'7'; 256 * 1024];
    let mut stream = TcpStream::connect(addr(&app.ingress)).await.unwrap();
    let head = format!(
        "POST /Waits/busy HTTP/1.1\r\nHost: x\r\nOrigin: http://app.example\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
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
    // A browser sees it: the ingress's CORS headers come with the refusal.
    assert!(
        answer.contains("access-control-allow-origin: http://app.example"),
        "{answer}"
    );
    assert!(listener_metric(&app, "restate_connections_refused_total", "ingress").await >= 1);
    drop(held);
}

/// A flood of connections over the cap, more than are refused at once (at least 256): each is
/// still answered `429` in turn (accepting pauses while the refusals are busy, so the rest wait
/// in the kernel's backlog), none closed unanswered or reset, and the held ones are unharmed.
#[tokio::test]
async fn a_flood_of_connections_over_the_cap_is_answered_429_every_one() {
    let dir = tempfile::tempdir().unwrap();
    let (app, held) = app_at_its_connection_cap(dir.path(), "20s", b"GET /restate/hea").await;
    // Over the cap, each sends its request whole but only after a pause, so that the
    // refusals in progress pile up while more connections arrive.
    const FLOOD: usize = 600;
    let flood: Vec<_> = (0..FLOOD)
        .map(|i| {
            let target = addr(&app.ingress);
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(target).await.map_err(|e| e.to_string())?;
                tokio::time::sleep(Duration::from_millis(300 + (i as u64 % 7) * 50)).await;
                let head = "POST /Waits/busy HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1\r\n\r\n0";
                stream.write_all(head.as_bytes()).await.map_err(|e| e.to_string())?;
                let answer = read_to_close(&mut stream, Instant::now() + Duration::from_secs(60))
                    .await
                    .ok_or("no answer within 60 s")?;
                Ok::<_, String>(String::from_utf8_lossy(&answer).to_lowercase())
            })
        })
        .collect();
    let mut unanswered = Vec::new();
    for (i, answer) in flood.into_iter().enumerate() {
        match answer.await.unwrap() {
            Ok(a) if a.starts_with("http/1.1 429") && a.contains("retry-after: 1") => {}
            other => unanswered.push((i, other)),
        }
    }
    assert!(
        unanswered.is_empty(),
        "{} of {FLOOD} over the cap were not answered 429, e.g. {:?}",
        unanswered.len(),
        &unanswered[..unanswered.len().min(3)]
    );
    assert!(
        listener_metric(&app, "restate_connections_refused_total", "ingress").await >= FLOOD as u64
    );
    // The held connections still finish their requests.
    for mut stream in held {
        stream
            .write_all(b"lth HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_to_close(&mut stream, Instant::now() + Duration::from_secs(30))
            .await
            .expect("a held connection is answered");
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    }
}

/// Clients over the cap that connect and send nothing hold the refusals for at most their
/// deadline: accepting pauses for a bounded time only, and once connections free up under the
/// cap a new client is served, whatever the silent ones do.
#[tokio::test]
async fn silent_connections_over_the_cap_do_not_stop_accepting() {
    let dir = tempfile::tempdir().unwrap();
    let (app, held) = app_at_its_connection_cap(dir.path(), "3s", b"").await;
    // More silent connections than there are refusals (256).
    let mut silent = Vec::new();
    for _ in 0..400 {
        if let Ok(stream) = TcpStream::connect(addr(&app.ingress)).await {
            silent.push(stream);
        }
    }
    drop(held);
    // Served once under the cap again, while the silent ones are still open (those accepted
    // under the cap meanwhile hold it until their header timeout).
    poll(Duration::from_secs(30), || async {
        let health = reqwest::get(format!("{}/restate/health", app.ingress)).await;
        health.is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(!silent.is_empty());
    drop(silent);
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
/// these defaults: bodies read ahead are at most 64 MiB beyond 8 KiB per connection, about
/// 130 MiB with their copies, 3,000 connections' 8 KiB and read buffers at most 72 MiB, the
/// store's cache 64 MiB; measured 366–391 MiB, 330 MiB before bodies were read ahead on the
/// ingress), every acknowledged
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
    let mut other = Vec::new();
    for (i, answer) in first.into_iter().enumerate() {
        match answer.await.unwrap() {
            Ok(202) => acknowledged.push(i),
            Ok(429) => refused.push(i),
            answer => other.push((i, answer)),
        }
    }
    if !other.is_empty() {
        // What the listeners counted, to tell a closed connection's cause.
        let counted = try_metrics(
            &client,
            &app.admin,
            [
                "restate_header_timeouts_total",
                "restate_connections_refused_total",
                "restate_requests_refused_total",
                "restate_requests_rejected_total",
            ],
        )
        .await;
        panic!(
            "{} answers other than 202 or 429, first {:?}; header timeouts, connections \
             refused, requests refused, requests rejected: {counted:?}",
            other.len(),
            &other[..other.len().min(3)]
        );
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
    assert_processed_once(&app, &client, &acknowledged, &refused).await;
}

/// Every acknowledged event is processed once; a refused one left nothing behind.
async fn assert_processed_once(
    app: &App,
    client: &reqwest::Client,
    acknowledged: &[usize],
    refused: &[usize],
) {
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
    for &i in acknowledged {
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

/// What one request of the open-loop load got: its status and how long it took.
type Answer = (usize, u16, Duration);

/// Open-loop load: one 256 KiB send every `1 / rate` seconds for `seconds`, whether or not
/// earlier ones were answered (as independent senders do).
async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    first: usize,
    rate: f64,
    seconds: f64,
) -> Vec<Answer> {
    let count = (rate * seconds) as usize;
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = Vec::with_capacity(count);
    for i in first..first + count {
        ticks.tick().await;
        let (client, url) = (client.clone(), url.to_owned());
        requests.push(tokio::spawn(async move {
            let started = Instant::now();
            let status = client
                .post(url)
                .header("content-type", "application/json")
                .body(big_event(i))
                .send()
                .await
                .map(|r| r.status().as_u16());
            match status {
                Ok(status) => (i, status, started.elapsed()),
                Err(e) => panic!("event {i}: {e} (only 202 or 429 allowed)"),
            }
        }));
    }
    let mut answers = Vec::with_capacity(count);
    for request in requests {
        answers.push(request.await.unwrap());
    }
    answers
}

/// Open-loop load at `OVERLOAD_FACTOR` (default 2) times the capacity just measured, with
/// 256 KiB events to the example app at its default limits: `202`, or `429` with
/// `Retry-After` (over the memory bound or the writer's queue bound) only, the process
/// lives, peak resident memory stays under the same 512 MiB bound as the burst above, and every
/// acknowledged event is processed once. Prints throughput, the share of `429`s, the p99 of
/// admitted requests and the peak memory (the overload rows of `BENCHMARKS.md` come from a
/// release run of this test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_load_over_capacity_gets_202_or_429_and_stays_bounded() {
    // The bound from the default limits, in MiB: bodies being read (128 in flight of 256 KiB,
    // and the copy each makes when accepted) 64; input held by accepted work that runs behind
    // (RESTATE_MAX_INVOCATION_BYTES, 128, twice: the record's and the handler's copy) 256;
    // writes queued for the journal (RESTATE_WRITER_QUEUE_BYTES) 64; the store's cache
    // (RESTATE_CACHE_BYTES) 64; read buffers of up to 2,000 waiting connections (16 KiB each)
    // 32; the process itself 32.
    const BOUND: u64 = (64 + 256 + 64 + 64 + 32 + 32) << 20;
    let factor: f64 = std::env::var("OVERLOAD_FACTOR")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2.0);
    let dir = tempfile::tempdir().unwrap();
    let env = [("PAYMENT_REMINDER_DELAY", "1h".to_owned())];
    let mut app = App::start(&example_bin("webhooks"), &dir.path().join("data"), &env).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let url = format!("{}/WebhookCallbackRouter/onStripeEvent/send", app.ingress);
    // Capacity: as many senders in a closed loop as requests are admitted at once (128 by
    // default) for 4 s, counted after the first (the log grows to its working size then).
    const SENDERS: usize = 128;
    let started = Instant::now();
    let warm = Duration::from_secs(1);
    let workers = (0..SENDERS).map(|w| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut i = w;
            while started.elapsed() < Duration::from_secs(4) {
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(big_event(i))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202, "below capacity every send is accepted");
                sent.push((i, started.elapsed()));
                i += SENDERS;
            }
            sent
        })
    });
    let mut acknowledged = Vec::new();
    let mut counted = 0;
    for worker in workers {
        for (i, at) in worker.await.unwrap() {
            acknowledged.push(i);
            counted += usize::from(at > warm);
        }
    }
    let capacity = counted as f64 / (started.elapsed() - warm).as_secs_f64();
    let rate = capacity * factor;
    let answers = open_loop(&client, &url, 1_000_000, rate, 5.0).await;
    let elapsed = started.elapsed();
    assert!(app.running(), "the process lives");
    let mut refused = Vec::new();
    let mut admitted = Vec::new();
    for &(i, status, took) in &answers {
        match status {
            202 => {
                acknowledged.push(i);
                admitted.push(took);
            }
            // 429 over the memory bound or while the writer's queue is over its bound
            // (README: `RESTATE_WRITER_QUEUE_BYTES`): a retry is asked for.
            429 => refused.push(i),
            other => panic!("event {i}: {other} (only 202 or 429 allowed)"),
        }
    }
    admitted.sort();
    let p99 = admitted
        .get(admitted.len() * 99 / 100)
        .copied()
        .unwrap_or_default();
    let peak = app.peak_rss();
    eprintln!(
        "overload {factor}x: capacity {capacity:.0}/s, offered {rate:.0}/s for 5 s: \
         {} accepted ({:.0}/s), {:.1}% refused with 429, p99 of accepted {p99:?}, \
         peak RSS {} MiB (whole run {elapsed:?})",
        admitted.len(),
        admitted.len() as f64 / 5.0,
        100.0 * refused.len() as f64 / answers.len() as f64,
        peak >> 20
    );
    assert!(
        peak < BOUND,
        "peak resident memory {peak} bytes over {BOUND}"
    );
    assert!(!admitted.is_empty(), "some are admitted under overload");
    assert_processed_once(&app, &client, &acknowledged, &refused).await;
}

/// Accepted work that runs behind is bounded in memory: while the invocations in memory hold
/// `RESTATE_MAX_INVOCATION_BYTES` of input, a new send from outside gets `429` with
/// `Retry-After` (a duplicate still gets its answer), and once they finish new work is
/// accepted again.
#[tokio::test]
async fn input_held_in_memory_is_bounded_and_frees_up() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("RESTATE_MAX_INVOCATION_BYTES", (1024 * 1024).to_string()),
        ("STEP_MS", "3000".to_owned()),
    ];
    let app = App::start(BIN, &dir.path().join("data"), &env).await;
    let client = reqwest::Client::new();
    let payload = serde_json::to_string(&"p".repeat(100 * 1024)).unwrap();
    let hold = |key: String| send_hold(&app, &payload, key);
    let mut accepted = 0;
    let refusal = loop {
        let r = hold(format!("k{accepted}")).await;
        match r.status().as_u16() {
            202 => accepted += 1,
            429 => break r,
            other => panic!("hold {accepted}: {other}"),
        }
        assert!(accepted <= 10, "1 MiB holds at most ten 100 KiB inputs");
    };
    assert!(accepted >= 9, "only {accepted} accepted below the bound");
    assert_eq!(refusal.headers()["retry-after"], "1");
    assert_eq!(refusal.headers()["connection"], "close");
    let body = refusal.text().await.unwrap();
    assert!(body.contains("RESTATE_MAX_INVOCATION_BYTES"), "{body}");
    // A duplicate is answered, not refused.
    assert_eq!(hold("k0".into()).await.status(), 202);
    // Once the holders finish, new work is accepted again and nothing is held.
    poll(Duration::from_secs(60), || {
        let r = hold(format!("k{accepted}"));
        async move { r.await.status() == 202 }
    })
    .await;
    poll(Duration::from_secs(60), || {
        let (client, admin) = (client.clone(), app.admin.clone());
        async move {
            support::metrics(&client, &admin, ["restate_invocation_input_bytes"]).await == [0]
        }
    })
    .await;
    let [rejected] =
        support::metrics(&client, &app.admin, ["restate_requests_rejected_total"]).await;
    // The refusal above and those of the polls while the holders ran.
    assert!(rejected >= 1, "refusals are counted");
}

/// A writer whose queue is over `RESTATE_WRITER_QUEUE_BYTES` refuses new invocations as an
/// overload: `429` with `Retry-After` (never `503`, which says the store failed), counted
/// under the reason `writer_queue`; every send it acknowledged runs, and once the writer
/// catches up a send is accepted again.
#[tokio::test]
async fn a_writer_queue_over_its_bound_refuses_new_work_with_429() {
    let dir = tempfile::tempdir().unwrap();
    // One byte: any write still waiting for the writer refuses the next invocation.
    let env = [
        ("RESTATE_WRITER_QUEUE_BYTES", "1".to_owned()),
        ("STEP_MS", "0".to_owned()),
    ];
    let app = App::start(BIN, &dir.path().join("data"), &env).await;
    let payload = serde_json::to_string(&"w".repeat(64 * 1024)).unwrap();
    let (mut accepted, mut refusal, mut round) = (Vec::new(), None, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while refusal.is_none() {
        assert!(Instant::now() < deadline, "no refusal in 60 s of bursts");
        let keys: Vec<String> = (0..64).map(|i| format!("r{round}-{i}")).collect();
        let burst = keys
            .iter()
            .map(|key| send_hold(&app, &payload, key.clone()));
        let answers = futures::future::join_all(burst).await;
        for (key, r) in keys.into_iter().zip(answers) {
            match r.status().as_u16() {
                202 => accepted.push(r.json::<Value>().await.unwrap()["invocationId"].clone()),
                429 => refusal = Some((key, r)),
                other => panic!("{key}: {other} (only 202 or 429 allowed)"),
            }
        }
        round += 1;
    }
    let (key, refusal) = refusal.unwrap();
    assert_eq!(refusal.headers()["retry-after"], "1", "{key}");
    let body = refusal.text().await.unwrap();
    assert!(body.contains("RESTATE_WRITER_QUEUE_BYTES"), "{body}");
    let rejected = "restate_requests_rejected_total";
    let counted = labelled_metric(&app, rejected, "reason", "writer_queue").await;
    assert!(counted >= 1, "refusals counted under writer_queue");
    // Every acknowledged send runs to its end.
    for id in &accepted {
        let id = id.as_str().unwrap();
        assert_eq!(support::output(&app, id).await, json!(64 * 1024), "{id}");
    }
    // The queue empties once nothing arrives: the refused key is accepted on a retry.
    poll(Duration::from_secs(30), || {
        let r = send_hold(&app, &payload, key.clone());
        async move { r.await.status() == 202 }
    })
    .await;
}

/// A declared length over `RESTATE_MAX_BODY_BYTES` is answered `413` at once: no
/// `100 Continue` invites the client to send it.
#[tokio::test]
async fn a_declared_body_over_the_limit_gets_413_without_100_continue() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(BIN, &dir.path().join("data"), &[]).await;
    let mut stream = support::raw_request(
        &app.ingress,
        b"POST /Waits/busy/send HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n\
          expect: 100-continue\r\ncontent-length: 99999999999\r\n\r\n",
    )
    .await;
    assert_eq!(support::status_line(&mut stream).await, "HTTP/1.1 413");
}

/// A body slower than `RESTATE_BODY_TIMEOUT` is answered `408` and counted; nothing is
/// created.
#[tokio::test]
async fn a_body_slower_than_the_body_timeout_gets_408() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("RESTATE_BODY_TIMEOUT", "1s".to_owned())];
    let app = App::start(BIN, &dir.path().join("data"), &env).await;
    let mut stream = support::raw_request(
        &app.ingress,
        b"POST /Waits/busy/send HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n\
          content-length: 100\r\n\r\n1",
    )
    .await;
    assert_eq!(support::status_line(&mut stream).await, "HTTP/1.1 408");
    let client = reqwest::Client::new();
    let [rejected] =
        support::metrics(&client, &app.admin, ["restate_requests_rejected_total"]).await;
    assert_eq!(rejected, 1);
    assert!(
        support::invocations(&client, &app.admin).await.is_empty(),
        "nothing was created"
    );
}
