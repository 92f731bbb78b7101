//! Compatibility with Restate's own TypeScript ingress client: `tests/ts-client/compat.mjs`
//! drives `compat_app` with `@restatedev/restate-sdk-clients` (pinned in
//! `tests/ts-client/package.json` and its lockfile). The test needs `node` and `npm` and fails,
//! never skips, without them: `npm ci` installs the pinned client, then the script runs every
//! check (calls, idempotent sends, attach, workflows, awakeables, private handlers) and exits
//! non-zero if any fails.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::{App, describe_run, npm_ci, require_tool, run_for};

const BIN: &str = env!("CARGO_BIN_EXE_compat_app");

fn client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ts-client")
}

#[tokio::test]
async fn restate_typescript_client_works_against_the_server() {
    let node = require_tool(
        "node",
        "It runs Restate's TypeScript client against the server.",
    );
    let npm = require_tool("npm", "It installs Restate's TypeScript client.");
    println!("node {node}, npm {npm}");
    let dir = client_dir();

    let started = Instant::now();
    npm_ci(&dir).await;
    println!("npm ci took {:?}", started.elapsed());

    let data = tempfile::tempdir().unwrap();
    let app = App::start(BIN, data.path(), &[]).await;

    let started = Instant::now();
    let mut node = Command::new("node");
    node.arg("compat.mjs")
        .arg(&app.ingress)
        .env("COMPAT_CHECK_TIMEOUT_MS", "20000")
        .current_dir(&dir);
    let result = run_for(node, Duration::from_secs(300)).await;
    println!(
        "compat.mjs took {:?}\n{}",
        started.elapsed(),
        String::from_utf8_lossy(&result.0.stdout)
    );
    assert!(
        !result.1 && result.0.status.success(),
        "{}",
        describe_run("the TypeScript client's checks (compat.mjs)", &result)
    );
    app.terminate();
}
