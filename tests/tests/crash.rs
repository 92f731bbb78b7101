//! Crash recovery across processes: the app is killed with SIGKILL mid-invocation, restarted on
//! the same data folder, and the invocation completes with every journaled step counted once.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{App, lines, poll};

const BIN: &str = env!("CARGO_BIN_EXE_crash_app");

/// Environment for the crash app: where its steps log and how long each step takes.
fn steps_env(steps: &std::path::Path, step_ms: u32) -> [(&'static str, String); 2] {
    [
        ("STEPS_FILE", steps.display().to_string()),
        ("STEP_MS", step_ms.to_string()),
    ]
}

/// `POST /Steps/run/send` with an idempotency key; returns the invocation id of the 202.
async fn send_steps(app: &App, key: &str, n: u32) -> String {
    let r = reqwest::Client::new()
        .post(format!("{}/Steps/run/send", app.ingress))
        .header("idempotency-key", key)
        .json(&n)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.unwrap()["invocationId"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn killed_mid_invocation_resumes_and_runs_each_step_once() {
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps.log");
    let env = steps_env(&steps, 1500);
    let app = App::start(BIN, &dir.path().join("data"), &env).await;
    let client = reqwest::Client::new();
    let id = send_steps(&app, "job-1", 4).await;
    // Kill once two steps are journaled (the third is still in its delay, before its effect).
    let inspect = format!("{}/invocations/{id}", app.admin);
    poll(Duration::from_secs(60), || {
        let inspect = inspect.clone();
        async move {
            let v: Value = reqwest::get(inspect).await.unwrap().json().await.unwrap();
            v["journal"].as_array().is_some_and(|j| j.len() == 2)
        }
    })
    .await;
    app.kill();
    assert_eq!(
        lines(&steps)
            .iter()
            .filter(|l| l.starts_with("step-"))
            .count(),
        2,
        "two steps ran before the kill"
    );

    let app = App::start(BIN, &dir.path().join("data"), &env).await;
    let r = client
        .get(format!("{}/restate/invocation/{id}/attach", app.ingress))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<u32>().await.unwrap(), 4);
    let log = lines(&steps);
    for i in 0..4 {
        let step = format!("step-{i}");
        assert_eq!(
            log.iter().filter(|l| **l == step).count(),
            1,
            "{step} in {log:?}"
        );
    }
    assert_eq!(
        log.iter().filter(|l| l.starts_with("start")).count(),
        2,
        "the handler replayed once"
    );
    // A duplicate of the finished job gets its result without running anything.
    let r = client
        .post(format!("{}/Steps/run", app.ingress))
        .header("idempotency-key", "job-1")
        .json(&4)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<u32>().await.unwrap(), 4);
    assert_eq!(lines(&steps).len(), log.len());
}

#[tokio::test]
async fn an_acknowledged_send_survives_an_immediate_kill() {
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps.log");
    let env = steps_env(&steps, 300);
    let app = App::start(BIN, &dir.path().join("data"), &env).await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(send_steps(&app, &format!("quick-{i}"), 1).await);
    }
    app.kill();
    let app = App::start(BIN, &dir.path().join("data"), &env).await;
    for id in ids {
        let r = client
            .get(format!("{}/restate/invocation/{id}/attach", app.ingress))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{id}");
        assert_eq!(r.json::<u32>().await.unwrap(), 1);
    }
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully_and_work_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps.log");
    let env = steps_env(&steps, 800);
    let app = App::start(BIN, &dir.path().join("data"), &env).await;
    let client = reqwest::Client::new();
    let id = send_steps(&app, "term", 3).await;
    let status = app.terminate();
    assert!(status.success(), "exits cleanly on SIGTERM: {status:?}");
    let app = App::start(BIN, &dir.path().join("data"), &env).await;
    let r = client
        .get(format!("{}/restate/invocation/{id}/attach", app.ingress))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<u32>().await.unwrap(), 3);
    let log = lines(&steps);
    for i in 0..3 {
        assert!(log.contains(&format!("step-{i}")), "{log:?}");
    }
}

#[tokio::test]
async fn a_second_process_on_the_same_data_folder_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let steps = dir.path().join("steps.log").display().to_string();
    let _first = App::start(BIN, &data, &[("STEPS_FILE", steps.clone())]).await;
    let second = std::process::Command::new(BIN)
        .env_clear()
        .env("RESTATE_DATA_DIR", &data)
        .env(
            "RESTATE_INGRESS_ADDR",
            format!("127.0.0.1:{}", support::free_port()),
        )
        .env(
            "RESTATE_ADMIN_ADDR",
            format!("127.0.0.1:{}", support::free_port()),
        )
        .env("STEPS_FILE", steps)
        .output()
        .expect("second process runs");
    assert!(
        !second.status.success(),
        "the second process must not start"
    );
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("in use by another process"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
