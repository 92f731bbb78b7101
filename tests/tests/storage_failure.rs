//! A failed fsync stops the process (law 10): the app exits non-zero within 5 s of the first
//! refused request, and a restart on a healthy disk holds every invocation acknowledged before.
//! The failure is injected at the C library boundary with an `LD_PRELOAD` shim
//! (`fixtures/failing_fsync.c`), as a dying disk would report it.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{App, free_port, poll, send_busy_until_refused};

const BIN: &str = env!("CARGO_BIN_EXE_crash_app");

/// Builds the shim into `dir` with the system C compiler.
fn build_shim(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/failing_fsync.c");
    let lib = dir.join("libfailing_fsync.so");
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&lib)
        .arg(&source)
        .arg("-ldl")
        .status()
        .expect("cc runs");
    assert!(status.success(), "building the fsync shim failed");
    lib
}

#[tokio::test]
async fn a_failed_fsync_stops_the_process_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let shim = build_shim(dir.path());
    let data = dir.path().join("data");
    let ports = (free_port(), free_port());
    let failing = [
        ("LD_PRELOAD", shim.display().to_string()),
        ("FAIL_FSYNC_AFTER", "400".to_owned()),
    ];
    let mut app = App::start_on(BIN, &data, &failing, ports).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Every sync fails past the 400th: sends until one is refused.
    let (acknowledged, first_refusal) =
        send_busy_until_refused(&client, &app.ingress, |_| {}).await;
    let refused_at = first_refusal.expect("a request is refused once syncs fail");
    assert!(acknowledged.len() > 10, "some sends succeed first");
    let status = app
        .wait_exit(Duration::from_secs(5).saturating_sub(refused_at.elapsed()))
        .expect("the process exits within 5 s of the failure");
    assert_eq!(status.code(), Some(74), "exit status says storage failure");

    // A restart on a healthy disk: every acknowledged invocation is there and completes.
    let app = App::start_on(BIN, &data, &[], ports).await;
    for id in &acknowledged {
        let url = format!("{}/restate/invocation/{id}/output", app.ingress);
        poll(Duration::from_secs(30), || {
            let url = url.clone();
            async move { reqwest::get(url).await.unwrap().status() == 200 }
        })
        .await;
    }
}

/// One byte flipped in a record in the middle of the log, after a SIGKILL under load: the app
/// refuses to start with a non-zero exit and a message that says `corrupt` and names the file
/// and the offset, instead of opening without the records after the damage.
#[tokio::test]
async fn a_damaged_record_in_the_log_stops_the_start_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let app = App::start(BIN, &data, &[]).await;
    let client = reqwest::Client::new();
    for batch in 0..40 {
        let sends: Vec<_> = (0..8)
            .map(|i| {
                let request = client
                    .post(format!("{}/Waits/busy/send", app.ingress))
                    .header("idempotency-key", format!("k-{batch}-{i}"))
                    .json(&1u64);
                tokio::spawn(async move { request.send().await.unwrap().status() })
            })
            .collect();
        for send in sends {
            assert_eq!(send.await.unwrap(), 202);
        }
    }
    // Killed under load: the log holds the records since the last checkpoint.
    app.kill();
    let wal = data.join("journal.wal");
    let mut bytes = std::fs::read(&wal).unwrap();
    let mut offsets = Vec::new();
    let (mut at, mut previous) = (0usize, None);
    loop {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let seq = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap());
        if len == 0 || previous.is_some_and(|p| seq != p + 1) {
            break;
        }
        offsets.push(at);
        previous = Some(seq);
        at += 16 + len;
    }
    assert!(offsets.len() >= 10, "{} records in the log", offsets.len());
    let middle = offsets[offsets.len() / 2];
    bytes[middle + 16] ^= 0x01;
    std::fs::write(&wal, &bytes).unwrap();

    let (ingress, admin) = (free_port(), free_port());
    let output = Command::new(BIN)
        .env_clear()
        .env("RUST_LOG", "warn")
        .env("RESTATE_DATA_DIR", &data)
        .env("RESTATE_INGRESS_ADDR", format!("127.0.0.1:{ingress}"))
        .env("RESTATE_ADMIN_ADDR", format!("127.0.0.1:{admin}"))
        .output()
        .expect("the app runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it must not start: {stderr}");
    assert!(stderr.contains("corrupt"), "{stderr}");
    assert!(stderr.contains("journal.wal"), "{stderr}");
    assert!(stderr.contains(&format!("offset {middle}")), "{stderr}");
}

/// A disk that fails while a start replays the log (each sync of the start in turn, up to the
/// first that a healthy start reaches serving) is reported as an I/O error, never as
/// corruption, and loses nothing: the next start on a healthy disk has every acknowledged
/// invocation.
#[tokio::test]
async fn a_disk_failing_during_recovery_is_an_io_error_not_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let shim = build_shim(dir.path());
    let data = dir.path().join("data");
    let ports = (free_port(), free_port());
    let app = App::start_on(BIN, &data, &[], ports).await;
    let client = reqwest::Client::new();
    let mut acknowledged = Vec::new();
    for i in 0..64 {
        let r = client
            .post(format!("{}/Waits/nap/send", app.ingress))
            .header("idempotency-key", format!("k-{i}"))
            .json(&200u64)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let body: Value = r.json().await.unwrap();
        acknowledged.push(body["invocationId"].as_str().unwrap().to_owned());
    }
    // Killed with records in the log that the store has not checkpointed.
    app.kill();

    let mut refused = 0;
    for failing_sync in 0.. {
        assert!(failing_sync < 50, "a start never got past its syncs");
        let (ingress, admin) = (free_port(), free_port());
        let mut child = Command::new(BIN)
            .env_clear()
            .env("RUST_LOG", "warn")
            .env("LD_PRELOAD", &shim)
            .env("FAIL_FSYNC_AFTER", failing_sync.to_string())
            .env("RESTATE_DATA_DIR", &data)
            .env("RESTATE_INGRESS_ADDR", format!("127.0.0.1:{ingress}"))
            .env("RESTATE_ADMIN_ADDR", format!("127.0.0.1:{admin}"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the app runs");
        // Either the start fails (reported) or it serves: then this many syncs are enough.
        let health = format!("http://127.0.0.1:{ingress}/restate/health");
        let started = Instant::now();
        let exited = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if reqwest::get(&health).await.is_ok_and(|r| r.status() == 200) {
                break None;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "neither exits nor serves"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let Some(status) = exited else {
            let _ = child.kill();
            let _ = child.wait();
            break;
        };
        let output = child.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!status.success(), "sync {failing_sync}: {said}");
        assert!(!said.contains("corrupt"), "sync {failing_sync}: {said}");
        assert!(
            said.contains("Input/output error") || said.contains("storage failure"),
            "sync {failing_sync}: {said}"
        );
        refused += 1;
    }
    assert!(refused >= 1, "the start syncs at least once before serving");

    let app = App::start_on(BIN, &data, &[], ports).await;
    for id in &acknowledged {
        let url = format!("{}/restate/invocation/{id}/output", app.ingress);
        poll(Duration::from_secs(30), || {
            let url = url.clone();
            async move { reqwest::get(url).await.unwrap().status() == 200 }
        })
        .await;
    }
}
