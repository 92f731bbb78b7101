//! The command line of a user's binary, as the `webhooks` example exposes it: `invocations
//! list|describe|cancel|kill|resume|purge` and `services` against the running app's admin API
//! (address and token from the usual variables), tables for people and one JSON document with
//! `--json`; the exit status says whether it was done; no command opens a data folder.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};
use support::{App, example_bin, free_port, poll};

const TOKEN: &str = "cli-s3cret";

/// `webhooks <args>` against the admin API at `admin` (host:port), with `token` if any, and a
/// data folder that must stay untouched.
fn cli(admin: &str, token: Option<&str>, untouched: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(example_bin("webhooks"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RESTATE_ADMIN_ADDR", admin)
        .env("RESTATE_DATA_DIR", untouched)
        .args(args);
    if let Some(token) = token {
        cmd.env("RESTATE_ADMIN_TOKEN", token);
    }
    cmd.output().expect("the binary runs")
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON document ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn text_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[tokio::test]
async fn the_webhooks_binary_lists_describes_and_kills_invocations_of_the_running_app() {
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_port();
    let env = [("RESTATE_ADMIN_TOKEN", TOKEN.to_owned())];
    let app = App::start_on(
        &example_bin("webhooks"),
        &dir.path().join("data"),
        &env,
        (free_port(), admin_port),
    )
    .await;
    let admin = format!("127.0.0.1:{admin_port}");
    let untouched = dir.path().join("no-folder-here");
    let client = reqwest::Client::new();
    for invoice in ["in_1", "in_2"] {
        let event = json!({"id": format!("evt_{invoice}"), "type": "invoice.payment_failed",
            "data": {"object": {"id": invoice, "amount": 1}}, "livemode": false});
        let sent = client
            .post(format!(
                "{}/WebhookCallbackRouter/onStripeEvent",
                app.ingress
            ))
            .json(&event)
            .send()
            .await
            .unwrap();
        assert!(sent.status().is_success(), "{}", sent.status());
    }
    // Each failed payment leaves a reminder waiting a day.
    let scheduled = || {
        let out = cli(
            &admin,
            Some(TOKEN),
            &untouched,
            &["invocations", "list", "--status", "scheduled", "--json"],
        );
        json_of(&out)["invocations"].as_array().unwrap().clone()
    };
    poll(Duration::from_secs(30), || async { scheduled().len() == 2 }).await;
    let reminders = scheduled();
    let reminder = reminders[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        reminders[0]["target"].as_str().unwrap().split('/').next(),
        Some("PaymentTracker")
    );

    // For people: a table with the ids.
    let table = text_of(&cli(
        &admin,
        Some(TOKEN),
        &untouched,
        &["invocations", "list"],
    ));
    assert!(table.starts_with("ID "), "{table}");
    assert!(
        table.contains(&reminder) && table.contains("scheduled"),
        "{table}"
    );
    let services = text_of(&cli(&admin, Some(TOKEN), &untouched, &["services"]));
    assert!(services.contains("PaymentTracker") && services.contains("onPaymentFailed"));
    assert!(services.contains("private"), "{services}");
    let services_json = json_of(&cli(
        &admin,
        Some(TOKEN),
        &untouched,
        &["services", "--json"],
    ));
    assert!(services_json["services"].as_array().unwrap().len() >= 2);

    let described = json_of(&cli(
        &admin,
        Some(TOKEN),
        &untouched,
        &["invocations", "describe", &reminder, "--json"],
    ));
    assert_eq!(described["status"], "scheduled");
    let shown = text_of(&cli(
        &admin,
        Some(TOKEN),
        &untouched,
        &["invocations", "describe", &reminder],
    ));
    assert!(
        shown.contains("status") && shown.contains("scheduled"),
        "{shown}"
    );

    let killed = json_of(&cli(
        &admin,
        Some(TOKEN),
        &untouched,
        &["invocations", "kill", &reminder, "--json"],
    ));
    assert_eq!(
        (killed["action"].as_str(), killed["invocationId"].as_str()),
        (Some("kill"), Some(reminder.as_str()))
    );
    let after = json_of(&cli(
        &admin,
        Some(TOKEN),
        &untouched,
        &["invocations", "describe", &reminder, "--json"],
    ));
    assert_eq!(after["status"], "completed");
    assert!(after["result"].to_string().contains("kill"), "{after}");
    let other = reminders[1]["id"].as_str().unwrap();
    let still = json_of(&cli(
        &admin,
        Some(TOKEN),
        &untouched,
        &["invocations", "describe", other, "--json"],
    ));
    assert_eq!(still["status"], "scheduled", "only the one asked for");

    // Refusals: the admin API's (exit 1, its message on stderr), nothing there (exit 2).
    let no_token = cli(&admin, None, &untouched, &["invocations", "list"]);
    assert_eq!(no_token.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("401"));
    let unknown = cli(
        &admin,
        Some(TOKEN),
        &untouched,
        &["invocations", "describe", "inv_nope"],
    );
    assert_eq!(unknown.status.code(), Some(1));
    let twice = cli(
        &admin,
        Some(TOKEN),
        &untouched,
        &["invocations", "resume", &reminder],
    );
    assert_eq!(
        twice.status.code(),
        Some(1),
        "a finished one cannot be resumed"
    );
    let nobody = cli("127.0.0.1:1", Some(TOKEN), &untouched, &["services"]);
    assert_eq!(nobody.status.code(), Some(2));
    let usage = cli(&admin, Some(TOKEN), &untouched, &["invocations", "explode"]);
    assert_eq!(usage.status.code(), Some(2));
    // A reader that stops early (`| head`) ends nothing badly.
    let mut closed = Command::new(example_bin("webhooks"));
    closed
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RESTATE_ADMIN_ADDR", &admin)
        .env("RESTATE_ADMIN_TOKEN", TOKEN)
        .args(["invocations", "list"])
        .stdout(std::process::Stdio::piped());
    let mut child = closed.spawn().unwrap();
    drop(child.stdout.take());
    assert_eq!(
        child.wait().unwrap().code(),
        Some(0),
        "a closed pipe is no failure"
    );
    // Help is the command line's, on standard output; the app's logs stay off it.
    let help = cli(&admin, None, &untouched, &["--help"]);
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    assert!(
        help.contains("invocations") && help.contains("check-replay"),
        "{help}"
    );
    assert!(!help.contains("webhook processor starting"), "{help}");
    assert!(!untouched.exists(), "no command opened a data folder");
    app.terminate();
}
