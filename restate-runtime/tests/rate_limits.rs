//! Rate limits on the virtual clock: a handler's `rate(..)` spaces its invocations by the
//! limit from the first on, never faster, a burst goes at once, keys have buckets of their
//! own, a named limit configured at run time gates `ctx.run` steps (and lets them through when
//! it is not configured), and a crash keeps the reservations.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use restate_runtime::RateLimit;
use restate_runtime::prelude::*;
use restate_runtime::testing::{TestRuntime, TestRuntimeBuilder};

/// When each invocation's body ran (virtual ms since the start), by invocation: a replay
/// writes the same time again.
#[derive(Default, Clone)]
pub struct Paced {
    ran: Arc<Mutex<BTreeMap<String, u64>>>,
    /// The runtime, for a step that tells when it ran (virtual ms since the start).
    clock: Arc<std::sync::OnceLock<Arc<TestRuntime>>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Event {
    tenant: String,
    n: u32,
}

impl Paced {
    fn tenant(event: &Event) -> &str {
        &event.tenant
    }

    async fn record(&self, ctx: &Context<'_>, label: String) -> HandlerResult<()> {
        let at = ctx.now().await?.duration_since(UNIX_EPOCH)?.as_millis() as u64;
        let start = TestRuntime::default_start()
            .duration_since(UNIX_EPOCH)?
            .as_millis() as u64;
        self.ran.lock().unwrap().insert(label, at - start);
        Ok(())
    }

    fn times(&self, prefix: &str) -> Vec<u64> {
        let mut times: Vec<u64> = self
            .ran
            .lock()
            .unwrap()
            .iter()
            .filter(|(label, _)| label.starts_with(prefix))
            .map(|(_, at)| *at)
            .collect();
        times.sort_unstable();
        times
    }
}

#[service]
impl Paced {
    #[handler(rate(limit = 25, per = "1s"))]
    async fn steady(&self, ctx: Context<'_>, n: u32) -> HandlerResult<()> {
        self.record(&ctx, format!("steady-{n:03}")).await
    }

    #[handler(rate(limit = 1, per = "1s", burst = 5))]
    async fn bursty(&self, ctx: Context<'_>, n: u32) -> HandlerResult<()> {
        self.record(&ctx, format!("bursty-{n:03}")).await
    }

    #[handler(rate(limit = 1, per = "1s", key = Self::tenant))]
    async fn per_tenant(&self, ctx: Context<'_>, event: Event) -> HandlerResult<()> {
        self.record(&ctx, format!("tenant-{}-{}", event.tenant, event.n))
            .await
    }

    /// A step through the "email" limit, configured (or not) at run time.
    #[handler]
    async fn email(&self, ctx: Context<'_>, n: u32) -> HandlerResult<()> {
        ctx.run(|| async { Ok(()) })
            .name("send")
            .rate_limit("email")
            .await?;
        self.record(&ctx, format!("email-{n:03}")).await
    }

    /// A step through the "email" limit and the "smtp" concurrency limiter.
    #[handler]
    async fn email_limited(&self, ctx: Context<'_>, n: u32) -> HandlerResult<()> {
        ctx.run(|| async { Ok(()) })
            .name("send")
            .rate_limit("email")
            .limiter("smtp")
            .await?;
        self.record(&ctx, format!("limited-{n:03}")).await
    }

    /// A step through the "email" limit that returns when it ran: its journaled result is
    /// when the email went, whatever a crash replays after it.
    #[handler]
    async fn email_at(&self, ctx: Context<'_>, n: u32) -> HandlerResult<()> {
        let at = ctx
            .run(|| async {
                let t = self.clock.get().expect("the runtime is set");
                Ok(t.now()
                    .duration_since(TestRuntime::default_start())?
                    .as_millis() as u64)
            })
            .name("send")
            .rate_limit("email")
            .await?;
        self.ran.lock().unwrap().insert(format!("at-{n:03}"), at);
        Ok(())
    }
}

async fn runtime(paced: &Paced, email: Option<RateLimit>) -> TestRuntime {
    let mut builder = TestRuntime::builder().bind(paced.clone());
    if let Some(limit) = email {
        builder = builder.rate_limit("email", limit);
    }
    builder.build().await
}

/// Consecutive gaps, none of which may be shorter than the interval.
fn gaps(times: &[u64]) -> Vec<u64> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn five_hundred_invocations_at_25_a_second_take_20_seconds_and_none_goes_faster() {
    let paced = Paced::default();
    let t = runtime(&paced, None).await;
    for n in 0..500 {
        t.handle().client::<Paced>().steady(n).send().await.unwrap();
    }
    t.run_until_idle().await;
    assert_eq!(
        paced.times("steady"),
        vec![0],
        "the first token is there at once"
    );
    t.advance(Duration::from_millis(19_959)).await;
    assert_eq!(paced.times("steady").len(), 499);
    t.advance(Duration::from_millis(1)).await;
    let times = paced.times("steady");
    assert_eq!(times.len(), 500);
    assert_eq!(*times.last().unwrap(), 19_960);
    assert!(gaps(&times).iter().all(|g| *g >= 40), "{:?}", gaps(&times));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_goes_at_once_then_the_rate_holds() {
    let paced = Paced::default();
    let t = runtime(&paced, None).await;
    for n in 0..8 {
        t.handle().client::<Paced>().bursty(n).send().await.unwrap();
    }
    t.advance(Duration::from_secs(10)).await;
    assert_eq!(paced.times("bursty"), vec![0, 0, 0, 0, 0, 1000, 2000, 3000]);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_key_has_a_bucket_of_its_own() {
    let paced = Paced::default();
    let t = runtime(&paced, None).await;
    for n in 0..3 {
        for tenant in ["acme", "globex"] {
            let event = Event {
                tenant: tenant.into(),
                n,
            };
            t.handle()
                .client::<Paced>()
                .per_tenant(event)
                .send()
                .await
                .unwrap();
        }
    }
    t.advance(Duration::from_secs(5)).await;
    assert_eq!(paced.times("tenant-acme"), vec![0, 1000, 2000]);
    assert_eq!(paced.times("tenant-globex"), vec![0, 1000, 2000]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_named_limit_gates_steps_when_configured_and_lets_them_through_when_not() {
    let paced = Paced::default();
    let t = runtime(&paced, Some(RateLimit::per_second(2))).await;
    for n in 0..6 {
        t.handle().client::<Paced>().email(n).send().await.unwrap();
    }
    t.advance(Duration::from_secs(5)).await;
    assert_eq!(paced.times("email"), vec![0, 500, 1000, 1500, 2000, 2500]);

    let unlimited = Paced::default();
    let t = runtime(&unlimited, None).await;
    for n in 0..6 {
        t.handle().client::<Paced>().email(n).send().await.unwrap();
    }
    t.run_until_idle().await;
    assert_eq!(unlimited.times("email"), vec![0; 6]);
}

/// A hundred invocations of `steady` sent, and the first second gone (26 of them ran).
async fn steady_for_a_second(paced: &Paced) -> TestRuntime {
    let t = runtime(paced, None).await;
    for n in 0..100 {
        t.handle().client::<Paced>().steady(n).send().await.unwrap();
    }
    t.advance(Duration::from_millis(1_010)).await;
    assert_eq!(paced.times("steady").len(), 26);
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn reservations_survive_a_crash_no_burst_after_the_restart() {
    let paced = Paced::default();
    let t = steady_for_a_second(&paced).await;
    t.restart().await;
    t.advance(Duration::from_secs(3)).await;
    let times = paced.times("steady");
    assert_eq!(times.len(), 100);
    assert_eq!(*times.last().unwrap(), 99 * 40);
    assert!(gaps(&times).iter().all(|g| *g >= 40), "{:?}", gaps(&times));
}

#[tokio::test(flavor = "multi_thread")]
async fn sleepers_that_fell_due_while_the_process_was_down_are_spaced_again_after_the_restart() {
    let paced = Paced::default();
    let t = steady_for_a_second(&paced).await;
    // Down for two seconds: fifty reservations fall due meanwhile.
    t.restart_after(Duration::from_secs(2)).await;
    t.advance(Duration::from_millis(1_000)).await;
    // Down again in the middle of the backlog.
    t.restart_after(Duration::from_millis(500)).await;
    t.advance(Duration::from_secs(10)).await;
    let times = paced.times("steady");
    assert_eq!(times.len(), 100);
    assert!(gaps(&times).iter().all(|g| *g >= 40), "{:?}", gaps(&times));
    // Nothing ran while down, and the rest went at the rate: 74 after the first restart,
    // less the half-second of the second.
    assert_eq!(times[26], 3_010, "the first late one goes at the restart");
    assert!(
        *times.last().unwrap() <= 3_010 + 74 * 40 + 500 + 40,
        "{times:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn steps_paced_after_a_restart_keep_the_rate_and_those_cancelled_while_paced_never_run() {
    let paced = Paced::default();
    let t = runtime(&paced, Some(RateLimit::per_second(2))).await;
    let mut ids = Vec::new();
    for n in 0..10 {
        let sent = t.handle().client::<Paced>().email(n).send().await.unwrap();
        ids.push(sent.invocation_id());
    }
    t.advance(Duration::from_millis(1_010)).await;
    assert_eq!(paced.times("email"), vec![0, 500, 1000]);
    t.restart_after(Duration::from_secs(3)).await;
    // Six fell due meanwhile; they leave 500 ms apart from the restart (4,010 ms), in the
    // order they woke, and the one due on time at 4,500 ms waits behind them. A slot under a
    // second ahead is waited for in memory, a later one journaled as the gate's wait.
    t.advance(Duration::from_millis(1)).await;
    assert_eq!(paced.times("email"), vec![0, 500, 1000, 4010]);
    // Of the five late ones left, two wait in memory (slots 4,510 and 5,010 ms) and three on
    // their journaled waits; which is which depends on the order they woke. Any four of the
    // five hold both kinds: they are cancelled. The tenth, due on time at 4,500 ms, still
    // sleeps for its reservation.
    let sent = paced.ran.lock().unwrap().clone();
    let cancelled: Vec<usize> = (0..9)
        .filter(|n| !sent.contains_key(&format!("email-{n:03}")))
        .take(4)
        .collect();
    for &n in &cancelled {
        t.handle().invocation(ids[n]).cancel().await.unwrap();
    }
    t.advance(Duration::from_secs(10)).await;
    let times = paced.times("email");
    assert_eq!(times.len(), 6, "all but the cancelled ones sent: {times:?}");
    assert!(gaps(&times).iter().all(|g| *g >= 500), "{times:?}");
    assert!(*times.last().unwrap() <= 7_010, "{times:?}");
    let ran = paced.ran.lock().unwrap().clone();
    for n in cancelled {
        assert!(!ran.contains_key(&format!("email-{n:03}")), "{ran:?}");
        let view = t.invocation(ids[n]).unwrap();
        let output = view.output::<()>().expect("ended");
        assert_eq!(output.unwrap_err().code(), 409, "cancelled");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_with_a_rate_and_a_concurrency_limit_is_paced_after_a_restart_too() {
    let paced = Paced::default();
    let t = TestRuntime::builder()
        .bind(paced.clone())
        .rate_limit("email", RateLimit::per_second(2))
        .concurrency_limit("smtp", 10)
        .build()
        .await;
    for n in 0..10 {
        let client = t.handle().client::<Paced>();
        client.email_limited(n).send().await.unwrap();
    }
    t.advance(Duration::from_millis(1_010)).await;
    assert_eq!(paced.times("limited"), vec![0, 500, 1000]);
    // The permit is journaled while the gate waits: the gate still counts as not passed.
    t.restart_after(Duration::from_secs(3)).await;
    t.advance(Duration::from_secs(10)).await;
    let times = paced.times("limited");
    assert_eq!(times.len(), 10);
    assert!(gaps(&times).iter().all(|g| *g >= 500), "{times:?}");
}

/// A crash right after any commit of the paced backlog (the rewritten waits among them), and
/// a restart at once: whether a rewrite was durable or not, every step goes once, and no
/// second holds more than the limit plus the burst. The burst is what a crash may add: the
/// new process cannot know that the old one let a step through just before it died.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_after_any_commit_of_the_paced_backlog_keeps_the_rate() {
    let mut crashed_at_least_once = false;
    for n in 1..=40 {
        let paced = Paced::default();
        let t = Arc::new(runtime(&paced, Some(RateLimit::per_second(2))).await);
        let _ = paced.clock.set(t.clone());
        let mut ids = Vec::new();
        for m in 0..10 {
            let sent = t
                .handle()
                .client::<Paced>()
                .email_at(m)
                .send()
                .await
                .unwrap();
            ids.push(sent.invocation_id());
        }
        t.advance(Duration::from_millis(1_010)).await;
        t.restart_after(Duration::from_secs(3)).await;
        t.crash_after_commits(n);
        // Restarted at once, while the waits rewritten before the crash still lie ahead.
        let mut crashed = false;
        for _ in 0..400 {
            t.advance(Duration::from_millis(50)).await;
            if t.crashed() {
                crashed = true;
                crashed_at_least_once = true;
                t.restart().await;
            }
        }
        let times = paced.times("at");
        assert_eq!(times.len(), 10, "crash after commit {n}: {times:?}");
        let busiest = times
            .iter()
            .map(|start| {
                times
                    .iter()
                    .filter(|t| (*start..start + 1000).contains(t))
                    .count()
            })
            .max();
        assert!(busiest <= Some(3), "crash after commit {n}: {times:?}");
        let short = gaps(&times).iter().filter(|g| **g < 500).count();
        assert!(
            short <= usize::from(crashed),
            "crash after commit {n}: {times:?}"
        );
        for id in ids {
            let view = t.invocation(id).unwrap();
            assert_eq!(view.output::<()>(), Some(Ok(())), "crash after commit {n}");
            assert_eq!(view.run_names(), ["send"], "crash after commit {n}");
        }
        if !crashed {
            assert!(crashed_at_least_once);
            return;
        }
    }
    panic!("every run crashed: the backlog needs more commits than the loop tries");
}

/// Waits an hour after a step that goes through the "email" limit.
#[derive(Default)]
pub struct Later;

#[service]
impl Later {
    #[handler]
    async fn send_then_wait(&self, ctx: Context<'_>) -> HandlerResult<u32> {
        ctx.run(|| async { Ok(()) })
            .name("send")
            .rate_limit("email")
            .await?;
        ctx.sleep(Duration::from_secs(3600)).await?;
        Ok(7)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_journal_with_a_gate_replays_after_the_limit_is_switched_off_and_one_without_after_it_is_switched_on()
 {
    let folder = tempfile::tempdir().unwrap();
    let build = |limit| open(folder.path(), limit);
    let t = build(Some(RateLimit::per_second(1))).await;
    let gated = t
        .handle()
        .client::<Later>()
        .send_then_wait()
        .send()
        .await
        .unwrap();
    t.run_until_idle().await;
    drop(t);
    // The next release has no limit: the gate in the journal replays, the hour passes.
    let t = build(None).await;
    let ungated = t
        .handle()
        .client::<Later>()
        .send_then_wait()
        .send()
        .await
        .unwrap();
    t.run_until_idle().await;
    drop(t);
    // And the one after switches it on again: the journal without a gate replays too.
    let t = build(Some(RateLimit::per_second(1))).await;
    t.advance(Duration::from_secs(3600)).await;
    for id in [gated.invocation_id(), ungated.invocation_id()] {
        let view = t.invocation(id).unwrap();
        assert_eq!(view.status(), "completed", "{id}");
        assert_eq!(view.output::<u32>().unwrap().unwrap(), 7);
    }
}

/// Gates journaled under a limit that the next release switches off: those that fell due
/// while the process was down pass together at the restart, not spaced by some other limit.
#[tokio::test(flavor = "multi_thread")]
async fn waiters_whose_limit_was_switched_off_pass_at_once_after_the_restart() {
    let folder = tempfile::tempdir().unwrap();
    let paced = Paced::default();
    let t = TestRuntime::builder()
        .data_dir(folder.path())
        .bind(paced.clone())
        .rate_limit("email", RateLimit::per_second(1))
        .build()
        .await;
    for n in 0..6 {
        t.handle().client::<Paced>().email(n).send().await.unwrap();
    }
    t.advance(Duration::from_millis(1_010)).await;
    assert_eq!(paced.times("email"), vec![0, 1000]);
    drop(t);
    let restart = TestRuntime::default_start() + Duration::from_secs(10);
    let t = open_with(|| {
        TestRuntime::builder()
            .data_dir(folder.path())
            .bind(paced.clone())
            .start_at(restart)
    })
    .await;
    t.advance(Duration::from_millis(10)).await;
    let times = paced.times("email");
    assert_eq!(times, vec![0, 1000, 10_000, 10_000, 10_000, 10_000]);
}

/// A test runtime on `folder`, waiting while the runtime dropped just before still holds it.
async fn open(folder: &std::path::Path, limit: Option<RateLimit>) -> TestRuntime {
    open_with(|| {
        let builder = TestRuntime::builder().data_dir(folder);
        match limit {
            Some(limit) => builder.rate_limit("email", limit),
            None => builder,
        }
    })
    .await
}

/// The runtime `build` makes, waiting while the runtime dropped just before still holds its
/// folder.
async fn open_with(build: impl Fn() -> TestRuntimeBuilder) -> TestRuntime {
    loop {
        match build().try_build().await {
            Ok(t) => return t,
            Err(e) if e.to_string().contains("another process") => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_shows_a_buckets_tokens() {
    let server = common::TestServer::start_with(tempfile::tempdir().unwrap(), |b| {
        b.bind(Paced::default())
            .rate_limit("email", "1/1h".parse().unwrap())
    })
    .await;
    let http = reqwest::Client::new();
    let view = |path: String| {
        let http = http.clone();
        async move {
            let r = http.get(path).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let list = view(format!("{}/rate-limits", server.admin)).await;
    assert_eq!(list["rate_limits"][0]["name"], "email");
    assert_eq!(list["rate_limits"][0]["limit"], "1/1h");
    assert_eq!(list["rate_limits"][0]["tokens"], 1, "{list}");
    // One email takes the hour's token.
    let paced = server.handle.client::<Paced>();
    paced.email(1).call().await.unwrap();
    let email = view(format!("{}/rate-limits/email", server.admin)).await;
    assert_eq!(email["tokens"], 0, "{email}");
    let next: jiff::Timestamp = email["next_token_at"].as_str().unwrap().parse().unwrap();
    let wait = next.duration_since(jiff::Timestamp::now()).as_secs();
    assert!((3500..=3600).contains(&wait), "{email}");
    // A handler's own bucket shows the limit its reservations used.
    for n in 0..3 {
        paced.bursty(n).call().await.unwrap();
    }
    let bursty = view(format!("{}/rate-limits/Paced%2Fbursty", server.admin)).await;
    assert_eq!(bursty["limit"], "1/1s,burst=5", "{bursty}");
    let tokens = bursty["tokens"].as_u64().unwrap();
    assert!(
        (2..=5).contains(&tokens),
        "three of five taken, refilling at 1/s: {bursty}"
    );
    let unknown = view(format!("{}/rate-limits/nobody", server.admin)).await;
    assert_eq!(unknown["limit"], serde_json::Value::Null);
}
