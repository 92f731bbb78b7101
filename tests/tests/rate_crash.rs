//! A rate limit holds across a SIGKILL and downtime: 80 invocations of a handler limited to
//! 20 a second, the process killed after the first ten and left down for two seconds (forty
//! reservations fall due meanwhile); after the restart no second holds more runs than the
//! limit allows, and every invocation runs.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::{App, free_port, lines, poll, send_json};

const BIN: &str = env!("CARGO_BIN_EXE_crash_app");

/// (n, unix ms) of each run logged.
fn runs(path: &std::path::PathBuf) -> Vec<(u32, u64)> {
    lines(path)
        .iter()
        .filter_map(|l| {
            let mut words = l.strip_prefix("rated ")?.split(' ');
            Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn no_second_after_a_restart_holds_more_runs_than_the_rate_limit() {
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps.log");
    let ports = (free_port(), free_port());
    let env = [
        ("STEPS_FILE", steps.display().to_string()),
        ("RESTATE_SUSPEND_AFTER", "100ms".to_owned()),
    ];
    let data = dir.path().join("data");
    let client = reqwest::Client::new();
    let app = App::start_on(BIN, &data, &env, ports).await;
    for n in 0..80 {
        send_json(&client, &app.ingress, "/Gated/rated", &n).await;
    }
    poll(Duration::from_secs(30), || async {
        runs(&steps).len() >= 10
    })
    .await;
    app.kill();
    // The downtime is the scenario: reservations fall due while nothing runs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _app = App::start_on(BIN, &data, &env, ports).await;
    poll(Duration::from_secs(60), || async {
        runs(&steps)
            .iter()
            .map(|(n, _)| *n)
            .collect::<BTreeSet<_>>()
            .len()
            == 80
    })
    .await;
    let mut times: Vec<u64> = runs(&steps).iter().map(|(_, at)| *at).collect();
    times.sort_unstable();
    // One every 50 ms: 21 fit in a closed second; one more for a run logged late after the
    // one before it was logged on time.
    let busiest = times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|t| (*start..*start + 1000).contains(t))
                .count()
        })
        .max()
        .unwrap();
    assert!(busiest <= 22, "{busiest} runs in one second: {times:?}");
}
