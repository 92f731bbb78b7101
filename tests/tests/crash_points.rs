//! Crash points (law 9): the app is killed (SIGKILL, by a named failpoint) right after each
//! commit that wakes, completes or moves work, in the middle of a workload of calls, sleeps,
//! delayed sends and workflows resolved over HTTP with `RESTATE_SUSPEND_AFTER=50ms`. After a restart every
//! acknowledged invocation completes with its right result.

mod support;

use std::os::unix::process::ExitStatusExt as _;
use std::time::Duration;

use serde_json::{Value, json};
use support::{App, free_port, poll};

const BIN: &str = env!("CARGO_BIN_EXE_crash_app");

/// What the workload got acknowledged: (invocation id, expected output).
type Acknowledged = Vec<(String, Value)>;

/// Sends calls, naps and workflows, resolving the workflows' promises over HTTP. Requests
/// that fail (the process died) are skipped: only acknowledged work counts.
async fn workload(app: &App, workflows: &mut [(String, bool)]) -> Acknowledged {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut acknowledged = Vec::new();
    let send = async |path: String, key: String, body: Value| -> Option<String> {
        let r = client
            .post(format!("{}{path}", app.ingress))
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await
            .ok()?;
        if r.status() != 202 {
            return None;
        }
        let v: Value = r.json().await.ok()?;
        Some(v["invocationId"].as_str()?.to_owned())
    };
    // Delayed sends: they wait on disk and are loaded when due, in the middle of the rest.
    for i in 0..3u64 {
        let path = format!("/Waits/nap/send?delay={}ms", 150 + 100 * i);
        if let Some(id) = send(path, format!("delayed-{i}"), json!(i)).await {
            acknowledged.push((id, json!(i)));
        }
    }
    for i in 0..6u64 {
        let ms = 100 + 20 * i;
        if let Some(id) = send("/Waits/call/send".into(), format!("call-{i}"), json!(ms)).await {
            acknowledged.push((id, json!(ms + 1)));
        }
        if let Some(id) = send("/Waits/nap/send".into(), format!("nap-{i}"), json!(ms)).await {
            acknowledged.push((id, json!(ms)));
        }
    }
    for (key, started) in workflows.iter_mut() {
        let path = format!("/Approval/{key}/run/send");
        if let Some(id) = send(path, key.clone(), Value::Null).await {
            *started = true;
            acknowledged.push((id, json!(format!("approved: {key}"))));
        }
    }
    // Let them suspend on their promise, then resolve it.
    tokio::time::sleep(Duration::from_millis(150)).await;
    for (key, started) in workflows.iter() {
        if *started {
            let _ = client
                .post(format!("{}/Approval/{key}/approve", app.ingress))
                .json(key)
                .send()
                .await;
        }
    }
    acknowledged
}

/// Runs the workload with `failpoint` armed, expects the process to die there, restarts it and
/// checks every acknowledged invocation.
async fn crash_at(failpoint: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ports = (free_port(), free_port());
    let steps = dir.path().join("steps.log").display().to_string();
    let base = [
        ("RESTATE_SUSPEND_AFTER", "50ms".to_owned()),
        ("STEPS_FILE", steps),
        ("STEP_MS", "50".to_owned()),
    ];
    let mut armed = base.to_vec();
    armed.push(("RESTATE_FAILPOINTS", failpoint.to_owned()));
    let mut app = App::start_on(BIN, &data, &armed, ports).await;
    let mut workflows: Vec<(String, bool)> = (0..4).map(|i| (format!("wf-{i}"), false)).collect();
    let acknowledged = workload(&app, &mut workflows).await;
    assert!(
        !acknowledged.is_empty(),
        "{failpoint}: nothing was acknowledged"
    );
    let status = app
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("{failpoint} was never reached"));
    assert_eq!(status.signal(), Some(9), "{failpoint}: killed there");

    let app = App::start_on(BIN, &data, &base, ports).await;
    let client = reqwest::Client::new();
    // A promise resolved before the crash stays resolved (409 now); one that was not is now.
    for (key, started) in &workflows {
        if *started {
            let r = client
                .post(format!("{}/Approval/{key}/approve", app.ingress))
                .json(key)
                .send()
                .await
                .unwrap();
            assert!(
                [200, 409].contains(&r.status().as_u16()),
                "{key}: {}",
                r.status()
            );
        }
    }
    for (id, expected) in &acknowledged {
        let url = format!("{}/restate/invocation/{id}/output", app.ingress);
        poll(Duration::from_secs(30), || {
            let url = url.clone();
            async move { reqwest::get(url).await.unwrap().status() == 200 }
        })
        .await;
        let output: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        assert_eq!(&output, expected, "{failpoint}: {id}");
    }
}

#[tokio::test]
async fn crash_after_a_suspension_commits() {
    crash_at("suspend.committed=4").await;
}

#[tokio::test]
async fn crash_after_a_completion_and_its_wake_ups_commit() {
    crash_at("wake.committed=5").await;
}

#[tokio::test]
async fn crash_after_a_delayed_send_leaves_memory() {
    crash_at("delayed.parked=2").await;
}

#[tokio::test]
async fn crash_right_after_a_resume() {
    crash_at("resume.loaded=3").await;
}

#[tokio::test]
async fn crash_after_a_group_is_logged_before_it_is_applied() {
    crash_at("log.synced=30").await;
}

#[tokio::test]
async fn crash_after_a_checkpoint_before_the_log_restarts() {
    crash_at("checkpoint.committed=1").await;
}

/// A handler sends a delayed message and cancels it; the process dies once the cancellation
/// is durable, before it reaches its target (whether or not the handler's own completion
/// committed). After the restart the message ends cancelled and never runs.
#[tokio::test]
async fn a_delayed_send_cancelled_before_a_crash_never_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ports = (free_port(), free_port());
    let steps = dir.path().join("steps.log");
    let base = [("STEPS_FILE", steps.display().to_string())];
    let mut armed = base.to_vec();
    armed.push(("RESTATE_FAILPOINTS", "cancel.recorded".to_owned()));
    let mut app = App::start_on(BIN, &data, &armed, ports).await;
    // The handler may reach the failpoint before the 202 is written: then the id comes from
    // the same request, repeated after the restart (same idempotency key, same invocation).
    let send = async |ingress: &str| -> Option<String> {
        let r = reqwest::Client::new()
            .post(format!("{ingress}/Waits/cancel_later/send"))
            .header("idempotency-key", "cancel-later")
            .json("t1")
            .send()
            .await
            .ok()?;
        assert_eq!(r.status(), 202);
        let v: Value = r.json().await.ok()?;
        Some(v["invocationId"].as_str()?.to_owned())
    };
    let first = send(&app.ingress).await;
    let status = app
        .wait_exit(Duration::from_secs(30))
        .expect("cancel.recorded was never reached");
    assert_eq!(status.signal(), Some(9));

    let app = App::start_on(BIN, &data, &base, ports).await;
    let again = send(&app.ingress).await.expect("the repeated send answers");
    if let Some(first) = first {
        assert_eq!(first, again);
    }
    let id = again;
    let output = |id: String| {
        let url = format!("{}/restate/invocation/{id}/output", app.ingress);
        async move {
            let mut r = reqwest::get(&url).await.unwrap();
            // 470: not finished yet.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while r.status() == 470 {
                assert!(std::time::Instant::now() < deadline, "{url} never finished");
                tokio::time::sleep(Duration::from_millis(20)).await;
                r = reqwest::get(&url).await.unwrap();
            }
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, marking) = output(id).await;
    assert_eq!(status, 200, "{marking}");
    let (status, body) = output(marking.as_str().unwrap().to_owned()).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (409, Some("cancelled")),
        "{body}"
    );
    let steps = std::fs::read_to_string(&steps).unwrap_or_default();
    assert!(
        !steps.contains("marked t1"),
        "the cancelled message ran: {steps}"
    );
}

/// A restart-as-new killed between its copy's commit and the original's end: recovery ends
/// the original (else both would run), asked again the restart gives the same copy, and the
/// copy runs on the key ahead of what waited behind the original.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_as_new_interrupted_by_a_crash_ends_the_original_at_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ports = (free_port(), free_port());
    let base = [("RESTATE_SUSPEND_AFTER", "50ms".to_owned())];
    let mut armed = base.to_vec();
    armed.push(("RESTATE_FAILPOINTS", "restart.copied".to_owned()));
    let mut app = App::start_on(BIN, &data, &armed, ports).await;
    let client = reqwest::Client::new();
    let send = |ms: u64| {
        let url = format!("{}/Naps/k/nap/send", app.ingress);
        let client = client.clone();
        async move {
            let r = client.post(url).json(&ms).send().await.unwrap();
            assert_eq!(r.status(), 202);
            r.json::<Value>().await.unwrap()["invocationId"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let original = send(3_600_000).await;
    let behind = send(1).await;
    let status = |app: &App, id: &str| {
        let url = format!("{}/invocations/{id}", app.admin);
        async move {
            reqwest::get(url)
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    poll(Duration::from_secs(30), || async {
        status(&app, &original).await["status"] == "suspended"
    })
    .await;
    let restart = |app: &App| {
        let url = format!("{}/invocations/{original}/restart", app.admin);
        let client = client.clone();
        async move { client.patch(url).send().await }
    };
    assert!(restart(&app).await.is_err(), "the process died answering");
    let died = app
        .wait_exit(Duration::from_secs(30))
        .expect("restart.copied was never reached");
    assert_eq!(died.signal(), Some(9));

    let app = App::start_on(BIN, &data, &base, ports).await;
    // Recovery ends the original by itself: its copy was committed before the crash.
    poll(Duration::from_secs(30), || async {
        status(&app, &original).await["status"] == "completed"
    })
    .await;
    // Asked again, the restart answers with the same copy.
    let r = restart(&app).await.unwrap();
    assert_eq!(r.status(), 200);
    let copy = r.json::<Value>().await.unwrap()["invocationId"]
        .as_str()
        .unwrap()
        .to_owned();
    // The copy holds the key (waiting its hour); what was behind the original still waits.
    poll(Duration::from_secs(30), || async {
        status(&app, &copy).await["status"] == "suspended"
    })
    .await;
    assert_ne!(status(&app, &behind).await["status"], "completed");
}

/// A backup cut short by a crash (here just before its copy takes the store's name) leaves a
/// folder that refuses to open, saying why, rather than one that opens as an empty store; the
/// live folder opens with everything acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_cut_short_by_a_crash_is_refused_not_opened_empty() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let copy = dir.path().join("copy");
    let ports = (free_port(), free_port());
    let armed = [("RESTATE_FAILPOINTS", "backup.copied".to_owned())];
    let mut app = App::start_on(BIN, &data, &armed, ports).await;
    let client = reqwest::Client::new();
    let mut acknowledged = Vec::new();
    for ms in 0..20u64 {
        let r = client
            .post(format!("{}/Naps/k{ms}/nap/send", app.ingress))
            .json(&ms)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let accepted: Value = r.json().await.unwrap();
        acknowledged.push(accepted["invocationId"].as_str().unwrap().to_owned());
    }
    let backup = client
        .post(format!("{}/backup", app.admin))
        .json(&json!({ "path": copy }))
        .send()
        .await;
    assert!(backup.is_err(), "the process died answering");
    let died = app
        .wait_exit(Duration::from_secs(30))
        .expect("backup.copied was never reached");
    assert_eq!(died.signal(), Some(9));

    let mut opened = std::process::Command::new(BIN)
        .env("RESTATE_DATA_DIR", &copy)
        .env("RESTATE_INGRESS_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("RESTATE_ADMIN_ADDR", format!("127.0.0.1:{}", free_port()))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = opened.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            opened.kill().unwrap();
            panic!("the cut-short backup opened and serves");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut opened.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("a backup that was cut short"), "{stderr}");

    let app = App::start_on(BIN, &data, &[], ports).await;
    for id in &acknowledged {
        poll(Duration::from_secs(30), || async {
            let view: Value = reqwest::get(format!("{}/invocations/{id}", app.admin))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            view["status"] == "completed"
        })
        .await;
    }
}
