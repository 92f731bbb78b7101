//! Attach and output waits for unknown ids hold nothing once answered: a flood of
//! `GET /restate/invocation/{id}/attach` and `…/output` for well-formed unknown ids, pipelined
//! over a few keep-alive connections, leaves the process's resident memory where it was.
//! Before the fix each one left its wait behind: 1,000,000 attaches took resident memory from
//! 7 MiB to 465 MiB. `ATTACH_FLOOD` sets the count: 200,000 by default, which a debug build
//! answers in about a minute (the old leak would show as ~90 MiB); the 1,000,000 run
//! with `ATTACH_FLOOD=1000000 cargo test --release -p e2e-tests --test attach_memory`.

mod support;

use restate_runtime::InvocationId;
use support::App;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_crash_app");
/// Requests written before their answers are read.
const PIPELINE: usize = 512;
const CONNECTIONS: usize = 4;
/// Growth of resident memory allowed over the whole flood: allocator slack and the store's
/// cache, far below the ~460 bytes a leaked wait costs per request.
const ALLOWED_GROWTH: u64 = 24 * 1024 * 1024;

/// `VmRSS` of a process in bytes.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

/// A well-formed id no invocation has: partition key 0, uuid `n`.
fn unknown_id(n: usize) -> String {
    let id = format!("inv_1{:010}{n:023}", 0);
    id.parse::<InvocationId>().expect("a well-formed id");
    id
}

/// Sends `count` requests (alternately attach and output, ids from `first`) over one
/// connection, `PIPELINE` at a time, and checks each answer is a 404.
async fn flood(addr: String, first: usize, count: usize) {
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let mut sent = 0;
    while sent < count {
        let batch = PIPELINE.min(count - sent);
        let mut requests = String::with_capacity(batch * 100);
        for i in first + sent..first + sent + batch {
            let what = if i % 2 == 0 { "attach" } else { "output" };
            requests.push_str(&format!(
                "GET /restate/invocation/{}/{what} HTTP/1.1\r\nhost: x\r\n\r\n",
                unknown_id(i)
            ));
        }
        stream.write_all(requests.as_bytes()).await.unwrap();
        // Every answer starts with a status line; count them until the batch is answered.
        let (mut answered, mut tail) = (0, Vec::new());
        while answered < batch {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the server closed the connection");
            tail.extend_from_slice(&buf[..n]);
            let mut at = 0;
            while let Some(found) = find(&tail[at..], b"HTTP/1.1 ") {
                let status = &tail[at + found + 9..(at + found + 12).min(tail.len())];
                if status.len() < 3 {
                    break;
                }
                assert_eq!(status, b"404", "an unknown id is a 404");
                answered += 1;
                at += found + 12;
            }
            tail.drain(..at);
        }
        sent += batch;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_attaches_for_unknown_ids_keep_nothing() {
    let total: usize = std::env::var("ATTACH_FLOOD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(BIN, &dir.path().join("data"), &[]).await;
    let addr = app.ingress.trim_start_matches("http://").to_owned();
    let pid = app.pid();
    // Warm-up: buffers, caches and the allocator's arenas reach their working size.
    flood(addr.clone(), 0, 20_000).await;
    let before = rss(pid);
    let per = total / CONNECTIONS;
    let floods =
        (0..CONNECTIONS).map(|c| tokio::spawn(flood(addr.clone(), 1_000_000 + c * per, per)));
    for f in floods {
        f.await.unwrap();
    }
    let after = rss(pid);
    eprintln!(
        "{total} attaches and outputs for unknown ids: resident memory {} -> {} MiB",
        before >> 20,
        after >> 20
    );
    assert!(
        after < before + ALLOWED_GROWTH,
        "resident memory grew from {before} to {after} bytes over {total} requests"
    );
}
