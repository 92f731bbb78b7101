//! A schedule firing every second survives SIGKILLs: with `catch_up = "all"` and
//! `overlap = "allow"`, every second from its first tick to its last ran exactly once, the
//! ticks that fell due while the process was down included.

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
    let first = created.json::<Value>().await.unwrap()["next_fire_at"]
        .as_str()
        .unwrap()
        .to_owned();

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
    poll(Duration::from_secs(30), || async {
        schedule(&client, &app).await["fired"].as_u64().unwrap() >= 20
    })
    .await;
    let paused = client
        .patch(format!("{}/schedules/every-second/pause", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 200);
    poll(Duration::from_secs(30), || async {
        schedule(&client, &app).await["running"] == 0
    })
    .await;
    let view = schedule(&client, &app).await;
    let last = view["last_fire_at"].as_str().unwrap().to_owned();

    let counts: BTreeMap<String, u32> = client
        .post(format!("{}/Ticks/t/counts", app.ingress))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected = seconds(&first, &last);
    assert!(expected.len() >= 20, "{first}..{last}");
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
    app.kill();
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
