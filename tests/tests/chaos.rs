//! Seeded chaos: a load that mixes every primitive (`Chaos/mix`: call, send, delayed send,
//! sleep, awakeable resolved by a handler, attach, select, cancel, state, and the combinators
//! all, race, unordered and or_timeout with typed handles; awakeables resolved
//! over HTTP; workflow promises resolved over HTTP), with SIGKILLs at request counts drawn from
//! a seed (not wall time, so a seed replays the same schedule). Afterwards every acknowledged
//! invocation has completed exactly once with its result, and the per-key counters that the
//! mixes add to hold exactly two per mix.
//!
//! On PostgreSQL the same runs with three processes on one database, requests spread over
//! all of them (each runs a share of the partitions and forwards work for the others'), any
//! one killed or paused (SIGSTOP) past its leases and continued (the others take its
//! partitions over; it drops them once it sees them taken, and takes its share again), and
//! leases of one second, so that partitions move often.
//!
//! `CHAOS_SEED=<n>` replays a run; `CHAOS_SOAK=<factor>` makes it longer (more requests and
//! kills). The seed is printed at the start of each run,
//! so a failure shows it.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::{App, free_port, lines, poll, quiet};

const BIN: &str = env!("CARGO_BIN_EXE_crash_app");
const KEYS: u64 = 8;

fn seed() -> u64 {
    std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random)
}

/// How many times the base load and kills: `CHAOS_SOAK`, or 4 (640 mixes and 12 kills per
/// variant, a few seconds each in CI now that dependencies are optimized in test builds).
fn soak() -> u64 {
    std::env::var("CHAOS_SOAK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4)
        .max(1)
}

/// What `Chaos/mix(i)` returns: `i`, the call's answer, the awakeable (1000), the attach and
/// the select (1 each), and the combinators and handles (12).
fn mix_result(i: u64) -> u64 {
    i + (2 + i % 3) + 1000 + 1 + 1 + 12
}

/// `POST path/send` with an idempotency key (and no body for `null`): the invocation id once
/// acknowledged (202), `None` when the process did not answer (it was killed) or answered
/// 503. Any other answer fails the test.
async fn send(
    client: &reqwest::Client,
    app: &App,
    path: &str,
    key: &str,
    body: Value,
) -> Option<String> {
    let mut request = client.post(format!("{}{path}/send", app.ingress));
    // A workflow's key already makes its `run` once; the ingress refuses a second key there.
    if !path.starts_with("/Approval/") {
        request = request.header("idempotency-key", key);
    }
    if !body.is_null() {
        request = request.json(&body);
    }
    let r = request.send().await.ok()?;
    // Not acknowledged, nothing done (its partition moved to another process as it came in):
    // sent again with the same key, as a client does.
    if r.status() == 503 {
        return None;
    }
    if r.status() != 202 {
        let status = r.status();
        panic!(
            "{path} {key}: {status} {}",
            r.text().await.unwrap_or_default()
        );
    }
    let v: Value = r.json().await.ok()?;
    Some(v["invocationId"].as_str()?.to_owned())
}

/// Polls an invocation's output until it is there (200) and returns it. An invocation still
/// without output after 60 s fails the test with its admin view (status and journal) and the
/// view of every invocation not yet completed, so a lost wake-up shows where it waits.
async fn output(app: &App, id: &str) -> Value {
    let url = format!("{}/restate/invocation/{id}/output", app.ingress);
    let start = std::time::Instant::now();
    while !reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) {
        if start.elapsed() > Duration::from_secs(60) {
            panic!(
                "{id} has no output after 60 s\n{}",
                stuck_report(app, id).await
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    reqwest::get(&url).await.unwrap().json().await.unwrap()
}

/// The admin views of `id` and of every invocation that is not completed.
async fn stuck_report(app: &App, id: &str) -> String {
    let get = |url: String| async move {
        match reqwest::get(url).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        }
    };
    let mut report = get(format!("{}/invocations/{id}", app.admin)).await;
    for status in ["scheduled", "running", "suspended", "paused"] {
        let list = get(format!("{}/invocations?status={status}", app.admin)).await;
        let list: Value = serde_json::from_str(&list).unwrap_or_default();
        for other in list["invocations"].as_array().into_iter().flatten() {
            let other = other["id"].as_str().unwrap_or_default();
            let view = get(format!("{}/invocations/{other}", app.admin)).await;
            report.push_str(&format!("\n{status}: {view}"));
        }
    }
    report
}

/// A chaos run with `RESTATE_SUSPEND_AFTER` and `RESTATE_RECOVERY_CONCURRENCY` as given, on
/// a data folder (one process) or on a database (`processes` of them).
async fn chaos(suspend_after: &str, restored_at_once: &str, database: Option<String>) {
    let seed = seed();
    let processes = if database.is_some() { 3 } else { 1 };
    println!(
        "chaos seed {seed} (RESTATE_SUSPEND_AFTER={suspend_after}, \
         RESTATE_RECOVERY_CONCURRENCY={restored_at_once}, {processes} process(es); \
         CHAOS_SEED={seed} replays it)"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let mixes = 160 * soak();
    let kills = 3 * soak() as usize;
    let mut kill_at: Vec<u64> = (0..kills).map(|_| rng.random_range(8..mixes)).collect();
    kill_at.sort_unstable();

    let dir = tempfile::tempdir().unwrap();
    let data: Vec<_> = (0..processes)
        .map(|p| dir.path().join(format!("data-{p}")))
        .collect();
    let steps = dir.path().join("steps.log");
    let mut env = vec![
        ("RESTATE_SUSPEND_AFTER", suspend_after.to_owned()),
        ("RESTATE_RECOVERY_CONCURRENCY", restored_at_once.to_owned()),
        ("STEPS_FILE", steps.display().to_string()),
        ("STEP_MS", "5".to_owned()),
    ];
    if let Some(url) = database {
        env.push(("RESTATE_DATABASE_URL", url));
        env.push(("RESTATE_LEASE_TTL", "1s".to_owned()));
    }
    let ports: Vec<_> = (0..processes).map(|_| (free_port(), free_port())).collect();
    let mut apps = Vec::new();
    for p in 0..processes {
        apps.push(App::start_on(BIN, &data[p], &env, ports[p]).await);
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // (path, key, body, expected output) of everything to get acknowledged.
    let mut work: Vec<(String, String, Value, Value)> = Vec::new();
    for i in 0..mixes {
        work.push((
            "/Chaos/mix".into(),
            format!("mix-{i}"),
            json!(i),
            json!(mix_result(i)),
        ));
        if i % 16 == 0 {
            let tag = format!("tag-{i}");
            work.push((
                "/Chaos/await_http".into(),
                tag.clone(),
                json!(tag),
                json!(format!("ok-{tag}")),
            ));
        }
        if i % 40 == 0 {
            let key = format!("wf-{i}");
            let path = format!("/Approval/{key}/run");
            work.push((
                path,
                key.clone(),
                Value::Null,
                json!(format!("approved: {key}")),
            ));
        }
    }
    let mut acknowledged: HashMap<String, (String, Value)> = HashMap::new();
    let mut sent = 0u64;
    let mut pauses = Vec::new();
    for chunk in work.chunks(8) {
        loop {
            let pending: Vec<_> = chunk
                .iter()
                .filter(|(_, key, _, _)| !acknowledged.contains_key(key))
                .collect();
            if pending.is_empty() {
                break;
            }
            let answers: Vec<_> = pending
                .iter()
                .enumerate()
                .map(|(n, (path, key, body, _))| {
                    send(&client, &apps[n % processes], path, key, body.clone())
                })
                .collect();
            let answers = futures::future::join_all(answers).await;
            for ((_, key, _, expected), id) in pending.into_iter().zip(answers) {
                if let Some(id) = id {
                    acknowledged.insert(key.clone(), (id, expected.clone()));
                }
            }
            sent += 8;
            if kill_at.first().is_some_and(|k| sent >= *k) {
                kill_at.remove(0);
                let victim = match processes {
                    1 => 0,
                    n => rng.random_range(0..n),
                };
                if processes > 1 && rng.random_bool(0.5) {
                    println!("pause process {victim} after {sent} requests");
                    // The load goes on meanwhile: what is sent to it waits in its socket.
                    pauses.push(tokio::spawn(pause_past_its_leases(apps[victim].pid())));
                } else {
                    println!("kill process {victim} after {sent} requests");
                    apps.remove(victim).kill();
                    let restarted = App::start_on(BIN, &data[victim], &env, ports[victim]).await;
                    apps.insert(victim, restarted);
                }
            }
        }
    }
    for pause in pauses {
        pause.await.unwrap();
    }
    // Promises and awakeables resolved over HTTP (first completion wins; a repeat is harmless),
    // through either process.
    for (n, (path, key, _, _)) in work.iter().enumerate() {
        let app = &apps[n % processes];
        if path.starts_with("/Approval/") {
            let url = format!("{}/Approval/{key}/approve", app.ingress);
            let r = client.post(url).json(key).send().await.unwrap();
            assert!(
                [200, 409].contains(&r.status().as_u16()),
                "seed {seed}: approve {key}"
            );
        }
        if path == "/Chaos/await_http" {
            let prefix = format!("awakeable {key} ");
            let steps = steps.clone();
            poll(Duration::from_secs(60), || {
                let (steps, prefix) = (steps.clone(), prefix.clone());
                async move { lines(&steps).iter().any(|l| l.starts_with(&prefix)) }
            })
            .await;
            let id = awakeable_id(&steps, &prefix);
            let url = format!("{}/restate/a/{id}/resolve", app.ingress);
            // A 503 (its entry not journaled again yet, after a kill) is retried, as a
            // client does with an answer that says nothing was done.
            let answer = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(0));
            poll(Duration::from_secs(60), || {
                let request = client.post(&url).json(&format!("ok-{key}")).send();
                let answer = answer.clone();
                async move {
                    let status = request.await.unwrap().status().as_u16();
                    answer.store(status, std::sync::atomic::Ordering::SeqCst);
                    status != 503
                }
            })
            .await;
            let answer = answer.load(std::sync::atomic::Ordering::SeqCst);
            assert_eq!(answer, 202, "seed {seed}: resolve {key}");
        }
    }
    let app = &apps[0];
    for (key, (id, expected)) in &acknowledged {
        assert_eq!(
            &output(app, id).await,
            expected,
            "seed {seed}: {key} ({id})"
        );
    }
    // Side effects: once nothing runs or waits, each key holds exactly two adds per mix.
    for app in &apps {
        poll(Duration::from_secs(60), || {
            let (client, admin) = (client.clone(), app.admin.clone());
            async move { quiet(&client, &admin).await }
        })
        .await;
    }
    for k in 0..KEYS {
        let url = format!("{}/Tally/{k}/get", app.ingress);
        let count: u64 = client.post(url).send().await.unwrap().json().await.unwrap();
        let expected = 2 * (0..mixes).filter(|i| i % KEYS == k).count() as u64;
        assert_eq!(count, expected, "seed {seed}: Tally/{k}");
    }
}

/// Stops process `pid` (SIGSTOP) for longer than its one-second leases, then continues it:
/// what it was doing meets partitions taken over by the others meanwhile.
async fn pause_past_its_leases(pid: u32) {
    let signal = |name: &str| {
        std::process::Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    };
    assert!(signal("-STOP"), "SIGSTOP to {pid}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Killed meanwhile (a later kill chose it): nothing to continue.
    signal("-CONT");
}

/// The awakeable id an `await_http` invocation announced (the last line for its tag: a
/// replayed announcement repeats the same id).
fn awakeable_id(steps: &Path, prefix: &str) -> String {
    lines(&steps.to_path_buf())
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix(prefix).map(str::to_owned))
        .unwrap()
}

#[tokio::test]
async fn chaos_with_suspension_after_one_millisecond() {
    // Restarts also restore two invocations at a time, the rest from disk as slots free.
    chaos("1ms", "2", None).await;
}

#[tokio::test]
async fn chaos_with_the_default_suspension() {
    chaos("10s", "256", None).await;
}

#[tokio::test]
async fn chaos_on_postgres_with_three_processes() {
    let Some(cluster) = restate_runtime::testing::PostgresCluster::for_tests() else {
        return;
    };
    chaos("1ms", "2", Some(cluster.fresh_database().unwrap())).await;
}
