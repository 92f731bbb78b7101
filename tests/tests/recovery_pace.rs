//! A restart after an overload restores unfinished invocations a few at a time: at most
//! `RESTATE_RECOVERY_CONCURRENCY` are back in memory at once, the rest wait on disk and all of
//! them complete; an object key's invocations still run in arrival order, before anything sent
//! to the key after the restart.

mod support;

use std::time::{Duration, Instant};

use futures::future::join_all;
use support::{App, invocations_where, lines, metrics, poll};

const BIN: &str = env!("CARGO_BIN_EXE_crash_app");

fn env(steps: &std::path::Path, step_ms: u32, at_once: Option<u32>) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("STEPS_FILE", steps.display().to_string()),
        ("STEP_MS", step_ms.to_string()),
        // 200 results asked at once: none waits on the in-flight cap (128), whose 429 would
        // depend on the machine's speed.
        ("RESTATE_MAX_IN_FLIGHT", "1024".to_owned()),
    ];
    if let Some(n) = at_once {
        env.push(("RESTATE_RECOVERY_CONCURRENCY", n.to_string()));
    }
    env
}

/// An invocation's result as JSON, by `GET /restate/invocation/{id}/{how}` (`attach` waits,
/// `output` does not).
async fn result<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    app: &App,
    id: &str,
    how: &str,
) -> T {
    let url = format!("{}/restate/invocation/{id}/{how}", app.ingress);
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// `POST {path}/send` with a JSON number; the invocation id of the 202.
async fn send(client: &reqwest::Client, app: &App, path: &str, body: u64) -> String {
    support::send_json(client, &app.ingress, path, &body).await
}

#[tokio::test]
async fn a_restart_restores_unfinished_invocations_a_few_at_a_time() {
    const SENT: usize = 200;
    const AT_ONCE: u64 = 16;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let steps = dir.path().join("steps.log");
    let client = reqwest::Client::new();
    // Steps of a minute in the first process: none finishes before the kill, however slow the
    // sends; the restarted one runs them again (never journaled) in 400 ms each.
    let app = App::start(BIN, &data, &env(&steps, 60_000, None)).await;
    let mut ids = Vec::new();
    for _ in 0..SENT / 25 {
        let batch = (0..25).map(|_| send(&client, &app, "/Steps/run", 1));
        ids.extend(join_all(batch).await);
    }
    // All of them run at once before the kill (nothing bounds accepted work in memory).
    app.kill();

    let app = App::start(BIN, &data, &env(&steps, 400, Some(AT_ONCE as u32))).await;
    let (mut most_in_memory, mut most_pending) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let [in_memory, pending] = metrics(
            &client,
            &app.admin,
            ["restate_invocations_in_memory", "restate_recovery_pending"],
        )
        .await;
        most_in_memory = most_in_memory.max(in_memory);
        most_pending = most_pending.max(pending);
        if in_memory == 0 && pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "not all restored within 120 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        most_in_memory <= AT_ONCE,
        "{most_in_memory} restored invocations in memory at once, bound {AT_ONCE}"
    );
    assert!(
        most_pending >= 100,
        "most of the {SENT} waited on disk at first (saw at most {most_pending})"
    );
    // Every one of them completed.
    let answers = join_all(
        ids.iter()
            .map(|id| result::<u32>(&client, &app, id, "output")),
    )
    .await;
    assert!(answers.iter().all(|n| *n == 1), "{answers:?}");
}

#[tokio::test]
async fn a_key_restored_after_a_restart_keeps_its_order() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let steps = dir.path().join("steps.log");
    let client = reqwest::Client::new();
    let app = App::start(BIN, &data, &env(&steps, 150, None)).await;
    // Unkeyed work ahead of the key's: after the restart the key's first invocation waits
    // for a slot, and what is sent to the key meanwhile must wait behind it.
    for _ in 0..10 {
        send(&client, &app, "/Steps/run", 1).await;
    }
    // Arrival order is send order: each send is acknowledged before the next.
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(send(&client, &app, "/Ledger/a/append", n).await);
    }
    app.kill();

    let app = App::start(BIN, &data, &env(&steps, 150, Some(2))).await;
    for n in [100, 101] {
        send(&client, &app, "/Ledger/a/append", n).await;
    }
    // Two still on disk are stopped before their turn: the killed one never runs, the
    // cancelled one ends cancelled, and the key moves on past both.
    for (n, action) in [(10, "kill"), (12, "cancel")] {
        let r = client
            .patch(format!("{}/invocations/{}/{action}", app.admin, ids[n]))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{action}: {}", r.status());
    }
    poll(Duration::from_secs(120), || {
        let steps = steps.clone();
        async move { lines(&steps).iter().any(|l| l == "ledger a 101") }
    })
    .await;
    // Each entry once, but an entry cut by the kill starts again after the restart.
    let mut order: Vec<u64> = lines(&steps)
        .iter()
        .filter_map(|l| l.strip_prefix("ledger a ")?.parse().ok())
        .collect();
    order.dedup();
    // The cancelled one may or may not reach its step before the cancellation does.
    order.retain(|n| *n != 12);
    let expected: Vec<u64> = (0..20)
        .filter(|n| ![10, 12].contains(n))
        .chain([100, 101])
        .collect();
    assert_eq!(order, expected, "the key's invocations ran out of order");
    for (n, code) in [(10, 409), (12, 409), (11, 200), (13, 200)] {
        let r = client
            .get(format!(
                "{}/restate/invocation/{}/output",
                app.ingress, ids[n]
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), code, "ledger entry {n}");
    }
}

/// A restored caller that waits on a callee still on disk gives its slot back when it
/// suspends, so the callee is restored and both complete, even one at a time.
#[tokio::test]
async fn a_restored_caller_waiting_on_a_callee_still_on_disk_lets_it_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let steps = dir.path().join("steps.log");
    let client = reqwest::Client::new();
    let app = App::start(BIN, &data, &env(&steps, 100, None)).await;
    // `Waits/call(2000)` calls `Waits/busy(2000)`: kill while the callee works.
    let caller = send(&client, &app, "/Waits/call", 2000).await;
    poll(Duration::from_secs(30), || {
        let (client, admin) = (client.clone(), app.admin.clone());
        async move { support::invocations(&client, &admin).await.len() == 2 }
    })
    .await;
    app.kill();

    let mut env = env(&steps, 100, Some(1));
    env.push(("RESTATE_SUSPEND_AFTER", "200ms".to_owned()));
    let app = App::start(BIN, &data, &env).await;
    let answer = tokio::time::timeout(
        Duration::from_secs(60),
        client
            .get(format!(
                "{}/restate/invocation/{caller}/attach",
                app.ingress
            ))
            .send(),
    )
    .await
    .expect("the caller completes after its callee is restored")
    .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.json::<u64>().await.unwrap(), 2001);
}

/// `POST /Ledger/{key}/append/send{query}` with `n`; the invocation id of the 202.
async fn append(client: &reqwest::Client, app: &App, key: &str, n: u64, query: &str) -> String {
    let url = format!("{}/Ledger/{key}/append/send{query}", app.ingress);
    let r = client.post(url).json(&n).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = r.json().await.unwrap();
    body["invocationId"].as_str().unwrap().to_owned()
}

/// Waits until `id` is no longer shown as `scheduled` (its timer fired and it left the disk).
async fn fired(client: &reqwest::Client, app: &App, id: &str) {
    poll(Duration::from_secs(30), || async {
        let url = format!("{}/invocations/{id}", app.admin);
        let view: serde_json::Value = client.get(url).send().await.unwrap().json().await.unwrap();
        view["status"] != "scheduled"
    })
    .await;
}

/// Waits until the steps file has `line`.
async fn ran(steps: &std::path::Path, line: &str) {
    let steps = steps.to_path_buf();
    poll(Duration::from_secs(30), || {
        std::future::ready(lines(&steps).iter().any(|l| l == line))
    })
    .await;
}

/// Delayed sends to an object key that fell due before a SIGKILL but had not started keep
/// their place on the key after the restart: the one that waited behind the key's holder, and
/// the one whose first step had not committed, each run before the plain send that reached
/// the key after it fell due (found from outside: the later send ran first, and the webhook
/// example then skipped a reminder).
#[tokio::test]
async fn delayed_sends_that_fell_due_before_a_crash_keep_their_place_on_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let steps = dir.path().join("steps.log");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let app = App::start(BIN, &data, &env(&steps, 60_000, None)).await;
    // Key a: 0 holds the key in its minute-long step; 1 falls due behind it.
    let a0 = append(&client, &app, "a", 0, "").await;
    ran(&steps, "ledger a 0").await;
    let a1 = append(&client, &app, "a", 1, "?delay=100ms").await;
    // Key b: 1 falls due and starts its minute-long step.
    let b1 = append(&client, &app, "b", 1, "?delay=100ms").await;
    ran(&steps, "ledger b 1").await;
    // Fired: no longer scheduled, in memory behind a's holder.
    fired(&client, &app, &a1).await;
    // Plain sends that reach both keys after the delayed ones fell due.
    let a2 = append(&client, &app, "a", 2, "").await;
    let b2 = append(&client, &app, "b", 2, "").await;
    app.kill();

    let app = App::start(BIN, &data, &env(&steps, 200, None)).await;
    for id in [&a0, &a1, &a2, &b1, &b2] {
        let r = client
            .get(format!("{}/restate/invocation/{id}/attach", app.ingress))
            .send()
            .await
            .expect("each completes after the restart");
        assert_eq!(r.status(), 200, "{id}");
    }
    let all = lines(&steps);
    let of = |key: &str| -> Vec<String> {
        let prefix = format!("ledger {key} ");
        all.iter()
            .filter(|l| l.starts_with(&prefix))
            .cloned()
            .collect()
    };
    // Before the kill a's 0 and b's 1 had started; after it, each key in arrival order.
    assert_eq!(
        of("a"),
        ["ledger a 0", "ledger a 0", "ledger a 1", "ledger a 2"]
    );
    assert_eq!(of("b"), ["ledger b 1", "ledger b 1", "ledger b 2"]);
}

/// Delayed sends to object keys that fall due while every slot for invocations woken from disk
/// is taken (here the only one, by a delayed send in a long step) still reach their keys when
/// due, an idle key and one busy with a plain send alike: plain sends that come after them run
/// after them (found from outside: the plain ones ran first, once slots were scarce).
#[tokio::test]
async fn delayed_sends_due_while_no_slot_is_free_keep_their_place_on_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps.log");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let app = App::start(BIN, &dir.path().join("data"), &env(&steps, 4_000, Some(1))).await;
    // The only slot, taken for a 4 s step; key c busy with a plain send's step.
    let a1 = append(&client, &app, "a", 1, "?delay=100ms").await;
    ran(&steps, "ledger a 1").await;
    let c0 = append(&client, &app, "c", 0, "").await;
    ran(&steps, "ledger c 0").await;
    // Due with no slot free: b's, for an idle key, waits for the slot; c's is queued behind c 0.
    let b2 = append(&client, &app, "b", 2, "?delay=100ms").await;
    let c1 = append(&client, &app, "c", 1, "?delay=100ms").await;
    const WAITING: &str = "restate_timers_waiting_for_slot";
    poll(Duration::from_secs(30), || {
        let (client, admin) = (client.clone(), app.admin.clone());
        async move { metrics(&client, &admin, [WAITING]).await == [1] }
    })
    .await;
    fired(&client, &app, &c1).await;
    let b3 = append(&client, &app, "b", 3, "").await;
    let c2 = append(&client, &app, "c", 2, "").await;
    for id in [&a1, &b2, &b3, &c0, &c1, &c2] {
        let r = client
            .get(format!("{}/restate/invocation/{id}/attach", app.ingress))
            .send()
            .await
            .expect("each completes");
        assert_eq!(r.status(), 200, "{id}");
    }
    let on = |key: &str| -> Vec<String> {
        let prefix = format!("ledger {key} ");
        (lines(&steps).into_iter())
            .filter(|l| l.starts_with(&prefix))
            .collect()
    };
    assert_eq!(on("b"), ["ledger b 2", "ledger b 3"]);
    assert_eq!(on("c"), ["ledger c 0", "ledger c 1", "ledger c 2"]);
}

/// A delayed exclusive invocation that had started when the process died (its state write
/// durable, its record still `Scheduled` on disk) holds its key again after the restart,
/// ahead of the invocations that queued behind it: run after them, its replay would act on
/// its old read of the state and put the key's count back.
#[tokio::test]
async fn a_started_delayed_invocation_keeps_its_key_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let steps = dir.path().join("steps.log");
    let client = reqwest::Client::new();
    let app = App::start(BIN, &data, &env(&steps, 60_000, None)).await;
    let r = client
        .post(format!("{}/Tally/k/slow_add/send?delay=50ms", app.ingress))
        .json(&1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let delayed: serde_json::Value = r.json().await.unwrap();
    let delayed = delayed["invocationId"].as_str().unwrap().to_owned();
    // It fired, wrote count = 1 durably, and holds the key in its slow step.
    poll(Duration::from_secs(30), || async {
        lines(&steps).iter().any(|l| l == "slow k 1")
    })
    .await;
    let queued = [
        send(&client, &app, "/Tally/k/add", 1).await,
        send(&client, &app, "/Tally/k/add", 1).await,
    ];
    app.kill();

    let app = App::start(BIN, &data, &env(&steps, 500, None)).await;
    // Sent while the delayed one replays its slow step (or, wrongly, waits behind the others).
    let last = send(&client, &app, "/Tally/k/add", 1).await;
    // In arrival order on the key: the delayed one first (it had started), then the rest.
    for (id, expected) in [(&delayed, 1), (&queued[0], 2), (&queued[1], 3), (&last, 4)] {
        assert_eq!(result::<u64>(&client, &app, id, "attach").await, expected);
    }
    let count: u64 = client
        .post(format!("{}/Tally/k/get", app.ingress))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(count, 4, "no increment lost");
}

/// Delayed sends to one object key that fall due while the key is busy wait for it on disk,
/// in their place, not in memory (found from outside: 50,000 due together behind 500 busy keys
/// were all loaded and queued, 330 MiB): once all have fired, a handful are in memory, the
/// admin API shows them `pending`, and when the key frees they run in the order they fell due.
/// Across a restart too, each started once (a timer firing again for one the restart queued
/// counted it twice).
#[tokio::test]
async fn delayed_sends_due_behind_a_busy_key_wait_for_it_on_disk_in_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let steps = dir.path().join("steps.log");
    let client = reqwest::Client::new();
    // The key's holder works 20 s: long enough for the sends to come and fall due.
    let app = App::start(BIN, &data, &env(&steps, 20_000, None)).await;
    let (first, count) = fill_behind_a_busy_key(&client, &app, &steps, 120, 0).await;
    let pending = invocations_where(&client, &app.admin, "service=Tally&status=pending").await;
    assert_eq!(pending.len(), 120, "{pending:?}");
    // The holder ends: the queued ones run one by one, in the order they fell due.
    for (n, id) in first.iter().enumerate() {
        assert_eq!(
            result::<u64>(&client, &app, id, "attach").await,
            count + 1 + n as u64
        );
    }

    // Again, and a SIGKILL while they wait: the restart queues them in the same order.
    let (second, count) = fill_behind_a_busy_key(&client, &app, &steps, 40, 121).await;
    app.kill();
    let app = App::start(BIN, &data, &env(&steps, 10, None)).await;
    for (n, id) in second.iter().enumerate() {
        assert_eq!(
            result::<u64>(&client, &app, id, "attach").await,
            count + 1 + n as u64
        );
    }
    let text = client
        .get(format!("{}/metrics", app.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let started = text
        .lines()
        .find(|l| {
            l.starts_with("restate_handler_invocations_started_total{")
                && l.contains("service=\"Tally\"")
                && l.contains("handler=\"add\"")
        })
        .unwrap_or_else(|| panic!("no started count of Tally/add in:\n{text}"));
    assert!(
        started.ends_with(" 40"),
        "each started once after the restart: {started}"
    );
}

/// Makes key `q` busy with a slow add, then sends `n` adds delayed 50 ms behind it and waits
/// until all have fallen due: few are in memory meanwhile. The delayed ones' ids, and the
/// count the holder leaves (`count_before` + 1).
async fn fill_behind_a_busy_key(
    client: &reqwest::Client,
    app: &App,
    steps: &std::path::Path,
    n: u64,
    count_before: u64,
) -> (Vec<String>, u64) {
    send(client, app, "/Tally/q/slow_add", 1).await;
    ran(steps, &format!("slow q {}", count_before + 1)).await;
    let mut delayed = Vec::new();
    for _ in 0..n {
        let url = format!("{}/Tally/q/add/send?delay=50ms", app.ingress);
        let r = client.post(url).json(&1).send().await.unwrap();
        assert_eq!(r.status(), 202);
        let body: serde_json::Value = r.json().await.unwrap();
        delayed.push(body["invocationId"].as_str().unwrap().to_owned());
    }
    poll(Duration::from_secs(60), || {
        let (client, admin) = (client.clone(), app.admin.clone());
        async move { metrics(&client, &admin, ["restate_key_queue_depth"]).await == [n] }
    })
    .await;
    let [in_memory] = metrics(client, &app.admin, ["restate_invocations_in_memory"]).await;
    assert!(
        in_memory <= 5,
        "{in_memory} invocations in memory while {n} wait for one busy key"
    );
    (delayed, count_before + 1)
}

/// Invocations that back off between attempts after a restart give their restore slot up:
/// with more of them than slots (a dependency down for an hour), one restored after them
/// still runs (found from outside: nothing else was restored until their backoff ended).
#[tokio::test]
async fn invocations_backing_off_after_a_restart_let_the_rest_be_restored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let steps = dir.path().join("steps.log");
    let client = reqwest::Client::new();
    let app = App::start(BIN, &data, &env(&steps, 60_000, None)).await;
    for _ in 0..3 {
        let url = format!("{}/Steps/down/send", app.ingress);
        assert_eq!(client.post(url).send().await.unwrap().status(), 202);
    }
    // Unfinished at the kill: its step takes a minute.
    let after = send(&client, &app, "/Steps/run", 1).await;
    ran(&steps, &format!("start {after}")).await;
    app.kill();
    let app = App::start(BIN, &data, &env(&steps, 10, Some(2))).await;
    poll(Duration::from_secs(60), || async {
        let url = format!("{}/restate/invocation/{after}/output", app.ingress);
        client.get(url).send().await.unwrap().status() == 200
    })
    .await;
    assert_eq!(result::<u32>(&client, &app, &after, "output").await, 1);
    let backing_off = invocations_where(&client, &app.admin, "status=backing-off").await;
    assert_eq!(backing_off.len(), 3, "{backing_off:?}");
}

/// An invocation next in a key's queue on disk is loaded with a slot of the wake from disk, as
/// a timer's wake-up is: with the only slot taken by a delayed send in a long step, the key's
/// next one waits for it even once the key is free (what bounds the completions that wait in
/// memory for their commit when thousands of queued ones run).
#[tokio::test]
async fn the_next_on_a_keys_disk_queue_waits_for_a_slot() {
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps.log");
    let client = reqwest::Client::new();
    let app = App::start(BIN, &dir.path().join("data"), &env(&steps, 8_000, Some(1))).await;
    // Key q busy (a plain send, no slot), a delayed add due behind it: queued on disk.
    let holder = send(&client, &app, "/Tally/q/slow_add", 1).await;
    ran(&steps, "slow q 1").await;
    let queued = {
        let url = format!("{}/Tally/q/add/send?delay=10ms", app.ingress);
        let r = client.post(url).json(&1).send().await.unwrap();
        let body: serde_json::Value = r.json().await.unwrap();
        body["invocationId"].as_str().unwrap().to_owned()
    };
    poll(Duration::from_secs(30), || {
        let (client, admin) = (client.clone(), app.admin.clone());
        async move { metrics(&client, &admin, ["restate_key_queue_depth"]).await == [1] }
    })
    .await;
    // The only slot: a delayed send's 8 s step, started after the holder's.
    let slot_holder = append(&client, &app, "x", 1, "?delay=10ms").await;
    ran(&steps, "ledger x 1").await;
    assert_eq!(result::<u64>(&client, &app, &holder, "attach").await, 1);
    assert_eq!(result::<u64>(&client, &app, &queued, "attach").await, 2);
    // The slot's holder finished first: the queued one waited for its slot.
    let url = format!("{}/restate/invocation/{slot_holder}/output", app.ingress);
    assert_eq!(client.get(url).send().await.unwrap().status(), 200);
}
