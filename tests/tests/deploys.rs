//! Deploying a new version, as the README's recipe does it, with builds of the `orders` example
//! that a cargo feature switches (version 1 by default, version 2 with `orders-v2`, or with
//! `orders-v2-unpatched` its changes without patch markers): invocations of version 1 wait
//! mid-way (a sleep, a promise, a call); a backup is taken, the process drained and stopped;
//! the replay check of version 2 against the backup names exactly the invocations that would
//! diverge when the changes have no patch markers, and none when they have; after the swap,
//! every invocation finishes with the result its own version's logic gives.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::{App, example_bin, example_bin_with, poll};

/// What the binary at `bin` exits with and prints for `check-replay --data-dir <backup>`.
fn check_replay(bin: &str, backup: &Path) -> (i32, String) {
    check_replay_with(bin, backup, &[])
}

/// [`check_replay`] with more arguments (`--json`).
fn check_replay_with(bin: &str, backup: &Path, more: &[&str]) -> (i32, String) {
    let out = Command::new(bin)
        .args(["check-replay", "--data-dir"])
        .arg(backup)
        .args(more)
        .env("RUST_LOG", "warn")
        .output()
        .expect("the check runs");
    let stdout = String::from_utf8(out.stdout).unwrap();
    (out.status.code().expect("exited"), stdout)
}

async fn status(client: &reqwest::Client, app: &App, id: &str) -> Value {
    client
        .get(format!("{}/invocations/{id}", app.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn send(client: &reqwest::Client, app: &App, path: &str) -> String {
    let r = client
        .post(format!("{}{path}", app.ingress))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{path}");
    let body: Value = r.json().await.unwrap();
    body["invocationId"].as_str().unwrap().to_owned()
}

async fn output(client: &reqwest::Client, app: &App, id: &str) -> Vec<String> {
    let r = client
        .get(format!("{}/restate/invocation/{id}/attach", app.ingress))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{id}");
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_checked_against_a_backup_keeps_every_invocation_on_its_own_version() {
    let dir = tempfile::tempdir().unwrap();
    let (data, backup) = (dir.path().join("data"), dir.path().join("backup"));
    let env = [
        ("ORDERS_WAIT", "5s".to_owned()),
        ("RESTATE_SUSPEND_AFTER", "100ms".to_owned()),
    ];
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let v1 = App::start(&example_bin_with("orders", ""), &data, &env).await;
    let orders = [
        send(&client, &v1, "/Orders/o1/checkout/send").await,
        send(&client, &v1, "/Orders/o2/checkout/send").await,
    ];
    let approval = send(&client, &v1, "/Approval/w1/run/send").await;
    let shipment = send(&client, &v1, "/Shipping/s1/ship/send").await;
    let old: Vec<&String> = orders.iter().chain([&approval, &shipment]).collect();
    for id in &old {
        poll(Duration::from_secs(30), || async {
            status(&client, &v1, id).await["status"] == "suspended"
        })
        .await;
    }

    // The recipe: back up, drain, stop.
    let r = client
        .post(format!("{}/backup", v1.admin))
        .json(&json!({ "path": backup }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .patch(format!("{}/drain", v1.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    poll(Duration::from_secs(30), || async {
        let drain: Value = client
            .get(format!("{}/drain", v1.admin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        drain["ready"] == true
    })
    .await;
    assert!(v1.terminate().success());

    // Version 2 without markers would break exactly the four waiting invocations (not the
    // carrier's booking, whose code did not change).
    let (code, report) = check_replay(&example_bin_with("orders", "orders-v2-unpatched"), &backup);
    assert_eq!(code, 1, "{report}");
    let named: Vec<&str> = report.lines().filter(|l| l.starts_with("inv_")).collect();
    assert_eq!(named.len(), 4, "{report}");
    for id in &old {
        assert!(
            named
                .iter()
                .any(|l| l.starts_with(id.as_str()) && l.contains("version orders-1")),
            "{id} not named: {report}"
        );
    }
    assert!(report.contains("entry 1"), "{report}");
    // The same as one JSON document for scripts.
    let unpatched = example_bin_with("orders", "orders-v2-unpatched");
    let (code, json) = check_replay_with(&unpatched, &backup, &["--json"]);
    assert_eq!(code, 1, "{json}");
    let json: Value = serde_json::from_str(&json).expect("one JSON document");
    let problems = json["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 4, "{json}");
    for id in &old {
        let problem = problems.iter().find(|p| p["invocation_id"] == id.as_str());
        let problem = problem.unwrap_or_else(|| panic!("{id} not named: {json}"));
        assert_eq!(problem["version"], "orders-1", "{json}");
        assert!(problem["index"].is_u64(), "{json}");
        let sentence = problem["problem"].as_str().unwrap();
        assert!(sentence.contains("entry"), "{json}");
    }
    // With patch markers: nothing breaks.
    let (code, report) = check_replay(&example_bin_with("orders", "orders-v2"), &backup);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("0 would break"), "{report}");
    // A binary that does not serve these services names every one; a folder without a store
    // is an error.
    let (code, report) = check_replay(&example_bin("webhooks"), &backup);
    assert_eq!(code, 1, "{report}");
    assert!(report.contains("not served by this binary"), "{report}");
    let (code, _) = check_replay(
        &example_bin_with("orders", "orders-v2"),
        &dir.path().join("missing"),
    );
    assert_eq!(code, 2);

    // The swap: version 2 serves the same data; new invocations run the new code.
    let v2 = App::start(&example_bin_with("orders", "orders-v2"), &data, &env).await;
    let new_order = send(&client, &v2, "/Orders/o3/checkout/send").await;
    let new_approval = send(&client, &v2, "/Approval/w2/run/send").await;
    for workflow in ["w1", "w2"] {
        poll(Duration::from_secs(30), || async {
            let r = client
                .post(format!("{}/Approval/{workflow}/decide", v2.ingress))
                .json(&"approved")
                .send()
                .await
                .unwrap();
            r.status() == 200
        })
        .await;
    }
    for id in &orders {
        assert_eq!(output(&client, &v2, id).await, ["charge", "email"]);
    }
    assert_eq!(
        output(&client, &v2, &new_order).await,
        ["charge", "reserve", "email"]
    );
    assert_eq!(
        output(&client, &v2, &approval).await,
        ["request", "approved", "archive"]
    );
    assert_eq!(
        output(&client, &v2, &new_approval).await,
        ["request", "notify", "approved", "archive"]
    );
    assert_eq!(
        output(&client, &v2, &shipment).await,
        ["pack", "booked s1", "label"]
    );
    assert_eq!(
        status(&client, &v2, &orders[0]).await["version"],
        "orders-1"
    );
    assert_eq!(
        status(&client, &v2, &new_order).await["version"],
        "orders-2"
    );
    drop(v2);
}

/// On PostgreSQL the check reads the live database through read-only sessions while version
/// 1 keeps running on it: it names the same invocations, and the running process keeps its
/// lease and finishes its work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_the_check_reads_the_live_database_without_disturbing_it() {
    use restate_runtime::testing::PostgresCluster;
    let Some(cluster) = PostgresCluster::for_tests() else {
        return;
    };
    let url = cluster.fresh_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Built first: a build while version 1's invocations wait could outlast their wait, and
    // the check would find them finished.
    let (unpatched, patched) = (
        example_bin_with("orders", "orders-v2-unpatched"),
        example_bin_with("orders", "orders-v2"),
    );
    let env = [
        ("ORDERS_WAIT", "8s".to_owned()),
        ("RESTATE_SUSPEND_AFTER", "100ms".to_owned()),
        ("RESTATE_DATABASE_URL", url.clone()),
    ];
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let v1 = App::start(
        &example_bin_with("orders", ""),
        &dir.path().join("data"),
        &env,
    )
    .await;
    let waiting = [
        send(&client, &v1, "/Orders/o1/checkout/send").await,
        send(&client, &v1, "/Shipping/s1/ship/send").await,
    ];
    for id in &waiting {
        poll(Duration::from_secs(30), || async {
            status(&client, &v1, id).await["status"] == "suspended"
        })
        .await;
    }
    let check = |bin: &str| {
        let out = Command::new(bin)
            .args(["check-replay", "--database-url", &url])
            .env("RUST_LOG", "warn")
            .output()
            .expect("the check runs");
        (
            out.status.code().expect("exited"),
            String::from_utf8(out.stdout).unwrap(),
        )
    };
    let (code, report) = check(&unpatched);
    assert_eq!(code, 1, "{report}");
    let named: Vec<&str> = report.lines().filter(|l| l.starts_with("inv_")).collect();
    assert_eq!(named.len(), 2, "{report}");
    let (code, report) = check(&patched);
    assert_eq!(code, 0, "{report}");
    // Version 1 ran on undisturbed: its invocations finish on its logic.
    assert_eq!(output(&client, &v1, &waiting[0]).await, ["charge", "email"]);
    assert_eq!(
        output(&client, &v1, &waiting[1]).await,
        ["pack", "booked s1", "label"]
    );
    drop(v1);
}
