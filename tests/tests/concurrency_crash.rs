//! A concurrency limit holds across SIGKILLs: twelve invocations of a handler with
//! `concurrency = 2` whose step takes 300 ms, the process killed twice while they run; in each
//! process never more than two steps run at once, and every invocation completes.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;
use support::{App, free_port, lines, poll};

const BIN: &str = env!("CARGO_BIN_EXE_crash_app");

#[tokio::test(flavor = "multi_thread")]
async fn a_concurrency_limit_holds_across_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps.log");
    let ports = (free_port(), free_port());
    let env = [
        ("STEPS_FILE", steps.display().to_string()),
        ("STEP_MS", "300".to_owned()),
        ("RESTATE_SUSPEND_AFTER", "20ms".to_owned()),
    ];
    let data = dir.path().join("data");
    let client = reqwest::Client::new();
    let mut app = App::start_on(BIN, &data, &env, ports).await;
    let mut ids = Vec::new();
    for n in 0..12 {
        let r = client
            .post(format!("{}/Gated/work/send", app.ingress))
            .json(&json!(n))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let body: serde_json::Value = r.json().await.unwrap();
        ids.push(body["invocationId"].as_str().unwrap().to_owned());
    }
    for round in 1..=2 {
        let started = |log: &[String]| log.iter().filter(|l| l.starts_with("gated start")).count();
        let before = started(&lines(&steps));
        poll(Duration::from_secs(30), || async {
            started(&lines(&steps)) >= before + 2
        })
        .await;
        app.kill();
        app = App::start_on(BIN, &data, &env, ports).await;
        let _ = round;
    }
    for id in &ids {
        let url = format!("{}/restate/invocation/{id}/attach", app.ingress);
        poll(Duration::from_secs(60), || async {
            client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
    }
    // In each process, never more than two steps between their start and their end.
    let log = lines(&steps);
    let mut open: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut most = 0;
    let mut ended = BTreeSet::new();
    for line in &log {
        let parts: Vec<&str> = line.split(' ').collect();
        let ["gated", what, n, pid] = parts[..] else {
            continue;
        };
        let running = open.entry(pid.to_owned()).or_default();
        if what == "start" {
            running.insert(n.to_owned());
            most = most.max(running.len());
        } else {
            running.remove(n);
            ended.insert(n.to_owned());
        }
    }
    assert!(most <= 2, "{most} at once:\n{}", log.join("\n"));
    assert_eq!(most, 2, "the limit was used");
    assert_eq!(
        ended.len(),
        12,
        "every invocation's step ended:\n{}",
        log.join("\n")
    );
    app.kill();
}
