//! A restart goes on with an invocation's retries where the killed process left them: the
//! failed attempts count towards `max_attempts` across processes, and the delay before the
//! next attempt is waited out, not cut short by the restart.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{App, lines, poll};

const BIN: &str = env!("CARGO_BIN_EXE_crash_app");

fn env(steps: &Path) -> Vec<(&'static str, String)> {
    vec![("STEPS_FILE", steps.display().to_string())]
}

/// The admin API's view of one invocation.
async fn view(client: &reqwest::Client, app: &App, id: &str) -> serde_json::Value {
    let url = format!("{}/invocations/{id}", app.admin);
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// The times (ms since the epoch) of `id`'s attempts, from the steps file.
fn attempts(steps: &PathBuf, id: &str) -> Vec<u64> {
    let prefix = format!("refused {id} ");
    lines(steps)
        .iter()
        .filter_map(|line| line.strip_prefix(&prefix))
        .map(|at| at.parse().unwrap())
        .collect()
}

/// Waits until `id` backs off after its `n`th attempt (its failure is durable by then), and
/// returns the time of the next attempt the admin API shows.
async fn backing_off_after(
    client: &reqwest::Client,
    app: &App,
    steps: &PathBuf,
    id: &str,
    n: u64,
) -> String {
    poll(Duration::from_secs(60), || async {
        let v = view(client, app, id).await;
        v["status"] == "backing-off" && v["attempts"] == n
    })
    .await;
    assert_eq!(attempts(steps, id).len() as u64, n);
    let v = view(client, app, id).await;
    v["next_retry_at"].as_str().unwrap().to_owned()
}

/// Three attempts allowed, four seconds apart, the process killed after each of the first two
/// failures: the restart shows the invocation backing off until the time it had, its next
/// attempt comes no sooner, and it is paused after the third attempt in all (found from
/// outside: each restart counted from nought and ran the next attempt at once, so a process
/// restarted often never reached `max_attempts`).
#[tokio::test]
async fn a_restart_goes_on_counting_failed_attempts_and_waits_out_the_delay() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let steps = dir.path().join("steps.log");
    let client = reqwest::Client::new();
    let mut app = App::start(BIN, &data, &env(&steps)).await;
    let id = {
        let url = format!("{}/Steps/refused/send", app.ingress);
        let r = client.post(url).send().await.unwrap();
        assert_eq!(r.status(), 202);
        let body: serde_json::Value = r.json().await.unwrap();
        body["invocationId"].as_str().unwrap().to_owned()
    };
    for n in 1..=2 {
        let next = backing_off_after(&client, &app, &steps, &id, n).await;
        app.kill();
        app = App::start(BIN, &data, &env(&steps)).await;
        // Shown backing off once its task is back (unless the machine took the whole delay
        // to restart: then the next attempt may have run).
        poll(Duration::from_secs(60), || async {
            let v = view(&client, &app, &id).await;
            v["status"] == "backing-off" || v["attempts"].as_u64() > Some(n)
        })
        .await;
        let v = view(&client, &app, &id).await;
        if v["attempts"] == n {
            assert_eq!(v["status"], "backing-off", "{v}");
            assert_eq!(v["next_retry_at"], next.as_str(), "{v}");
        }
    }
    poll(Duration::from_secs(60), || async {
        view(&client, &app, &id).await["status"] == "paused"
    })
    .await;
    let times = attempts(&steps, &id);
    assert_eq!(times.len(), 3, "{times:?}");
    let v = view(&client, &app, &id).await;
    assert_eq!(v["attempts"], 3, "{v}");
    let error = v["last_error"].as_str().unwrap();
    assert!(error.contains("after 3 attempts"), "{error}");
    for pair in times.windows(2) {
        assert!(
            pair[1] >= pair[0] + 4_000,
            "an attempt came {} ms after the one before, not after the delay of 4 s",
            pair[1] - pair[0]
        );
    }
}
