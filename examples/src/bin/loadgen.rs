//! Load driver: starts `bench-services` (release build next to this binary) on a fresh data
//! folder, runs each scenario at concurrency 1 and 64 over loopback HTTP, and prints a table of
//! requests/s, p50/p90/p99 latency, and the server's CPU time and peak memory.
//!
//! ```sh
//! cargo build --release --bin bench-services --bin loadgen
//! ./target/release/loadgen --seconds 5
//! ```

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

struct Scenario {
    name: &'static str,
    path: fn(u64) -> String,
    body: Option<&'static str>,
    idempotent: bool,
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "echo",
            path: |_| "/Noop/echo".into(),
            body: Some(r#"{"hello":"world","n":42}"#),
            idempotent: false,
        },
        Scenario {
            name: "steps (3 runs)",
            path: |_| "/Steps/three".into(),
            body: None,
            idempotent: false,
        },
        Scenario {
            name: "counter, 1 key",
            path: |_| "/Counter/hot/add".into(),
            body: Some("1"),
            idempotent: false,
        },
        Scenario {
            name: "counter, 1000 keys",
            path: |i| format!("/Counter/k{}/add", i % 1000),
            body: Some("1"),
            idempotent: false,
        },
        Scenario {
            name: "echo /send",
            path: |_| "/Noop/echo/send".into(),
            body: Some(r#"{"hello":"world","n":42}"#),
            idempotent: false,
        },
        Scenario {
            name: "echo + idempotency key",
            path: |_| "/Noop/echo".into(),
            body: Some(r#"{"hello":"world","n":42}"#),
            idempotent: true,
        },
        Scenario {
            name: "fanout 10",
            path: |_| "/Fanout/send".into(),
            body: Some("10"),
            idempotent: false,
        },
    ]
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn proc_stats(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (ticks as f64 / 100.0, hwm_kb)
}

fn start_server(port: u16, dir: &std::path::Path) -> Child {
    let exe = std::env::current_exe().expect("exe");
    let bin = exe.with_file_name("bench-services");
    Command::new(bin)
        .env_clear()
        .env("RUST_LOG", "warn")
        .env("RESTATE_DATA_DIR", dir)
        .env("RESTATE_INGRESS_ADDR", format!("127.0.0.1:{port}"))
        .env("RESTATE_ADMIN_ADDR", "127.0.0.1:0")
        .stdout(Stdio::null())
        .spawn()
        .expect("bench-services starts (build it with --release first)")
}

#[tokio::main]
async fn main() {
    let seconds = arg("--seconds", 5);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("bench-data-{port}"));
    let _ = std::fs::remove_dir_all(&dir);
    let mut server = start_server(port, &dir);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .build()
        .unwrap();
    while client
        .get(format!("{base}/restate/health"))
        .send()
        .await
        .is_err()
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "| scenario | concurrency | req/s | p50 ms | p90 ms | p99 ms | server CPU s | server peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let counter = Arc::new(AtomicU64::new(0));
    for scenario in scenarios() {
        let scenario = Arc::new(scenario);
        for concurrency in [1u64, 64] {
            let (cpu_before, _) = proc_stats(server.id());
            let deadline = Instant::now() + Duration::from_secs(seconds);
            let started = Instant::now();
            let workers: Vec<_> = (0..concurrency)
                .map(|_| {
                    let (client, base, scenario, counter) = (
                        client.clone(),
                        base.clone(),
                        scenario.clone(),
                        counter.clone(),
                    );
                    tokio::spawn(async move {
                        let mut latencies = Vec::new();
                        while Instant::now() < deadline {
                            let i = counter.fetch_add(1, Ordering::Relaxed);
                            let mut req = client.post(format!("{base}{}", (scenario.path)(i)));
                            if let Some(body) = scenario.body {
                                req = req.header("content-type", "application/json").body(body);
                            }
                            if scenario.idempotent {
                                req = req.header("idempotency-key", format!("k-{i}"));
                            }
                            let t = Instant::now();
                            let r = req.send().await.expect("request");
                            assert!(r.status().is_success(), "{}: {}", scenario.name, r.status());
                            let _ = r.bytes().await;
                            latencies.push(t.elapsed());
                        }
                        latencies
                    })
                })
                .collect();
            let mut all = Vec::new();
            for w in workers {
                all.extend(w.await.unwrap());
            }
            let elapsed = started.elapsed().as_secs_f64();
            all.sort();
            let pct = |p: f64| {
                all[((all.len() as f64 * p) as usize).min(all.len() - 1)].as_secs_f64() * 1000.0
            };
            let (cpu_after, hwm) = proc_stats(server.id());
            println!(
                "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {:.0} |",
                scenario.name,
                concurrency,
                all.len() as f64 / elapsed,
                pct(0.5),
                pct(0.9),
                pct(0.99),
                cpu_after - cpu_before,
                hwm as f64 / 1024.0
            );
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
