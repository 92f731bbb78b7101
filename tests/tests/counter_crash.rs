//! The `Counter` object of the `bench-services` example under concurrent increments, SIGKILLed
//! once about half of them are acknowledged and restarted on the same ports and data folder.
//! Every logical increment carries its own idempotency key and its sender retries it (same key)
//! after connection errors and 5xx until it gets a 200, as a real client would. At the end each
//! key's count is exactly the number of increments sent to it (none lost, none doubled), and the
//! answers of one key's increments are exactly 1..=N: each increment ran once and saw its own
//! count, also when its answer came from a retry after the crash (an idempotent duplicate gets
//! the original's stored result).

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{App, example_bin, free_port, poll};

/// Attempts that failed, and answers that came from an existing invocation (a duplicate
/// attached to a running one or given a stored result: the `idempotency-expires` header).
#[derive(Default)]
struct Tally {
    retries: AtomicUsize,
    duplicates: AtomicUsize,
}

/// Adds 1 to `key` under idempotency key `inc-{key}-{i}` until acknowledged; returns the count
/// the increment produced.
async fn increment(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    i: usize,
    tally: &Tally,
) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let sent = client
            .post(format!("{base}/Counter/{key}/add"))
            .header("content-type", "application/json")
            .header("idempotency-key", format!("inc-{key}-{i}"))
            .body("1")
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 200 => {
                let duplicate = r.headers().contains_key("idempotency-expires");
                // The body can still be cut off by the kill: then it is retried too.
                if let Ok(count) = r.json::<i64>().await {
                    if duplicate {
                        tally.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    return count;
                }
            }
            Ok(r) if r.status().is_server_error() => {}
            Ok(r) => panic!(
                "inc-{key}-{i}: unexpected {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            ),
            Err(_) => {}
        }
        tally.retries.fetch_add(1, Ordering::Relaxed);
        assert!(
            Instant::now() < deadline,
            "inc-{key}-{i} not acknowledged within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Per key: (increment number, the count it answered) of every acknowledged increment.
type Answers = HashMap<String, Vec<(usize, i64)>>;

async fn count_of(client: &reqwest::Client, base: &str, key: &str) -> i64 {
    let r = client
        .get(format!("{base}/Counter/{key}/get"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// `keys` × `per_key` increments from `concurrency` senders; SIGKILL once half are
/// acknowledged, restart, finish, check.
async fn increments_survive_a_kill(keys: usize, per_key: usize, concurrency: usize) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ports = (free_port(), free_port());
    let bin = example_bin("bench-services");
    let app = App::start_on(&bin, &data, &[], ports).await;
    let base = app.ingress.clone();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let names: Vec<String> = (0..keys).map(|k| format!("c{k}")).collect();
    // Interleaved, so every key is being incremented when the kill comes.
    let jobs: Arc<Vec<(String, usize)>> = Arc::new(
        (0..per_key)
            .flat_map(|i| names.iter().map(move |k| (k.clone(), i)))
            .collect(),
    );
    let total = jobs.len();
    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Tally::default());
    let answers: Arc<Mutex<Answers>> = Arc::default();
    let senders: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, base, jobs, next, acked, tally, answers) = (
                client.clone(),
                base.clone(),
                jobs.clone(),
                next.clone(),
                acked.clone(),
                tally.clone(),
                answers.clone(),
            );
            tokio::spawn(async move {
                while let Some((key, i)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let count = increment(&client, &base, key, *i, &tally).await;
                    answers
                        .lock()
                        .unwrap()
                        .entry(key.clone())
                        .or_default()
                        .push((*i, count));
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    poll(Duration::from_secs(120), || {
        let acked = acked.clone();
        async move { acked.load(Ordering::SeqCst) >= total / 2 }
    })
    .await;
    app.kill();
    let acked_at_kill = acked.load(Ordering::SeqCst);
    let _app = App::start_on(&bin, &data, &[], ports).await;
    for s in senders {
        s.await.unwrap();
    }
    assert!(
        acked_at_kill < total,
        "the kill came after every increment was acknowledged ({acked_at_kill}/{total})"
    );
    let retries = tally.retries.load(Ordering::Relaxed);
    assert!(retries > 0, "the kill interrupted no request");
    eprintln!(
        "{keys} keys x {per_key}: killed at {acked_at_kill}/{total} acknowledged, {retries} failed attempts retried, {} answers from an existing invocation",
        tally.duplicates.load(Ordering::Relaxed)
    );

    let answers = answers.lock().unwrap().clone();
    for key in &names {
        assert_eq!(
            count_of(&client, &base, key).await,
            per_key as i64,
            "{key}: count after {per_key} increments"
        );
        let mut seen: Vec<i64> = answers[key].iter().map(|(_, c)| *c).collect();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (1..=per_key as i64).collect::<Vec<_>>(),
            "{key}: the counts its increments answered"
        );
    }
    // A late duplicate of every increment of one key gets its original answer and adds nothing.
    let key = &names[0];
    for &(i, count) in &answers[key] {
        assert_eq!(
            increment(&client, &base, key, i, &tally).await,
            count,
            "inc-{key}-{i} replayed"
        );
    }
    assert_eq!(count_of(&client, &base, key).await, per_key as i64);
}

#[tokio::test]
async fn one_key_1000_increments_survive_a_kill() {
    increments_survive_a_kill(1, 1000, 64).await;
}

#[tokio::test]
async fn ten_keys_100_increments_each_survive_a_kill() {
    increments_survive_a_kill(10, 100, 64).await;
}

#[tokio::test]
async fn hundred_keys_10_increments_each_survive_a_kill() {
    increments_survive_a_kill(100, 10, 64).await;
}

/// An idempotency key is kept for its retention and forgotten soon after (the purge runs every
/// `RESTATE_PURGE_INTERVAL`): a duplicate within it gets the stored result, a request with the
/// same key after it runs again.
#[tokio::test]
async fn an_idempotency_key_is_forgotten_after_its_retention() {
    let (_dir, app) = retention_of_a_second(Duration::from_millis(100)).await;
    let client = reqwest::Client::new();
    let add = || add_once(&client, &app, "expiring").send();
    let sent_at = Instant::now();
    let first = add().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.json::<u64>().await.unwrap(), 1);
    let duplicate = add().await.unwrap();
    assert!(duplicate.headers().contains_key("idempotency-expires"));
    assert_eq!(
        duplicate.json::<u64>().await.unwrap(),
        1,
        "the stored result"
    );
    // Once forgotten, the same key runs the handler again (the default interval is a second;
    // the deadline is far beyond either).
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let again = add().await.unwrap();
        let fresh = !again.headers().contains_key("idempotency-expires");
        let count = again.json::<u64>().await.unwrap();
        if fresh {
            assert_eq!(count, 2, "ran again, once");
            // It completed after it was sent, and was kept a second from then.
            assert!(
                sent_at.elapsed() >= Duration::from_secs(1),
                "forgotten too early"
            );
            break;
        }
        assert_eq!(count, 1, "a duplicate still gets the stored result");
        assert!(Instant::now() < deadline, "the key was not forgotten");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Requests with one idempotency key arriving together while its retention ends and the purge
/// forgets it: each gets the stored result or the one new run's, and the handler runs once
/// more, never twice (a duplicate racing the purge, in both orders).
#[tokio::test]
async fn duplicates_racing_the_purge_of_their_key_run_the_handler_once_more() {
    let (_dir, app) = retention_of_a_second(Duration::from_millis(50)).await;
    let client = reqwest::Client::new();
    let add = || async {
        let r = add_once(&client, &app, "racing").send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json::<u64>().await.unwrap()
    };
    assert_eq!(add().await, 1);
    // Batches of eight at once, from before the expiry until one batch sees the new run only.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answers = futures::future::join_all((0..8).map(|_| add())).await;
        assert!(answers.iter().all(|n| *n == 1 || *n == 2), "{answers:?}");
        if answers.iter().all(|n| *n == 2) {
            break;
        }
        assert!(Instant::now() < deadline, "the key was not forgotten");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let count: u64 = client
        .post(format!("{}/Tally/racing/get", app.ingress))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(count, 2, "one run before the expiry and one after");
}

/// The crash app with a retention of a second, purged every `purge`.
async fn retention_of_a_second(purge: Duration) -> (tempfile::TempDir, App) {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("RESTATE_RETENTION", "1s".to_owned()),
        ("RESTATE_PURGE_INTERVAL", format!("{}ms", purge.as_millis())),
    ];
    let app = App::start(
        env!("CARGO_BIN_EXE_crash_app"),
        &dir.path().join("data"),
        &env,
    )
    .await;
    (dir, app)
}

/// `Tally/{key}/add(1)` with the idempotency key `once`.
fn add_once(client: &reqwest::Client, app: &App, key: &str) -> reqwest::RequestBuilder {
    client
        .post(format!("{}/Tally/{key}/add", app.ingress))
        .header("content-type", "application/json")
        .header("idempotency-key", "once")
        .body("1")
}
