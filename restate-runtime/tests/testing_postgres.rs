//! The test runtime on the PostgreSQL backend (`TestRuntimeBuilder::database_url`, feature
//! `postgres`), each test on a fresh database of a private cluster (skipped where PostgreSQL
//! is not installed): state and suspended invocations survive a restart, an invocation a crash
//! interrupts completes exactly once after it, and `on_storage_failure` hears a real failure
//! of the database, not the crashes a test injects.
#![cfg(feature = "postgres")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use restate_runtime::prelude::*;
use restate_runtime::testing::{InvocationFilter, PostgresCluster, TestRuntime};

const HOUR: Duration = Duration::from_secs(3600);

#[derive(Default)]
pub struct Counter;

#[object]
impl Counter {
    #[handler]
    async fn add(&self, ctx: ObjectContext<'_>, n: i64) -> HandlerResult<i64> {
        let total = ctx.get::<i64>("total").await?.unwrap_or(0) + n;
        ctx.set("total", total);
        Ok(total)
    }
}

/// Notes the order its key's pushes arrive in.
#[derive(Default)]
pub struct Seq;

#[object]
impl Seq {
    #[handler]
    async fn push(&self, ctx: ObjectContext<'_>, n: u32) -> HandlerResult<()> {
        let mut seen = ctx.get::<Vec<u32>>("seen").await?.unwrap_or_default();
        seen.push(n);
        ctx.set("seen", seen);
        Ok(())
    }

    /// Sends `count` pushes to its own key, all due after the same delay.
    #[handler]
    async fn later(&self, ctx: ObjectContext<'_>, count: u32) -> HandlerResult<()> {
        let key = ctx.key().to_owned();
        for n in 0..count {
            ctx.object::<Seq>(key.clone())
                .push(n)
                .send_after(Duration::from_millis(1500));
        }
        Ok(())
    }
}

/// Counts how often each step's closure really ran.
#[derive(Default)]
pub struct Payments {
    ran: Arc<Mutex<Vec<String>>>,
}

#[service]
impl Payments {
    /// A step, an hour's sleep, another step.
    #[handler]
    async fn pay(&self, ctx: Context<'_>, invoice: String) -> HandlerResult<String> {
        self.step(&ctx, &invoice, "charge").await?;
        ctx.sleep(HOUR).await?;
        self.step(&ctx, &invoice, "email").await?;
        Ok(format!("paid {invoice}"))
    }
}

impl Payments {
    async fn step(&self, ctx: &Context<'_>, invoice: &str, step: &str) -> HandlerResult<()> {
        let ran = self.ran.clone();
        let label = format!("{invoice}:{step}");
        ctx.run(|| {
            ran.lock().unwrap().push(label.clone());
            std::future::ready(Ok(()))
        })
        .name(step)
        .await?;
        Ok(())
    }
}

/// A fresh database of the private cluster, or `None` where PostgreSQL is not installed.
fn fresh_database() -> Option<(&'static PostgresCluster, String)> {
    let cluster = PostgresCluster::for_tests()?;
    Some((cluster, cluster.fresh_database().unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_a_suspended_invocation_survive_a_restart_on_postgres() {
    let Some((_, url)) = fresh_database() else {
        return;
    };
    let t = TestRuntime::builder()
        .database_url(url)
        .suspend_after(Duration::from_secs(1))
        .bind(Counter)
        .bind(Payments::default())
        .build()
        .await;
    let counter = t.handle().object::<Counter>("a");
    assert_eq!(counter.add(2).call().await.unwrap(), 2);
    let paying = t.handle().client::<Payments>().pay("x".into()).send().await;
    let id = paying.unwrap().invocation_id();
    t.advance(Duration::from_secs(60)).await;
    assert_eq!(t.invocation(id).unwrap().status(), "suspended");

    t.restart().await;
    assert_eq!(t.invocation(id).unwrap().status(), "suspended");
    assert_eq!(counter.add(3).call().await.unwrap(), 5, "state kept");
    t.advance(HOUR).await;
    let view = t.invocation(id).unwrap();
    assert_eq!(view.output::<String>(), Some(Ok("paid x".into())));
    assert_eq!(view.run_names(), ["charge", "email"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invocation_a_crash_interrupts_completes_exactly_once_on_postgres() {
    let Some((cluster, _)) = fresh_database() else {
        return;
    };
    // Crash after the 1st, 2nd, ... commit from the send on, until a run needs no crash.
    for n in 1..=12 {
        let payments = Payments::default();
        let ran = payments.ran.clone();
        let t = TestRuntime::builder()
            .database_url(cluster.fresh_database().unwrap())
            .bind(payments)
            .build()
            .await;
        t.crash_after_commits(n);
        let sent = t.handle().client::<Payments>().pay("x".into()).send().await;
        // Time for the whole invocation, unless the crash stops it.
        t.advance(HOUR + Duration::from_secs(60)).await;
        let crashed = t.crashed();
        if crashed {
            t.restart().await;
            t.advance(HOUR).await;
        }
        let listed = t.invocations(InvocationFilter::default().service("Payments"));
        match sent {
            Ok(handle) => {
                let view = t
                    .invocation(handle.invocation_id())
                    .expect("acknowledged, so kept");
                assert_eq!(view.output::<String>(), Some(Ok("paid x".into())), "{n}");
                assert_eq!(view.run_names(), ["charge", "email"], "{n}");
                assert_eq!(listed.len(), 1, "{n}");
            }
            // Not acknowledged: it may be there or not, but it is never half done.
            Err(_) => assert!(listed.iter().all(|v| v.status() == "completed"), "{n}"),
        }
        let ran = ran.lock().unwrap().clone();
        // A step whose closure ran but whose result was not yet durable runs again; a
        // journaled one never does.
        for step in ["x:charge", "x:email"] {
            let times = ran.iter().filter(|s| *s == step).count();
            assert!(times <= 2, "{n}: {ran:?}");
        }
        if !crashed {
            assert_eq!(ran, ["x:charge", "x:email"], "no crash, each step once");
            return;
        }
    }
    panic!("every run crashed: the invocation takes more than 12 commits?");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_point_stops_the_writes_and_the_invocation_completes_once_on_postgres() {
    let Some((_, url)) = fresh_database() else {
        return;
    };
    let payments = Payments::default();
    let ran = payments.ran.clone();
    let t = TestRuntime::builder()
        .database_url(url)
        .suspend_after(Duration::from_secs(1))
        .bind(payments)
        .build()
        .await;
    t.crash_at("suspend.committed", 1);
    let sent = t.handle().client::<Payments>().pay("y".into()).send().await;
    let id = sent.unwrap().invocation_id();
    t.advance(Duration::from_secs(60)).await;
    assert!(t.crashed());
    // Nothing of the dead engine runs, whatever time passes.
    t.advance(2 * HOUR).await;
    assert_eq!(*ran.lock().unwrap(), ["y:charge"]);
    t.restart().await;
    t.advance(HOUR).await;
    let view = t.invocation(id).unwrap();
    assert_eq!(view.output::<String>(), Some(Ok("paid y".into())));
    assert_eq!(*ran.lock().unwrap(), ["y:charge", "y:email"]);
}

static FAILURES: AtomicUsize = AtomicUsize::new(0);

fn count_failure(_reason: &str) {
    FAILURES.fetch_add(1, Ordering::SeqCst);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_storage_failure_hears_a_lost_database_session_not_injected_crashes() {
    let Some((cluster, url)) = fresh_database() else {
        return;
    };
    let t = TestRuntime::builder()
        .database_url(url.clone())
        .on_storage_failure(count_failure)
        .bind(Counter)
        .build()
        .await;
    let counter = t.handle().object::<Counter>("a");
    counter.add(1).call().await.unwrap();
    t.crash_after_commits(1);
    // Answered once accepted (the commit the crash comes right after).
    let _ = counter.add(1).send().await;
    t.run_until_idle().await;
    assert!(t.crashed());
    t.restart().await;
    counter.add(1).call().await.unwrap();
    // Time for a wrongly called hook to have run.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(FAILURES.load(Ordering::SeqCst), 0, "no hook for a crash");

    // A real failure: the database ends the engine's sessions.
    cluster
        .execute(
            &url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while FAILURES.load(Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "the hook never heard");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(t.crashed());
    assert_eq!(FAILURES.load(Ordering::SeqCst), 1);
}

/// Delayed sends to one key arrive in the order they were sent, also where the invocations
/// they start are read back from the database when due (their reads go side by side).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_sends_to_one_key_arrive_in_send_order_on_postgres() {
    let Some((_, url)) = fresh_database() else {
        return;
    };
    let t = TestRuntime::builder()
        .database_url(url)
        .bind(Seq)
        .build()
        .await;
    let keys = ["a", "b", "c"];
    for key in keys {
        t.handle()
            .object::<Seq>(key)
            .later(20)
            .call()
            .await
            .unwrap();
    }
    t.advance(Duration::from_secs(2)).await;
    for key in keys {
        let seen: Vec<u32> = t.state("Seq", key, "seen").unwrap_or_default();
        assert_eq!(seen, (0..20).collect::<Vec<_>>(), "key {key}");
    }
}
