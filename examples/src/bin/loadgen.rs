//! Load driver for the bench services (`bench-services` here, `bench/restate-services` on the
//! Restate side; both serve the same contract). Runs each scenario at concurrency 1 and 64 over
//! loopback HTTP and prints a table of requests/s, p50/p90/p99/p99.9/max latency, and the server's CPU
//! time and peak memory, then how fast the fanout's queued messages drained.
//!
//! Columns besides rate and latency: `errors` (non-2xx answers and transport errors; they do
//! not count in req/s), `server CPU s` (user + system time of the server processes during the
//! row), `server peak RSS MiB` (the sum of their `VmHWM`, a high-water mark that only grows
//! down the table), `driver CPU s` (this process plus `wrk`), and `other CPU s` (busy time of
//! the whole machine minus server and driver: kernel threads such as the filesystem journal's,
//! and whatever else was running; a large value means the row was disturbed), and `tries`
//! (see `--tries`).
//!
//! ```sh
//! cargo build --release --bin bench-services --bin loadgen
//! ./target/release/loadgen --seconds 5
//! ```
//!
//! By default it starts `bench-services` (release build next to this binary) on a fresh data
//! folder with a clean environment. Options:
//!
//! - `--seconds N` (default 5): length of each row.
//! - `--server PATH`: the `bench-services` binary to start (default: the one next to this
//!   binary), so that one driver measures two builds alike (`bench/builds.sh`).
//! - `--url BASE`: drive an already running server (its ingress, e.g. `http://127.0.0.1:8080`)
//!   instead of starting one. `--pid P` (repeatable, or `P1,P2`) names the processes whose CPU
//!   time and peak RSS (`/proc/P/stat`, `VmHWM`) are summed into the server columns; without it
//!   those columns read `n/a`.
//! - `--metrics URL`: with `--url`, the server's admin base URL (e.g. `http://127.0.0.1:9070`);
//!   its `/metrics` journal counters fill the commits table. Set automatically when loadgen
//!   starts `bench-services`; the Restate side has no such counters.
//! - `--label TEXT`: names the run in the output (and in the `--tsv` rows).
//! - `--driver reqwest|wrk` (default `reqwest`): who sends the requests. `reqwest` is an
//!   in-process tokio client; `wrk` runs Debian's `wrk` (C, one event loop per thread) with a
//!   generated Lua script, which needs far less CPU than reqwest at the same rate.
//! - `--warmup SECS` (default 0): echo load at concurrency 8 before the first row.
//! - `--tsv FILE`: also append machine-readable rows to FILE.
//! - `--only TEXT`: run only the scenarios whose name contains TEXT.
//! - `--postgres`: the server it starts runs on PostgreSQL (`RESTATE_DATABASE_URL`), a
//!   fresh database on a private cluster with PostgreSQL's default durability (`initdb` into
//!   a temporary folder, stopped at the end). The server columns do not count PostgreSQL's
//!   own processes; `other CPU s` does. After the rows, `pgbench` (the cluster's own, one
//!   prepared `INSERT` per transaction, 5 s at concurrency 1) measures one commit on the
//!   same cluster, and echo's p50 at concurrency 1 is given as a multiple of it.
//! - `--standbys N` (with `--postgres`): N more servers on the same database, started after
//!   the first; the rows start once every server runs its share of the partitions
//!   (`restate_partitions_running`). The load goes to the last one, so the requests for the
//!   others' partitions take the distributed path (forwarded into their inbox, results read
//!   back from the database). The server columns sum all of them.
//! - `--drain-timeout SECS` (default 600): how long to wait for the fanout messages to drain.
//! - `--max-other-cpu SECS` and `--tries N` (default: off, 1): a row during which the rest of
//!   the machine was busy for more than SECS CPU seconds (`other CPU s`, above) is run again,
//!   after waiting until the machine is quiet, up to N times in all; the table reports the
//!   least disturbed attempt and how many it took (`tries`).
//!
//! - `--soak MINUTES`: instead of the table, a steady-state run: the server (started here,
//!   with `RESTATE_RETENTION` set to `--retention`, default `30s`, so purge has to keep pace)
//!   takes the first scenario (or the `--only` one) at concurrency 64 for MINUTES one-minute
//!   rows of req/s, p50/p99/p99.9/max, the server's RSS and the store's and log's bytes. The
//!   last lines give each column's trend over the last three quarters of the run (at least
//!   the last 15 minutes of a 20-minute soak) as a least-squares slope in percent of its mean
//!   per 10 minutes; "flat" when under 2%. Uses the wrk driver.
//!
//!   ```sh
//!   ./target/release/loadgen --soak 20
//!   ```
//!
//! Fanout drain: `Fanout/send(10)` queues ten one-way `Counter/fan-{i}/add(1)` messages per
//! acknowledged request, to ten hot keys. After each fanout row the driver polls
//! `Counter/fan-{i}/get` for i in 0..10 every 100 ms until the sum has grown by 10 × the
//! acknowledged requests of the row, and reports the backlog left when the load stopped, the
//! time it took to drain after the load, and messages/s from the start of the row until
//! drained.
//!
//! Journal commits: before the first row the driver measures the disk's single-thread rate of
//! 4 KiB `pwrite` + `fdatasync` (2 s, in the temp folder, where the data folder lives). For
//! each row it then reads the server's journal counters and reports commits/s, requests and
//! write batches per commit (the group-commit size, which should grow with load), the mean
//! commit time, and commits/s as a share of that disk rate.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Scenario {
    name: &'static str,
    path: fn(u64) -> String,
    /// The same path as a Lua expression over the per-thread counter `n` (wrk driver).
    lua_path: &'static str,
    body: Option<&'static str>,
    idempotent: bool,
    fanout: bool,
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "echo",
            path: |_| "/Noop/echo".into(),
            lua_path: r#""/Noop/echo""#,
            body: Some(r#"{"hello":"world","n":42}"#),
            idempotent: false,
            fanout: false,
        },
        Scenario {
            name: "steps (3 runs)",
            path: |_| "/Steps/three".into(),
            lua_path: r#""/Steps/three""#,
            body: None,
            idempotent: false,
            fanout: false,
        },
        Scenario {
            name: "counter, 1 key",
            path: |_| "/Counter/hot/add".into(),
            lua_path: r#""/Counter/hot/add""#,
            body: Some("1"),
            idempotent: false,
            fanout: false,
        },
        Scenario {
            name: "counter, 1000 keys",
            path: |i| format!("/Counter/k{}/add", i % 1000),
            lua_path: r#""/Counter/k" .. (n % 1000) .. "/add""#,
            body: Some("1"),
            idempotent: false,
            fanout: false,
        },
        Scenario {
            name: "echo /send",
            path: |_| "/Noop/echo/send".into(),
            lua_path: r#""/Noop/echo/send""#,
            body: Some(r#"{"hello":"world","n":42}"#),
            idempotent: false,
            fanout: false,
        },
        Scenario {
            name: "echo + idempotency key",
            path: |_| "/Noop/echo".into(),
            lua_path: r#""/Noop/echo""#,
            body: Some(r#"{"hello":"world","n":42}"#),
            idempotent: true,
            fanout: false,
        },
        Scenario {
            name: "fanout 10",
            path: |_| "/Fanout/send".into(),
            lua_path: r#""/Fanout/send""#,
            body: Some("10"),
            idempotent: false,
            fanout: true,
        },
    ]
}

const FANOUT_KEYS: u64 = 10;

#[derive(Clone, Copy, PartialEq)]
enum Driver {
    Reqwest,
    Wrk,
}

struct Args {
    seconds: u64,
    /// The `bench-services` binary to start when there is no `--url`.
    server: PathBuf,
    url: Option<String>,
    metrics: Option<String>,
    label: Option<String>,
    driver: Driver,
    pids: Vec<u32>,
    warmup: f64,
    tsv: Option<String>,
    only: Option<String>,
    drain_timeout: u64,
    max_other_cpu: f64,
    tries: u32,
    soak_minutes: Option<u64>,
    retention: String,
    postgres: bool,
    standbys: usize,
}

fn parse_args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut args = Args {
        seconds: 5,
        server: std::env::current_exe()
            .expect("exe")
            .with_file_name("bench-services"),
        url: None,
        metrics: None,
        label: None,
        driver: Driver::Reqwest,
        pids: Vec::new(),
        warmup: 0.0,
        tsv: None,
        only: None,
        drain_timeout: 600,
        max_other_cpu: f64::INFINITY,
        tries: 1,
        soak_minutes: None,
        retention: "30s".into(),
        postgres: false,
        standbys: 0,
    };
    let mut it = argv.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--seconds" => args.seconds = value().parse().unwrap_or_else(|_| usage("--seconds")),
            // Absolute: the server starts with an empty environment, so no PATH lookup.
            "--server" => {
                args.server = std::path::absolute(value()).unwrap_or_else(|_| usage("--server"))
            }
            "--url" => args.url = Some(value().trim_end_matches('/').to_string()),
            "--metrics" => args.metrics = Some(value().trim_end_matches('/').to_string()),
            "--label" => args.label = Some(value()),
            "--driver" => {
                args.driver = match value().as_str() {
                    "reqwest" => Driver::Reqwest,
                    "wrk" => Driver::Wrk,
                    _ => usage("--driver is reqwest or wrk"),
                }
            }
            "--pid" => {
                for p in value().split(',').filter(|p| !p.is_empty()) {
                    args.pids
                        .push(p.parse().unwrap_or_else(|_| usage("--pid takes numbers")));
                }
            }
            "--warmup" => args.warmup = value().parse().unwrap_or_else(|_| usage("--warmup")),
            "--tsv" => args.tsv = Some(value()),
            "--only" => args.only = Some(value()),
            "--drain-timeout" => {
                args.drain_timeout = value().parse().unwrap_or_else(|_| usage("--drain-timeout"))
            }
            "--max-other-cpu" => {
                args.max_other_cpu = value().parse().unwrap_or_else(|_| usage("--max-other-cpu"))
            }
            "--tries" => args.tries = value().parse().unwrap_or_else(|_| usage("--tries")),
            "--soak" => {
                args.soak_minutes = Some(value().parse().unwrap_or_else(|_| usage("--soak")))
            }
            "--retention" => args.retention = value(),
            "--postgres" => args.postgres = true,
            "--standbys" => args.standbys = value().parse().unwrap_or_else(|_| usage("--standbys")),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    args
}

fn usage(problem: &str) -> ! {
    if !problem.is_empty() {
        eprintln!("loadgen: {problem}");
    }
    eprintln!(
        "usage: loadgen [--seconds N] [--server PATH] [--url BASE [--pid P]... [--metrics URL]] [--label TEXT] \
         [--driver reqwest|wrk] [--warmup SECS] [--tsv FILE] [--only TEXT] [--drain-timeout SECS] \
         [--max-other-cpu SECS --tries N] [--soak MINUTES [--retention DURATION]] \
         [--postgres [--standbys N]]"
    );
    std::process::exit(2)
}

/// CPU seconds (user + system, all threads) and peak RSS in KiB of one process.
fn proc_stats(pid: u32) -> (f64, u64) {
    (
        examples::procfs::cpu_secs(pid),
        examples::procfs::status_kib(pid, "VmHWM:"),
    )
}

/// Busy CPU seconds of the whole machine (all CPUs, `/proc/stat`).
fn machine_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum();
    busy as f64 / 100.0
}

/// Summed over the measured processes: CPU seconds, and the sum of their peak RSS in KiB.
fn server_stats(pids: &[u32]) -> (f64, u64) {
    pids.iter()
        .map(|&p| proc_stats(p))
        .fold((0.0, 0), |(c, m), (c2, m2)| (c + c2, m + m2))
}

/// Kills the server it started when dropped, so a panic does not leave it running.
struct ServerGuard {
    child: Option<Child>,
    /// With `--standbys`: the other servers on the same database (stopped first).
    standbys: Vec<Child>,
    dir: Option<PathBuf>,
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        for child in &mut self.standbys {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn start_server(
    bin: &std::path::Path,
    port: u16,
    admin_port: u16,
    dir: &std::path::Path,
    retention: Option<&str>,
    database_url: Option<&str>,
) -> Child {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("RUST_LOG", "warn")
        .env("RESTATE_DATA_DIR", dir)
        .env("RESTATE_INGRESS_ADDR", format!("127.0.0.1:{port}"))
        .env("RESTATE_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
        .stdout(Stdio::null());
    if let Some(retention) = retention {
        cmd.env("RESTATE_RETENTION", retention);
    }
    if let Some(url) = database_url {
        cmd.env("RESTATE_DATABASE_URL", url);
    }
    cmd.spawn()
        .expect("bench-services starts (build it with --release first)")
}

/// Waits until every server (by its admin address) runs some of the partitions and together
/// they run them all.
async fn wait_spread(client: &reqwest::Client, admins: &[String]) {
    let started = std::time::Instant::now();
    loop {
        let mut shares = Vec::new();
        for admin in admins {
            let text = match client.get(format!("{admin}/metrics")).send().await {
                Ok(r) => r.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            let share = text
                .lines()
                .find_map(|l| l.strip_prefix("restate_partitions_running "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
            shares.push(share);
        }
        if shares.iter().all(|s| *s > 0) && shares.iter().sum::<u64>() == 256 {
            eprintln!("partitions spread over the servers: {shares:?}");
            return;
        }
        if started.elapsed() > Duration::from_secs(120) {
            eprintln!("the partitions did not spread within 120 s: {shares:?}");
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the server at `base` answers its health check.
async fn wait_healthy(client: &reqwest::Client, base: &str) {
    while client
        .get(format!("{base}/restate/health"))
        .send()
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What one row measured.
struct RowResult {
    ok: u64,
    errors: u64,
    elapsed: f64,
    /// p50, p90, p99, p99.9 and the maximum, in milliseconds.
    pct: [f64; 5],
}

/// The reqwest driver: `concurrency` tasks, each sending its next request when the previous
/// answered, until the deadline. Only 2xx answers count as done; others count as errors.
async fn run_reqwest(
    client: &reqwest::Client,
    base: &str,
    scenario: &Arc<Scenario>,
    concurrency: u64,
    seconds: f64,
    counter: &Arc<AtomicU64>,
    nonce: u64,
) -> RowResult {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, base, scenario, counter) = (
                client.clone(),
                base.to_string(),
                scenario.clone(),
                counter.clone(),
            );
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let i = counter.fetch_add(1, Ordering::Relaxed);
                    let mut req = client.post(format!("{base}{}", (scenario.path)(i)));
                    if let Some(body) = scenario.body {
                        req = req.header("content-type", "application/json").body(body);
                    }
                    if scenario.idempotent {
                        req = req.header("idempotency-key", format!("k-{nonce}-{i}"));
                    }
                    let t = Instant::now();
                    match req.send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            latencies.push(t.elapsed());
                        }
                        Ok(r) => {
                            errors += 1;
                            if errors <= 3 {
                                let status = r.status();
                                let text = r.text().await.unwrap_or_default();
                                eprintln!("{}: {status} {text}", scenario.name);
                            }
                        }
                        Err(e) => {
                            errors += 1;
                            if errors <= 3 {
                                eprintln!("{}: {e}", scenario.name);
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        if all.is_empty() {
            return f64::NAN;
        }
        all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1000.0
    };
    RowResult {
        ok: all.len() as u64,
        errors,
        elapsed,
        pct: [pct(0.5), pct(0.9), pct(0.99), pct(0.999), pct(1.0)],
    }
}

fn lua_string(s: &str) -> String {
    format!("{s:?}") // The bodies are ASCII without backslashes: a Rust literal is a Lua one.
}

/// The wrk driver: `wrk -t{1|2} -c{concurrency}` with a generated script. Static requests use
/// wrk's prebuilt request; per-request paths and idempotency keys use `request()`. `done()`
/// prints one machine-readable line.
fn run_wrk(
    base: &str,
    scenario: &Scenario,
    concurrency: u64,
    seconds: f64,
    nonce: u64,
) -> RowResult {
    let dynamic = scenario.idempotent || scenario.lua_path.contains(" .. ");
    let mut lua = String::new();
    lua.push_str("wrk.method = \"POST\"\n");
    if let Some(body) = scenario.body {
        lua.push_str(&format!("wrk.body = {}\n", lua_string(body)));
        lua.push_str("wrk.headers[\"content-type\"] = \"application/json\"\n");
    }
    if !dynamic {
        lua.push_str(&format!("wrk.path = {}\n", scenario.lua_path));
    } else {
        lua.push_str(&format!(
            r#"
local threads = {{}}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
n = 0
function request()
  n = n + 1
  local headers = {{}}
  for k, v in pairs(wrk.headers) do headers[k] = v end
  {idem}
  return wrk.format("POST", {path}, headers, wrk.body)
end
"#,
            idem = if scenario.idempotent {
                format!(r#"headers["idempotency-key"] = "k-{nonce}-" .. tid .. "-" .. n"#)
            } else {
                String::new()
            },
            path = scenario.lua_path,
        ));
    }
    lua.push_str(
        r#"
function done(summary, latency, requests)
  io.write(string.format("LOADGEN %d %d %d %d %d %d %d %d %d %d %d %d\n",
    summary.duration, summary.requests, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
"#,
    );
    let script = std::env::temp_dir().join(format!("loadgen-{}-{nonce}.lua", std::process::id()));
    std::fs::write(&script, lua).expect("write wrk script");
    let threads = concurrency.min(2);
    let out = Command::new("wrk")
        .arg(format!("-t{threads}"))
        .arg(format!("-c{concurrency}"))
        .arg(format!("-d{}s", seconds.round().max(1.0) as u64))
        .arg("--timeout")
        .arg("60s")
        .arg("-s")
        .arg(&script)
        .arg(format!("{base}/"))
        .stderr(Stdio::inherit())
        .output()
        .expect("wrk runs (apt-get install wrk)");
    let _ = std::fs::remove_file(&script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("LOADGEN "))
        .unwrap_or_else(|| panic!("wrk printed no result:\n{stdout}"));
    let v: Vec<f64> = line[8..]
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let requests = v[1] as u64;
    let status_errors = v[5] as u64;
    let errors = status_errors + (v[2] + v[3] + v[4] + v[6]) as u64;
    if errors > 0 {
        eprintln!(
            "{}: wrk errors: connect {} read {} write {} status {} timeout {}",
            scenario.name, v[2], v[3], v[4], v[5], v[6]
        );
    }
    RowResult {
        ok: requests.saturating_sub(status_errors),
        errors,
        elapsed: v[0] / 1e6,
        pct: [v[7], v[8], v[9], v[10], v[11]].map(|us| us / 1000.0),
    }
}

/// A column of the soak table, as a number.
type SoakColumn = fn(&SoakRow) -> f64;

/// One minute of a soak.
struct SoakRow {
    minute: u64,
    rate: f64,
    pct: [f64; 5],
    rss_kib: u64,
    store_bytes: u64,
    log_bytes: u64,
}

/// The steady-state run of `--soak`: one-minute wrk rows at concurrency 64 against the server
/// (`pid`, data folder `dir`), then each column's trend over the last three quarters.
fn soak(
    base: &str,
    scenario: &Scenario,
    minutes: u64,
    pid: u32,
    dir: &std::path::Path,
    nonce: u64,
    retention: &str,
) -> Vec<SoakRow> {
    let size = |name: &str| std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
    let mib = |bytes: f64| bytes / 1048576.0;
    println!(
        "soak: {} at concurrency 64 for {minutes} min, retention {retention}, server {pid}, data {}\n",
        scenario.name,
        dir.display()
    );
    println!(
        "| minute | req/s | p50 ms | p99 ms | p99.9 ms | max ms | RSS MiB | store MiB | log MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for minute in 1..=minutes {
        let row = run_wrk(base, scenario, 64, 60.0, nonce.wrapping_add(minute << 32));
        let r = SoakRow {
            minute,
            rate: row.ok as f64 / row.elapsed,
            pct: row.pct,
            rss_kib: examples::procfs::status_kib(pid, "VmRSS:"),
            store_bytes: size("journal.redb"),
            log_bytes: size("journal.wal") + size("journal.1.wal"),
        };
        println!(
            "| {minute} | {:.0} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} |",
            r.rate,
            fmt_ms(r.pct[0]),
            fmt_ms(r.pct[2]),
            fmt_ms(r.pct[3]),
            fmt_ms(r.pct[4]),
            r.rss_kib as f64 / 1024.0,
            mib(r.store_bytes as f64),
            mib(r.log_bytes as f64),
        );
        rows.push(r);
    }
    let tail = &rows[rows.len() / 4..];
    println!(
        "\ntrend over minutes {}–{minutes} (least-squares slope, % of the mean per 10 min; flat under 2%):\n",
        tail.first().map_or(0, |r| r.minute)
    );
    let columns: [(&str, SoakColumn); 6] = [
        ("req/s", |r| r.rate),
        ("p50", |r| r.pct[0]),
        ("p99", |r| r.pct[2]),
        ("RSS", |r| r.rss_kib as f64),
        ("store bytes", |r| r.store_bytes as f64),
        ("log bytes", |r| r.log_bytes as f64),
    ];
    for (name, value) in columns {
        let points: Vec<(f64, f64)> = tail.iter().map(|r| (r.minute as f64, value(r))).collect();
        match trend_per_10_min(&points) {
            Some(pct) => println!(
                "- {name}: {pct:+.1}% {}",
                if pct.abs() < 2.0 {
                    "(flat)"
                } else {
                    "(not flat)"
                }
            ),
            None => println!("- {name}: n/a (too few rows)"),
        }
    }
    rows
}

/// The least-squares slope of `points` (minute, value) as a percentage of the values' mean per
/// ten minutes; `None` with fewer than three points or a zero mean.
fn trend_per_10_min(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 3 {
        return None;
    }
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(x, y), (px, py)| (x + px / n, y + py / n));
    let (sxy, sxx) = points.iter().fold((0.0, 0.0), |(sxy, sxx), (x, y)| {
        (sxy + (x - mx) * (y - my), sxx + (x - mx) * (x - mx))
    });
    (my != 0.0 && sxx > 0.0).then(|| 100.0 * 10.0 * (sxy / sxx) / my)
}

/// Sum of `count` over the fanout keys (`Counter/fan-{i}/get`).
async fn fanout_sum(client: &reqwest::Client, base: &str) -> Option<i64> {
    let mut sum = 0;
    for i in 0..FANOUT_KEYS {
        let r = client
            .post(format!("{base}/Counter/fan-{i}/get"))
            .send()
            .await
            .ok()?;
        if !r.status().is_success() {
            return None;
        }
        sum += r.json::<i64>().await.ok()?;
    }
    Some(sum)
}

/// Polls the fanout sum until it stops changing (nothing left in flight from earlier rows).
async fn settled_fanout_sum(client: &reqwest::Client, base: &str) -> i64 {
    let mut last = None;
    loop {
        let now = fanout_sum(client, base).await;
        if let Some(sum) = now
            && now == last
        {
            return sum;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

struct Drain {
    concurrency: u64,
    acked: u64,
    messages: i64,
    backlog_at_end: i64,
    tail_s: f64,
    total_s: f64,
    complete: bool,
}

/// Waits until the fanout sum reaches `target`, polling every 100 ms.
async fn wait_drained(
    client: &reqwest::Client,
    base: &str,
    baseline: i64,
    target: i64,
    row_started: Instant,
    load_ended: Instant,
    timeout: Duration,
) -> (i64, i64, f64, f64, bool) {
    let at_end = fanout_sum(client, base).await.unwrap_or(baseline);
    loop {
        let sum = fanout_sum(client, base).await.unwrap_or(baseline);
        let done = sum >= target;
        if done || load_ended.elapsed() > timeout {
            return (
                sum - baseline,
                target - at_end,
                load_ended.elapsed().as_secs_f64(),
                row_started.elapsed().as_secs_f64(),
                done,
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One run of one row, and what the machine did meanwhile.
struct Attempt {
    row: RowResult,
    /// CPU seconds of the server processes, `None` without `--pid` in `--url` mode.
    server_cpu: Option<f64>,
    hwm_kb: u64,
    driver_cpu: f64,
    /// Busy CPU seconds of everything else (machine minus server minus driver).
    other: Option<f64>,
    drain: Option<Drain>,
    /// Journal counters over the row, when the server exposes them.
    commits: Option<CommitStats>,
    tries: u32,
}

/// The server's journal counters (`restate_journal_commit*` in `/metrics`).
#[derive(Clone, Copy, Default)]
struct CommitStats {
    commits: f64,
    batches: f64,
    seconds: f64,
}

impl std::ops::Sub for CommitStats {
    type Output = Self;
    fn sub(self, earlier: Self) -> Self {
        Self {
            commits: self.commits - earlier.commits,
            batches: self.batches - earlier.batches,
            seconds: self.seconds - earlier.seconds,
        }
    }
}

/// Reads the journal counters from an admin API's `/metrics`.
async fn commit_stats(client: &reqwest::Client, metrics: Option<&str>) -> Option<CommitStats> {
    let text = client
        .get(format!("{}/metrics", metrics?))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |name| examples::metric_sum(&text, name);
    Some(CommitStats {
        commits: value("restate_journal_commits_total")?,
        batches: value("restate_journal_commit_batches_total")?,
        seconds: value("restate_journal_commit_seconds_total")?,
    })
}

/// The disk's single-thread rate of 4 KiB `pwrite` + `fdatasync` over `secs` in `dir`:
/// (per second, median ms).
fn disk_fsync_rate(dir: &std::path::Path, secs: f64) -> std::io::Result<(f64, f64)> {
    use std::os::unix::fs::FileExt as _;
    let path = dir.join(format!("loadgen-fsync-{}", std::process::id()));
    let file = std::fs::File::create(&path)?;
    let page = [0x5au8; 4096];
    let mut latencies = Vec::new();
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        file.write_all_at(&page, (latencies.len() as u64 % 256) * 4096)?;
        file.sync_data()?;
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    latencies.sort();
    let median = latencies[latencies.len() / 2].as_secs_f64() * 1000.0;
    Ok((latencies.len() as f64 / elapsed, median))
}

/// One PostgreSQL commit on `cluster`, as `pgbench` measures it: one prepared `INSERT` per
/// transaction from one client for `secs`, into a table of a fresh database; (transactions
/// per second, median ms), from pgbench's per-transaction log.
fn pgbench_commit(
    cluster: &restate_runtime::testing::PostgresCluster,
    secs: u32,
) -> Result<(f64, f64), String> {
    let pgbench = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("/usr/lib/postgresql: {e}"))?
        .filter_map(|v| Some(v.ok()?.path().join("bin/pgbench")))
        .find(|p| p.exists())
        .ok_or("pgbench is not installed")?;
    let url = cluster.fresh_database().map_err(|e| e.to_string())?;
    cluster
        .execute(&url, "CREATE TABLE commits (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())")
        .map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("loadgen-pgbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let script = dir.join("commit.sql");
    std::fs::write(&script, "INSERT INTO commits DEFAULT VALUES;\n").map_err(|e| e.to_string())?;
    let output = Command::new(&pgbench)
        .args(["-n", "-c", "1", "-j", "1", "-M", "prepared", "-l"])
        .arg(format!("--log-prefix={}", dir.join("log").display()))
        .args(["-T", &secs.to_string(), "-f"])
        .arg(&script)
        .arg(&url)
        .output()
        .map_err(|e| format!("{}: {e}", pgbench.display()))?;
    let measured = (|| {
        if !output.status.success() {
            return Err(format!(
                "pgbench: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        // One line per transaction; its third field is the latency in microseconds.
        let mut latencies = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| e.to_string())? {
            let path = entry.map_err(|e| e.to_string())?.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("log"))
            {
                let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
                latencies.extend(
                    text.lines()
                        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<f64>().ok()),
                );
            }
        }
        if latencies.is_empty() {
            return Err("pgbench logged no transaction".into());
        }
        latencies.sort_by(f64::total_cmp);
        let median = latencies[latencies.len() / 2] / 1000.0;
        Ok((latencies.len() as f64 / f64::from(secs), median))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    measured
}

#[allow(clippy::too_many_arguments)]
async fn run_attempt(
    args: &Args,
    client: &reqwest::Client,
    base: &str,
    scenario: &Arc<Scenario>,
    concurrency: u64,
    pids: &[u32],
    counter: &Arc<AtomicU64>,
    nonce: u64,
) -> Attempt {
    let baseline = if scenario.fanout {
        settled_fanout_sum(client, base).await
    } else {
        0
    };
    let commits_before = commit_stats(client, args.metrics.as_deref()).await;
    let (cpu_before, _) = server_stats(pids);
    let (own_before, machine_before) = (
        examples::procfs::own_cpu_secs_with_children(),
        machine_cpu(),
    );
    let row_started = Instant::now();
    let seconds = args.seconds as f64;
    let row = match args.driver {
        Driver::Reqwest => {
            run_reqwest(client, base, scenario, concurrency, seconds, counter, nonce).await
        }
        Driver::Wrk => {
            let (b, s) = (base.to_string(), scenario.clone());
            let n = nonce + counter.fetch_add(1, Ordering::Relaxed);
            tokio::task::spawn_blocking(move || run_wrk(&b, &s, concurrency, seconds, n))
                .await
                .unwrap()
        }
    };
    let load_ended = Instant::now();
    let (cpu_after, hwm_kb) = server_stats(pids);
    let commits = match (
        commits_before,
        commit_stats(client, args.metrics.as_deref()).await,
    ) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };
    let driver_cpu = examples::procfs::own_cpu_secs_with_children() - own_before;
    let machine = machine_cpu() - machine_before;
    let (server_cpu, other) = if pids.is_empty() {
        (None, None)
    } else {
        let server = cpu_after - cpu_before;
        (Some(server), Some((machine - server - driver_cpu).max(0.0)))
    };
    let drain = if scenario.fanout {
        let target = baseline + FANOUT_KEYS as i64 * row.ok as i64;
        let (messages, backlog_at_end, tail_s, total_s, complete) = wait_drained(
            client,
            base,
            baseline,
            target,
            row_started,
            load_ended,
            Duration::from_secs(args.drain_timeout),
        )
        .await;
        Some(Drain {
            concurrency,
            acked: row.ok,
            messages,
            backlog_at_end,
            tail_s,
            total_s,
            complete,
        })
    } else {
        None
    };
    Attempt {
        row,
        server_cpu,
        hwm_kb,
        driver_cpu,
        other,
        drain,
        commits,
        tries: 1,
    }
}

/// Waits (at most 5 minutes) until the machine's CPUs are less than 10% busy over 2 s.
async fn wait_quiet() {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let started = Instant::now();
    loop {
        let before = machine_cpu();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let busy = (machine_cpu() - before) / (2.0 * cpus);
        if busy < 0.10 || started.elapsed() > Duration::from_secs(300) {
            return;
        }
    }
}

fn fmt_ms(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else {
        format!("{v:.2}")
    }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .build()
        .unwrap();

    // A private PostgreSQL cluster with its default durability, for `--postgres`; declared
    // before the guard so that the server stops before the database does.
    let postgres = args.postgres.then(|| {
        if args.url.is_some() {
            usage("--postgres starts its own server on a private cluster: drop --url");
        }
        restate_runtime::testing::PostgresCluster::start_durable()
            .unwrap_or_else(|e| panic!("a private PostgreSQL cluster: {e}"))
    });
    if args.standbys > 0 && !args.postgres {
        usage("--standbys needs --postgres (processes share a database)");
    }
    let mut guard = ServerGuard {
        child: None,
        standbys: Vec::new(),
        dir: None,
    };
    let mut args = args;
    let mut pids = args.pids.clone();
    let base = match &args.url {
        Some(_) if args.soak_minutes.is_some() => {
            usage("--soak starts its own server (its data folder is measured): drop --url")
        }
        Some(url) => {
            // Ready when an echo answers (the deployment is registered and reachable).
            let started = Instant::now();
            loop {
                let r = client
                    .post(format!("{url}/Noop/echo"))
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
                    .await;
                if matches!(&r, Ok(r) if r.status().is_success()) {
                    break;
                }
                if started.elapsed() > Duration::from_secs(60) {
                    eprintln!("loadgen: {url}/Noop/echo did not answer 2xx within 60 s: {r:?}");
                    std::process::exit(1);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            url.clone()
        }
        None => {
            let (port, admin_port) = (examples::free_port(), examples::free_port());
            let dir = std::env::temp_dir().join(format!("bench-data-{port}"));
            let _ = std::fs::remove_dir_all(&dir);
            let retention = args.soak_minutes.map(|_| args.retention.as_str());
            let database_url = postgres.as_ref().map(|cluster| {
                cluster
                    .fresh_database()
                    .expect("a database on the private cluster")
            });
            let child = start_server(
                &args.server,
                port,
                admin_port,
                &dir,
                retention,
                database_url.as_deref(),
            );
            args.metrics = Some(format!("http://127.0.0.1:{admin_port}"));
            pids = vec![child.id()];
            guard.child = Some(child);
            guard.dir = Some(dir);
            let mut base = format!("http://127.0.0.1:{port}");
            wait_healthy(&client, &base).await;
            let mut admins = vec![format!("http://127.0.0.1:{admin_port}")];
            for _ in 0..args.standbys {
                let (port, admin_port) = (examples::free_port(), examples::free_port());
                let standby_dir = std::env::temp_dir().join(format!("bench-standby-{port}"));
                let child = start_server(
                    &args.server,
                    port,
                    admin_port,
                    &standby_dir,
                    retention,
                    database_url.as_deref(),
                );
                pids.push(child.id());
                guard.standbys.push(child);
                base = format!("http://127.0.0.1:{port}");
                wait_healthy(&client, &base).await;
                admins.push(format!("http://127.0.0.1:{admin_port}"));
            }
            if args.standbys > 0 {
                wait_spread(&client, &admins).await;
            }
            base
        }
    };

    let mut tsv = args.tsv.as_ref().map(|path| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open --tsv file")
    });
    let label = args
        .label
        .clone()
        .unwrap_or_else(|| "bench-services".into());
    let driver = match args.driver {
        Driver::Reqwest => "reqwest",
        Driver::Wrk => "wrk",
    };
    let counter = Arc::new(AtomicU64::new(0));

    if args.warmup > 0.0 {
        let echo = Arc::new(scenarios().remove(0));
        match args.driver {
            Driver::Reqwest => {
                run_reqwest(&client, &base, &echo, 8, args.warmup, &counter, nonce).await;
            }
            Driver::Wrk => {
                let (b, s) = (base.clone(), echo.clone());
                let w = args.warmup;
                tokio::task::spawn_blocking(move || run_wrk(&b, &s, 8, w, nonce))
                    .await
                    .unwrap();
            }
        }
    }

    if let (Some(minutes), Some(dir)) = (args.soak_minutes, &guard.dir) {
        let scenario = scenarios()
            .into_iter()
            .find(|s| {
                args.only
                    .as_ref()
                    .is_none_or(|o| s.name.contains(o.as_str()))
            })
            .unwrap_or_else(|| usage("--only matches no scenario"));
        let rows = soak(
            &base,
            &scenario,
            minutes,
            pids[0],
            dir,
            nonce,
            &args.retention,
        );
        if let Some(f) = &mut tsv {
            for r in &rows {
                writeln!(
                    f,
                    "soak\t{label}\t{}\t{}\t{:.0}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    scenario.name,
                    r.minute,
                    r.rate,
                    fmt_ms(r.pct[0]),
                    fmt_ms(r.pct[2]),
                    fmt_ms(r.pct[3]),
                    fmt_ms(r.pct[4]),
                    r.rss_kib,
                    r.store_bytes,
                    r.log_bytes
                )
                .unwrap();
            }
        }
        return;
    }
    println!(
        "{label}: driver {driver}, {} s per row, server processes {pids:?}\n",
        args.seconds
    );
    let disk = match disk_fsync_rate(&std::env::temp_dir(), 2.0) {
        Ok((rate, median)) => {
            println!(
                "disk: {rate:.0} single-thread 4 KiB pwrite + fdatasync per second (median {median:.3} ms), in {}\n",
                std::env::temp_dir().display()
            );
            if let Some(f) = &mut tsv {
                writeln!(f, "disk\t{label}\t{rate:.0}\t{median:.3}").unwrap();
            }
            Some(rate)
        }
        Err(e) => {
            println!("disk: fsync rate not measured ({e})\n");
            None
        }
    };
    println!(
        "| scenario | concurrency | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors | server CPU s | server peak RSS MiB | driver CPU s | other CPU s | tries |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut drains = Vec::new();
    let mut commit_rows = Vec::new();
    let mut echo_p50 = None;
    for scenario in scenarios() {
        if let Some(only) = &args.only
            && !scenario.name.contains(only.as_str())
        {
            continue;
        }
        let scenario = Arc::new(scenario);
        for concurrency in [1u64, 64] {
            // A row disturbed by foreign CPU load is run again once the machine is quiet;
            // the least disturbed attempt is reported.
            let mut best: Option<Attempt> = None;
            for attempt in 1..=args.tries.max(1) {
                if attempt > 1 {
                    wait_quiet().await;
                }
                let a = run_attempt(
                    &args,
                    &client,
                    &base,
                    &scenario,
                    concurrency,
                    &pids,
                    &counter,
                    nonce,
                )
                .await;
                let disturbed = a.other.is_some_and(|o| o > args.max_other_cpu);
                if disturbed && attempt < args.tries {
                    eprintln!(
                        "{} c{concurrency}: {:.1} CPU s of foreign load, retrying",
                        scenario.name,
                        a.other.unwrap_or(0.0)
                    );
                }
                let better = match &best {
                    None => true,
                    Some(b) => a.other.unwrap_or(0.0) < b.other.unwrap_or(0.0),
                };
                let tries = attempt;
                if better {
                    best = Some(a);
                }
                if let Some(b) = &mut best {
                    b.tries = tries;
                }
                if !disturbed {
                    break;
                }
            }
            let a = best.expect("one attempt");
            let row = &a.row;
            let (cpu, rss, other) = match (a.server_cpu, a.other) {
                (Some(server), Some(other)) => (
                    format!("{server:.1}"),
                    format!("{:.0}", a.hwm_kb as f64 / 1024.0),
                    format!("{other:.1}"),
                ),
                _ => ("n/a".to_string(), "n/a".to_string(), "n/a".to_string()),
            };
            let driver_cpu = a.driver_cpu;
            let rate = row.ok as f64 / row.elapsed;
            println!(
                "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {cpu} | {rss} | {driver_cpu:.1} | {other} | {} |",
                scenario.name,
                concurrency,
                rate,
                fmt_ms(row.pct[0]),
                fmt_ms(row.pct[1]),
                fmt_ms(row.pct[2]),
                fmt_ms(row.pct[3]),
                fmt_ms(row.pct[4]),
                row.errors,
                a.tries,
            );
            if let Some(f) = &mut tsv {
                writeln!(
                    f,
                    "row\t{label}\t{}\t{concurrency}\t{rate:.0}\t{}\t{}\t{}\t{}\t{cpu}\t{rss}\t{driver_cpu:.1}\t{other}\t{}\t{}\t{}",
                    scenario.name,
                    fmt_ms(row.pct[0]),
                    fmt_ms(row.pct[1]),
                    fmt_ms(row.pct[2]),
                    row.errors,
                    a.tries,
                    fmt_ms(row.pct[3]),
                    fmt_ms(row.pct[4]),
                )
                .unwrap();
            }
            if scenario.name == "echo" && concurrency == 1 {
                echo_p50 = Some(row.pct[0]);
            }
            drains.extend(a.drain);
            if let Some(c) = a.commits {
                commit_rows.push((scenario.name, concurrency, row.ok, row.elapsed, c));
            }
        }
    }
    if !commit_rows.is_empty() {
        println!(
            "\n| journal commits: scenario | concurrency | commits/s | requests per commit | write batches per commit | mean commit ms | commits/s ÷ disk fdatasync/s |"
        );
        println!("|---|---|---|---|---|---|---|");
        for (name, concurrency, ok, elapsed, c) in &commit_rows {
            let per_s = c.commits / elapsed;
            let share = disk.map_or("n/a".to_string(), |d| format!("{:.0}%", 100.0 * per_s / d));
            let per_commit = |n: f64| {
                if c.commits > 0.0 {
                    format!("{:.1}", n / c.commits)
                } else {
                    "n/a".into()
                }
            };
            let mean_ms = per_commit(c.seconds * 1000.0);
            println!(
                "| {name} | {concurrency} | {per_s:.0} | {} | {} | {mean_ms} | {share} |",
                per_commit(*ok as f64),
                per_commit(c.batches),
            );
            if let Some(f) = &mut tsv {
                writeln!(
                    f,
                    "commits\t{label}\t{name}\t{concurrency}\t{per_s:.0}\t{}\t{}\t{mean_ms}\t{share}",
                    per_commit(*ok as f64),
                    per_commit(c.batches),
                )
                .unwrap();
            }
        }
    }
    if !drains.is_empty() {
        println!(
            "\n| fanout 10, concurrency | requests acked | messages drained | backlog when load stopped | drained after load s | drained msgs/s (row start → drained) | backlog msgs/s (backlog / drained after load) |"
        );
        println!("|---|---|---|---|---|---|---|");
        for d in &drains {
            let rate = d.messages as f64 / d.total_s;
            // The pure drain rate, when the keys fell behind the senders (a backlog that
            // took under a second says little about it).
            let tail_rate = if d.backlog_at_end <= 0 {
                "n/a (no backlog)".to_string()
            } else if d.tail_s < 1.0 {
                "n/a (drained within 1 s)".to_string()
            } else {
                format!("{:.0}", d.backlog_at_end as f64 / d.tail_s)
            };
            println!(
                "| {} | {} | {}{} | {} | {:.1} | {:.0} | {tail_rate} |",
                d.concurrency,
                d.acked,
                d.messages,
                if d.complete { "" } else { " (timed out)" },
                d.backlog_at_end.max(0),
                d.tail_s,
                rate
            );
            if let Some(f) = &mut tsv {
                writeln!(
                    f,
                    "drain\t{label}\t{}\t{}\t{}\t{}\t{:.1}\t{rate:.0}\t{}\t{tail_rate}",
                    d.concurrency,
                    d.acked,
                    d.messages,
                    d.backlog_at_end.max(0),
                    d.tail_s,
                    d.complete
                )
                .unwrap();
            }
        }
    }
    if let Some(cluster) = &postgres {
        match pgbench_commit(cluster, 5) {
            Ok((tps, p50)) => {
                println!(
                    "\nOne PostgreSQL commit on the same cluster (pgbench, one prepared INSERT per transaction, 5 s at concurrency 1): p50 {p50:.3} ms, {tps:.0} transactions/s."
                );
                if let Some(echo) = echo_p50 {
                    println!(
                        "Echo at concurrency 1: p50 {} ms, {:.2}× one PostgreSQL commit.",
                        fmt_ms(echo),
                        echo / p50
                    );
                }
                if let Some(f) = &mut tsv {
                    writeln!(f, "pgcommit\t{label}\t{tps:.0}\t{p50:.3}").unwrap();
                }
            }
            Err(e) => println!("\nOne PostgreSQL commit: not measured ({e})."),
        }
    }
    drop(guard);
}
