//! Delayed invocations wait on disk, not in memory: once accepted they leave memory and keep
//! only their timer, and they run when due, after a restart too. A cancel, kill, attach or
//! duplicate request reaches one that waits on disk, and cancels and kills racing timers,
//! suspensions and busy keys end each invocation once. Ones that wait for a key held by a
//! suspended handler leave it a slot to wake.

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::TestServer;
use restate_runtime::prelude::*;
use restate_runtime::testing::TestRuntime;
use restate_runtime::{ClientError, InvocationId};
use serde_json::Value;

/// The values `Jobs::record` ran with (tests run concurrently: each uses its own values).
static RAN: Mutex<Vec<u64>> = Mutex::new(Vec::new());

fn ran(value: u64) -> bool {
    RAN.lock().unwrap().contains(&value)
}

#[derive(Default)]
pub struct Jobs;

#[service]
impl Jobs {
    #[handler]
    async fn record(&self, _ctx: Context<'_>, value: u64) -> HandlerResult<u64> {
        RAN.lock().unwrap().push(value);
        Ok(value)
    }

    /// Cancels another invocation from a handler (`ctx.cancel`).
    #[handler]
    async fn cancel_it(&self, ctx: Context<'_>, id: String) -> HandlerResult<()> {
        let id: InvocationId = id.parse().map_err(|e| TerminalError::new(format!("{e}")))?;
        ctx.cancel(id);
        Ok(())
    }

    /// Records `value`, then stays in memory for 30 ms (in a `ctx.run`).
    #[handler]
    async fn linger(&self, ctx: Context<'_>, value: u64) -> HandlerResult<u64> {
        ctx.run(|| async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(())
        })
        .name("linger")
        .await?;
        RAN.lock().unwrap().push(value);
        Ok(value)
    }
}

#[derive(Default)]
pub struct Tally;

#[object]
impl Tally {
    #[handler]
    async fn add(&self, ctx: ObjectContext<'_>, n: u64) -> HandlerResult<u64> {
        let total = ctx.get::<u64>("total").await?.unwrap_or(0) + n;
        ctx.set("total", total);
        Ok(total)
    }

    /// Holds the key for `ms` milliseconds.
    #[handler]
    async fn hold(&self, ctx: ObjectContext<'_>, ms: u64) -> HandlerResult<()> {
        let pause = Duration::from_millis(ms);
        ctx.run(|| async move {
            tokio::time::sleep(pause).await;
            Ok(())
        })
        .name("hold")
        .await?;
        Ok(())
    }

    /// Sleeps durably for `ms` milliseconds (it suspends with a short suspension delay).
    #[handler]
    async fn nap(&self, ctx: ObjectContext<'_>, ms: u64) -> HandlerResult<u64> {
        ctx.sleep(Duration::from_millis(ms)).await?;
        Ok(ms)
    }

    #[handler]
    async fn total(&self, ctx: SharedObjectContext<'_>) -> HandlerResult<u64> {
        Ok(ctx.get::<u64>("total").await?.unwrap_or(0))
    }
}

async fn start() -> TestServer {
    TestServer::start().await
}

async fn start_in(dir: tempfile::TempDir) -> TestServer {
    TestServer::start_with(dir, |b| b).await
}

/// The admin API's `/metrics`.
async fn scrape(s: &TestServer) -> String {
    reqwest::get(format!("{}/metrics", s.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The sum of a metric's series in the admin API's `/metrics`.
async fn metric(s: &TestServer, name: &str) -> u64 {
    scrape(s)
        .await
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Whether `/metrics` has the line `series value` exactly.
async fn has_line(s: &TestServer, series: &str, value: u64) -> bool {
    let line = format!("{series} {value}");
    scrape(s).await.lines().any(|l| l == line)
}

/// Polls until no unfinished invocation is held in memory; panics after `deadline`.
async fn wait_none_in_memory(s: &TestServer, deadline: Duration) {
    let end = Instant::now() + deadline;
    loop {
        let held = metric(s, "restate_invocations_in_memory").await;
        if held == 0 {
            return;
        }
        assert!(Instant::now() < end, "{held} invocations still in memory");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn delayed_sends_leave_memory_and_run_when_due() {
    let s = start().await;
    let jobs = s.handle.client::<Jobs>();
    let values: Vec<u64> = (1_000..1_100).collect();
    let mut handles = Vec::new();
    for &v in &values {
        handles.push(
            jobs.record(v)
                .send_after(Duration::from_secs(6))
                .await
                .unwrap(),
        );
    }
    // Parked within moments of their acceptance, long before they are due.
    wait_none_in_memory(&s, Duration::from_secs(5)).await;
    assert_eq!(metric(&s, "restate_timers_stored").await, 100);
    // Counted in the store, not in memory.
    assert!(
        has_line(
            &s,
            "restate_invocations_unfinished{status=\"scheduled\"}",
            100
        )
        .await
    );
    assert!(
        has_line(
            &s,
            "restate_invocations_unfinished{status=\"suspended\"}",
            0
        )
        .await
    );
    // Due within the timer window (60 s by default): armed in memory too.
    assert_eq!(metric(&s, "restate_timers_pending").await, 100);
    assert!(!values.iter().any(|&v| ran(v)), "none runs before its time");
    // Attaching to one that waits on disk waits for it, then each runs from the store.
    for (handle, v) in handles.into_iter().zip(&values) {
        assert_eq!(handle.attach().await.unwrap(), *v);
    }
    wait_none_in_memory(&s, Duration::from_secs(30)).await;
    s.stop().await;
}

#[tokio::test]
async fn a_delayed_invocation_on_disk_is_cancelled_or_killed_without_running() {
    let s = start().await;
    let jobs = s.handle.client::<Jobs>();
    let hour = Duration::from_secs(3600);
    let cancelled = jobs.record(2_001).send_after(hour).await.unwrap();
    let killed = jobs.record(2_002).send_after(hour).await.unwrap();
    let by_handler = jobs.record(2_003).send_after(hour).await.unwrap();
    wait_none_in_memory(&s, Duration::from_secs(30)).await;

    s.handle.cancel(cancelled).await.unwrap();
    s.handle.kill(killed).await.unwrap();
    let id = by_handler.invocation_id().to_string();
    jobs.cancel_it(id).call().await.unwrap();
    for (handle, message) in [
        (cancelled, "cancelled"),
        (killed, "killed"),
        (by_handler, "cancelled"),
    ] {
        match handle.attach().await {
            Err(ClientError::Terminal(e)) => {
                assert_eq!((e.code(), e.message()), (409, message))
            }
            other => panic!("expected {message}, got {other:?}"),
        }
    }
    assert!(![2_001, 2_002, 2_003].iter().any(|&v| ran(v)));
    wait_none_in_memory(&s, Duration::from_secs(30)).await;
    s.stop().await;
}

#[tokio::test]
async fn a_duplicate_of_a_delayed_send_on_disk_is_previously_accepted() {
    let s = start().await;
    let send = || {
        reqwest::Client::new()
            .post(s.url("/Jobs/record/send?delay=1h"))
            .header("idempotency-key", "reminder-1")
            .json(&3_001)
            .send()
    };
    let first: Value = send().await.unwrap().json().await.unwrap();
    assert_eq!(first["status"], "Accepted", "{first}");
    wait_none_in_memory(&s, Duration::from_secs(30)).await;
    let again = send().await.unwrap();
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["status"], "PreviouslyAccepted", "{again}");
    assert_eq!(again["invocationId"], first["invocationId"]);
    assert_eq!(again["executionTime"], first["executionTime"]);
    assert_eq!(metric(&s, "restate_invocations_in_memory").await, 0);
    s.stop().await;
}

#[tokio::test]
async fn delayed_invocations_stay_on_disk_across_a_restart_and_run_when_due() {
    let s = start().await;
    let tally = s.handle.object::<Tally>("restart");
    let jobs = s.handle.client::<Jobs>();
    let values: Vec<u64> = (4_000..4_020).collect();
    let mut ids = Vec::new();
    for &v in &values {
        let due = Duration::from_millis(6_000 + v % 7);
        ids.push(
            jobs.record(v)
                .send_after(due)
                .await
                .unwrap()
                .invocation_id(),
        );
        tally.add(1).send_after(due).await.unwrap();
    }
    // Clients hold the runtime: dropped, so it closes its store.
    drop((tally, jobs));
    let dir = s.stop().await;
    let s = start_in(dir).await;
    // Recovery loaded none of them; their timers are in the store's due index.
    assert_eq!(metric(&s, "restate_invocations_in_memory").await, 0);
    assert_eq!(metric(&s, "restate_timers_stored").await, 40);
    for (id, v) in ids.into_iter().zip(&values) {
        let out: u64 = s
            .handle
            .invocation(id)
            .typed::<u64>()
            .attach()
            .await
            .unwrap();
        assert_eq!(out, *v);
    }
    let tally = s.handle.object::<Tally>("restart");
    let end = Instant::now() + Duration::from_secs(30);
    while tally.total().call().await.unwrap() != 20 {
        assert!(Instant::now() < end, "the delayed adds did not all run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_none_in_memory(&s, Duration::from_secs(30)).await;
    s.stop().await;
}

#[tokio::test]
async fn delays_that_end_while_the_send_commits_run_once() {
    // Due before, during or just after the record is durable: the timer may find it in memory
    // or on disk; each runs exactly once either way.
    let s = start().await;
    let tally = s.handle.object::<Tally>("tiny");
    let mut sent = Vec::new();
    for i in 0..200u64 {
        sent.push(tally.add(1).send_after(Duration::from_millis(i % 4)));
    }
    for send in futures::future::join_all(sent).await {
        send.unwrap();
    }
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let total = tally.total().call().await.unwrap();
        assert!(total <= 200, "ran more than once: {total}");
        if total == 200 {
            break;
        }
        assert!(Instant::now() < end, "only {total} of 200 ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_none_in_memory(&s, Duration::from_secs(30)).await;
    s.stop().await;
}

/// How many times `Jobs::record` ran with `value`.
fn runs(value: u64) -> usize {
    RAN.lock().unwrap().iter().filter(|&&v| v == value).count()
}

/// `step`'s output, or a panic naming `what` if it takes more than 20 s (a lost invocation
/// fails the test instead of hanging it).
async fn bounded<T>(what: &str, step: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(20), step).await {
        Ok(out) => out,
        Err(_) => panic!("stuck: {what}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancels_and_kills_racing_the_timer_end_each_invocation_once() {
    // Delays of 0–3 ms: the cancel or kill lands before the timer, while it fires, while the
    // invocation parks, or after it ran. Either it ends as cancelled or killed without having
    // run, or it ran exactly once and kept its result. 16 senders at once, 40 rounds each.
    let s = start().await;
    let rounds = (0..16u64).map(|sender| {
        let handle = s.handle.clone();
        tokio::spawn(async move {
            let jobs = handle.client::<Jobs>();
            let tally = handle.object::<Tally>(format!("raced-{sender}"));
            for round in 0..40u64 {
                let value = 5_000 + sender * 100 + round;
                let delay = Duration::from_millis(round % 4);
                let job = jobs.record(value).send_after(delay).await.unwrap();
                // The key is busy when the add comes due: it queues behind the hold.
                tally.hold(3).send().await.unwrap();
                let add = tally.add(1).send_after(delay).await.unwrap();
                let what = |step| format!("{step} {value}: {job:?} {add:?}");
                if round % 2 == 0 {
                    let _ = bounded(&what("cancel"), handle.cancel(job)).await;
                    let _ = bounded(&what("kill"), handle.kill(add)).await;
                } else {
                    let _ = bounded(&what("kill"), handle.kill(job)).await;
                    let _ = bounded(&what("cancel"), handle.cancel(add)).await;
                }
                match bounded(&what("attach job"), job.attach()).await {
                    Ok(v) => assert_eq!((v, runs(value)), (value, 1), "{value}"),
                    Err(ClientError::Terminal(e)) => {
                        assert_eq!(e.code(), 409, "{value}: {e}");
                        assert_eq!(runs(value), 0, "{value}: ended as {e} but ran");
                    }
                    Err(e) => panic!("{value}: {e}"),
                }
                match bounded(&what("attach add"), add.attach()).await {
                    Ok(_) => {}
                    Err(ClientError::Terminal(e)) => assert_eq!(e.code(), 409, "{value}: {e}"),
                    Err(e) => panic!("{value}: {e}"),
                }
            }
            // The key was never left held by an invocation that ended without running.
            let total = bounded("the key is free", tally.add(0).call()).await;
            assert!(total.unwrap() <= 40);
        })
    });
    for sender in futures::future::join_all(rounds.collect::<Vec<_>>()).await {
        sender.unwrap();
    }
    wait_none_in_memory(&s, Duration::from_secs(30)).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_racing_a_suspension_end_the_invocation_and_return() {
    // Naps suspend 1 ms after they start waiting; kills land 0–3 ms after the send: before the
    // nap runs, while it suspends, or once it is suspended. Each kill returns, and the nap ends
    // killed (it is far from done: 10 s).
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start_with(dir, |b| b.suspend_after(Duration::from_millis(1))).await;
    let rounds = (0..8u64).map(|sender| {
        let handle = s.handle.clone();
        tokio::spawn(async move {
            let tally = handle.object::<Tally>(format!("naps-{sender}"));
            for round in 0..25u64 {
                let nap = tally.nap(10_000).send().await.unwrap();
                tokio::time::sleep(Duration::from_millis(round % 4)).await;
                let what = format!("kill {sender}/{round}: {nap:?}");
                bounded(&what, handle.kill(nap)).await.unwrap();
                match bounded(&what, nap.attach()).await {
                    Err(ClientError::Terminal(e)) => {
                        assert_eq!((e.code(), e.message()), (409, "killed"), "{what}")
                    }
                    other => panic!("{what}: {other:?}"),
                }
            }
            // The key is free after the last kill.
            bounded("the key is free", tally.add(0).call())
                .await
                .unwrap();
        })
    });
    for sender in futures::future::join_all(rounds.collect::<Vec<_>>()).await {
        sender.unwrap();
    }
    wait_none_in_memory(&s, Duration::from_secs(30)).await;
    s.stop().await;
}

#[tokio::test]
async fn timers_beyond_the_window_wait_in_the_store_and_fire_when_due() {
    // A 300 ms window: reminders an hour away stay in the store's due index (none armed in
    // memory), while sends due in 1–2 s and naps of 1.5 s (suspended after 50 ms) are read
    // from it as they come near and run, before and after a restart.
    let quick = |b: restate_runtime::RuntimeBuilder| {
        b.timer_window(Duration::from_millis(300))
            .suspend_after(Duration::from_millis(50))
    };
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), quick).await;
    let jobs = s.handle.client::<Jobs>();
    for v in 7_000..7_020u64 {
        jobs.record(v)
            .send_after(Duration::from_secs(3600))
            .await
            .unwrap();
    }
    let near = async |s: &TestServer, first: u64| {
        let jobs = s.handle.client::<Jobs>();
        let mut sent = Vec::new();
        for v in first..first + 10 {
            let due = Duration::from_millis(1_000 + 100 * (v % 10));
            sent.push((v, jobs.record(v).send_after(due).await.unwrap()));
        }
        let tally = s.handle.object::<Tally>(format!("window-{first}"));
        let nap = tally.nap(1_500).send().await.unwrap();
        for (v, handle) in sent {
            assert_eq!(bounded("a near send", handle.attach()).await.unwrap(), v);
        }
        assert_eq!(bounded("a nap", nap.attach()).await.unwrap(), 1_500);
    };
    near(&s, 7_100).await;
    wait_none_in_memory(&s, Duration::from_secs(30)).await;
    assert_eq!(metric(&s, "restate_timers_stored").await, 20);
    assert_eq!(metric(&s, "restate_timers_pending").await, 0);
    assert!(!(7_000..7_020).any(ran), "none of the far ones ran");

    drop(jobs);
    let s = TestServer::start_with(s.stop().await, quick).await;
    assert_eq!(metric(&s, "restate_timers_stored").await, 20);
    assert_eq!(metric(&s, "restate_timers_pending").await, 0);
    near(&s, 7_200).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_due_at_once_bring_invocations_back_from_disk_at_a_bounded_pace() {
    // 120 delayed sends due in the same moment, each running 30 ms: at most 4 (the bound of a
    // restore from disk) are back in memory at once, and every one of them runs.
    let s =
        TestServer::start_with(tempfile::tempdir().unwrap(), |b| b.recovery_concurrency(4)).await;
    let jobs = s.handle.client::<Jobs>();
    let values: Vec<u64> = (8_000..8_120).collect();
    let due = Duration::from_secs(2);
    for &v in &values {
        jobs.linger(v).send_after(due).await.unwrap();
    }
    wait_none_in_memory(&s, Duration::from_secs(5)).await;
    let mut most = 0;
    let end = Instant::now() + Duration::from_secs(60);
    while !values.iter().all(|&v| ran(v)) {
        assert!(Instant::now() < end, "not every delayed send ran");
        most = most.max(metric(&s, "restate_invocations_in_memory").await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(most <= 4, "{most} woken invocations in memory at once");
    assert!(most >= 1, "the wake-ups were never seen running");
    wait_none_in_memory(&s, Duration::from_secs(30)).await;
    drop(jobs);
    s.stop().await;
}

/// Suspended invocations are counted in the store, where they wait, by `/metrics`.
#[tokio::test]
async fn suspended_invocations_are_counted_in_the_store() {
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), |b| {
        b.suspend_after(Duration::from_millis(20))
    })
    .await;
    for key in ["a", "b", "c"] {
        s.handle
            .object::<Tally>(key)
            .nap(3_600_000)
            .send()
            .await
            .unwrap();
    }
    wait_none_in_memory(&s, Duration::from_secs(30)).await;
    // Counts are reused for up to 10 s: the first may predate the suspensions.
    let end = Instant::now() + Duration::from_secs(30);
    while !has_line(
        &s,
        "restate_invocations_unfinished{status=\"suspended\"}",
        3,
    )
    .await
    {
        assert!(Instant::now() < end, "three suspended not counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}

/// A key held by a suspended handler, and delayed sends to that key.
#[derive(Default)]
pub struct Held;

#[object]
impl Held {
    /// Holds the key through a sleep long enough to suspend.
    #[handler]
    async fn hold(&self, ctx: ObjectContext<'_>) -> HandlerResult<()> {
        ctx.sleep(Duration::from_secs(10)).await?;
        Ok(())
    }

    #[handler]
    async fn add(&self, ctx: ObjectContext<'_>) -> HandlerResult<u32> {
        let n = ctx.get::<u32>("n").await?.unwrap_or(0) + 1;
        ctx.set("n", n);
        Ok(n)
    }
}

/// Delayed sends that fall due while their key's holder is suspended wait for the key without
/// keeping a slot of the bounded wake from disk: the holder's own timer needs one to wake.
#[tokio::test(flavor = "multi_thread")]
async fn delayed_sends_queued_behind_a_suspended_key_holder_leave_it_a_slot_to_wake() {
    let t = TestRuntime::builder()
        .bind(Held)
        .recovery_concurrency(1)
        .suspend_after(Duration::from_millis(100))
        .build()
        .await;
    let held = t.handle().object::<Held>("k");
    let holder = held.hold().send().await.unwrap().invocation_id();
    for _ in 0..3 {
        held.add().send_after(Duration::from_secs(1)).await.unwrap();
    }
    t.advance(Duration::from_secs(30)).await;
    assert_eq!(t.invocation(holder).unwrap().status(), "completed");
    assert_eq!(t.state::<u32>("Held", "k", "n"), Some(3));
}

/// Appends what it is given to its key's list.
#[derive(Default)]
pub struct Ordered;

#[object]
impl Ordered {
    #[handler]
    async fn append(&self, ctx: ObjectContext<'_>, n: u32) -> HandlerResult<()> {
        let mut seen = ctx.get::<Vec<u32>>("seen").await?.unwrap_or_default();
        seen.push(n);
        ctx.set("seen", seen);
        Ok(())
    }
}

/// Sends twenty appends to one key, all due at once.
#[derive(Default)]
pub struct Sender;

#[service]
impl Sender {
    #[handler]
    async fn burst(&self, ctx: Context<'_>) -> HandlerResult<()> {
        for n in 0..20 {
            let target = ctx.object::<Ordered>("k");
            match n % 3 {
                0 => target.append(n).send_after(Duration::ZERO),
                _ => target.append(n).send_after(Duration::from_secs(5)),
            };
        }
        Ok(())
    }
}

/// Messages from one handler to a key that fall due together arrive in the order they were
/// sent; a zero delay is a plain send.
#[tokio::test(flavor = "multi_thread")]
async fn delayed_sends_to_a_key_due_together_arrive_in_send_order() {
    let t = TestRuntime::builder()
        .bind(Ordered)
        .bind(Sender)
        .build()
        .await;
    t.handle().client::<Sender>().burst().call().await.unwrap();
    t.advance(Duration::from_secs(6)).await;
    let seen: Vec<u32> = t.state("Ordered", "k", "seen").unwrap();
    let at_once: Vec<u32> = (0..20).filter(|n| n % 3 == 0).collect();
    let later: Vec<u32> = (0..20).filter(|n| n % 3 != 0).collect();
    assert_eq!(seen, [at_once, later].concat());
}
