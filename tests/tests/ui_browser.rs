//! The web UI in a real browser: headless Chromium from the distribution's packages. Chromium
//! alone dumps the DOM once loaded (the invocations list is in it); `playwright-core` (pinned in
//! `tests/ui-browser`) drives it as a user would, against the `signup` example app: finds a
//! sign-up by its key, opens its journal, cancels it behind the confirmation, sees its status
//! change, and checks no page scrolls sideways on a 390-pixel phone. Screenshots go to
//! `<target>/tmp/ui-screenshots`. Skipped where Chromium is not installed, unless
//! `RESTATE_REQUIRE_CHROMIUM` is set (`scripts/test` installs it and sets it).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use support::{App, describe_run, example_bin, npm_ci, poll, require_tool, run_for};

const BIN: &str = env!("CARGO_BIN_EXE_crash_app");

/// The Chromium binary, if installed.
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(|name| Path::new("/usr/bin").join(name))
        .find(|path| path.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("RESTATE_REQUIRE_CHROMIUM").is_none(),
            "RESTATE_REQUIRE_CHROMIUM is set but Chromium is not installed"
        );
        eprintln!("skipped: Chromium is not installed");
    }
    found
}

/// The DOM of `url` once loaded, as headless Chromium dumps it (scripts run).
fn dump_dom(browser: &Path, url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            url,
        ])
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn the_invocations_list_and_a_journal_are_in_the_dom_once_loaded() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(BIN, &dir.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for n in 0..5u64 {
        // Each waits a minute: running or suspended while the browser looks.
        let sent = client
            .post(format!("{}/Waits/nap/send", app.ingress))
            .json(&json!(60_000 + n))
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), 202);
        let body: serde_json::Value = sent.json().await.unwrap();
        ids.push(body["invocationId"].as_str().unwrap().to_owned());
    }
    poll(Duration::from_secs(30), || async {
        let listed = reqwest::get(format!("{}/invocations?service=Waits", app.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        ids.iter().all(|id| listed.contains(id.as_str()))
    })
    .await;

    let list = dump_dom(&browser, &format!("{}/ui", app.admin));
    for id in &ids {
        assert!(
            list.contains(&format!("data-invocation=\"{id}\"")),
            "{id} is not in the DOM:\n{list}"
        );
    }
    let detail = dump_dom(
        &browser,
        &format!("{}/ui/invocations/{}", app.admin, ids[0]),
    );
    assert!(detail.contains("id=\"journal\""), "{detail}");
    assert!(detail.contains("sleep"), "{detail}");
    app.terminate();
}

#[tokio::test]
async fn a_user_finds_a_sign_up_by_its_key_reads_its_journal_and_cancels_it() {
    let Some(browser) = chromium() else { return };
    require_tool(
        "node",
        "It drives the web UI in Chromium with playwright-core.",
    );
    require_tool(
        "npm",
        "It installs playwright-core (pinned in tests/ui-browser).",
    );
    let driver = Path::new(env!("CARGO_MANIFEST_DIR")).join("ui-browser");
    npm_ci(&driver).await;

    let dir = tempfile::tempdir().unwrap();
    let env = [("RESTATE_SUSPEND_AFTER", "100ms".to_owned())];
    let app = App::start(&example_bin("signup"), &dir.path().join("data"), &env).await;
    let client = reqwest::Client::new();
    for (key, email) in [("ada", "ada@example.com"), ("grace", "grace@example.com")] {
        let sent = client
            .post(format!("{}/Signup/{key}/run/send", app.ingress))
            .json(&json!(email))
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), 202);
    }
    let output = |key: &'static str| {
        let url = format!("{}/restate/workflow/Signup/{key}/output", app.ingress);
        async move { reqwest::get(url).await.unwrap() }
    };
    poll(Duration::from_secs(30), || async {
        let listed: serde_json::Value =
            reqwest::get(format!("{}/invocations?status=suspended", app.admin))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        listed["invocations"].as_array().unwrap().len() == 2
    })
    .await;

    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let mut node = Command::new("node");
    node.arg("drive.mjs")
        .arg(&app.admin)
        .arg("ada")
        .arg(&screenshots)
        .env("CHROMIUM", &browser)
        .current_dir(&driver);
    let driven = run_for(node, Duration::from_secs(180)).await;
    assert!(
        !driven.1 && driven.0.status.success(),
        "{}",
        describe_run("the browser's run through the UI (drive.mjs)", &driven)
    );
    for shot in ["invocations", "journal", "cancelled", "phone"] {
        assert!(
            screenshots.join(format!("{shot}.png")).is_file(),
            "{shot}.png"
        );
    }

    // What the browser did, as the ingress sees it: ada's sign-up ended cancelled, grace's
    // still waits for its click.
    let ada = output("ada").await;
    let ada_status = ada.status().as_u16();
    let ada_body = ada.text().await.unwrap();
    assert!(
        ada_status == 409 && ada_body.contains("cancel"),
        "{ada_status} {ada_body}"
    );
    assert_eq!(output("grace").await.status(), 470, "grace's still runs");
    app.terminate();
}
