//! Suspended invocations leave memory: the `sleepers` example with `RESTATE_SUSPEND_AFTER=50ms`
//! gets 3000 one-hour naps (after a warm-up batch of as many); once they are all suspended, the
//! growth of the process's resident memory (`VmRSS`) and of its live heap (counted by the
//! example's allocator) per invocation stays under allowances derived from measurements (see
//! the constants) that an implementation keeping every waiting handler in memory exceeds. A
//! control run with suspension effectively off (1 h) checks that the allowances do catch that.
//! The release-build bench with 100k invocations is `sleepbench` (BENCHMARKS.md).

mod support;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use support::{App, example_bin, gauges, poll};

/// Naps measured, after a warm-up batch (see `naps`).
const INVOCATIONS: usize = 3000;
const WARM_UP: usize = 3000;

/// Live heap bytes allowed per suspended invocation. Measured (2026-11-29, debug and release
/// alike): 820–880 (the finish channel the engine keeps per suspended invocation, its timer
/// entry, map capacity, redb's cached pages of the new records). A waiting handler kept in
/// memory: ~6300.
const HEAP_ALLOWANCE: u64 = 2500;
/// Resident bytes allowed per suspended invocation. Measured: 950–1000 (debug), 550–1300
/// (release). With 200 ms instead of 50 ms before suspension, release builds hold ~2500
/// handlers at once before they suspend and the allocator's fragmentation made it 1900–3100.
/// A waiting handler kept in memory: ~7000.
const RSS_ALLOWANCE: u64 = 3500;

/// `(live heap bytes, peak live heap bytes, pid)` from the example's `SLEEPERS_HEAP_FILE`.
fn heap(path: &Path) -> (u64, u64, u32) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let f: Vec<u64> = text
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    (f[0], f[1], f[2] as u32)
}

/// `VmRSS` / `VmHWM` of a process in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap()
        * 1024
}

/// Memory before (`idle_*`: after the warm-up batch) and after the measured batch.
#[derive(Debug)]
#[allow(dead_code)] // peaks are printed, not checked
struct Measured {
    idle_rss: u64,
    rss: u64,
    peak_rss: u64,
    idle_heap: u64,
    heap: u64,
    peak_heap: u64,
}

impl Measured {
    fn rss_per_invocation(&self) -> u64 {
        self.rss.saturating_sub(self.idle_rss) / INVOCATIONS as u64
    }
    fn heap_per_invocation(&self) -> u64 {
        self.heap.saturating_sub(self.idle_heap) / INVOCATIONS as u64
    }
}

async fn status(client: &reqwest::Client, admin: &str, id: &str) -> String {
    let v: Value = client
        .get(format!("{admin}/invocations/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["status"].as_str().unwrap_or_default().to_owned()
}

/// Submits `count` one-hour naps from 32 senders and waits until they have settled: a sample
/// of them, spread over the submission with the last ones included, has the status (suspended
/// or running), and the metrics count `total` invocations suspended with their timers armed
/// (`suspend`) or `total` in memory. Returns their ids.
async fn submit_naps(
    client: &reqwest::Client,
    app: &App,
    count: usize,
    suspend: bool,
    total: u64,
) -> Vec<String> {
    let expected = if suspend { "suspended" } else { "running" };
    let next = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..32)
        .map(|_| {
            let (client, url, next) = (
                client.clone(),
                format!("{}/Sleeper/nap/send", app.ingress),
                next.clone(),
            );
            tokio::spawn(async move {
                let mut ids = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    let r = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body("3600")
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 202);
                    let v: Value = r.json().await.unwrap();
                    ids.push(v["invocationId"].as_str().unwrap().to_owned());
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for s in senders {
        ids.extend(s.await.unwrap());
    }
    assert_eq!(ids.len(), count);
    let sample: Vec<String> = ids
        .iter()
        .step_by(50)
        .chain(ids.iter().rev().take(20))
        .cloned()
        .collect();
    poll(Duration::from_secs(30), || {
        let (client, admin, sample) = (client.clone(), app.admin.clone(), sample.clone());
        async move {
            for id in &sample {
                if status(&client, &admin, id).await != expected {
                    return false;
                }
            }
            let (in_memory, timers) = gauges(&client, &admin).await;
            if suspend {
                in_memory == 0 && timers == total
            } else {
                in_memory == total
            }
        }
    })
    .await;
    // An invocation leaves memory only once its suspension is committed, so the commits are
    // done; the caller waits for a heap report written after this point.
    ids
}

/// The heap report, once the app has rewritten it after this call (it does every 100 ms).
async fn fresh_heap(path: &Path) -> (u64, u64, u32) {
    let modified = || std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let since = std::time::SystemTime::now();
    poll(Duration::from_secs(10), || {
        let later = modified().is_some_and(|m| m > since);
        async move { later }
    })
    .await;
    heap(path)
}

/// Starts `sleepers`, submits a warm-up batch of `WARM_UP` naps, then `INVOCATIONS` more, each
/// batch waited for until settled (`suspend`: suspended; else: sleeping in memory), and
/// measures before and after the second batch.
///
/// The warm-up batch is there because the resident set keeps its high-water mark: glibc keeps
/// freed heap, and the handlers submitted within `suspend_after` (plus commit latency) are all
/// in memory at once before they suspend (hundreds, in a release build). The second batch
/// reuses what the first one's peak left behind, so its growth is what the suspended
/// invocations themselves hold.
async fn naps(suspend_after: &str, suspend: bool) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let heap_file = dir.path().join("heap");
    let env = [
        ("RESTATE_SUSPEND_AFTER", suspend_after.to_owned()),
        ("SLEEPERS_HEAP_FILE", heap_file.display().to_string()),
    ];
    let app = App::start(&example_bin("sleepers"), &dir.path().join("data"), &env).await;
    poll(Duration::from_secs(10), || {
        let heap_file = heap_file.clone();
        async move { heap_file.exists() }
    })
    .await;
    let pid = heap(&heap_file).2;
    let client = reqwest::Client::new();

    submit_naps(&client, &app, WARM_UP, suspend, WARM_UP as u64).await;
    let (idle_heap, _, _) = fresh_heap(&heap_file).await;
    let idle_rss = status_bytes(pid, "VmRSS:");
    let total = (WARM_UP + INVOCATIONS) as u64;
    let ids = submit_naps(&client, &app, INVOCATIONS, suspend, total).await;
    let (heap, peak_heap, _) = fresh_heap(&heap_file).await;
    let measured = Measured {
        idle_rss,
        rss: status_bytes(pid, "VmRSS:"),
        peak_rss: status_bytes(pid, "VmHWM:"),
        idle_heap,
        heap,
        peak_heap,
    };
    eprintln!(
        "RESTATE_SUSPEND_AFTER={suspend_after}, {WARM_UP} + {INVOCATIONS} one-hour naps: {measured:?}, \
         {} RSS bytes and {} heap bytes per invocation of the second batch",
        measured.rss_per_invocation(),
        measured.heap_per_invocation()
    );
    if suspend {
        // Every one of them, not only the sample (after the measurement: this reads the store).
        for id in &ids {
            assert_eq!(status(&client, &app.admin, id).await, "suspended", "{id}");
        }
    }
    measured
}

#[tokio::test]
async fn suspended_invocations_leave_memory() {
    let m = naps("50ms", true).await;
    assert!(
        m.heap_per_invocation() < HEAP_ALLOWANCE,
        "live heap per suspended invocation {} >= {HEAP_ALLOWANCE} bytes: {m:?}",
        m.heap_per_invocation()
    );
    assert!(
        m.rss_per_invocation() < RSS_ALLOWANCE,
        "resident memory per suspended invocation {} >= {RSS_ALLOWANCE} bytes: {m:?}",
        m.rss_per_invocation()
    );
}

/// The control: with suspension effectively off, the same load stays in memory and breaks the
/// bounds. If this fails, the bounds no longer tell the two apart and need a new derivation.
#[tokio::test]
async fn the_bounds_catch_waiting_handlers_kept_in_memory() {
    let m = naps("1h", false).await;
    assert!(
        m.heap_per_invocation() >= HEAP_ALLOWANCE,
        "in-memory waiting invocations use {} heap bytes each, under the {HEAP_ALLOWANCE} allowance: {m:?}",
        m.heap_per_invocation()
    );
    assert!(
        m.rss_per_invocation() >= RSS_ALLOWANCE,
        "in-memory waiting invocations use {} RSS bytes each, under the {RSS_ALLOWANCE} allowance: {m:?}",
        m.rss_per_invocation()
    );
}
