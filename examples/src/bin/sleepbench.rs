//! Memory of suspended (or completed) invocations: starts `sleepers` (release build next to this binary) on a
//! fresh data folder with `RESTATE_SUSPEND_AFTER=1s`, submits `--count` one-way
//! `POST /Sleeper/nap/send` with body `3600` (an hour's sleep) at `--concurrency`, waits until
//! they are all suspended, and reports the server's resident memory, the submission rate and the
//! data folder's size. Then it SIGKILLs the server, restarts it on the same folder and reports
//! how long reopening and recovery took and the memory after it.
//!
//! ```sh
//! cargo build --release -p examples --bin sleepers --bin sleepbench
//! ./target/release/sleepbench --count 100000
//! ```
//!
//! `--cache-bytes B` sets `RESTATE_CACHE_BYTES` (redb's page cache, default 64 MiB), to separate
//! what the cache holds from what the engine holds.
//!
//! `--completed` measures completed invocations instead: `--count` request-response
//! `POST /Sleeper/noop` calls (a handler that does nothing), each kept in the store for its
//! retention (24 h by default). It reports the same figures, the data folder's bytes per
//! completed invocation, and the reopen time after a SIGKILL with all of them in the store.
//!
//! ```sh
//! ./target/release/sleepbench --completed --count 1000000
//! ```
//!
//! `--delayed` measures delayed sends instead: `--count` one-way `POST /Sleeper/noop/send?delay=1h`,
//! each waiting on disk (status `scheduled`, a timer armed, nothing in memory) for its hour.
//!
//! ```sh
//! ./target/release/sleepbench --delayed --count 192000
//! ```
//!
//! `--mixed` fills the store with `--count` sends delayed by a day and as many naps of a day
//! (suspended). Just before the SIGKILL it submits `--reminders` (default 1,000) one-way
//! `POST /Sleeper/late/send` due over the minute from 5 s after the kill, and after the restart
//! reports how late they ran (each returns its own lateness).
//!
//! ```sh
//! ./target/release/sleepbench --mixed --count 1000000
//! ```

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use examples::procfs;

/// What the store is filled with.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// One-way naps of an hour, suspended.
    Suspended,
    /// Request-response no-op calls, completed.
    Completed,
    /// One-way no-op sends delayed by an hour, waiting on disk for their time.
    Delayed,
    /// `--count` no-op sends delayed by a day and as many naps of a day, suspended.
    Mixed,
}

impl Mode {
    /// The request for the `i`th submission: (path, JSON body).
    fn request(self, i: u64) -> (&'static str, Option<&'static str>) {
        match self {
            Mode::Suspended => ("/Sleeper/nap/send", Some("3600")),
            Mode::Completed => ("/Sleeper/noop", None),
            Mode::Delayed => ("/Sleeper/noop/send?delay=1h", None),
            Mode::Mixed if i.is_multiple_of(2) => ("/Sleeper/noop/send?delay=1d", None),
            Mode::Mixed => ("/Sleeper/nap/send", Some("86400")),
        }
    }

    /// The statuses the admin API shows for them once settled.
    fn statuses(self) -> &'static [&'static str] {
        match self {
            Mode::Suspended => &["suspended"],
            Mode::Completed => &["completed"],
            Mode::Delayed => &["scheduled"],
            Mode::Mixed => &["scheduled", "suspended"],
        }
    }
}

fn arg(name: &str) -> Option<u64> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

/// (apparent bytes, allocated bytes) of every file under `dir`.
fn dir_size(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0, 0);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            let (a, b) = dir_size(&entry.path());
            total = (total.0 + a, total.1 + b);
        } else {
            total = (total.0 + meta.len(), total.1 + meta.blocks() * 512);
        }
    }
    total
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// (live, peak) heap bytes the server reports in its `SLEEPERS_HEAP_FILE`.
fn heap(path: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut fields = text.split_whitespace().map(|v| v.parse().unwrap_or(0));
    (fields.next().unwrap_or(0), fields.next().unwrap_or(0))
}

fn heap_mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

struct Server {
    child: Child,
    ingress: String,
    admin: String,
}

impl Drop for Server {
    /// SIGKILL, also when the driver panics: no server is left behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(
    dir: &Path,
    heap_file: &Path,
    ports: (u16, u16),
    cache_bytes: Option<u64>,
) -> Server {
    let exe = std::env::current_exe().expect("exe");
    let bin = exe.with_file_name("sleepers");
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("RUST_LOG", "warn")
        .env("RESTATE_DATA_DIR", dir)
        .env("RESTATE_INGRESS_ADDR", format!("127.0.0.1:{}", ports.0))
        .env("RESTATE_ADMIN_ADDR", format!("127.0.0.1:{}", ports.1))
        .env("RESTATE_SUSPEND_AFTER", "1s")
        .env("SLEEPERS_HEAP_FILE", heap_file)
        .stdout(Stdio::null());
    if let Some(bytes) = cache_bytes {
        cmd.env("RESTATE_CACHE_BYTES", bytes.to_string());
    }
    let child = cmd
        .spawn()
        .expect("sleepers starts (build it with --release first)");
    Server {
        child,
        ingress: format!("http://127.0.0.1:{}", ports.0),
        admin: format!("http://127.0.0.1:{}", ports.1),
    }
}

async fn wait_healthy(client: &reqwest::Client, server: &mut Server) {
    let health = format!("{}/restate/health", server.ingress);
    loop {
        if let Ok(r) = client.get(&health).send().await
            && r.status().is_success()
        {
            return;
        }
        if let Some(status) = server.child.try_wait().expect("try_wait") {
            panic!("sleepers exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Statuses of `ids` through the admin API, `concurrency` at a time: (how many show one of
/// `statuses`, the others).
async fn census(
    client: &reqwest::Client,
    admin: &str,
    ids: Arc<Vec<String>>,
    concurrency: usize,
    statuses: &'static [&'static str],
) -> (u64, Vec<String>) {
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, admin, ids, next) =
                (client.clone(), admin.to_owned(), ids.clone(), next.clone());
            tokio::spawn(async move {
                let (mut matching, mut other) = (0u64, Vec::new());
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(id) = ids.get(i) else { break };
                    let v: serde_json::Value = client
                        .get(format!("{admin}/invocations/{id}"))
                        .send()
                        .await
                        .expect("inspect")
                        .json()
                        .await
                        .expect("inspect json");
                    match v["status"].as_str() {
                        Some(s) if statuses.contains(&s) => matching += 1,
                        s => other.push(format!("{id}: {s:?}")),
                    }
                }
                (matching, other)
            })
        })
        .collect();
    let (mut matching, mut other) = (0, Vec::new());
    for w in workers {
        let (s, o) = w.await.unwrap();
        matching += s;
        other.extend(o);
    }
    (matching, other)
}

/// From the admin API's `/metrics`: (unfinished invocations held in memory, timers in the
/// store's due index, journal commits, commit batches).
async fn gauges(client: &reqwest::Client, admin: &str) -> (i64, i64, i64, i64) {
    let text = match client.get(format!("{admin}/metrics")).send().await {
        Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
        _ => String::new(),
    };
    let sum = |name| examples::metric_sum(&text, name).unwrap_or(0.0) as i64;
    (
        sum("restate_invocations_in_memory"),
        sum("restate_timers_stored"),
        sum("restate_journal_commits_total"),
        sum("restate_journal_commit_batches_total"),
    )
}

/// Waits until two RSS readings a second apart differ by less than 1% (at most 30 s).
async fn settled_rss(pid: u32) -> u64 {
    let mut last = procfs::status_kib(pid, "VmRSS:");
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = procfs::status_kib(pid, "VmRSS:");
        if now.abs_diff(last) * 100 < last {
            return now;
        }
        last = now;
    }
    last
}

#[tokio::main]
async fn main() {
    let mode = if std::env::args().any(|a| a == "--completed") {
        Mode::Completed
    } else if std::env::args().any(|a| a == "--delayed") {
        Mode::Delayed
    } else if std::env::args().any(|a| a == "--mixed") {
        Mode::Mixed
    } else {
        Mode::Suspended
    };
    let statuses = mode.statuses();
    let status = statuses.join(" or ");
    let per_kind = arg("--count").unwrap_or(100_000);
    let count = if mode == Mode::Mixed {
        2 * per_kind
    } else {
        per_kind
    };
    let reminders = arg("--reminders").unwrap_or(if mode == Mode::Mixed { 1000 } else { 0 });
    let concurrency = arg("--concurrency").unwrap_or(64);
    let cache_bytes = arg("--cache-bytes");
    let ports = (examples::free_port(), examples::free_port());
    let dir = std::env::temp_dir().join(format!("sleepbench-data-{}", ports.0));
    let _ = std::fs::remove_dir_all(&dir);
    let heap_file = std::env::temp_dir().join(format!("sleepbench-heap-{}", ports.0));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();

    let mut server = start_server(&dir, &heap_file, ports, cache_bytes);
    wait_healthy(&client, &mut server).await;
    let pid = server.child.id();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let base_rss = procfs::status_kib(pid, "VmRSS:");
    let (base_heap, _) = heap(&heap_file);
    println!(
        "sleepers pid {pid}, data {}, cache {}, idle: RSS {:.1} MiB, heap {:.1} MiB",
        dir.display(),
        cache_bytes.map_or("default (64 MiB)".into(), |b| format!("{b} B")),
        mib(base_rss),
        heap_mib(base_heap)
    );

    // Submit.
    let cpu_before = procfs::cpu_secs(pid);
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let ingress = server.ingress.clone();
    // Completed mode keeps one id in 1,000 (the census samples them): a million ids would
    // weigh on the driver's memory for nothing.
    let keep_every = if mode == Mode::Completed { 1000 } else { 1 };
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, ingress, next) = (client.clone(), ingress.clone(), next.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let (path, body) = mode.request(i);
                    let mut request = client.post(format!("{ingress}{path}"));
                    if let Some(body) = body {
                        request = request
                            .header("content-type", "application/json")
                            .body(body);
                    }
                    let r = request.send().await.expect("send");
                    let id = if mode == Mode::Completed {
                        assert_eq!(r.status(), 200);
                        let id = r.headers()["x-restate-id"].to_str().expect("id");
                        id.to_owned()
                    } else {
                        assert_eq!(r.status(), 202);
                        let v: serde_json::Value = r.json().await.expect("send json");
                        v["invocationId"].as_str().expect("id").to_owned()
                    };
                    if i % keep_every == 0 || i + 64 >= count {
                        ids.push(id);
                    }
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::with_capacity(count as usize);
    let mut progress = tokio::time::interval(Duration::from_secs(10));
    progress.tick().await;
    let mut workers = futures_join(workers);
    loop {
        tokio::select! {
            done = &mut workers => { for w in done { ids.extend(w); } break; }
            _ = progress.tick() => println!(
                "  {:>6.0} s: {} submitted, RSS {:.1} MiB, heap {:.1} MiB",
                started.elapsed().as_secs_f64(),
                next.load(Ordering::Relaxed).min(count),
                mib(procfs::status_kib(pid, "VmRSS:")),
                heap_mib(heap(&heap_file).0)
            ),
        }
    }
    let submit_secs = started.elapsed().as_secs_f64();
    let submit_cpu = procfs::cpu_secs(pid) - cpu_before;
    let submit_hwm = procfs::status_kib(pid, "VmHWM:");
    let (_, _, commits, batches) = gauges(&client, &server.admin).await;
    println!(
        "submitted {count} in {submit_secs:.1} s ({:.0}/s), server CPU {submit_cpu:.1} s, peak RSS so far {:.1} MiB, peak heap {:.1} MiB",
        count as f64 / submit_secs,
        mib(submit_hwm),
        heap_mib(heap(&heap_file).1)
    );
    println!(
        "journal: {commits} commits of {batches} write batches ({:.1} batches per commit)",
        batches as f64 / commits.max(1) as f64
    );

    // Settle: nothing in memory and (suspended) a timer per invocation (metrics), a sample
    // (spread over the run, plus the last ones) in the expected status, then RSS stable.
    let ids = Arc::new(ids);
    let step = (ids.len() / 200).max(1);
    let sample: Vec<String> = ids
        .iter()
        .step_by(step)
        .chain(ids.iter().rev().take(64))
        .cloned()
        .collect();
    let sample = Arc::new(sample);
    let settle_started = Instant::now();
    loop {
        let (in_memory, timers, _, _) = gauges(&client, &server.admin).await;
        let (matching, _) = census(&client, &server.admin, sample.clone(), 16, statuses).await;
        let timers_armed = mode == Mode::Completed || timers >= count as i64;
        if matching == sample.len() as u64 && in_memory == 0 && timers_armed {
            break;
        }
        assert!(
            settle_started.elapsed() < Duration::from_secs(600),
            "not all {status} after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rss = settled_rss(pid).await;
    let hwm = procfs::status_kib(pid, "VmHWM:");
    let (live, peak) = heap(&heap_file);
    let (size, allocated) = dir_size(&dir);
    let (in_memory, timers, _, _) = gauges(&client, &server.admin).await;
    println!(
        "settled {:.1} s after the last submission: {in_memory} invocations in memory, {timers} timers stored",
        settle_started.elapsed().as_secs_f64()
    );
    println!(
        "RSS with {count} {status}: {:.1} MiB (idle {:.1} MiB), peak {:.1} MiB, {:.0} bytes/invocation above idle",
        mib(rss),
        mib(base_rss),
        mib(hwm),
        (rss.saturating_sub(base_rss) * 1024) as f64 / count as f64
    );
    println!(
        "live heap with {count} {status}: {:.1} MiB (idle {:.1} MiB), peak {:.1} MiB, {:.0} bytes/invocation above idle",
        heap_mib(live),
        heap_mib(base_heap),
        heap_mib(peak),
        live.saturating_sub(base_heap) as f64 / count as f64
    );
    println!(
        "data folder: {:.1} MiB ({:.1} MiB allocated), {:.0} bytes/invocation",
        size as f64 / 1048576.0,
        allocated as f64 / 1048576.0,
        size as f64 / count as f64
    );
    let t = Instant::now();
    let (matching, other) = census(&client, &server.admin, ids.clone(), 32, statuses).await;
    println!(
        "census through the admin API ({:.1} s, {} ids): {matching} {status}, {} other {:?}",
        t.elapsed().as_secs_f64(),
        ids.len(),
        other.len(),
        other.iter().take(5).collect::<Vec<_>>()
    );
    println!(
        "after the census: RSS {:.1} MiB, heap {:.1} MiB",
        mib(procfs::status_kib(pid, "VmRSS:")),
        heap_mib(heap(&heap_file).0)
    );

    // Reminders due in the first minute after the restart, submitted just before the SIGKILL.
    let reminders = submit_reminders(&client, &server.ingress, reminders).await;

    // SIGKILL, restart on the same folder, time until the ingress answers.
    drop(server);
    let t = Instant::now();
    let mut server = start_server(&dir, &heap_file, ports, cache_bytes);
    wait_healthy(&client, &mut server).await;
    let reopen = t.elapsed();
    let pid = server.child.id();
    let rss_now = procfs::status_kib(pid, "VmRSS:");
    let hwm = procfs::status_kib(pid, "VmHWM:");
    let rss = settled_rss(pid).await;
    let (live, peak) = heap(&heap_file);
    println!(
        "restart after SIGKILL: healthy in {:.0} ms; RSS {:.1} MiB at once, {:.1} MiB settled, peak {:.1} MiB",
        reopen.as_secs_f64() * 1000.0,
        mib(rss_now),
        mib(rss),
        mib(hwm)
    );
    println!(
        "after restart: live heap {:.1} MiB ({:.0} bytes/invocation above the first run's idle), peak {:.1} MiB",
        heap_mib(live),
        live.saturating_sub(base_heap) as f64 / count as f64,
        heap_mib(peak)
    );
    let (matching, _) = census(&client, &server.admin, sample.clone(), 16, statuses).await;
    let (in_memory, timers, _, _) = gauges(&client, &server.admin).await;
    println!(
        "after restart: {matching} of a sample of {} still {status}; {in_memory} in memory, {timers} timers stored",
        sample.len()
    );
    if !reminders.is_empty() {
        report_lateness(&client, &server.admin, &reminders).await;
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&heap_file);
}

/// How long after the SIGKILL the first reminder is due; the others follow over a minute.
const FIRST_REMINDER_MS: u64 = 5_000;

/// Submits `count` one-way `POST /Sleeper/late/send?delay=..` spread over the minute from
/// [`FIRST_REMINDER_MS`] on, each carrying its due time (ms since the epoch, by this clock):
/// [(invocation id, due ms)].
async fn submit_reminders(
    client: &reqwest::Client,
    ingress: &str,
    count: u64,
) -> Vec<(String, u64)> {
    let mut out = Vec::with_capacity(count as usize);
    for i in 0..count {
        let delay = FIRST_REMINDER_MS + i * 60_000 / count.max(1);
        let due = now_ms() + delay;
        let r = client
            .post(format!("{ingress}/Sleeper/late/send?delay={delay}ms"))
            .header("content-type", "application/json")
            .body(due.to_string())
            .send()
            .await
            .expect("send reminder");
        assert_eq!(r.status(), 202);
        let v: serde_json::Value = r.json().await.expect("send json");
        out.push((v["invocationId"].as_str().expect("id").to_owned(), due));
    }
    out
}

/// Waits for every reminder to complete (each returns how many ms after its due time it ran)
/// and prints the lateness distribution.
async fn report_lateness(client: &reqwest::Client, admin: &str, reminders: &[(String, u64)]) {
    let last_due = reminders.iter().map(|r| r.1).max().unwrap_or(0);
    while now_ms() < last_due + 2_000 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut late = Vec::with_capacity(reminders.len());
    let mut missing = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    for (id, _) in reminders {
        loop {
            let v: serde_json::Value = client
                .get(format!("{admin}/invocations/{id}"))
                .send()
                .await
                .expect("inspect")
                .json()
                .await
                .expect("inspect json");
            if let Some(ms) = v["result"]["success"].as_i64() {
                late.push(ms);
                break;
            }
            if Instant::now() > deadline {
                missing += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    late.sort_unstable();
    let at = |q: f64| {
        late.get(((late.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "reminders due {}–{} s after the SIGKILL: {} ran, {missing} not; lateness p50 {} ms, p99 {} ms, max {} ms; {} later than 1 s",
        FIRST_REMINDER_MS / 1000,
        FIRST_REMINDER_MS / 1000 + 60,
        late.len(),
        at(0.5),
        at(0.99),
        late.last().copied().unwrap_or(0),
        late.iter().filter(|&&ms| ms > 1000).count()
    );
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// Joins spawned tasks into one future of their results (in order).
fn futures_join<T: Send + 'static>(
    handles: Vec<tokio::task::JoinHandle<T>>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<T>> + Send>> {
    Box::pin(async move {
        let mut out = Vec::with_capacity(handles.len());
        for h in handles {
            out.push(h.await.expect("worker"));
        }
        out
    })
}
