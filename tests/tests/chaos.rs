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
//! leases of two seconds: short, so that partitions move often, yet longer than a stall of a
//! busy two-core machine, which would end a healthy process's transaction. A paused process whose open
//! transaction the database ended meanwhile exits when continued (law 10); the test starts it
//! again, as a supervisor would. No step waits without a deadline.
//!
//! `CHAOS_SEED=<n>` replays a run; `CHAOS_SOAK=<factor>` makes it longer (more requests and
//! kills). The seed is printed at the start of each run,
//! so a failure shows it.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use support::{App, free_port, lines, quiet};

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
async fn output(fleet: &mut Fleet, client: &reqwest::Client, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let r = fleet
            .request(0, |ingress| {
                client.get(format!("{ingress}/restate/invocation/{id}/output"))
            })
            .await;
        if r.status() == 200 {
            return r.json().await.unwrap();
        }
        if start.elapsed() > Duration::from_secs(60) {
            panic!(
                "{id} has no output after 60 s\n{}",
                stuck_report(&fleet.apps[0], id).await
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls `cond` for up to 60 s, then fails the test with `what` and the admin views of
/// `id` and of every invocation not completed.
async fn within_a_minute<F, Fut>(app: &App, what: &str, id: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        if start.elapsed() > Duration::from_secs(60) {
            panic!("{what}: not within 60 s\n{}", stuck_report(app, id).await);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The body `url` answers with, or the error that came instead (for a report).
async fn get(url: String) -> String {
    match reqwest::get(url).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(e) => e.to_string(),
    }
}

/// [`get`], read as JSON (`null` when it is not).
async fn get_json(url: String) -> Value {
    serde_json::from_str(&get(url).await).unwrap_or_default()
}

/// The admin views of `id` and of every invocation that is not completed.
async fn stuck_report(app: &App, id: &str) -> String {
    let mut report = get(format!("{}/invocations/{id}", app.admin)).await;
    // Where the process's work is: in memory by status, attempts, timers, recovery.
    let metrics = get(format!("{}/metrics", app.admin)).await;
    let watched = [
        "restate_invocations_in_memory",
        "restate_attempts_running",
        "restate_timers_",
        "restate_recovery_pending",
        "restate_invocation_suspensions",
        "restate_invocation_retries",
    ];
    for line in metrics.lines() {
        if watched.iter().any(|w| line.starts_with(w)) {
            report.push_str(&format!("\nmetric: {line}"));
        }
    }
    for status in ["scheduled", "running", "suspended", "paused"] {
        let list = get_json(format!("{}/invocations?status={status}", app.admin)).await;
        for other in list["invocations"].as_array().into_iter().flatten() {
            let other = other["id"].as_str().unwrap_or_default();
            let view = get(format!("{}/invocations/{other}", app.admin)).await;
            report.push_str(&format!("\n{status}: {view}"));
        }
    }
    report
}

/// The admin views of the invocations whose result a journal (an admin view) records.
async fn sources_report(app: &App, view: &str) -> String {
    let view: Value =
        serde_json::from_str(view.lines().next().unwrap_or_default()).unwrap_or_default();
    let mut report = String::new();
    for entry in view["journal"].as_array().into_iter().flatten() {
        if ["attach", "get_output"].contains(&entry["kind"].as_str().unwrap_or_default()) {
            let source = entry["invocationId"].as_str().unwrap_or_default();
            let text = get(format!("{}/invocations/{source}", app.admin)).await;
            report.push_str(&format!("source {source}: {text}\n"));
        }
    }
    report
}

/// The processes of a run, each started again on its own addresses and data when it is
/// killed, or when it exits by itself on a storage failure: an owner whose open transaction
/// the database ended (paused, or stalled by the machine) exits (law 10), and a supervisor
/// starts it again.
struct Fleet {
    apps: Vec<App>,
    data: Vec<PathBuf>,
    env: Vec<(&'static str, String)>,
    ports: Vec<(u16, u16)>,
    /// Processes paused since they last started: those that usually exit by themselves.
    paused: HashSet<usize>,
    seed: u64,
}

impl Fleet {
    async fn start(
        seed: u64,
        data: Vec<PathBuf>,
        env: Vec<(&'static str, String)>,
        ports: Vec<(u16, u16)>,
    ) -> Self {
        let mut fleet = Self {
            apps: Vec::new(),
            data,
            env,
            ports,
            paused: HashSet::new(),
            seed,
        };
        for p in 0..fleet.ports.len() {
            fleet.start_again(p).await;
        }
        fleet
    }

    /// SIGKILL to process `p` (paused or not), then starts it again.
    async fn kill(&mut self, p: usize) {
        self.revive().await;
        self.apps.remove(p).kill();
        self.start_again(p).await;
    }

    /// Starts process `p` and waits until it answers; one that exits on a storage failure
    /// before that (the machine stalled its first lease round) is started again.
    async fn start_again(&mut self, p: usize) {
        for _ in 0..10 {
            let mut app = App::launch(BIN, &self.data[p], &self.env, self.ports[p]);
            match app.healthy_or_exited().await {
                Ok(()) => {
                    self.apps.insert(p, app);
                    self.paused.remove(&p);
                    return;
                }
                Err(status) => self.exited_on_storage_failure(p, status),
            }
        }
        panic!(
            "seed {}: process {p} exited ten times as it started",
            self.seed
        );
    }

    /// Fails the test unless `status` is the exit of law 10 (a storage failure).
    fn exited_on_storage_failure(&self, p: usize, status: std::process::ExitStatus) {
        let paused = self.paused.contains(&p);
        assert!(
            status.code() == Some(restate_runtime::STORAGE_FAILURE_EXIT_CODE),
            "seed {}: process {p} exited by itself ({status}, paused before: {paused})",
            self.seed,
        );
        println!(
            "process {p} exited on a storage failure (paused before: {paused}); started again"
        );
    }

    /// Starts again each process that exited by itself; one that ended otherwise than by the
    /// storage failure of law 10 fails the test. Mostly a paused one exits so; one that was
    /// not paused may too, when the machine stalled its open transaction past the lease.
    async fn revive(&mut self) {
        for p in 0..self.apps.len() {
            let Some(status) = self.apps[p].exited() else {
                continue;
            };
            self.exited_on_storage_failure(p, status);
            drop(self.apps.remove(p));
            self.start_again(p).await;
        }
    }

    /// Sends what `build` makes for an ingress address to process `n`, and to the next
    /// process after each transport error, for up to 60 s.
    async fn request(
        &mut self,
        n: usize,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> reqwest::Response {
        let start = Instant::now();
        for attempt in 0.. {
            self.revive().await;
            let app = &self.apps[(n + attempt) % self.apps.len()];
            match build(&app.ingress).send().await {
                Ok(r) => return r,
                Err(e) if start.elapsed() > Duration::from_secs(60) => {
                    let report = stuck_report(app, "").await;
                    panic!("seed {}: no process answers: {e:?}\n{report}", self.seed);
                }
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        unreachable!()
    }

    /// The status [`Fleet::request`] ends with once it is not a 503, which says nothing was
    /// done (a partition moving, an entry not journaled again yet after a kill): retried for
    /// up to 60 s, as a client does.
    async fn decided(&mut self, n: usize, build: impl Fn(&str) -> reqwest::RequestBuilder) -> u16 {
        let start = Instant::now();
        loop {
            let status = self.request(n, &build).await.status().as_u16();
            if status != 503 || start.elapsed() > Duration::from_secs(60) {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The answer to what `build` makes once it is a 200, retried through
    /// [`Fleet::request`] for up to 60 s (a 503 while a partition moves).
    async fn ok_json<T: serde::de::DeserializeOwned>(
        &mut self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
    ) -> T {
        let start = Instant::now();
        loop {
            let r = self.request(0, &build).await;
            let status = r.status();
            if status == 200 {
                return r.json().await.unwrap();
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "seed {}: {status} for 60 s: {}",
                self.seed,
                r.text().await.unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until nothing runs or waits in any process, starting again those that exit.
    async fn settle(&mut self, client: &reqwest::Client) {
        for p in 0..self.apps.len() {
            let start = Instant::now();
            loop {
                self.revive().await;
                if quiet(client, &self.apps[p].admin).await {
                    break;
                }
                if start.elapsed() > Duration::from_secs(60) {
                    let report = stuck_report(&self.apps[p], "").await;
                    panic!(
                        "seed {}: process {p} not quiet within 60 s\n{report}",
                        self.seed
                    );
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    }
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
        env.push(("RESTATE_LEASE_TTL", "2s".to_owned()));
    }
    let ports: Vec<_> = (0..processes).map(|_| (free_port(), free_port())).collect();
    let mut fleet = Fleet::start(seed, data, env, ports).await;
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
        let start = Instant::now();
        for round in 0.. {
            let pending: Vec<_> = chunk
                .iter()
                .filter(|(_, key, _, _)| !acknowledged.contains_key(key))
                .collect();
            if pending.is_empty() {
                break;
            }
            let keys: Vec<_> = pending.iter().map(|(_, key, _, _)| key).collect();
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "seed {seed}: {keys:?} not acknowledged within 120 s"
            );
            fleet.revive().await;
            // Each retry goes to the next process: one that does not answer starves nothing.
            let answers: Vec<_> = pending
                .iter()
                .enumerate()
                .map(|(n, (path, key, body, _))| {
                    let app = &fleet.apps[(n + round) % processes];
                    send(&client, app, path, key, body.clone())
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
                    fleet.paused.insert(victim);
                    pauses.push(tokio::spawn(pause_past_its_leases(
                        fleet.apps[victim].pid(),
                    )));
                } else {
                    println!("kill process {victim} after {sent} requests");
                    fleet.kill(victim).await;
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
        if path.starts_with("/Approval/") {
            let answer = fleet
                .decided(n, |ingress| {
                    client
                        .post(format!("{ingress}/Approval/{key}/approve"))
                        .json(key)
                })
                .await;
            assert!(
                [200, 409].contains(&answer),
                "seed {seed}: approve {key}: {answer}"
            );
        }
        if path == "/Chaos/await_http" {
            let prefix = format!("awakeable {key} ");
            let steps = steps.clone();
            let waiting = acknowledged.get(key).map_or("", |(id, _)| id.as_str());
            let announced = || {
                let (steps, prefix) = (steps.clone(), prefix.clone());
                async move { lines(&steps).iter().any(|l| l.starts_with(&prefix)) }
            };
            within_a_minute(
                &fleet.apps[0],
                &format!("{key} announced"),
                waiting,
                announced,
            )
            .await;
            let id = awakeable_id(&steps, &prefix);
            // A 503 (its entry not journaled again yet, after a kill) is retried.
            let answer = fleet
                .decided(n, |ingress| {
                    client
                        .post(format!("{ingress}/restate/a/{id}/resolve"))
                        .json(&format!("ok-{key}"))
                })
                .await;
            assert_eq!(answer, 202, "seed {seed}: resolve {key}");
        }
    }
    for (key, (id, expected)) in &acknowledged {
        let got = output(&mut fleet, &client, id).await;
        if &got != expected {
            let view = stuck_report(&fleet.apps[0], id).await;
            let sources = sources_report(&fleet.apps[0], &view).await;
            panic!("seed {seed}: {key} ({id}) returned {got}, not {expected}\n{view}\n{sources}");
        }
    }
    // Side effects: once nothing runs or waits, each key holds exactly two adds per mix.
    fleet.settle(&client).await;
    for k in 0..KEYS {
        let count: u64 = fleet
            .ok_json(|ingress| client.post(format!("{ingress}/Tally/{k}/get")))
            .await;
        let expected = 2 * (0..mixes).filter(|i| i % KEYS == k).count() as u64;
        if count != expected {
            let report = tally_report(&fleet, &client, k, expected).await;
            panic!("seed {seed}: Tally/{k} holds {count}, not {expected}\n{report}");
        }
    }
}

/// Why `Tally/{k}` does not hold `expected`: whether the count arrives late (read again for
/// ten seconds), and which adds its listed invocations returned (each count from 1 to
/// `expected` once: a missing one is a lost add, one returned twice a lost update).
async fn tally_report(fleet: &Fleet, client: &reqwest::Client, k: u64, expected: u64) -> String {
    let start = Instant::now();
    let mut later = Value::Null;
    while start.elapsed() < Duration::from_secs(10) {
        let r = client
            .post(format!("{}/Tally/{k}/get", fleet.apps[0].ingress))
            .send()
            .await;
        later = match r {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Value::Null,
        };
        if later == json!(expected) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut report = format!("read again for {:?}: {later}", start.elapsed());
    let admin = &fleet.apps[0].admin;
    let listed = get_json(format!(
        "{admin}/invocations?service=Tally&handler=add&key={k}&limit=1000"
    ))
    .await;
    let listed = listed["invocations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut returned: HashMap<u64, Vec<Value>> = HashMap::new();
    for invocation in &listed {
        let id = invocation["id"].as_str().unwrap_or_default();
        let view = get_json(format!("{admin}/invocations/{id}")).await;
        let count = view["result"]["success"].as_u64().unwrap_or(0);
        returned.entry(count).or_default().push(view);
    }
    report.push_str(&format!(
        "\n{} invocations of Tally/{k} listed",
        listed.len()
    ));
    let missing: Vec<u64> = (1..=expected)
        .filter(|c| !returned.contains_key(c))
        .collect();
    report.push_str(&format!("\nno add returned {missing:?}"));
    for (count, views) in &returned {
        if views.len() > 1 || *count == 0 || *count > expected {
            report.push_str(&format!("\n{} returned {count}:", views.len()));
            for view in views {
                report.push_str(&format!("\n  {view}"));
            }
        }
    }
    for app in &fleet.apps {
        report.push_str(&format!("\n{}", stuck_report(app, "").await));
    }
    report
}

/// Stops process `pid` (SIGSTOP) for longer than its two-second leases, then continues it:
/// what it was doing meets partitions taken over by the others meanwhile.
async fn pause_past_its_leases(pid: u32) {
    let signal = |name: &str| {
        std::process::Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    };
    // Exited meanwhile (a storage failure after an earlier pause of the same process, law
    // 10): nothing to pause; the fleet's next look starts it again.
    if !signal("-STOP") {
        return;
    }
    tokio::time::sleep(Duration::from_millis(3000)).await;
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
