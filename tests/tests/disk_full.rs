//! A nearly full disk: new work is refused with a clear 503 and nothing of it is written,
//! work already accepted goes on, and both the running process and a start that finds the
//! disk full recover by themselves once space is freed.
//!
//! The disk is filled for real: the app keeps a reserve just below what is free now
//! (`RESTATE_MIN_FREE_DISK_BYTES`), and a file allocated next to its data takes more than the
//! margin. Removing the file frees the space again.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{App, free_port, output, poll};

const BIN: &str = env!("CARGO_BIN_EXE_crash_app");
/// What stays free above the reserve before the filler, and how much more the filler takes:
/// margins wide enough that other tests writing meanwhile change no outcome.
const MARGIN: u64 = 1 << 30;
const FILLER: u64 = 3 << 30;
/// The tests fill the same disk: one at a time, or one's filler moves the other's reserve.
static DISK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Bytes free for unprivileged writes on the file system that holds `dir` (`df`).
fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .expect("df runs");
    assert!(out.status.success(), "df failed");
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().nth(1).unwrap().trim().parse().unwrap()
}

/// Takes `FILLER` bytes of real disk space (not a sparse file) at `path`.
fn fill(path: &Path) {
    let status = Command::new("fallocate")
        .args(["-l", &FILLER.to_string()])
        .arg(path)
        .status()
        .expect("fallocate runs");
    assert!(status.success(), "fallocate failed");
}

/// A reserve `MARGIN` below the space free in `dir` now; `None` (and the test says why) when
/// the disk is too small to fill safely.
fn reserve_below_free(dir: &Path) -> Option<u64> {
    let free = free_bytes(dir);
    if free < FILLER + MARGIN {
        eprintln!(
            "skipped: {free} bytes free, the test needs {}",
            FILLER + MARGIN
        );
        return None;
    }
    Some(free - MARGIN)
}

/// `POST path/send` with an idempotency key: the status and the body.
async fn send(
    client: &reqwest::Client,
    app: &App,
    path: &str,
    key: &str,
    body: u64,
) -> (u16, Value, Option<String>) {
    let r = client
        .post(format!("{}{path}/send", app.ingress))
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, r.json().await.unwrap_or_default(), retry_after)
}

/// Sends `Waits/busy(1)` with `key` until the answer has `status` (within 10 s).
async fn send_until(
    client: &reqwest::Client,
    app: &App,
    key: &str,
    status: u16,
) -> (u16, Value, Option<String>) {
    let start = std::time::Instant::now();
    loop {
        let answer = send(client, app, "/Waits/busy", key, 1).await;
        if answer.0 == status {
            return answer;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_nearly_full_disk_refuses_new_work_and_recovers_once_space_is_freed() {
    let _disk = DISK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let Some(reserve) = reserve_below_free(dir.path()) else {
        return;
    };
    let data = dir.path().join("data");
    let env = [("RESTATE_MIN_FREE_DISK_BYTES", reserve.to_string())];
    let app = App::start(BIN, &data, &env).await;
    let client = reqwest::Client::new();

    // Accepted before the disk fills: a nap that wakes up while it is full.
    let (status, body, _) = send(&client, &app, "/Waits/nap", "before", 1500).await;
    assert_eq!(status, 202, "{body}");
    let napping = body["invocationId"].as_str().unwrap().to_owned();

    let filler = dir.path().join("filler");
    fill(&filler);
    // Refused once the app has measured again (fresh keys until then), with a status a sender
    // retries on and a message that says why.
    let mut probe = 0;
    while send(&client, &app, "/Waits/busy", &format!("probe-{probe}"), 1)
        .await
        .0
        != 503
    {
        probe += 1;
        assert!(probe < 1000, "never refused");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, body, retry_after) = &send(&client, &app, "/Waits/busy", "during", 1).await;
    assert_eq!(*status, 503, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("disk full"), "{body}");
    assert!(message.contains(&data.display().to_string()), "{body}");
    assert!(retry_after.is_some(), "a 503 says when to retry");
    // A duplicate of work accepted before still gets its answer, not a 503.
    let (status, body, _) = send(&client, &app, "/Waits/nap", "before", 1500).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (202, Some("PreviouslyAccepted")),
        "{body}"
    );
    // Work accepted before goes on: the nap completes while the disk is still full.
    let nap: u64 = serde_json::from_value(output(&app, &napping).await).unwrap();
    assert_eq!(nap, 1500);
    assert_eq!(send(&client, &app, "/Waits/busy", "during", 1).await.0, 503);

    // Space freed: the process takes new work again by itself, and the refused request was
    // never half-accepted (its key is new, not a duplicate).
    std::fs::remove_file(&filler).unwrap();
    let accepted = send_until(&client, &app, "during", 202).await;
    assert_eq!(accepted.1["status"], "Accepted", "{}", accepted.1);
}

#[tokio::test]
async fn a_start_on_a_nearly_full_disk_says_so_by_name_and_starts_once_space_is_freed() {
    let _disk = DISK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let Some(reserve) = reserve_below_free(dir.path()) else {
        return;
    };
    let data = dir.path().join("data");
    let env = [("RESTATE_MIN_FREE_DISK_BYTES", reserve.to_string())];
    let ports = (free_port(), free_port());
    // Some work first, so the start has a log to recover.
    let app = App::start_on(BIN, &data, &env, ports).await;
    let client = reqwest::Client::new();
    let (status, body, _) = send(&client, &app, "/Waits/busy", "first", 1).await;
    assert_eq!(status, 202, "{body}");
    let first = body["invocationId"].as_str().unwrap().to_owned();
    app.kill();

    let filler = dir.path().join("filler");
    fill(&filler);
    let log = dir.path().join("app.log");
    let mut app = App::spawn(
        BIN,
        &data,
        &env,
        ports,
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    poll(Duration::from_secs(30), || {
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        async move { said.contains("disk full") }
    })
    .await;
    let said = std::fs::read_to_string(&log).unwrap();
    assert!(said.contains(&data.display().to_string()), "{said}");
    assert!(said.contains("RESTATE_MIN_FREE_DISK_BYTES"), "{said}");
    // Waiting, not crash-looping and not serving.
    assert!(app.running(), "the process waits for space: {said}");
    assert!(
        !app.healthy().await,
        "nothing is served before the store opens"
    );

    std::fs::remove_file(&filler).unwrap();
    app.wait_healthy().await;
    assert_eq!(output(&app, &first).await, 1);
}
