//! A schedule firing every second survives SIGKILLs: with `catch_up = "all"` and
//! `overlap = "allow"`, every second from its first tick to its last ran exactly once, the
//! ticks that fell due while the process was down included; and so it does with two processes on
//! one PostgreSQL database, each SIGKILLed in turn.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use restate_runtime::ScheduledTime;
use serde_json::{Value, json};
use support::{App, free_port, poll};

const BIN: &str = env!("CARGO_BIN_EXE_crash_app");

async fn schedule(client: &reqwest::Client, app: &App) -> Value {
    client
        .get(format!("{}/schedules/every-second", app.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_second_fires_exactly_once_across_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port());
    let env = [("RESTATE_SUSPEND_AFTER", "20ms".to_owned())];
    let client = reqwest::Client::new();
    let mut app = App::start_on(BIN, dir.path(), &env, ports).await;
    let first = create_every_second(&client, &app).await;

    // Killed four times at uneven moments, each time after some ticks ran.
    for round in 0..4u64 {
        let fired = schedule(&client, &app).await["fired"].as_u64().unwrap();
        poll(Duration::from_secs(30), || async {
            schedule(&client, &app).await["fired"].as_u64().unwrap() >= fired + 2
        })
        .await;
        tokio::time::sleep(Duration::from_millis(137 * round)).await;
        app.kill();
        // Down for a moment: the ticks of that time are caught up after the restart.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        app = App::start_on(BIN, dir.path(), &env, ports).await;
    }
    assert_every_second_ran_once(&client, &app, &first, 20).await;
    app.kill();
}

/// Creates `every-second` (every second, catch up all, overlap allowed) through `app`; the
/// first tick's time.
async fn create_every_second(client: &reqwest::Client, app: &App) -> String {
    let created = client
        .post(format!("{}/schedules", app.admin))
        .json(&json!({
            "id": "every-second",
            "cron": "* * * * * *",
            "service": "Ticks",
            "key": "t",
            "handler": "add",
            "scheduled_time_input": true,
            "catch_up": "all",
            "overlap": "allow",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    created.json::<Value>().await.unwrap()["next_fire_at"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Pauses `every-second` once it fired at least `at_least` times, and checks that every
/// second from `first` to its last tick ran exactly once.
async fn assert_every_second_ran_once(
    client: &reqwest::Client,
    app: &App,
    first: &str,
    at_least: u64,
) {
    poll(Duration::from_secs(60), || async {
        schedule(client, app).await["fired"].as_u64().unwrap() >= at_least
    })
    .await;
    let paused = client
        .patch(format!("{}/schedules/every-second/pause", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 200);
    poll(Duration::from_secs(30), || async {
        schedule(client, app).await["running"] == 0
    })
    .await;
    let view = schedule(client, app).await;
    let last = view["last_fire_at"].as_str().unwrap().to_owned();
    let counts: BTreeMap<String, u32> = client
        .post(format!("{}/Ticks/t/counts", app.ingress))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected = seconds(first, &last);
    assert!(expected.len() as u64 >= at_least, "{first}..{last}");
    let missing: Vec<_> = expected
        .iter()
        .filter(|s| !counts.contains_key(*s))
        .collect();
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    let extra: Vec<_> = counts.keys().filter(|s| !expected.contains(s)).collect();
    assert!(
        missing.is_empty() && twice.is_empty() && extra.is_empty(),
        "missing {missing:?}, more than once {twice:?}, outside {first}..{last}: {extra:?}"
    );
    assert_eq!(view["fired"].as_u64().unwrap(), expected.len() as u64);
}

/// Two processes on one PostgreSQL database: the schedule fires once per second in all (not
/// once per process), and when the process running its partition is SIGKILLed the other takes
/// it over within the lease and catches up the seconds it missed, each once.
#[tokio::test(flavor = "multi_thread")]
async fn every_second_fires_exactly_once_across_two_processes_and_their_sigkills_on_postgres() {
    use restate_runtime::testing::PostgresCluster;
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let cluster = PostgresCluster::shared().expect("a private PostgreSQL cluster");
    let url = cluster.fresh_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("RESTATE_DATABASE_URL", url),
        ("RESTATE_LEASE_TTL", "1s".to_owned()),
        ("RESTATE_SUSPEND_AFTER", "20ms".to_owned()),
    ];
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let ports = [(free_port(), free_port()), (free_port(), free_port())];
    let folder = |i: usize| dir.path().join(format!("p{i}"));
    let mut apps = [
        Some(App::start_on(BIN, &folder(0), &env, ports[0]).await),
        Some(App::start_on(BIN, &folder(1), &env, ports[1]).await),
    ];
    let first = create_every_second(&client, apps[1].as_ref().unwrap()).await;
    // Each process is killed in turn while the other runs on, then started again.
    for round in 0..4usize {
        let (victim, other) = (round % 2, 1 - round % 2);
        let watcher = apps[other].take().unwrap();
        let fired = schedule(&client, &watcher).await["fired"].as_u64().unwrap();
        poll(Duration::from_secs(30), || async {
            schedule(&client, &watcher).await["fired"].as_u64().unwrap() >= fired + 2
        })
        .await;
        tokio::time::sleep(Duration::from_millis(173 * round as u64)).await;
        apps[victim].take().unwrap().kill();
        // The survivor keeps the schedule going (taking the partition over if it was the
        // victim's) before the victim comes back.
        let fired = schedule(&client, &watcher).await["fired"].as_u64().unwrap();
        poll(Duration::from_secs(30), || async {
            schedule(&client, &watcher).await["fired"].as_u64().unwrap() >= fired + 3
        })
        .await;
        apps[other] = Some(watcher);
        apps[victim] = Some(App::start_on(BIN, &folder(victim), &env, ports[victim]).await);
    }
    let app = apps[0].as_ref().unwrap();
    assert_every_second_ran_once(&client, app, &first, 20).await;
    for app in apps.into_iter().flatten() {
        app.kill();
    }
}

/// Every whole second from `first` to `last` (RFC 3339, UTC), as the runtime writes them.
fn seconds(first: &str, last: &str) -> Vec<String> {
    let millis = |s: &str| -> u64 {
        let t: ScheduledTime = serde_json::from_value(json!(s)).unwrap();
        t.unix_millis()
    };
    (millis(first)..=millis(last))
        .step_by(1000)
        .map(|ms| ScheduledTime::from_unix_millis(ms).to_string())
        .collect()
}
