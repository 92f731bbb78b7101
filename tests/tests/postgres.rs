//! The app on PostgreSQL as processes: a lost database connection stops the process (law 10)
//! and a restart loses nothing acknowledged; a second process on the same database waits and
//! takes over when the first is killed. Each test has a fresh database on the test process's
//! private cluster.

mod support;

use std::time::{Duration, Instant};

use restate_runtime::testing::PostgresCluster;
use support::{App, free_port, poll, send_busy, send_busy_until_refused};

const BIN: &str = env!("CARGO_BIN_EXE_crash_app");

fn cluster() -> &'static PostgresCluster {
    PostgresCluster::shared().expect("a private PostgreSQL cluster (scripts/test installs it)")
}

async fn all_complete(ingress: &str, ids: &[String]) {
    for id in ids {
        let url = format!("{ingress}/restate/invocation/{id}/output");
        poll(Duration::from_secs(30), || {
            let url = url.clone();
            async move { reqwest::get(url).await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
    }
}

#[tokio::test]
async fn a_lost_database_connection_stops_the_process_and_loses_nothing_acknowledged() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("unused");
    let env = [("RESTATE_DATABASE_URL", url.clone())];
    let ports = (free_port(), free_port());
    let mut app = App::start_on(BIN, &data, &env, ports).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let database = url.rsplit('/').next().unwrap().to_owned();
    let (acknowledged, first_refusal) = send_busy_until_refused(&client, &app.ingress, |batch| {
        if batch == 20 {
            // Every connection of the app's database is cut, as a failover or a network
            // partition would.
            cluster()
                .execute(
                    &cluster().url("postgres"),
                    &format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = '{database}'"
                    ),
                )
                .unwrap();
        }
    })
    .await;
    let refused_at = first_refusal.expect("a request is refused once the connection is gone");
    assert!(
        acknowledged.len() >= 20 * 8,
        "the sends before the cut succeed"
    );
    let status = app
        .wait_exit(Duration::from_secs(5).saturating_sub(refused_at.elapsed()))
        .expect("the process exits within 5 s of the failure");
    assert_eq!(status.code(), Some(74), "exit status says storage failure");

    let app = App::start_on(BIN, &data, &env, ports).await;
    all_complete(&app.ingress, &acknowledged).await;
    assert!(
        !data.exists(),
        "with a database the data folder is not used"
    );
}

#[tokio::test]
async fn a_second_process_waits_for_the_database_and_takes_over_when_the_first_is_killed() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = [("RESTATE_DATABASE_URL", url)];
    let first = App::start(BIN, &dir.path().join("a"), &env).await;
    let client = reqwest::Client::new();
    let mut acknowledged = Vec::new();
    for i in 0..50 {
        let id = send_busy(&client, &first.ingress, &format!("k-{i}")).await;
        acknowledged.push(id.expect("acknowledged"));
    }
    let mut second = App::spawn(
        BIN,
        &dir.path().join("b"),
        &env,
        (free_port(), free_port()),
        std::process::Stdio::null(),
    );
    // It waits for the first to stop: it neither serves nor exits meanwhile.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(2) {
        assert!(!second.healthy().await, "two processes ran on one database");
        assert!(second.running(), "the second process gave up at once");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.kill();
    second.wait_healthy().await;
    all_complete(&second.ingress, &acknowledged).await;
    // Idempotency keys are the database's: the same key again is the same invocation.
    let again = send_busy(&client, &second.ingress, "k-0").await;
    assert_eq!(again.as_deref(), Some(acknowledged[0].as_str()));
}

/// Fencing: a process paused (SIGSTOP) past its lease is taken over by a second one; once
/// continued, it acknowledges nothing (the request it receives gets no `202`, and nothing of
/// it is in the database) and stops with the storage-failure status.
#[tokio::test]
async fn a_paused_process_is_taken_over_and_commits_nothing_once_continued() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("RESTATE_DATABASE_URL", url),
        ("RESTATE_LEASE_TTL", "1s".to_owned()),
    ];
    let mut first = App::start(BIN, &dir.path().join("a"), &env).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let id = send_busy(&client, &first.ingress, &format!("k-{i}")).await;
        acknowledged.push(id.expect("acknowledged"));
    }
    let signal = |name: &str, pid: u32| {
        let status = std::process::Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP", first.pid());
    // Sent to the paused process: it waits in its socket.
    let paused = {
        let (client, ingress) = (client.clone(), first.ingress.clone());
        tokio::spawn(async move { send_busy(&client, &ingress, "while-paused").await })
    };
    // A second process takes over once the first one's lease has expired.
    let second = App::start(BIN, &dir.path().join("b"), &env).await;
    all_complete(&second.ingress, &acknowledged).await;

    signal("-CONT", first.pid());
    let answer = paused.await.unwrap();
    assert_eq!(answer, None, "a fenced process acknowledged a request");
    let status = first
        .wait_exit(Duration::from_secs(15))
        .expect("the fenced process stops");
    assert_eq!(status.code(), Some(74), "exit status says storage failure");
    let r = client
        .get(format!(
            "{}/restate/invocation/Waits/busy/while-paused/output",
            second.ingress
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the fenced process's request left nothing");
    // The second process goes on serving.
    assert!(send_busy(&client, &second.ingress, "after").await.is_some());
}
