//! The app on PostgreSQL as processes: a lost database connection stops the process (law 10)
//! and a restart loses nothing acknowledged; a second process on the same database waits and
//! takes over when the first is killed. Each test has a fresh database on the test process's
//! private cluster.

mod support;

use std::time::{Duration, Instant};

use restate_runtime::testing::PostgresCluster;
use support::{
    App, free_port, invocations_where, metrics, poll, send_busy, send_busy_until_refused, send_json,
};

const BIN: &str = env!("CARGO_BIN_EXE_crash_app");

fn cluster() -> &'static PostgresCluster {
    PostgresCluster::shared().expect("a private PostgreSQL cluster (scripts/test installs it)")
}

/// Waits until the partitions of the database at `url` are spread over two live processes.
async fn spread_over_two(url: &str) {
    poll(Duration::from_secs(30), || {
        let owners = cluster().query(
            url,
            "SELECT count(*)::text FROM restate_partitions WHERE expires_at > clock_timestamp() \
             GROUP BY owner_pid ORDER BY 1",
        );
        std::future::ready(
            owners.unwrap() == vec![vec![Some("128".to_owned())], vec![Some("128".to_owned())]],
        )
    })
    .await;
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

/// A second process on the same database serves at once, before it runs anything: what it
/// accepts is forwarded to the owner's inbox (sends, request-response calls, an awakeable's
/// completion, attach and output), duplicates are found across both, and it takes over when
/// the owner is killed.
#[tokio::test]
async fn a_second_process_serves_through_the_owner_and_takes_over_when_it_is_killed() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps");
    let env = [
        ("RESTATE_DATABASE_URL", url.clone()),
        ("STEPS_FILE", steps.display().to_string()),
    ];
    let first = App::start(BIN, &dir.path().join("a"), &env).await;
    let second = App::start(BIN, &dir.path().join("b"), &env).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let apps = [&first.ingress, &second.ingress];

    // Sends through either process; the same key at the other is the same invocation.
    let mut acknowledged = Vec::new();
    for i in 0..40 {
        let id = send_busy(&client, apps[i % 2], &format!("k-{i}")).await;
        acknowledged.push(id.expect("acknowledged"));
    }
    for i in 0..10 {
        let r = client
            .post(format!("{}/Waits/busy/send", apps[(i + 1) % 2]))
            .header("idempotency-key", format!("k-{i}"))
            .json(&1u64)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["invocationId"], acknowledged[i].as_str(), "{body}");
        assert_eq!(body["status"], "PreviouslyAccepted", "{body}");
    }
    // Backups on PostgreSQL are the database's own: the endpoint says so and writes nothing.
    let copy = dir.path().join("copy");
    let r = client
        .post(format!("{}/backup", first.admin))
        .json(&serde_json::json!({ "path": copy }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 501);
    assert!(r.text().await.unwrap().contains("pg_dump"));
    assert!(!copy.exists());
    // Request-response through the standby, one after the other on one key: in order, once.
    for n in 1..=5u64 {
        let r = client
            .post(format!("{}/Tally/t/add", second.ingress))
            .json(&1u64)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<u64>().await.unwrap(), n);
    }
    let r = client
        .post(format!("{}/Tally/t/get", first.ingress))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<u64>().await.unwrap(),
        5,
        "the owner sees the standby's calls"
    );
    // Output and attach through the standby.
    all_complete(&second.ingress, &acknowledged).await;
    let r = client
        .get(format!(
            "{}/restate/invocation/{}/attach",
            second.ingress, acknowledged[3]
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<u64>().await.unwrap(), 1);
    // An awakeable resolved through the standby wakes the owner's invocation.
    let waiting = send_json(&client, &first.ingress, "/Chaos/await_http", &"w").await;
    let mut awakeable = String::new();
    poll(Duration::from_secs(30), || {
        let found = support::lines(&steps)
            .into_iter()
            .find_map(|l| l.strip_prefix("awakeable w ").map(str::to_owned));
        if let Some(id) = found {
            awakeable = id;
        }
        std::future::ready(!awakeable.is_empty())
    })
    .await;
    let r = client
        .post(format!(
            "{}/restate/awakeables/{awakeable}/resolve",
            second.ingress
        ))
        .json(&"from the standby")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let r = client
        .get(format!(
            "{}/restate/invocation/{waiting}/attach",
            second.ingress
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<String>().await.unwrap(), "from the standby");
    // The inbox is empty once applied.
    poll(Duration::from_secs(30), || {
        let left = cluster().query(&url, "SELECT count(*)::text FROM restate_inbox");
        std::future::ready(left.unwrap() == vec![vec![Some("0".to_owned())]])
    })
    .await;

    // A standby stops at once when asked: it has nothing of its own to flush.
    let third = App::start(BIN, &dir.path().join("c"), &env).await;
    let asked = Instant::now();
    assert!(third.terminate().success());
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "a standby took {:?} to stop",
        asked.elapsed()
    );

    // Sends to the standby while the owner is gone are kept, and run once it takes over.
    first.kill();
    let mut late = Vec::new();
    for i in 40..60 {
        let id = send_busy(&client, &second.ingress, &format!("k-{i}")).await;
        late.push(id.expect("acknowledged"));
    }
    all_complete(&second.ingress, &acknowledged).await;
    all_complete(&second.ingress, &late).await;
    // Idempotency keys are the database's: the same key again is the same invocation.
    let again = send_busy(&client, &second.ingress, "k-0").await;
    assert_eq!(again.as_deref(), Some(acknowledged[0].as_str()));
}

/// Work a standby acknowledged first comes first at the owner too: a send to an object key
/// through the standby, then one to the same key at the owner, run in that order; the same
/// idempotency key at both is one invocation, with the first request's input, and the owner
/// answers `PreviouslyAccepted`.
#[tokio::test]
async fn work_a_standby_acknowledged_first_keeps_its_order_and_its_answer_at_the_owner() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps");
    let env = [
        ("RESTATE_DATABASE_URL", url),
        ("STEPS_FILE", steps.display().to_string()),
        ("STEP_MS", "1".to_owned()),
    ];
    let owner = App::start(BIN, &dir.path().join("a"), &env).await;
    let standby = App::start(BIN, &dir.path().join("b"), &env).await;
    let client = reqwest::Client::new();
    let send_idempotent = |app: &App, key: String, ms: u64| {
        let request = client
            .post(format!("{}/Waits/busy/send", app.ingress))
            .header("idempotency-key", key)
            .json(&ms);
        async move {
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 202);
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let rounds = 30;
    let mut idempotent = Vec::new();
    for round in 0..rounds {
        let path = format!("/Ledger/o-{round}/append");
        send_json(&client, &standby.ingress, &path, &1u64).await;
        send_json(&client, &owner.ingress, &path, &2u64).await;
        let key = format!("i-{round}");
        let first = send_idempotent(&standby, key.clone(), 1).await;
        let second = send_idempotent(&owner, key, 2).await;
        assert_eq!(first["status"], "Accepted", "{first}");
        assert_eq!(second["status"], "PreviouslyAccepted", "{second}");
        assert_eq!(first["invocationId"], second["invocationId"]);
        idempotent.push(first["invocationId"].as_str().unwrap().to_owned());
    }
    for id in &idempotent {
        let url = format!("{}/restate/invocation/{id}/attach", owner.ingress);
        let r = client.get(url).send().await.unwrap();
        assert_eq!(
            r.json::<u64>().await.unwrap(),
            1,
            "the first request's input"
        );
    }
    poll(Duration::from_secs(30), || {
        let lines = support::lines(&steps);
        std::future::ready(lines.iter().filter(|l| l.starts_with("ledger ")).count() == 2 * rounds)
    })
    .await;
    let lines = support::lines(&steps);
    for round in 0..rounds {
        let order: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix(&format!("ledger o-{round} ")))
            .collect();
        assert_eq!(order, ["1", "2"], "o-{round}: in the order acknowledged");
    }
}

/// Two processes of the test app on a fresh database (`more` added to their environment),
/// once its partitions are spread over both, with a client.
/// (`_dir` holds the steps file: bind it for as long as the processes run.)
struct Spread {
    a: App,
    b: App,
    client: reqwest::Client,
    url: String,
    steps: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn spread_pair(more: &[(&str, &str)]) -> Spread {
    let url = cluster().fresh_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps");
    let mut env = vec![
        ("RESTATE_DATABASE_URL", url.clone()),
        ("STEPS_FILE", steps.display().to_string()),
        ("STEP_MS", "1".to_owned()),
    ];
    env.extend(
        more.iter()
            .map(|(name, value)| (*name, (*value).to_owned())),
    );
    let a = App::start(BIN, &dir.path().join("a"), &env).await;
    let b = App::start(BIN, &dir.path().join("b"), &env).await;
    spread_over_two(&url).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    Spread {
        a,
        b,
        client,
        url,
        steps,
        _dir: dir,
    }
}

/// The same request taken by both processes at the same moment (an idempotent send, a
/// workflow's run sent or called): the process that runs its partition creates it while the
/// other forwards it to that process's inbox. Exactly one of the two answers is the first's
/// (`Accepted`, or the run's result where the other call gets 409), both name one invocation.
#[tokio::test]
async fn the_same_request_at_two_processes_at_once_is_first_at_exactly_one() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let Spread {
        a, b, client, _dir, ..
    } = spread_pair(&[]).await;
    let send = |ingress: &str, path: &str, key: Option<String>| {
        let mut request = client.post(format!("{ingress}{path}"));
        if let Some(key) = key {
            // Waits/busy takes the milliseconds it is busy; a workflow's run takes nothing.
            request = request.header("idempotency-key", key).json(&1u64);
        }
        async move {
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 202);
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    for round in 0..40 {
        let (path, key) = match round % 2 {
            0 => ("/Waits/busy/send".to_owned(), Some(format!("dup-{round}"))),
            _ => (format!("/Approval/sent-{round}/run/send"), None),
        };
        let (x, y) = tokio::join!(
            send(&a.ingress, &path, key.clone()),
            send(&b.ingress, &path, key)
        );
        let mut statuses = [x["status"].as_str().unwrap(), y["status"].as_str().unwrap()];
        statuses.sort();
        assert_eq!(
            statuses,
            ["Accepted", "PreviouslyAccepted"],
            "{path}: {x} {y}"
        );
        assert_eq!(x["invocationId"], y["invocationId"]);
    }
    for round in 0..10 {
        let run = |ingress: &str| {
            let request = client.post(format!("{ingress}/Approval/called-{round}/run"));
            async move {
                let r = request.send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };
        // Before or after the run waits on it: the promise keeps what it is resolved with.
        let approve = async {
            let path = format!("/Approval/called-{round}/approve");
            send_json(&client, &a.ingress, &path, &"ok").await;
        };
        let (x, y, ()) = tokio::join!(run(&a.ingress), run(&b.ingress), approve);
        let mut answers = [x, y];
        answers.sort();
        assert_eq!(
            answers[0],
            (200, "\"approved: ok\"".to_owned()),
            "{answers:?}"
        );
        assert_eq!(answers[1].0, 409, "{answers:?}");
    }
}

/// Admin actions sent to a process for invocations the other one runs are refused there as
/// the owner would refuse them (a finished one 409, an unfinished one to purge 409), not
/// acknowledged as forwarded; an action the owner takes is still forwarded.
#[tokio::test]
async fn admin_actions_on_another_process_invocations_are_refused_as_there() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    // The waiting runs stay in memory, not suspended: nothing to resume.
    let Spread {
        a, b, client, _dir, ..
    } = spread_pair(&[("RESTATE_SUSPEND_AFTER", "1h")]).await;
    let action = |id: &str, action: &str| {
        let request = client.patch(format!("{}/invocations/{id}/{action}", a.admin));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    // Over enough partitions that some are the other process's.
    let mut finished = Vec::new();
    let mut waiting = Vec::new();
    for i in 0..12 {
        let id = send_busy(&client, &b.ingress, &format!("done-{i}"))
            .await
            .unwrap();
        finished.push(id);
        let run = client.post(format!("{}/Approval/w-{i}/run/send", b.ingress));
        let r = run.send().await.unwrap();
        assert_eq!(r.status(), 202);
        let body: serde_json::Value = r.json().await.unwrap();
        waiting.push(body["invocationId"].as_str().unwrap().to_owned());
    }
    all_complete(&b.ingress, &finished).await;
    for id in &finished {
        assert_eq!(action(id, "kill").await, 409, "kill {id}");
        assert_eq!(action(id, "cancel").await, 409, "cancel {id}");
        assert_eq!(action(id, "resume").await, 409, "resume {id}");
    }
    // Stored, or still in the owner's inbox: unfinished either way.
    for id in &waiting {
        assert_eq!(action(id, "purge").await, 409, "purge {id}");
        assert_eq!(action(id, "resume").await, 409, "resume {id}");
        assert_eq!(action(id, "cancel").await, 202, "cancel {id}");
    }
    for id in &waiting {
        let attach = format!("{}/restate/invocation/{id}/attach", b.ingress);
        let r = client.get(attach).send().await.unwrap();
        assert_eq!(r.status(), 409, "{id} cancelled");
    }
    // A kill of one the other process runs is handed over: accepted (202), not done (found
    // from outside: it answered 200, and the invocation could then complete its own way).
    let mut kills = Vec::new();
    for i in 0..12 {
        let run = client.post(format!("{}/Approval/k-{i}/run/send", b.ingress));
        let r = run.send().await.unwrap();
        let body: serde_json::Value = r.json().await.unwrap();
        let id = body["invocationId"].as_str().unwrap().to_owned();
        let kill = client.patch(format!("{}/invocations/{id}/kill", a.admin));
        let r = kill.send().await.unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            body["handedOver"] == true,
            status == 202,
            "{id}: {status} {body}"
        );
        kills.push((status, id));
    }
    assert!(
        kills.iter().all(|(status, _)| [200, 202].contains(status)),
        "{kills:?}"
    );
    assert!(kills.iter().any(|(status, _)| *status == 202), "{kills:?}");
    for (_, id) in &kills {
        let attach = format!("{}/restate/invocation/{id}/attach", b.ingress);
        let r = client.get(attach).send().await.unwrap();
        assert_eq!(r.status(), 409, "{id} killed");
    }
    // Purged, an id is unknown everywhere: purging it again is a 404 wherever it arrives
    // (found from outside: a process that does not run it answered 200).
    for id in &finished {
        let purge = client.patch(format!("{}/invocations/{id}/purge", b.admin));
        assert!(
            purge.send().await.unwrap().status().is_success(),
            "purge {id}"
        );
    }
    for id in &finished {
        poll(Duration::from_secs(30), || async {
            let view = client.get(format!("{}/invocations/{id}", a.admin));
            view.send().await.unwrap().status() == 404
        })
        .await;
        assert_eq!(action(id, "purge").await, 404, "purge {id} again");
    }
}

/// Invocations backing off between attempts are shown so by every process (their records say
/// until when), and a resume through a process that does not run them starts their next
/// attempt where they run (found from outside: only the owner showed them backing off, and
/// the other refused the resume with 409 "is running, not paused").
#[tokio::test]
async fn invocations_backing_off_are_shown_and_resumed_through_either_process() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let Spread {
        a, b, client, _dir, ..
    } = spread_pair(&[]).await;
    // Sent through b: created in b's partitions (an unkeyed send is not forwarded).
    let mut ids = Vec::new();
    for _ in 0..6 {
        let r = client.post(format!("{}/Steps/down/send", b.ingress));
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 202);
        let body: serde_json::Value = r.json().await.unwrap();
        ids.push(body["invocationId"].as_str().unwrap().to_owned());
    }
    ids.sort();
    let attempts_at = |admin: String, attempts: u64| {
        let (client, ids) = (client.clone(), ids.clone());
        async move {
            let listed = invocations_where(&client, &admin, "status=backing-off").await;
            let mut shown: Vec<String> = (listed.iter())
                .filter(|v| v["attempts"] == attempts && v["next_retry_at"].is_string())
                .map(|v| v["id"].as_str().unwrap().to_owned())
                .collect();
            shown.sort();
            shown == ids
        }
    };
    poll(Duration::from_secs(60), || async {
        attempts_at(a.admin.clone(), 1).await && attempts_at(b.admin.clone(), 1).await
    })
    .await;
    for id in &ids {
        let resume = client.patch(format!("{}/invocations/{id}/resume", a.admin));
        let status = resume.send().await.unwrap().status();
        assert!(status.is_success(), "resume {id} through a: {status}");
    }
    // Each ran its next attempt at once, and backs off again after it.
    poll(Duration::from_secs(60), || attempts_at(a.admin.clone(), 2)).await;
}

/// Sends accepted by one process for partitions a paused process runs wait in the inbox: each
/// is shown there by id, `pending` in the inbox, not 404 (found from outside: acknowledged 202,
/// then unknown to the admin API while its output answered "not ready").
#[tokio::test]
async fn a_send_waiting_in_the_inbox_is_shown_pending_there() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let Spread {
        a, b, client, _dir, ..
    } = spread_pair(&[]).await;
    b.signal("-STOP");
    // Over enough keys that some are the paused process's: those go to its inbox.
    let mut views = Vec::new();
    for i in 0..12 {
        let send = client.post(format!("{}/Tally/inbox-{i}/add/send", a.ingress));
        let r = send.json(&1).send().await.unwrap();
        assert_eq!(r.status(), 202);
        let body: serde_json::Value = r.json().await.unwrap();
        let id = body["invocationId"].as_str().unwrap().to_owned();
        let view = client.get(format!("{}/invocations/{id}", a.admin));
        let r = view.send().await.unwrap();
        assert_eq!(r.status(), 200, "{id}");
        views.push(r.json::<serde_json::Value>().await.unwrap());
    }
    b.signal("-CONT");
    let in_inbox: Vec<_> = views.iter().filter(|v| v["inbox"] == true).collect();
    assert!(!in_inbox.is_empty(), "{views:?}");
    for view in in_inbox {
        assert_eq!(view["status"], "pending", "{view}");
    }
}

/// Calls waiting at a process that shuts down (SIGTERM) were accepted all the same: each is
/// answered 503 with its invocation's id and no `Retry-After`, whether it ran in that process
/// or was forwarded to the other one, and each completes once, read by that id elsewhere.
#[tokio::test]
async fn calls_cut_short_by_a_shutdown_name_their_invocations_which_complete_once() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let Spread {
        a,
        b,
        client,
        url,
        steps,
        _dir,
    } = spread_pair(&[("RESTATE_LEASE_TTL", "2s")]).await;
    let keys: Vec<String> = (0..8).map(|i| format!("cut-{i}")).collect();
    let calls: Vec<_> = (keys.iter())
        .map(|key| {
            let request = client.post(format!("{}/Approval/{key}/run", a.ingress));
            tokio::spawn(request.send())
        })
        .collect();
    // Every run stored (forwarded, or journaled where it runs) before the shutdown.
    poll(Duration::from_secs(30), || {
        let stored = cluster().query(&url, "SELECT count(*)::text FROM restate_invocations");
        std::future::ready(stored.unwrap() == vec![vec![Some(keys.len().to_string())]])
    })
    .await;
    let status = tokio::task::spawn_blocking(move || a.terminate())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    let mut ids = Vec::new();
    for call in calls {
        let r = call.await.unwrap().unwrap();
        assert_eq!(r.status(), 503);
        assert!(
            r.headers().get("retry-after").is_none(),
            "{:?}",
            r.headers()
        );
        let id = r.headers()["x-restate-id"].to_str().unwrap().to_owned();
        let body = r.text().await.unwrap();
        assert!(body.contains("attach"), "{body}");
        ids.push(id);
    }
    for (key, id) in keys.iter().zip(&ids) {
        send_json(
            &client,
            &b.ingress,
            &format!("/Approval/{key}/approve"),
            &"ok",
        )
        .await;
        let attach = format!("{}/restate/invocation/{id}/attach", b.ingress);
        let r = client.get(attach).send().await.unwrap();
        assert_eq!(r.status(), 200, "{key}");
        assert_eq!(r.text().await.unwrap(), "\"approved: ok\"");
    }
    let lines = support::lines(&steps);
    for key in &keys {
        let runs = lines
            .iter()
            .filter(|l| **l == format!("step {key}"))
            .count();
        assert_eq!(runs, 1, "{key}'s step: {lines:?}");
    }
}

/// The owner killed after what a page of its inbox caused is durable, before the page is
/// removed: the process that takes over applies the page again, finds it done, and every
/// forwarded add counts once.
#[tokio::test]
async fn an_inbox_page_applied_again_after_a_kill_counts_once() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let plain = [("RESTATE_DATABASE_URL", url.clone())];
    let armed = [
        ("RESTATE_DATABASE_URL", url.clone()),
        ("RESTATE_FAILPOINTS", "inbox.applied".to_owned()),
    ];
    let mut owner = App::start(BIN, &dir.path().join("a"), &armed).await;
    let standby = App::start(BIN, &dir.path().join("b"), &plain).await;
    let client = reqwest::Client::new();
    let adds = 20u64;
    let sends: Vec<_> = (0..adds)
        .map(|i| {
            client
                .post(format!("{}/Tally/t/add/send", standby.ingress))
                .header("idempotency-key", format!("add-{i}"))
                .json(&1u64)
                .send()
        })
        .collect();
    for answer in futures::future::join_all(sends).await {
        assert_eq!(answer.unwrap().status(), 202, "forwarded before the answer");
    }
    let status = owner
        .wait_exit(Duration::from_secs(30))
        .expect("the owner dies at the failpoint");
    assert!(!status.success());
    // The standby takes over and applies what is left of the inbox.
    poll(Duration::from_secs(30), || {
        let left = cluster().query(&url, "SELECT count(*)::text FROM restate_inbox");
        std::future::ready(left.unwrap() == vec![vec![Some("0".to_owned())]])
    })
    .await;
    let count = || {
        client
            .post(format!("{}/Tally/t/get", standby.ingress))
            .send()
    };
    poll(Duration::from_secs(30), || {
        let request = count();
        async move { request.await.unwrap().json::<u64>().await.unwrap() == adds }
    })
    .await;
    // Nothing comes late: the count stays.
    let again = client
        .post(format!("{}/Tally/t/add", standby.ingress))
        .json(&0u64)
        .send()
        .await
        .unwrap();
    assert_eq!(again.json::<u64>().await.unwrap(), adds, "each add once");
}

/// Fencing: a process paused (SIGSTOP) past its lease is taken over by a second one. Once
/// continued, it drops the partitions it lost instead of acting on them: the call it was
/// answering when paused gets an error, not a result it could not commit, the request that waited in
/// its socket is either refused or acknowledged durably (and then run once, by whoever runs its
/// partition), and it stays up: it takes its share of the partitions again and serves. Steps
/// whose sleeps ended during the pause run once, by the new owner: the continued process runs
/// none of them before its lease round tells it they are no longer its.
#[tokio::test]
async fn a_paused_process_is_taken_over_drops_what_it_lost_and_rejoins_once_continued() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps.txt");
    let env = [
        ("RESTATE_DATABASE_URL", url),
        ("RESTATE_LEASE_TTL", "1s".to_owned()),
        ("STEPS_FILE", steps.display().to_string()),
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
    // Asleep in the first process (in memory) when it is paused; due during the pause.
    let later: Vec<String> = (0..10).map(|i| format!("t{i}")).collect();
    for tag in &later {
        let r = client
            .post(format!("{}/Waits/later/send", first.ingress))
            .json(tag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let accepted: serde_json::Value = r.json().await.unwrap();
        acknowledged.push(accepted["invocationId"].as_str().unwrap().to_owned());
    }
    // A call the first process is running when it is paused.
    let in_flight = {
        let (client, ingress) = (client.clone(), first.ingress.clone());
        tokio::spawn(async move {
            let r = client
                .post(format!("{ingress}/Waits/busy"))
                .header("idempotency-key", "in-flight")
                .json(&3000u64)
                .send()
                .await;
            r.map(|r| r.status().as_u16()).ok()
        })
    };
    // Known to the first process: it runs it.
    let in_flight_there = format!(
        "{}/restate/invocation/Waits/busy/in-flight/output",
        first.ingress
    );
    poll(Duration::from_secs(10), || {
        let url = in_flight_there.clone();
        async move { reqwest::get(url).await.is_ok_and(|r| r.status() != 404) }
    })
    .await;
    first.signal("-STOP");
    // Sent to the paused process: it waits in its socket.
    let paused = {
        let (client, ingress) = (client.clone(), first.ingress.clone());
        tokio::spawn(async move { send_busy(&client, &ingress, "while-paused").await })
    };
    // A second process takes every partition over once the first one's leases expired: the
    // epochs say so.
    let second = App::start(BIN, &dir.path().join("b"), &env).await;
    let url = env[0].1.clone();
    poll(Duration::from_secs(30), || {
        let epoch = cluster().query(&url, "SELECT DISTINCT epoch::text FROM restate_partitions");
        std::future::ready(epoch.unwrap() == vec![vec![Some("2".to_owned())]])
    })
    .await;
    all_complete(&second.ingress, &acknowledged).await;

    first.signal("-CONT");
    let answered = in_flight.await.unwrap();
    println!("the call in flight was answered {answered:?}");
    assert_ne!(
        answered,
        Some(200),
        "the fenced process answered a call whose partition it lost"
    );
    let output = |key: &str| {
        let url = format!(
            "{}/restate/invocation/Waits/busy/{key}/output",
            second.ingress
        );
        async move { reqwest::get(url).await.unwrap().status() }
    };
    let paused = paused.await.unwrap();
    println!("the request sent while paused was answered {paused:?}");
    match paused {
        // Refused: nothing of it was written.
        None => assert_eq!(
            output("while-paused").await,
            404,
            "a refused request left a trace"
        ),
        // Taken in once the process saw where the partition runs now: durable, and run.
        Some(id) => all_complete(&second.ingress, &[id]).await,
    }
    // It stays up and takes its share again: the partitions are spread over both processes.
    spread_over_two(&url).await;
    assert!(
        first.wait_exit(Duration::from_millis(50)).is_none(),
        "the fenced process stopped"
    );
    let after = send_busy(&client, &first.ingress, "after").await;
    all_complete(
        &first.ingress,
        &[after.expect("the continued process serves")],
    )
    .await;
    let ran = std::fs::read_to_string(&steps).unwrap_or_default();
    for tag in &later {
        let times = ran.lines().filter(|l| *l == format!("later {tag}")).count();
        assert_eq!(times, 1, "step of {tag} ran {times} times: {ran}");
    }
}

/// A concurrency limit holds in the deployment: twelve invocations of a handler with
/// `concurrency = 2` sent through the owner and a standby alike, the owner SIGKILLed while two
/// steps run; the standby takes over with the bucket (durable state of its key, which one
/// owner at a time runs), so never more than two steps run at once across both processes, and
/// every invocation completes.
#[tokio::test]
async fn a_concurrency_limit_holds_across_processes_and_a_failover() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps");
    let env = [
        ("RESTATE_DATABASE_URL", url.clone()),
        ("STEPS_FILE", steps.display().to_string()),
        ("STEP_MS", "300".to_owned()),
        ("RESTATE_SUSPEND_AFTER", "20ms".to_owned()),
    ];
    let first = App::start(BIN, &dir.path().join("a"), &env).await;
    let second = App::start(BIN, &dir.path().join("b"), &env).await;
    let (owner_pid, apps) = (first.pid(), [&first.ingress, &second.ingress]);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..12u32 {
        ids.push(send_json(&client, apps[n as usize % 2], "/Gated/work", &n).await);
    }
    let started = || {
        support::lines(&steps)
            .iter()
            .filter(|l| l.starts_with("gated start"))
            .count()
    };
    poll(Duration::from_secs(30), || {
        std::future::ready(started() >= 2)
    })
    .await;
    first.kill();
    all_complete(&second.ingress, &ids).await;
    // The owner's open steps died with it; the standby's lines come after its kill.
    let log = support::lines(&steps);
    let (mut open, mut most, mut ended) = (
        std::collections::BTreeMap::new(),
        0,
        std::collections::BTreeSet::new(),
    );
    for line in &log {
        let parts: Vec<&str> = line.split(' ').collect();
        let ["gated", what, n, pid] = parts[..] else {
            continue;
        };
        if pid != owner_pid.to_string() {
            open.retain(|_, at: &mut String| *at != owner_pid.to_string());
        }
        if what == "start" {
            open.insert(n.to_owned(), pid.to_owned());
            most = most.max(open.len());
        } else {
            open.remove(n);
            ended.insert(n.to_owned());
        }
    }
    assert!(most <= 2, "{most} at once:\n{}", log.join("\n"));
    assert_eq!(most, 2, "the limit was used");
    assert_eq!(ended.len(), 12, "every step ended:\n{}", log.join("\n"));
    assert!(
        log.iter()
            .any(|l| l.ends_with(&format!(" {}", second.pid()))),
        "the standby took over"
    );
}

/// `GET /drain` of one process, as JSON.
async fn drain_status(client: &reqwest::Client, admin: &str) -> serde_json::Value {
    let r = client.get(format!("{admin}/drain")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// `PATCH /drain` on `admin` once some attempt runs there; the drain's answer, as JSON.
async fn drain_while_running(client: &reqwest::Client, admin: &str) -> serde_json::Value {
    poll(Duration::from_secs(30), || {
        let (client, admin) = (client.clone(), admin.to_owned());
        async move { drain_status(&client, &admin).await["running_attempts"] != 0 }
    })
    .await;
    let r = client.patch(format!("{admin}/drain")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// The deploy recipe on PostgreSQL: the owner is drained while its attempts run; they finish
/// there, then it releases its lease and the standby (the next version) takes the database
/// over at once, long before the lease's 120 s would have expired. The drained process runs
/// nothing more and refuses to undrain; everything acknowledged by either process completes,
/// and new work goes through the new owner.
#[tokio::test]
async fn a_drained_owner_releases_its_lease_and_the_standby_takes_over_at_once() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("RESTATE_DATABASE_URL", url.clone()),
        ("RESTATE_LEASE_TTL", "120s".to_owned()),
    ];
    let first = App::start(BIN, &dir.path().join("a"), &env).await;
    let second = App::start(BIN, &dir.path().join("b"), &env).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    assert_eq!(drain_status(&client, &first.admin).await["lease"], "held");
    assert_eq!(drain_status(&client, &second.admin).await["lease"], "none");
    // A standby holds no lease: its drain and undrain are its gate's alone.
    for (path, draining) in [("/drain", true), ("/undrain", false)] {
        let r = client
            .patch(format!("{}{path}", second.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let status: serde_json::Value = r.json().await.unwrap();
        assert_eq!(status["draining"], draining, "{path}: {status}");
        assert_eq!(status["lease"], "none", "{path}: {status}");
    }
    // Slow attempts, acknowledged by both processes, run by the owner.
    let mut acknowledged = Vec::new();
    for i in 0..8u64 {
        let r = client
            .post(format!(
                "{}/Waits/busy/send",
                [&first.ingress, &second.ingress][i as usize % 2]
            ))
            .header("idempotency-key", format!("slow-{i}"))
            .json(&1_500u64)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let body: serde_json::Value = r.json().await.unwrap();
        acknowledged.push(body["invocationId"].as_str().unwrap().to_owned());
    }
    let status = drain_while_running(&client, &first.admin).await;
    assert_eq!(status["draining"], true);
    let r = client
        .post(format!("{}/Waits/busy/send", first.ingress))
        .json(&1u64)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "a draining process accepts no new work");
    // Ready: no attempt runs, and the lease is free or taken.
    poll(Duration::from_secs(30), || {
        let (client, admin) = (client.clone(), first.admin.clone());
        async move { drain_status(&client, &admin).await["ready"] == true }
    })
    .await;
    // Stays so: no attempt starts while drained, and a free lease is only ever taken.
    let ready = drain_status(&client, &first.admin).await;
    assert_eq!(ready["running_attempts"], 0, "{ready}");
    assert!(
        ready["lease"] == "released" || ready["lease"] == "handed over",
        "{ready}"
    );
    // The standby took over at once: a new epoch, well within the lease's 120 s.
    poll(Duration::from_secs(30), || {
        let epoch = cluster().query(&url, "SELECT DISTINCT epoch::text FROM restate_partitions");
        std::future::ready(epoch.unwrap() == vec![vec![Some("2".to_owned())]])
    })
    .await;
    poll(Duration::from_secs(30), || {
        let (client, admin) = (client.clone(), second.admin.clone());
        async move { drain_status(&client, &admin).await["lease"] == "held" }
    })
    .await;
    poll(Duration::from_secs(30), || {
        let (client, admin) = (client.clone(), first.admin.clone());
        async move { drain_status(&client, &admin).await["lease"] == "handed over" }
    })
    .await;
    let r = client
        .patch(format!("{}/undrain", first.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "undrained after a hand-over");
    assert!(r.text().await.unwrap().contains("restart"));
    assert_eq!(drain_status(&client, &first.admin).await["draining"], true);

    all_complete(&second.ingress, &acknowledged).await;
    // The drained process serves on as a standby: results come from the database.
    all_complete(&first.ingress, &acknowledged).await;
    let mut late = Vec::new();
    for i in 0..10 {
        late.push(
            send_busy(&client, &second.ingress, &format!("late-{i}"))
                .await
                .expect("the new owner accepts"),
        );
    }
    all_complete(&second.ingress, &late).await;
    assert!(
        first.terminate().success(),
        "the drained process stops cleanly"
    );
    assert!(send_busy(&client, &second.ingress, "after").await.is_some());
}

/// Two processes share the partitions and one is drained: the other takes the drained one's
/// partitions at once, told by a notification, not at its next renewal, which with a 60 s
/// lease comes every 20 s (the drain comes right after one). Work sent through the process
/// left to keys of every partition then completes.
#[tokio::test]
async fn a_drained_process_partitions_are_taken_by_the_others_at_once() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let Spread {
        a: first,
        b: second,
        client,
        url,
        _dir,
        ..
    } = spread_pair(&[("RESTATE_LEASE_TTL", "60s")]).await;
    // The second process's partitions: how many have a live lease, and when the first of
    // those leases runs out (seconds since the epoch).
    let seconds = |what: &str| {
        let sql = format!(
            "SELECT {what}::text FROM restate_partitions r \
             JOIN restate_members m ON m.pid = r.owner_pid \
             WHERE rtrim(m.ingress_url, '/') = '{}' AND r.expires_at > clock_timestamp()",
            second.ingress
        );
        let rows = cluster().query(&url, &sql).unwrap();
        rows[0][0].as_deref().unwrap_or("0").parse::<f64>().unwrap()
    };
    let runs_out = || seconds("extract(epoch FROM min(r.expires_at))");
    // Wait for a renewal of them all after the take (which set their leases too): the next
    // one is then 20 s away.
    let taken = runs_out();
    poll(Duration::from_secs(40), || {
        std::future::ready(runs_out() > taken + 0.5)
    })
    .await;
    let r = client
        .patch(format!("{}/drain", first.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    poll(Duration::from_secs(10), || {
        std::future::ready(seconds("count(*)") == 256.0)
    })
    .await;
    let mut acknowledged = Vec::new();
    for i in 0..16 {
        let id = send_busy(&client, &second.ingress, &format!("after-drain-{i}")).await;
        acknowledged.push(id.expect("the process left accepts"));
    }
    all_complete(&second.ingress, &acknowledged).await;
}

/// A drained owner killed right after the release of its lease committed (failpoint
/// `lease.released`), before another process took the lease: nothing acknowledged is lost.
/// The standby takes the free lease over and runs what waited (sleeps suspended in the
/// database, queued work) once each; the killed process, restarted, serves as a standby.
#[tokio::test]
async fn a_drained_owner_killed_right_after_its_release_loses_nothing() {
    use std::os::unix::process::ExitStatusExt as _;
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps.log");
    let env = vec![
        ("RESTATE_DATABASE_URL", url.clone()),
        ("RESTATE_LEASE_TTL", "120s".to_owned()),
        ("RESTATE_SUSPEND_AFTER", "50ms".to_owned()),
        ("STEPS_FILE", steps.display().to_string()),
    ];
    let mut armed = env.clone();
    armed.push(("RESTATE_FAILPOINTS", "lease.released".to_owned()));
    let mut first = App::start(BIN, &dir.path().join("a"), &armed).await;
    let second = App::start(BIN, &dir.path().join("b"), &env).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    // Acknowledged by both processes: sleeps still suspended at the release, attempts
    // running at the drain, durable side effects.
    let mut expected: Vec<(String, serde_json::Value)> = Vec::new();
    for i in 0..6usize {
        let ingress = [&first.ingress, &second.ingress][i % 2];
        let nap = send_json(&client, ingress, "/Waits/nap", &3_000u64).await;
        expected.push((nap, serde_json::json!(3_000)));
        let busy = send_json(&client, ingress, "/Waits/busy", &1_000u64).await;
        expected.push((busy, serde_json::json!(1_000)));
        let mark = send_json(&client, ingress, "/Waits/mark", &format!("m-{i}")).await;
        expected.push((mark, serde_json::Value::Null));
    }
    drain_while_running(&client, &first.admin).await;
    // The failpoint fires only once the release committed.
    let status = first
        .wait_exit(Duration::from_secs(60))
        .expect("the drained owner reaches the failpoint once its attempts end");
    assert_eq!(
        status.signal(),
        Some(9),
        "killed at lease.released: {status:?}"
    );

    // The standby takes the free lease at once, long before the 120 s TTL.
    poll(Duration::from_secs(30), || {
        let epoch = cluster().query(&url, "SELECT DISTINCT epoch::text FROM restate_partitions");
        std::future::ready(epoch.unwrap() == vec![vec![Some("2".to_owned())]])
    })
    .await;
    let output = |ingress: String, id: String| {
        let client = client.clone();
        async move {
            let r = client
                .get(format!("{ingress}/restate/invocation/{id}/output"))
                .send()
                .await
                .unwrap();
            match r.status().as_u16() {
                200 => Some(r.json::<serde_json::Value>().await.unwrap_or_default()),
                _ => None,
            }
        }
    };
    for (id, want) in &expected {
        poll(Duration::from_secs(30), || {
            let found = output(second.ingress.clone(), id.clone());
            async move { found.await.is_some() }
        })
        .await;
        let got = output(second.ingress.clone(), id.clone()).await;
        assert_eq!(got.as_ref(), Some(want), "{id}");
    }
    let log = std::fs::read_to_string(&steps).unwrap();
    for i in 0..6 {
        let marks = log
            .lines()
            .filter(|l| *l == format!("marked m-{i}"))
            .count();
        assert_eq!(marks, 1, "m-{i} marked once:\n{log}");
    }

    // Restarted, the killed process finds the lease taken and serves as a standby.
    let restarted = App::start(BIN, &dir.path().join("a"), &env).await;
    assert_eq!(
        drain_status(&client, &restarted.admin).await["lease"],
        "none"
    );
    for (id, want) in &expected {
        assert_eq!(
            output(restarted.ingress.clone(), id.clone()).await.as_ref(),
            Some(want),
            "{id} through the restarted process"
        );
    }
    assert!(
        send_busy(&client, &restarted.ingress, "after")
            .await
            .is_some()
    );
}

/// An undrain that races the standby's takeover of the lease the drain released, at varied
/// delays after the release: either the undrain renews the lease first (it answers 200, the
/// drained process owns the database again with the same epoch, the standby stays one) or the
/// standby takes it first (the undrain answers 409, the standby owns it with the next epoch),
/// or the standby took some partitions before the undrain renewed the rest (200, each holds
/// a share). Never a partition with two owners or none; what each process says is what the
/// database holds, and every acknowledged invocation completes.
#[tokio::test]
async fn an_undrain_racing_the_takeover_leaves_exactly_one_owner() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let mut outcomes = Vec::new();
    for round in 0..4u64 {
        let url = cluster().fresh_database().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let env = [
            ("RESTATE_DATABASE_URL", url.clone()),
            ("RESTATE_LEASE_TTL", "120s".to_owned()),
        ];
        let first = App::start(BIN, &dir.path().join("a"), &env).await;
        let second = App::start(BIN, &dir.path().join("b"), &env).await;
        let mut acknowledged = Vec::new();
        for i in 0..6 {
            let ingress = [&first.ingress, &second.ingress][i % 2];
            let key = format!("r{round}-{i}");
            acknowledged.push(
                send_busy(&client, ingress, &key)
                    .await
                    .expect("acknowledged"),
            );
        }
        let r = client
            .patch(format!("{}/drain", first.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        poll(Duration::from_secs(30), || {
            let (client, admin) = (client.clone(), first.admin.clone());
            async move {
                let lease = drain_status(&client, &admin).await["lease"].clone();
                lease == "released" || lease == "handed over"
            }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(round * 40)).await;
        let r = client
            .patch(format!("{}/undrain", first.admin))
            .send()
            .await
            .unwrap();
        let epoch = || {
            let mut epochs = cluster()
                .query(&url, "SELECT DISTINCT epoch::text FROM restate_partitions")
                .unwrap();
            epochs.sort();
            epochs
        };
        let split = vec![vec![Some("1".to_owned())], vec![Some("2".to_owned())]];
        let owner = match r.status().as_u16() {
            200 => {
                let status: serde_json::Value = r.json().await.unwrap();
                assert_eq!(status["lease"], "held", "round {round}: {status}");
                // The other process may have taken some of the released partitions before
                // the undrain renewed the rest (a take skips rows another transaction
                // locks): each partition has one owner either way.
                let epochs = epoch();
                assert!(
                    epochs == vec![vec![Some("1".to_owned())]] || epochs == split,
                    "round {round}: {epochs:?}"
                );
                assert!(!lease_free(&url), "round {round}: held but free");
                match epochs == split {
                    true => "each a share",
                    false => "the undrained process",
                }
            }
            409 => {
                poll(Duration::from_secs(30), || {
                    let (client, admin) = (client.clone(), second.admin.clone());
                    async move { drain_status(&client, &admin).await["lease"] == "held" }
                })
                .await;
                assert_eq!(
                    drain_status(&client, &first.admin).await["lease"],
                    "handed over",
                    "round {round}"
                );
                assert_eq!(epoch(), vec![vec![Some("2".to_owned())]], "round {round}");
                "the standby"
            }
            other => panic!("round {round}: undrain answered {other}"),
        };
        // One owner of the whole: the other process holds no lease, and keeps not holding
        // one (unless each holds a share).
        let (held, other) = match owner {
            "the standby" => (&second, &first),
            _ => (&first, &second),
        };
        let shared = owner == "each a share";
        assert_eq!(drain_status(&client, &held.admin).await["lease"], "held");
        if shared {
            assert_eq!(drain_status(&client, &other.admin).await["lease"], "held");
        } else {
            assert_ne!(drain_status(&client, &other.admin).await["lease"], "held");
        }
        // New work through every process that is not draining (one handed over stays so).
        let mut open = vec![&held.ingress];
        if drain_status(&client, &other.admin).await["draining"] == false {
            open.push(&other.ingress);
        }
        for i in 0..4 {
            let key = format!("after-r{round}-{i}");
            let ingress = open[i % open.len()];
            acknowledged.push(send_busy(&client, ingress, &key).await.expect("accepted"));
        }
        all_complete(&held.ingress, &acknowledged).await;
        if !shared {
            assert_ne!(drain_status(&client, &other.admin).await["lease"], "held");
        }
        outcomes.push(owner);
        drop((first, second));
    }
    eprintln!("owners after the races, by round: {outcomes:?}");
}

/// Whether every partition's lease has run out by the database's clock (released).
fn lease_free(url: &str) -> bool {
    let free = cluster()
        .query(
            url,
            "SELECT bool_and(expires_at < clock_timestamp())::text FROM restate_partitions",
        )
        .unwrap();
    free == vec![vec![Some("true".to_owned())]]
}

/// Drain and undrain on an owner with no standby, one after the other and at once: an
/// undrain answers once the lease is held again (renewed, and new work runs), and whatever
/// order racing requests are taken in, what `GET /drain` says of the lease is what the
/// database holds.
#[tokio::test]
async fn drains_and_undrains_in_quick_succession_end_as_the_last_one_says() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("RESTATE_DATABASE_URL", url.clone()),
        ("RESTATE_LEASE_TTL", "120s".to_owned()),
    ];
    let app = App::start(BIN, &dir.path().join("a"), &env).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let patch = |path: &'static str| {
        let (client, admin) = (client.clone(), app.admin.clone());
        async move {
            let r = client.patch(format!("{admin}{path}")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let released = || {
        let (client, admin, url) = (client.clone(), app.admin.clone(), url.clone());
        async move {
            poll(Duration::from_secs(30), || {
                let (client, admin, url) = (client.clone(), admin.clone(), url.clone());
                async move {
                    let status = drain_status(&client, &admin).await;
                    status["lease"] == "released" && status["ready"] == true && lease_free(&url)
                }
            })
            .await
        }
    };
    patch("/drain").await;
    released().await;
    let undrained = patch("/undrain").await;
    assert_eq!(undrained["draining"], false, "{undrained}");
    assert_eq!(undrained["lease"], "held", "{undrained}");
    assert!(!lease_free(&url), "renewed before the drain ended");
    assert!(
        send_busy(&client, &app.ingress, "after-undrain")
            .await
            .is_some()
    );

    // An undrain and a drain at once, over a released lease: whichever the server took last
    // decides, and what `/drain` says then is what the database holds.
    for round in 0..6 {
        patch("/drain").await;
        released().await;
        tokio::join!(patch("/undrain"), async {
            tokio::time::sleep(Duration::from_millis(round)).await;
            patch("/drain").await
        });
        let status = drain_status(&client, &app.admin).await;
        if status["draining"] == true {
            released().await;
        } else {
            assert_eq!(status["lease"], "held", "round {round}: {status}");
            assert!(!lease_free(&url), "round {round}: held but free");
        }
        let undrained = patch("/undrain").await;
        assert_eq!(undrained["lease"], "held", "round {round}: {undrained}");
        assert!(!lease_free(&url), "round {round}");
    }
    assert!(app.terminate().success());
}

/// Debounce across two processes on one database: the arrivals of a key's burst, sent half to
/// each process and with the first SIGKILLed between the halves, run the handler once, with
/// the last arrival, in whichever process runs the key's partition then.
#[tokio::test]
async fn a_debounced_burst_spread_over_two_processes_and_a_sigkill_runs_once_with_its_last_input() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps");
    let env = [
        ("RESTATE_DATABASE_URL", url),
        ("RESTATE_LEASE_TTL", "1s".to_owned()),
        ("STEPS_FILE", steps.display().to_string()),
        ("RESTATE_SUSPEND_AFTER", "20ms".to_owned()),
    ];
    let first = App::start(BIN, &dir.path().join("a"), &env).await;
    let second = App::start(BIN, &dir.path().join("b"), &env).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let keys: Vec<String> = (0..8).map(|k| format!("key-{k}")).collect();
    let arrive = |app: &App, key: &str, n: u32| {
        let url = format!("{}/Settle/burst/send", app.ingress);
        let body = serde_json::json!([key, n]);
        let client = client.clone();
        async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        }
    };
    for n in 0..5 {
        for (i, key) in keys.iter().enumerate() {
            arrive(
                if (i + n as usize).is_multiple_of(2) {
                    &first
                } else {
                    &second
                },
                key,
                n,
            )
            .await;
        }
    }
    first.kill();
    for n in 5..10 {
        for key in &keys {
            arrive(&second, key, n).await;
        }
    }
    let settled = || {
        support::lines(&steps)
            .into_iter()
            .filter(|l| l.starts_with("settled "))
            .collect::<Vec<_>>()
    };
    poll(Duration::from_secs(60), || {
        std::future::ready(settled().len() >= keys.len())
    })
    .await;
    // A second burst of a key would close 3 s after its last arrival: none runs in 5 s.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let log = settled();
        assert!(
            log.len() <= keys.len(),
            "runs beyond one a key:\n{}",
            log.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = settled();
    for key in &keys {
        let runs: Vec<_> = log
            .iter()
            .filter(|l| l.split(' ').nth(1) == Some(key.as_str()))
            .collect();
        assert_eq!(
            runs.len(),
            1,
            "{key} ran {} times:\n{}",
            runs.len(),
            log.join("\n")
        );
        assert_eq!(
            runs[0].split(' ').nth(2),
            Some("9"),
            "the last input: {}",
            runs[0]
        );
    }
    second.kill();
}

/// A process that joins takes its share of the partitions from the one that ran them all: a
/// `ctx.run` closure executing on a partition offered back ends and journals its result before
/// the partition moves, so the new owner replays the step instead of running it again.
#[tokio::test]
async fn a_step_running_as_its_partition_is_offered_back_runs_once() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps.txt");
    let env = [
        ("RESTATE_DATABASE_URL", url.clone()),
        ("RESTATE_LEASE_TTL", "1s".to_owned()),
        ("STEPS_FILE", steps.display().to_string()),
        ("STEP_MS", "6000".to_owned()),
    ];
    let first = App::start(BIN, &dir.path().join("a"), &env).await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for k in 0..24u64 {
        let r = client
            .post(format!("{}/Ledger/k{k}/append/send", first.ingress))
            .json(&k)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let accepted: serde_json::Value = r.json().await.unwrap();
        ids.push(accepted["invocationId"].as_str().unwrap().to_owned());
    }
    // Every step is executing in the first process.
    poll(Duration::from_secs(30), || {
        let ran = std::fs::read_to_string(&steps).unwrap_or_default();
        std::future::ready(ran.lines().count() == 24)
    })
    .await;
    let second = App::start(BIN, &dir.path().join("b"), &env).await;
    spread_over_two(&url).await;
    all_complete(&second.ingress, &ids).await;
    let ran = std::fs::read_to_string(&steps).unwrap();
    for k in 0..24 {
        let line = format!("ledger k{k} {k}");
        let times = ran.lines().filter(|l| *l == line).count();
        assert_eq!(times, 1, "{line} ran {times} times: {ran}");
    }
}

/// "Last" is by acceptance across processes too: a debounced arrival forwarded to another
/// process's inbox (its idempotency key's partition runs there) and taken in there after a
/// later arrival at this process is still the earlier one, so the later one runs.
#[tokio::test]
async fn a_forwarded_arrival_taken_in_late_is_not_the_latest_of_its_burst() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps");
    let env = [
        ("RESTATE_DATABASE_URL", url.clone()),
        ("RESTATE_LEASE_TTL", "1s".to_owned()),
        ("STEPS_FILE", steps.display().to_string()),
    ];
    let first = App::start(BIN, &dir.path().join("a"), &env).await;
    let second = App::start(BIN, &dir.path().join("b"), &env).await;
    spread_over_two(&url).await;
    let client = reqwest::Client::new();
    let keys: Vec<String> = (0..12).map(|k| format!("late-{k}")).collect();
    // The second process paused (well within its lease) while the first arrival of each key
    // waits in its inbox (about half of them: those of its partitions) and the second
    // arrival is taken in by the first process.
    second.signal("-STOP");
    for n in [1, 2] {
        for key in &keys {
            let mut request = client
                .post(format!("{}/Settle/burst/send", first.ingress))
                .json(&serde_json::json!([key, n]));
            if n == 1 {
                request = request.header("idempotency-key", format!("x-{key}"));
            }
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 202);
        }
        // The second arrivals accepted in later milliseconds than every first one.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    second.signal("-CONT");
    let settled = || {
        support::lines(&steps)
            .into_iter()
            .filter(|l| l.starts_with("settled late-"))
            .collect::<Vec<_>>()
    };
    poll(Duration::from_secs(60), || {
        std::future::ready(settled().len() >= keys.len())
    })
    .await;
    let log = settled();
    for key in &keys {
        let runs: Vec<_> = log
            .iter()
            .filter(|l| l.split(' ').nth(1) == Some(key.as_str()))
            .collect();
        assert_eq!(runs.len(), 1, "{key}:\n{}", log.join("\n"));
        assert_eq!(
            runs[0].split(' ').nth(2),
            Some("2"),
            "{key} ran with an earlier input:\n{}",
            log.join("\n")
        );
    }
}

/// Permits go in acceptance order across processes too: invocations forwarded through the
/// paused second process's inbox (taken in after later ones were accepted at the first) get
/// theirs before those later ones.
#[tokio::test]
async fn permits_go_in_acceptance_order_to_invocations_forwarded_and_taken_in_late() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps");
    let env = [
        ("RESTATE_DATABASE_URL", url.clone()),
        ("RESTATE_LEASE_TTL", "2s".to_owned()),
        ("STEPS_FILE", steps.display().to_string()),
        ("STEP_MS", "2000".to_owned()),
    ];
    let first = App::start(BIN, &dir.path().join("a"), &env).await;
    let second = App::start(BIN, &dir.path().join("b"), &env).await;
    spread_over_two(&url).await;
    let client = reqwest::Client::new();
    let work = |n: u32, idempotency: Option<String>| {
        let mut request = client
            .post(format!("{}/Gated/work/send", first.ingress))
            .json(&n);
        if let Some(key) = idempotency {
            request = request.header("idempotency-key", key);
        }
        async move {
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 202);
            let accepted: serde_json::Value = r.json().await.unwrap();
            accepted["invocationId"].as_str().unwrap().to_owned()
        }
    };
    // Both permits held for two seconds.
    let mut ids = vec![work(0, None).await, work(1, None).await];
    poll(Duration::from_secs(30), || {
        let started = support::lines(&steps);
        std::future::ready(
            started
                .iter()
                .filter(|l| l.starts_with("gated start"))
                .count()
                == 2,
        )
    })
    .await;
    second.signal("-STOP");
    // Earlier: about half wait in the paused process's inbox (their keys' partitions).
    for n in 100..108 {
        ids.push(work(n, Some(format!("early-{n}"))).await);
    }
    tokio::time::sleep(Duration::from_millis(2)).await;
    // Later, accepted in later milliseconds, taken in here at once.
    for n in 200..204 {
        ids.push(work(n, None).await);
    }
    second.signal("-CONT");
    all_complete(&first.ingress, &ids).await;
    let started: Vec<u32> = support::lines(&steps)
        .iter()
        .filter_map(|l| l.strip_prefix("gated start "))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    let last_early = started
        .iter()
        .rposition(|n| (100..108).contains(n))
        .unwrap();
    let first_late = started.iter().position(|n| *n >= 200).unwrap();
    assert!(
        last_early < first_late,
        "a later invocation got a permit before an earlier one: {started:?}"
    );
}

/// Adds 1 to `Tally/{key}` through `ingress`: the answer's status and body.
async fn send_add(client: &reqwest::Client, ingress: &str, key: &str) -> (u16, String) {
    let r = client
        .post(format!("{ingress}/Tally/{key}/add"))
        .json(&1u64)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Asserts that an add was answered 200 with the count `expected`.
fn assert_counted(status: u16, body: &str, expected: u64) {
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<u64>(body).unwrap(), expected);
}

/// Adds 1 to `Tally/{key}` through `ingress`, asserting the count it answers.
async fn add_one(client: &reqwest::Client, ingress: &str, key: &str, expected: u64) {
    let (status, body) = send_add(client, ingress, key).await;
    assert_counted(status, &body, expected);
}

const RELAYS_ANSWERED: &str = "restate_ingress_relays_total{outcome=\"answered\"}";
const RELAYS_THROUGH_INBOX: &str = "restate_ingress_relays_total{outcome=\"inbox\"}";

/// Adds to fresh keys through `ingress` until one is relayed to the other process (the
/// routes are read at lease renewals); that key.
async fn a_relayed_key(client: &reqwest::Client, app: &App) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0.. {
        assert!(Instant::now() < deadline, "no call was relayed within 30 s");
        let key = format!("r{i}");
        let [before] = metrics(client, &app.admin, [RELAYS_ANSWERED]).await;
        add_one(client, &app.ingress, &key, 1).await;
        let [after] = metrics(client, &app.admin, [RELAYS_ANSWERED]).await;
        if after > before {
            return key;
        }
        // Paces the look for the routes; the deadline above bounds it.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!()
}

/// Two processes on a fresh database (with `env` added) and a key the first relays to the
/// second, which has added 1 to it.
struct Relayed {
    first: App,
    second: App,
    client: reqwest::Client,
    key: String,
    steps: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

type Answer = tokio::task::JoinHandle<(u16, String)>;

/// [`Relayed`], and a slow add of its key sent to the first process: its answer (status,
/// body), once the second announced the count it holds the key with (`slow <key> 2`, durable)
/// in its slow step.
async fn slow_add_relayed(env: &[(&str, String)]) -> (Relayed, Answer) {
    let url = cluster().fresh_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps");
    let mut env = env.to_vec();
    env.push(("RESTATE_DATABASE_URL", url.clone()));
    env.push(("STEPS_FILE", steps.display().to_string()));
    let first = App::start(BIN, &dir.path().join("a"), &env).await;
    let second = App::start(BIN, &dir.path().join("b"), &env).await;
    spread_over_two(&url).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let key = a_relayed_key(&client, &first).await;
    let slow = {
        let (client, ingress, key) = (client.clone(), first.ingress.clone(), key.clone());
        tokio::spawn(async move {
            let r = client
                .post(format!("{ingress}/Tally/{key}/slow_add"))
                .json(&1u64)
                .send()
                .await
                .unwrap();
            // Its retry found its own invocation: no replay of an idempotent request.
            assert!(!r.headers().contains_key("idempotency-expires"));
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    let announced = format!("slow {key} 2");
    poll(Duration::from_secs(30), || {
        std::future::ready(support::lines(&steps).contains(&announced))
    })
    .await;
    let relayed = Relayed {
        first,
        second,
        client,
        key,
        steps,
        _dir: dir,
    };
    (relayed, slow)
}

impl Relayed {
    /// The slow add is answered 200 with 2 after it went on through the inbox (one more
    /// such relay at the first process than `inbox_before`), its step having run with that
    /// one count only.
    async fn answered_once(&self, slow: Answer, inbox_before: u64) {
        let (status, body) = slow.await.unwrap();
        assert_eq!(
            (status, body.as_str()),
            (200, "2"),
            "the relayed call's answer"
        );
        let [inbox_after] = metrics(&self.client, &self.first.admin, [RELAYS_THROUGH_INBOX]).await;
        assert_eq!(
            inbox_after,
            inbox_before + 1,
            "it went on through the inbox"
        );
        let key = &self.key;
        let slow_lines: Vec<String> = support::lines(&self.steps)
            .into_iter()
            .filter(|l| l.starts_with(&format!("slow {key} ")))
            .collect();
        assert!(
            slow_lines.iter().all(|l| *l == format!("slow {key} 2")),
            "the step ran with the one count: {slow_lines:?}"
        );
    }

    /// Sends `name` (`-KILL`, `-STOP`, `-CONT`) to the second process.
    fn signal_second(&self, name: &str) {
        self.second.signal(name);
    }
}

/// A request-response call that arrives at a process whose partition the other process runs
/// is relayed to that process's ingress and answered from there. Killed in the middle of a
/// relayed call, the owner's work goes on through the inbox under the same invocation id: the
/// client is answered once, with the count its one add made. A relay without the
/// deployment's MAC runs nothing.
#[tokio::test]
async fn a_call_relayed_to_the_owner_is_answered_once_when_the_owner_is_killed_mid_call() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let (relayed, slow) = slow_add_relayed(&[("STEP_MS", "3000".to_owned())]).await;
    let Relayed { client, first, .. } = &relayed;
    // Forged relays are refused before anything is read into an invocation.
    for mac in [None, Some("00".repeat(32))] {
        let mut r = client
            .post(format!("{}/restate/relay", relayed.second.ingress))
            .body(vec![1u8; 64]);
        if let Some(mac) = &mac {
            r = r.header("x-restate-relay-mac", mac);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 401, "MAC {mac:?}");
    }
    let [inbox_before] = metrics(client, &first.admin, [RELAYS_THROUGH_INBOX]).await;
    // Killed once the new count is durable, while the slow step runs.
    relayed.signal_second("-KILL");
    relayed.answered_once(slow, inbox_before).await;
    add_one(client, &first.ingress, &relayed.key, 3).await;
}

/// A relayed call whose owner is paused (SIGSTOP) past its lease goes through the inbox once
/// its partition moves, and the process that took the partition over answers it: the call
/// does not wait for the paused process. Its one add counts once, also after the paused
/// process is continued.
#[tokio::test]
async fn a_call_relayed_to_a_paused_owner_is_answered_once_its_partition_moves() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let env = [
        ("RESTATE_LEASE_TTL", "2s".to_owned()),
        ("STEP_MS", "1000".to_owned()),
    ];
    let (relayed, slow) = slow_add_relayed(&env).await;
    let Relayed { client, first, .. } = &relayed;
    relayed.signal_second("-STOP");
    // Answered while the owner is still paused.
    relayed.answered_once(slow, 0).await;
    relayed.signal_second("-CONT");
    // The continued process commits nothing more for the partition it lost. It rejoins, and
    // the partition may move back meanwhile: a call caught by that move is answered 503
    // having done nothing, and is sent again.
    add_one_across_moves(client, &first.ingress, &relayed.key, 3).await;
    add_one_across_moves(client, &relayed.second.ingress, &relayed.key, 4).await;
}

/// [`add_one`], sent again while it is answered 503 because its partition moved before its
/// invocation was stored (nothing was done); the count then proves it counted once.
async fn add_one_across_moves(client: &reqwest::Client, ingress: &str, key: &str, expected: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = send_add(client, ingress, key).await;
        if status == 503
            && body.contains("another process runs this invocation's partition")
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        return assert_counted(status, &body, expected);
    }
}

/// A process whose advertised URL leads to another process (here: the first's own) is found
/// out at the first relay, which that other process refuses (it is not the process named):
/// the call goes through the inbox, and later calls for its partitions are not relayed there
/// again. Every call is answered with its own count.
#[tokio::test]
async fn a_url_that_leads_to_another_process_is_refused_and_not_relayed_to_again() {
    if PostgresCluster::for_tests().is_none() {
        return;
    }
    let url = cluster().fresh_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ports = (free_port(), free_port());
    let env = [("RESTATE_DATABASE_URL", url.clone())];
    let first = App::start_on(BIN, &dir.path().join("a"), &env, ports).await;
    let misleading = [
        ("RESTATE_DATABASE_URL", url.clone()),
        (
            "RESTATE_ADVERTISED_INGRESS_URL",
            format!("http://127.0.0.1:{}", ports.0),
        ),
    ];
    let second = App::start(BIN, &dir.path().join("b"), &misleading).await;
    spread_over_two(&url).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    // Until the first process has read where the second serves, and tried it once.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut i = 0;
    loop {
        assert!(Instant::now() < deadline, "no relay was tried within 30 s");
        add_one(&client, &first.ingress, &format!("m{i}"), 1).await;
        i += 1;
        let [inbox] = metrics(&client, &first.admin, [RELAYS_THROUGH_INBOX]).await;
        if inbox > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for key in 0..100 {
        add_one(&client, &first.ingress, &format!("n{key}"), 1).await;
    }
    let [answered, inbox] = metrics(
        &client,
        &first.admin,
        [RELAYS_ANSWERED, RELAYS_THROUGH_INBOX],
    )
    .await;
    assert_eq!((answered, inbox), (0, 1), "tried once, then not again");
    // The second process serves its own partitions as ever.
    add_one(&client, &second.ingress, "n0", 2).await;
}
