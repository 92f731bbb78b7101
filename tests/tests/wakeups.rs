//! Wake-ups are never lost (law 9), checked across processes: completions and timers that race
//! a suspension, and a resumed invocation killed (SIGKILL) before it commits anything.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::{App, free_port, lines, poll};

const BIN: &str = env!("CARGO_BIN_EXE_crash_app");

/// Sends `count` requests, `concurrency` at a time, to `path` with inputs 3–7 (ms), and
/// returns those that did not answer `expected(input)` within 30 s each.
async fn flood(
    app: &App,
    path: &str,
    count: u64,
    concurrency: usize,
    expected: fn(u64) -> u64,
) -> Vec<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = Vec::new();
    for i in 0..count {
        let ms = 3 + i % 5;
        let (client, limit) = (client.clone(), limit.clone());
        let url = format!("{}{path}", app.ingress);
        tasks.push(tokio::spawn(async move {
            let _slot = limit.acquire_owned().await.unwrap();
            match client.post(&url).json(&ms).send().await {
                Ok(r) if r.status() == 200 => match r.json::<u64>().await {
                    Ok(v) if v == expected(ms) => None,
                    other => Some(format!("{url}({ms}): body {other:?}")),
                },
                Ok(r) => Some(format!("{url}({ms}): status {}", r.status())),
                Err(e) => Some(format!("{url}({ms}): {e}")),
            }
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        if let Some(f) = t.await.unwrap() {
            failures.push(f);
        }
    }
    failures
}

/// A handler suspends 5 ms into a wait that completes 3–7 ms in: the completion (a callee's
/// result, a timer) lands before, during or after the suspension's commit. Every request
/// answers.
#[tokio::test]
async fn completions_and_timers_racing_a_suspension_wake_it() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("RESTATE_SUSPEND_AFTER", "5ms".to_owned())];
    let app = App::start(BIN, &dir.path().join("data"), &env).await;
    let calls = flood(&app, "/Waits/call", 3000, 64, |ms| ms + 1).await;
    let naps = flood(&app, "/Waits/nap", 3000, 64, |ms| ms).await;
    assert!(
        calls.is_empty() && naps.is_empty(),
        "{} calls and {} naps never answered, e.g. {:?}",
        calls.len(),
        naps.len(),
        calls.iter().chain(&naps).take(5).collect::<Vec<_>>()
    );
}

/// 20 workflows suspend on a promise; the promise is resolved over HTTP and each resumed `run`
/// is inside a 4 s `ctx.run` when the process is killed. After the restart all 20 complete.
#[tokio::test]
async fn a_resumed_invocation_survives_the_next_crash() {
    const N: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps.log");
    let env = [
        ("RESTATE_SUSPEND_AFTER", "100ms".to_owned()),
        ("STEPS_FILE", steps.display().to_string()),
        ("STEP_MS", "4000".to_owned()),
    ];
    let data = dir.path().join("data");
    let ports = (free_port(), free_port());
    let app = App::start_on(BIN, &data, &env, ports).await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for i in 0..N {
        let r = client
            .post(format!("{}/Approval/wf-{i}/run/send", app.ingress))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let body: Value = r.json().await.unwrap();
        ids.push(body["invocationId"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let url = format!("{}/invocations/{id}", app.admin);
        poll(Duration::from_secs(30), || {
            let url = url.clone();
            async move {
                let v: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
                v["status"] == "suspended"
            }
        })
        .await;
    }
    for i in 0..N {
        let r = client
            .post(format!("{}/Approval/wf-{i}/approve", app.ingress))
            .json(&format!("ok-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "approve wf-{i}");
    }
    // Every resumed run is inside its 4 s step: nothing of it is committed after the resume.
    poll(Duration::from_secs(30), || {
        let steps = steps.clone();
        async move { lines(&steps).len() == N }
    })
    .await;
    app.kill();
    let app = App::start_on(BIN, &data, &env, ports).await;
    for i in 0..N {
        let url = format!("{}/restate/workflow/Approval/wf-{i}/output", app.ingress);
        poll(Duration::from_secs(60), || {
            let url = url.clone();
            async move { reqwest::get(url).await.unwrap().status() == 200 }
        })
        .await;
        let output: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        assert_eq!(output, Value::String(format!("approved: ok-{i}")));
    }
}
