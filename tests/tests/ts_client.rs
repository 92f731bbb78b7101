//! Compatibility with Restate's own TypeScript ingress client: `tests/ts-client/compat.mjs`
//! drives `compat_app` with `@restatedev/restate-sdk-clients` (pinned in
//! `tests/ts-client/package.json` and its lockfile). The test needs `node` and `npm` and fails,
//! never skips, without them: `npm ci` installs the pinned client, then the script runs every
//! check (calls, idempotent sends, attach, workflows, awakeables, private handlers) and exits
//! non-zero if any fails.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::App;

const BIN: &str = env!("CARGO_BIN_EXE_compat_app");

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ts-client")
}

/// `tool --version`, failing the test with a clear message when the tool is missing.
fn require(tool: &str) -> String {
    match Command::new(tool).arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(out) => panic!(
            "`{tool} --version` failed ({}): {}. This test needs Node.js (node and npm) on PATH.",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "`{tool}` not found ({e}). This test needs Node.js (node and npm) on PATH: it runs \
             Restate's TypeScript client against the server, and fails rather than skips \
             without it."
        ),
    }
}

/// Runs `cmd` to completion, killing it after `timeout`; returns its output and whether it
/// timed out.
async fn run(mut cmd: Command, timeout: Duration) -> (Output, bool) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let output = Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    (output, timed_out)
}

fn describe(what: &str, (out, timed_out): &(Output, bool)) -> String {
    format!(
        "{what} {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        if *timed_out {
            "timed out".to_owned()
        } else {
            format!("exited with {}", out.status)
        },
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn restate_typescript_client_works_against_the_server() {
    let node = require("node");
    let npm = require("npm");
    println!("node {node}, npm {npm}");
    let dir = client_dir();

    let started = Instant::now();
    let mut npm_ci = Command::new("npm");
    npm_ci
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&dir);
    let result = run(npm_ci, Duration::from_secs(300)).await;
    assert!(
        !result.1 && result.0.status.success(),
        "{}",
        describe("`npm ci` in tests/ts-client", &result)
    );
    println!("npm ci took {:?}", started.elapsed());

    let data = tempfile::tempdir().unwrap();
    let app = App::start(BIN, data.path(), &[]).await;

    let started = Instant::now();
    let mut node = Command::new("node");
    node.arg("compat.mjs")
        .arg(&app.ingress)
        .env("COMPAT_CHECK_TIMEOUT_MS", "20000")
        .current_dir(&dir);
    let result = run(node, Duration::from_secs(300)).await;
    println!(
        "compat.mjs took {:?}\n{}",
        started.elapsed(),
        String::from_utf8_lossy(&result.0.stdout)
    );
    assert!(
        !result.1 && result.0.status.success(),
        "{}",
        describe("the TypeScript client's checks (compat.mjs)", &result)
    );
    app.terminate();
}
