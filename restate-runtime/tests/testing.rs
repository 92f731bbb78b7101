//! The test runtime (`restate_runtime::testing`): virtual time fires timers, delayed sends and
//! retry backoffs in order, also those created during an advance; a restart drops everything
//! in memory and loses nothing durable; idleness waits for work outside the engine inside
//! `ctx.run`; time skipping returns a day-long call at once.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use restate_runtime::prelude::*;
use restate_runtime::testing::{InvocationFilter, TestRuntime, TestRuntimeBuilder};
use restate_runtime::{InvocationId, RetryPolicy};

const HOUR: Duration = Duration::from_secs(3600);

/// Times (ms since the epoch, by `ctx.now()`) at which its steps ran, noted inside `ctx.run`
/// so that a replay (after a suspension) does not note them again.
#[derive(Default)]
pub struct Steps {
    seen: Arc<Mutex<Vec<(String, u64)>>>,
    failures_left: Arc<AtomicU32>,
    refusals: Arc<AtomicU32>,
    bookings: Arc<AtomicU32>,
}

impl Steps {
    fn seen(&self) -> Arc<Mutex<Vec<(String, u64)>>> {
        self.seen.clone()
    }
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[object]
impl Steps {
    /// Sleeps `hours` one hour at a time, noting the time after each.
    #[handler]
    async fn hourly(&self, ctx: ObjectContext<'_>, hours: u32) -> HandlerResult<u32> {
        for hour in 1..=hours {
            ctx.sleep(HOUR).await?;
            self.note_once(&ctx, format!("{}:{hour}", ctx.key()))
                .await?;
        }
        Ok(hours)
    }

    /// Notes the time it runs (a delayed send's arrival).
    #[handler]
    async fn note(&self, ctx: ObjectContext<'_>, label: String) -> HandlerResult<()> {
        self.note_once(&ctx, label).await
    }

    /// A step that fails (retryably) until `failures_left` runs out, backing off 10 s, 20 s,
    /// 40 s.
    #[handler]
    async fn flaky(&self, ctx: ObjectContext<'_>) -> HandlerResult<u32> {
        let failures = self.failures_left.clone();
        let seen = self.seen.clone();
        let attempts = Arc::new(AtomicU32::new(0));
        let counted = attempts.clone();
        let policy = RetryPolicy::exponential(Duration::from_secs(10), 2.0).max_attempts(10);
        ctx.run(|| {
            let (failures, counted) = (failures.clone(), counted.clone());
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                if failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    return Err(HandlerError::from(anyhow::anyhow!("not yet")));
                }
                Ok(())
            }
        })
        .name("charge")
        .retry_policy(policy)
        .await?;
        drop(seen);
        self.note_once(&ctx, "charged".into()).await?;
        Ok(attempts.load(Ordering::SeqCst))
    }

    /// Fails its first attempt (attempts counted in `refusals`), an hour before the next,
    /// which sleeps an hour.
    #[handler(retry(initial_interval = "1h", max_interval = "1h"))]
    async fn refused(&self, ctx: ObjectContext<'_>) -> HandlerResult<()> {
        if self.refusals.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err("the card is refused".into());
        }
        ctx.sleep(HOUR).await?;
        Ok(())
    }

    /// Fails every attempt before its first await (attempts counted in `refusals`), an hour
    /// apart.
    #[handler(retry(initial_interval = "1h", max_interval = "1h"))]
    async fn declined(&self, _ctx: ObjectContext<'_>) -> HandlerResult<()> {
        self.refusals.fetch_add(1, Ordering::SeqCst);
        Err("the card is declined".into())
    }

    /// Books (a journaled step), then fails its first two attempts before its next await
    /// (attempts counted in `bookings`), an hour apart; once past, it sleeps an hour, and
    /// undoes the booking if cancelled meanwhile.
    #[handler(retry(initial_interval = "1h", max_interval = "1h"))]
    async fn booked(&self, ctx: ObjectContext<'_>) -> HandlerResult<String> {
        ctx.run(|| async { Ok(()) }).name("book").await?;
        if self.bookings.fetch_add(1, Ordering::SeqCst) < 2 {
            return Err("the card is declined".into());
        }
        match ctx.sleep(HOUR).await {
            Err(e) if e.code() == 409 => {
                ctx.run(|| async { Ok(()) }).name("unbook").await?;
                Ok("unbooked".into())
            }
            other => other.map(|()| "booked".into()).map_err(Into::into),
        }
    }

    /// Books (a journaled step), then fails every attempt before its next await: three,
    /// an hour apart.
    #[handler(retry(initial_interval = "1h", max_interval = "1h", max_attempts = 3))]
    async fn overbooked(&self, ctx: ObjectContext<'_>) -> HandlerResult<()> {
        ctx.run(|| async { Ok(()) }).name("book").await?;
        Err("no room left".into())
    }

    /// Real work outside the engine, inside `ctx.run`: 50 ms of a real timer.
    #[handler]
    async fn slow_io(&self, ctx: ObjectContext<'_>) -> HandlerResult<String> {
        ctx.run(|| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok("done".to_owned())
        })
        .name("io")
        .await
        .map_err(Into::into)
    }
}

impl Steps {
    /// Notes `label` at `ctx.now()`, once per invocation whatever replays.
    async fn note_once(&self, ctx: &ObjectContext<'_>, label: String) -> HandlerResult<()> {
        let now = ms(ctx.now().await?);
        let seen = self.seen.clone();
        ctx.run(|| {
            seen.lock().unwrap().push((label.clone(), now));
            std::future::ready(Ok(()))
        })
        .name("note")
        .await?;
        Ok(())
    }
}

fn at(start: SystemTime, after: Duration) -> u64 {
    ms(start + after)
}

async fn output(t: &TestRuntime, id: InvocationId) -> Option<serde_json::Value> {
    t.handle().invocation(id).output().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advance_fires_each_timer_at_its_time_in_order_including_timers_set_during_it() {
    let steps = Steps::default();
    let seen = steps.seen();
    let t = TestRuntime::builder().bind(steps).build().await;
    let start = t.now();
    let a = t
        .handle()
        .object::<Steps>("a")
        .hourly(3)
        .send()
        .await
        .unwrap()
        .invocation_id();
    let b = t
        .handle()
        .object::<Steps>("b")
        .hourly(2)
        .send()
        .await
        .unwrap()
        .invocation_id();
    t.run_until_idle().await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "no time passed, nothing woke"
    );

    t.advance(HOUR - Duration::from_millis(1)).await;
    assert!(seen.lock().unwrap().is_empty(), "a millisecond early");
    assert_eq!(output(&t, a).await, None);

    // One advance across three hours: each next sleep is created during it and fires in it.
    t.advance(2 * HOUR + Duration::from_millis(1)).await;
    let mut got = seen.lock().unwrap().clone();
    got.sort_by_key(|(label, when)| (*when, label.clone()));
    let expected: Vec<(String, u64)> = vec![
        ("a:1".into(), at(start, HOUR)),
        ("b:1".into(), at(start, HOUR)),
        ("a:2".into(), at(start, 2 * HOUR)),
        ("b:2".into(), at(start, 2 * HOUR)),
        ("a:3".into(), at(start, 3 * HOUR)),
    ];
    assert_eq!(got, expected);
    assert_eq!(output(&t, a).await, Some(3.into()));
    assert_eq!(output(&t, b).await, Some(2.into()));
    assert_eq!(t.now(), start + 3 * HOUR);
}

#[tokio::test]
async fn delayed_sends_run_when_due_and_survive_a_restart_in_between() {
    let steps = Steps::default();
    let seen = steps.seen();
    let t = TestRuntime::builder().bind(steps).build().await;
    let start = t.now();
    let day = 24 * HOUR;
    t.handle()
        .object::<Steps>("k")
        .note("tomorrow".into())
        .send_after(day)
        .await
        .unwrap();
    t.handle()
        .object::<Steps>("k")
        .note("in an hour".into())
        .send_after(HOUR)
        .await
        .unwrap();
    t.advance(HOUR).await;
    assert_eq!(
        *seen.lock().unwrap(),
        [("in an hour".to_owned(), at(start, HOUR))]
    );
    t.restart().await;
    assert_eq!(t.now(), start + HOUR, "a restart keeps the virtual clock");
    t.advance(day - HOUR - Duration::from_millis(1)).await;
    assert_eq!(seen.lock().unwrap().len(), 1);
    t.advance(Duration::from_millis(1)).await;
    assert_eq!(
        seen.lock().unwrap().last().cloned(),
        Some(("tomorrow".to_owned(), at(start, day)))
    );
}

/// Handlers switched by `#[cfg]`: the compiled version is served, the other is not there.
#[derive(Default)]
pub struct Gated;

#[service]
impl Gated {
    #[cfg(not(test))]
    #[handler]
    async fn flavor(&self, _ctx: Context<'_>) -> HandlerResult<String> {
        Ok("old".into())
    }

    #[cfg(test)]
    #[handler]
    async fn flavor(&self, _ctx: Context<'_>) -> HandlerResult<String> {
        Ok("new".into())
    }

    #[cfg(not(test))]
    #[handler]
    async fn gone(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }

    /// `anyhow::Result`: a terminal error passed through `?` stays terminal.
    #[handler]
    async fn charge(&self, ctx: Context<'_>, cents: u32) -> anyhow::Result<u32> {
        let charged = ctx
            .run(|| async move {
                match cents {
                    0 => Err(TerminalError::new_with_code(402, "nothing to charge").into()),
                    n => Ok(n),
                }
            })
            .await?;
        Ok(charged)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_switched_by_cfg_is_served_in_its_compiled_version_only() {
    let t = TestRuntime::builder().build().await;
    let flavor = t.handle().client::<Gated>().flavor().call().await.unwrap();
    assert_eq!(flavor, "new");
    let declared: Vec<_> = <Gated as restate_runtime::Service>::definition()
        .handlers
        .iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(declared, ["flavor", "charge"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_returning_anyhow_result_keeps_terminal_errors_terminal() {
    let t = TestRuntime::builder().build().await;
    let gated = t.handle().client::<Gated>();
    assert_eq!(gated.charge(5).call().await.unwrap(), 5);
    match gated.charge(0).call().await {
        Err(ClientError::Terminal(e)) => {
            assert_eq!((e.code(), e.message()), (402, "nothing to charge"))
        }
        other => panic!("a terminal error, not {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_a_type_again_replaces_its_earlier_value() {
    let (shared, own) = (Steps::default(), Steps::default());
    let (shared_seen, own_seen) = (shared.seen(), own.seen());
    let t = TestRuntime::builder().bind(shared).bind(own).build().await;
    t.handle()
        .object::<Steps>("k")
        .note("here".into())
        .call()
        .await
        .unwrap();
    assert!(shared_seen.lock().unwrap().is_empty());
    assert_eq!(own_seen.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_backoff_waits_on_the_virtual_clock() {
    let steps = Steps::default();
    steps.failures_left.store(3, Ordering::SeqCst);
    let seen = steps.seen();
    let t = TestRuntime::builder().bind(steps).build().await;
    let start = t.now();
    let id = t
        .handle()
        .object::<Steps>("f")
        .flaky()
        .send()
        .await
        .unwrap()
        .invocation_id();
    // Three failures: backoffs of 10, 20 and 40 s; 69 s in, the fourth attempt has not run.
    t.advance(Duration::from_secs(69)).await;
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(output(&t, id).await, None);
    let backing_off = |t: &TestRuntime| {
        t.invocations(InvocationFilter::default().status("backing-off"))
            .iter()
            .map(|v| v.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(backing_off(&t), [id]);
    t.advance(Duration::from_secs(1)).await;
    assert!(backing_off(&t).is_empty());
    assert_eq!(
        *seen.lock().unwrap(),
        [("charged".to_owned(), at(start, Duration::from_secs(70)))]
    );
    assert_eq!(output(&t, id).await, Some(4.into()));
}

/// A cancel that comes while a step waits to retry ends the step at once with the 409 (it does
/// not run again), and the handler with it (found from outside: the step retried on to
/// success and the cancel was lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_a_steps_retry_wait_ends_the_step_without_another_attempt() {
    let steps = Steps::default();
    steps.failures_left.store(3, Ordering::SeqCst);
    let seen = steps.seen();
    let t = TestRuntime::builder().bind(steps).build().await;
    let sent = t
        .handle()
        .object::<Steps>("c")
        .flaky()
        .send()
        .await
        .unwrap();
    let id = sent.invocation_id();
    // The first attempt failed; the step waits 10 s for its second.
    t.advance(Duration::from_secs(5)).await;
    assert_eq!(t.invocation(id).unwrap().status(), "running");
    sent.cancel().await.unwrap();
    t.run_until_idle().await;
    let view = t.invocation(id).unwrap();
    let e = view.output::<u32>().expect("completed").unwrap_err();
    assert_eq!(e.code(), 409, "{e:?}");
    assert_eq!(view.run_names(), ["charge"]);
    // Not another attempt, not now and not at the retry's time.
    t.advance(Duration::from_secs(60)).await;
    assert!(seen.lock().unwrap().is_empty());
}

/// The invocations backing off between attempts.
fn backing_off(t: &TestRuntime) -> Vec<InvocationId> {
    let filter = InvocationFilter::default().status("backing-off");
    t.invocations(filter).iter().map(|v| v.id).collect()
}

/// An invocation between attempts stays there across a restart (the hour's wait is not cut
/// short), and a cancel that comes meanwhile starts its next attempt at once, which takes the
/// cancellation at its first await (found from outside: the cancel waited out the hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_during_an_invocations_retry_wait_ends_it_without_the_wait() {
    let steps = Steps::default();
    let refusals = steps.refusals.clone();
    let t = TestRuntime::builder().bind(steps).build().await;
    let sent = t
        .handle()
        .object::<Steps>("r")
        .refused()
        .send()
        .await
        .unwrap();
    let id = sent.invocation_id();
    t.run_until_idle().await;
    assert_eq!(backing_off(&t), [id]);
    t.restart().await;
    t.run_until_idle().await;
    assert_eq!(backing_off(&t), [id]);
    assert_eq!(refusals.load(Ordering::SeqCst), 1);
    sent.cancel().await.unwrap();
    t.run_until_idle().await;
    let view = t.invocation(id).unwrap();
    let e = view.output::<()>().expect("completed").unwrap_err();
    assert_eq!(e.code(), 409, "{e:?}");
    assert_eq!(refusals.load(Ordering::SeqCst), 2);
}

/// A cancel of one backing off is taken at its next attempt's first await, where its handler
/// can compensate, however many attempts fail before one gets there: the cancel ends one wait
/// between attempts, not each (found from outside: the attempts left ran back to back, and it
/// was paused with its retries spent). One with nothing journaled, whose attempt fails before
/// any await, ends with the `409` there; one whose attempts never reach an await ends with it
/// once its retries are spent, not paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_of_one_backing_off_reaches_its_handler_through_failed_attempts() {
    let steps = Steps::default();
    let (declines, bookings) = (steps.refusals.clone(), steps.bookings.clone());
    let t = TestRuntime::builder().bind(steps).build().await;
    let client = t.handle();
    let declined = client.object::<Steps>("d").declined().send().await.unwrap();
    let booked = client.object::<Steps>("b").booked().send().await.unwrap();
    let overbooked = client
        .object::<Steps>("o")
        .overbooked()
        .send()
        .await
        .unwrap();
    let (declined_id, booked_id) = (declined.invocation_id(), booked.invocation_id());
    let overbooked_id = overbooked.invocation_id();
    t.run_until_idle().await;
    let sorted = |mut ids: Vec<InvocationId>| {
        ids.sort();
        ids
    };
    let all = sorted(vec![declined_id, booked_id, overbooked_id]);
    assert_eq!(sorted(backing_off(&t)), all);
    declined.cancel().await.unwrap();
    booked.cancel().await.unwrap();
    overbooked.cancel().await.unwrap();
    t.run_until_idle().await;
    let view = t.invocation(declined_id).unwrap();
    let e = view.output::<()>().expect("completed").unwrap_err();
    assert_eq!((e.code(), e.message()), (409, "cancelled"));
    assert_eq!(
        declines.load(Ordering::SeqCst),
        2,
        "one attempt after the cancel"
    );
    // The wait the cancel cut short was the first; the second attempt failed too, and its
    // wait is the policy's.
    assert_eq!(bookings.load(Ordering::SeqCst), 2);
    assert_eq!(
        sorted(backing_off(&t)),
        sorted(vec![booked_id, overbooked_id])
    );
    t.advance(HOUR).await;
    t.run_until_idle().await;
    let view = t.invocation(booked_id).unwrap();
    assert_eq!(view.output::<String>(), Some(Ok("unbooked".to_owned())));
    assert_eq!(bookings.load(Ordering::SeqCst), 3);
    let view = t.invocation(overbooked_id).unwrap();
    let e = view.output::<()>().expect("ended, not paused").unwrap_err();
    assert_eq!((e.code(), e.message()), (409, "cancelled"));
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_sleep_loses_nothing() {
    let steps = Steps::default();
    let seen = steps.seen();
    let t = TestRuntime::builder()
        .bind(steps)
        .suspend_after(Duration::from_secs(1))
        .build()
        .await;
    let start = t.now();
    let id = t
        .handle()
        .object::<Steps>("r")
        .hourly(2)
        .send()
        .await
        .unwrap()
        .invocation_id();
    t.advance(HOUR + Duration::from_secs(30)).await;
    assert_eq!(seen.lock().unwrap().len(), 1);
    let kept = t.handle();
    t.restart().await;
    t.restart().await;
    t.advance(HOUR).await;
    assert_eq!(
        seen.lock().unwrap().last().cloned(),
        Some(("r:2".to_owned(), at(start, 2 * HOUR)))
    );
    assert_eq!(output(&t, id).await, Some(2.into()));
    // A handle from before the crashes reaches the engine running now.
    assert_eq!(kept.invocation(id).output().await.unwrap(), Some(2.into()));
}

#[tokio::test]
async fn idle_waits_for_work_a_run_closure_does_outside_the_engine() {
    let t = TestRuntime::builder().bind(Steps::default()).build().await;
    let id = t
        .handle()
        .object::<Steps>("io")
        .slow_io()
        .send()
        .await
        .unwrap()
        .invocation_id();
    t.run_until_idle().await;
    assert_eq!(output(&t, id).await, Some("done".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_skipping_returns_a_day_long_call_at_once() {
    let steps = Steps::default();
    let t = TestRuntime::builder().bind(steps).build().await;
    let start = t.now();
    t.auto_advance(true);
    let hours = tokio::time::timeout(
        Duration::from_secs(30),
        t.handle().object::<Steps>("skip").hourly(24).call(),
    )
    .await
    .expect("time skipping moves the clock while everything waits")
    .unwrap();
    assert_eq!(hours, 24);
    assert!(t.now() >= start + 24 * HOUR);
    t.auto_advance(false);
    let now = t.now();
    let id = t
        .handle()
        .object::<Steps>("skip")
        .hourly(1)
        .send()
        .await
        .unwrap()
        .invocation_id();
    t.run_until_idle().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(t.now(), now, "off again: the clock stands still");
    assert_eq!(output(&t, id).await, None);
}

#[tokio::test]
async fn retention_ends_on_the_virtual_clock() {
    let t = TestRuntime::builder()
        .bind(Steps::default())
        .default_retention(HOUR)
        .build()
        .await;
    let id = t
        .handle()
        .object::<Steps>("ret")
        .note("x".into())
        .send()
        .await
        .unwrap()
        .invocation_id();
    t.run_until_idle().await;
    assert_eq!(output(&t, id).await, Some(serde_json::Value::Null));
    t.advance(HOUR - Duration::from_secs(1)).await;
    assert!(t.handle().invocation(id).output().await.is_ok());
    t.advance(Duration::from_secs(2)).await;
    assert!(
        t.handle().invocation(id).output().await.is_err(),
        "forgotten once its retention ended"
    );
}

#[tokio::test]
async fn the_ingress_serves_on_loopback_and_keeps_its_address_across_restarts() {
    let t = TestRuntime::builder()
        .bind(Steps::default())
        .serve_ingress()
        .build()
        .await;
    let url = t.ingress_url().unwrap();
    let client = reqwest::Client::new();
    let sent: serde_json::Value = client
        .post(format!("{url}/Steps/h/note/send?delay=1h"))
        .json(&"over http")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id: InvocationId = sent["invocationId"].as_str().unwrap().parse().unwrap();
    t.restart().await;
    assert_eq!(t.ingress_url().unwrap(), url);
    t.advance(HOUR).await;
    let r = client
        .get(format!("{url}/restate/invocation/{id}/output"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Counts how often each step's closure really ran.
#[derive(Default)]
pub struct Payments {
    ran: Arc<Mutex<Vec<String>>>,
}

#[service]
impl Payments {
    /// Two steps, `charge` then `email`.
    #[handler]
    async fn pay(&self, ctx: Context<'_>, invoice: String) -> HandlerResult<String> {
        for step in ["charge", "email"] {
            let ran = self.ran.clone();
            let label = format!("{invoice}:{step}");
            ctx.run(|| {
                ran.lock().unwrap().push(label.clone());
                std::future::ready(Ok(()))
            })
            .name(step)
            .await?;
        }
        Ok(format!("paid {invoice}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_step_failures_retry_panic_or_end_the_invocation() {
    use restate_runtime::testing::RunFault;
    let payments = Payments::default();
    let ran = payments.ran.clone();
    let t = TestRuntime::builder().bind(payments).build().await;
    let client = t.handle().client::<Payments>();

    t.fail_run("charge", 2, RunFault::Retryable);
    let retried = client.pay("a".into()).send().await.unwrap().invocation_id();
    t.run_until_idle().await;
    assert_eq!(
        t.invocation(retried).unwrap().status(),
        "running",
        "backing off"
    );
    t.advance(Duration::from_secs(10)).await;
    let view = t.invocation(retried).unwrap();
    assert_eq!(view.output::<String>(), Some(Ok("paid a".into())));
    assert_eq!(
        view.record.attempts, 3,
        "two injected failures, then the real run"
    );
    assert_eq!(view.run_names(), ["charge", "email"]);
    assert!(t.unused_run_faults().is_empty());

    // A name no step has injects nothing: its faults wait, and are listed.
    t.fail_run("chrage", 2, RunFault::Retryable);
    let untouched = client
        .pay("typo".into())
        .send()
        .await
        .unwrap()
        .invocation_id();
    t.run_until_idle().await;
    assert_eq!(t.invocation(untouched).unwrap().record.attempts, 1);
    assert_eq!(t.unused_run_faults(), [("chrage".to_owned(), 2)]);

    t.fail_run("charge", 1, RunFault::Panic);
    let panicked = client.pay("b".into()).send().await.unwrap().invocation_id();
    t.advance(Duration::from_secs(10)).await;
    assert_eq!(
        t.invocation(panicked).unwrap().output::<String>(),
        Some(Ok("paid b".into()))
    );

    t.fail_run("email", 1, RunFault::Terminal);
    let ended = client.pay("c".into()).send().await.unwrap().invocation_id();
    t.run_until_idle().await;
    let failure = t
        .invocation(ended)
        .unwrap()
        .output::<String>()
        .unwrap()
        .unwrap_err();
    assert!(failure.message().contains("injected"), "{failure}");
    // The injected attempts never ran their closures; the real ones ran once each.
    assert_eq!(
        *ran.lock().unwrap(),
        [
            "a:charge",
            "a:email",
            "typo:charge",
            "typo:email",
            "b:charge",
            "b:email",
            "c:charge"
        ]
    );
}

/// A test runtime on the in-memory store, or on a new data folder in `folders`.
fn builder_on(
    folders: Option<&std::path::Path>,
    name: impl std::fmt::Display,
) -> TestRuntimeBuilder {
    match folders {
        Some(dir) => TestRuntime::builder().data_dir(dir.join(name.to_string())),
        None => TestRuntime::builder(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_right_after_any_commit_loses_nothing_that_was_acknowledged() {
    crash_right_after_any_commit(None).await;
}

/// On a data folder a crash stops the engine's writes at once, its last checkpoint never
/// runs, and the next engine recovers from the folder's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_right_after_any_commit_to_a_data_folder_loses_nothing_that_was_acknowledged() {
    let folders = tempfile::tempdir().unwrap();
    crash_right_after_any_commit(Some(folders.path())).await;
}

async fn crash_right_after_any_commit(folders: Option<&std::path::Path>) {
    // Crash after the 1st, 2nd, ... commit from the send on, until a run needs no crash.
    for n in 1..=12 {
        let payments = Payments::default();
        let ran = payments.ran.clone();
        let t = builder_on(folders, n).bind(payments).build().await;
        t.crash_after_commits(n);
        let sent = t.handle().client::<Payments>().pay("x".into()).send().await;
        t.run_until_idle().await;
        let crashed = t.crashed();
        if crashed {
            t.restart().await;
        }
        t.advance(Duration::from_secs(60)).await;
        let listed = t.invocations(InvocationFilter::default().service("Payments"));
        match sent {
            Ok(handle) => {
                let view = t
                    .invocation(handle.invocation_id())
                    .expect("acknowledged, so kept");
                assert_eq!(
                    view.output::<String>(),
                    Some(Ok("paid x".into())),
                    "crash after commit {n}"
                );
                assert_eq!(view.run_names(), ["charge", "email"]);
                assert_eq!(listed.len(), 1);
            }
            // Not acknowledged: it may be there or not, but it is never half done.
            Err(_) => assert!(listed.iter().all(|v| v.status() == "completed"), "{n}"),
        }
        let ran = ran.lock().unwrap().clone();
        // A step whose closure ran but whose result was not yet durable runs again; a
        // journaled one never does.
        assert!(
            ran.iter().filter(|s| *s == "x:charge").count() <= 2,
            "{n}: {ran:?}"
        );
        assert!(
            ran.iter().filter(|s| *s == "x:email").count() <= 2,
            "{n}: {ran:?}"
        );
        if !crashed {
            assert_eq!(ran, ["x:charge", "x:email"], "no crash, each step once");
            return;
        }
    }
    panic!("every run crashed: the invocation takes more than 12 commits?");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_waiting_at_a_restart_fails_and_its_invocation_still_completes() {
    let t = Arc::new(TestRuntime::builder().bind(Steps::default()).build().await);
    let waiting = tokio::spawn({
        let t = t.clone();
        async move { t.handle().object::<Steps>("w").hourly(1).call().await }
    });
    // The call is durable once its sleep is journaled (a call nobody heard of may be lost).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !t
        .invocations(InvocationFilter::default().key("w"))
        .iter()
        .any(|v| !v.journal.is_empty())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the call never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    t.run_until_idle().await;
    t.restart().await;
    let answered = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("a call in flight at the crash is answered, not left hanging")
        .unwrap();
    assert!(
        answered.is_err(),
        "the connection to the old engine is gone"
    );
    t.advance(HOUR).await;
    let done = t.invocations(
        InvocationFilter::default()
            .service("Steps")
            .key("w")
            .status("completed"),
    );
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].output::<u32>(), Some(Ok(1)));
}

#[tokio::test]
async fn state_and_invocations_read_back_as_typed_values() {
    let t = TestRuntime::builder().bind(Counter).build().await;
    let counter = t.handle().object::<Counter>("c");
    counter.add(2).call().await.unwrap();
    let last = counter.add(3).send().await.unwrap().invocation_id();
    t.run_until_idle().await;
    assert_eq!(t.state::<i64>("Counter", "c", "total"), Some(5));
    assert_eq!(t.state::<i64>("Counter", "c", "missing"), None);
    assert_eq!(t.state_keys("Counter", "c"), ["total"]);
    let view = t.invocation(last).unwrap();
    assert_eq!(view.status(), "completed");
    assert_eq!(view.record.target.key.as_deref(), Some("c"));
    assert!(
        view.journal
            .iter()
            .any(|(_, e)| matches!(e, restate_runtime::storage::JournalEntry::SetState { name, .. } if name == "total"))
    );
    let all = t.invocations(InvocationFilter::default().service("Counter"));
    assert_eq!(all.len(), 2);
    assert!(
        t.invocations(InvocationFilter::default().status("suspended"))
            .is_empty()
    );
    let unknown: InvocationId = "inv_1gdJBtdVEcM942bjcDmb1c1khoaJe11Hbz".parse().unwrap();
    assert!(t.invocation(unknown).is_none());
}

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

/// Records when each of its sleeps ended, by `ctx.now()`, once per invocation.
#[derive(Default)]
pub struct Timers {
    fired: Arc<Mutex<Vec<(u64, u64)>>>,
}

#[service]
impl Timers {
    /// Sleeps `ms`, then notes (ms, now).
    #[handler]
    async fn after(&self, ctx: Context<'_>, ms: u64) -> HandlerResult<()> {
        ctx.sleep(Duration::from_millis(ms)).await?;
        let now = ms_of(ctx.now().await?);
        let fired = self.fired.clone();
        ctx.run(|| {
            fired.lock().unwrap().push((ms, now));
            std::future::ready(Ok(()))
        })
        .name("fired")
        .await?;
        Ok(())
    }
}

fn ms_of(t: SystemTime) -> u64 {
    ms(t)
}

/// A day of virtual time with many timers (`RESTATE_TEST_TIMERS`, default 2,000; the
/// benchmark in `BENCHMARKS.md` runs 10,000 in release), spread over it: each fires once, at
/// its time. The real time it took is printed, never asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_timers_fires_each_once_at_its_time() {
    let count: u64 = std::env::var("RESTATE_TEST_TIMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let timers = Timers::default();
    let fired = timers.fired.clone();
    let t = TestRuntime::builder()
        .bind(timers)
        .suspend_after(Duration::from_secs(1))
        .build()
        .await;
    let start = ms(t.now());
    let day_ms = 24 * 3600 * 1000;
    let client = t.handle().client::<Timers>();
    let sent = std::time::Instant::now();
    for i in 0..count {
        // Spread over the day, some due at the same moment.
        let ms = 1 + (i * 7919) % (day_ms - 1) / 1000 * 1000;
        client.after(ms).send().await.unwrap();
    }
    let sending = sent.elapsed();
    let advancing = std::time::Instant::now();
    t.advance(Duration::from_millis(day_ms)).await;
    let advanced = advancing.elapsed();
    let fired = fired.lock().unwrap().clone();
    assert_eq!(fired.len() as u64, count, "each timer fires exactly once");
    for (ms, at) in &fired {
        // Sent at the start (the clock stood still), so due at start + ms.
        assert_eq!(*at, start + ms, "fired at its time");
    }
    eprintln!(
        "{count} timers over a virtual day: sent in {:.0} ms, advanced in {:.0} ms of real time",
        sending.as_secs_f64() * 1000.0,
        advanced.as_secs_f64() * 1000.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_runs_in_a_crashed_engine_until_the_restart() {
    nothing_runs_until_the_restart(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_runs_in_an_engine_crashed_on_a_data_folder_until_the_restart() {
    let folders = tempfile::tempdir().unwrap();
    nothing_runs_until_the_restart(Some(folders.path())).await;
}

async fn nothing_runs_until_the_restart(folders: Option<&std::path::Path>) {
    for n in 1..=3 {
        let payments = Payments::default();
        let ran = payments.ran.clone();
        let t = builder_on(folders, n).bind(payments).build().await;
        t.crash_after_commits(n);
        let sent = t.handle().client::<Payments>().pay("z".into()).send().await;
        t.run_until_idle().await;
        assert!(t.crashed(), "crash after commit {n}");
        let before = ran.lock().unwrap().clone();
        // Retries, timers: nothing of a dead engine starts, whatever time passes.
        t.advance(Duration::from_secs(3600)).await;
        assert_eq!(*ran.lock().unwrap(), before, "crash after commit {n}");
        // A call now fails as over a dropped connection, as a send does, rather than wait
        // for an attempt that a dead engine never starts (a bound on a hang, not a timing).
        let client = t.handle().client::<Payments>();
        let call = tokio::time::timeout(Duration::from_secs(60), client.pay("w".into()).call());
        assert!(
            call.await.expect("answered").is_err(),
            "crash after commit {n}"
        );
        assert!(client.pay("w".into()).send().await.is_err(), "{n}");
        if let Ok(sent) = sent {
            let attach = tokio::time::timeout(Duration::from_secs(60), sent.attach());
            assert!(attach.await.expect("answered").is_err(), "{n}");
        }
        t.restart().await;
        t.advance(Duration::from_secs(60)).await;
        let ran = ran.lock().unwrap().clone();
        assert_eq!(
            ran.last().map(String::as_str),
            Some("z:email"),
            "{n}: {ran:?}"
        );
    }
}

#[tokio::test]
async fn the_ingress_listens_where_it_is_told() {
    // Below the ephemeral range: no test's outgoing connection takes it meanwhile.
    let port = restate_runtime::testing::free_loopback_port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let t = TestRuntime::builder()
        .ingress_addr(addr)
        .serve_ingress()
        .build()
        .await;
    assert_eq!(t.ingress_url().unwrap(), format!("http://{addr}"));
    let health = reqwest::get(format!("http://{addr}/restate/health"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // Told where, but not to serve: nothing listens.
    let quiet = TestRuntime::builder().ingress_addr(addr).build().await;
    assert!(quiet.ingress_url().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_whose_future_is_dropped_midway_still_leaves_an_engine_running() {
    use futures::FutureExt as _;
    let t = TestRuntime::builder().bind(Counter).build().await;
    let counter = t.handle().object::<Counter>("a");
    assert_eq!(counter.add(2).call().await.unwrap(), 2);
    // Polled once while the old engine is still stopping on its thread, then dropped. A stop
    // can end before that first poll on a busy machine (the restart then completes whole):
    // tried again until one is dropped midway.
    let dropped_midway = (0..100).any(|_| t.restart().now_or_never().is_none());
    assert!(
        dropped_midway,
        "no restart was still under way at its first poll"
    );
    // Without an engine the call would wait forever.
    let added = tokio::time::timeout(Duration::from_secs(60), counter.add(3).call()).await;
    assert_eq!(added.expect("an engine answers").unwrap(), 5);
    t.restart().await;
    assert_eq!(counter.add(4).call().await.unwrap(), 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_and_advances_that_overlap_take_turns() {
    let t = Arc::new(TestRuntime::builder().bind(Steps::default()).build().await);
    let hourly = t
        .handle()
        .object::<Steps>("o")
        .hourly(3)
        .send()
        .await
        .unwrap();
    let start = t.now();
    let advancing = tokio::spawn({
        let t = t.clone();
        async move {
            for _ in 0..4 {
                t.advance(Duration::from_secs(3600)).await;
            }
        }
    });
    let restarting = tokio::spawn({
        let t = t.clone();
        async move {
            for _ in 0..4 {
                t.restart().await;
                t.run_until_idle().await;
            }
        }
    });
    advancing.await.expect("no advance found the engine gone");
    restarting.await.expect("no restart found the engine busy");
    assert_eq!(t.now(), start + Duration::from_secs(4 * 3600));
    assert_eq!(hourly.output().await.unwrap(), Some(3));
}

/// A typo in a filter fails the test instead of matching nothing.
#[tokio::test(flavor = "multi_thread")]
#[should_panic(expected = "unknown status 'Completed'")]
async fn a_filter_with_an_unknown_status_panics() {
    let t = TestRuntime::builder().build().await;
    t.invocations(InvocationFilter::default().status("Completed"));
}

/// A Stripe-style webhook endpoint that answers with the event's id.
#[derive(Default)]
pub struct Hooks;

#[service]
impl Hooks {
    #[handler(name = "onEvent")]
    async fn on_event(&self, _ctx: Context<'_>, event: serde_json::Value) -> HandlerResult<String> {
        Ok(event["id"].as_str().unwrap_or_default().to_owned())
    }
}

#[tokio::test]
async fn the_admin_api_and_the_public_webhook_port_serve_when_asked_and_keep_their_addresses() {
    let any_port = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let t = TestRuntime::builder()
        .bind(Hooks)
        .webhook(
            "Hooks",
            "onEvent",
            restate_runtime::webhook::Webhook::stripe(Some("whsec_t".into())),
        )
        .admin_addr(any_port)
        .webhook_addr(any_port)
        .build()
        .await;
    assert!(t.ingress_url().is_none(), "only the ports asked for");
    let (admin, public) = (t.admin_url().unwrap(), t.webhook_url().unwrap());
    assert_ne!(admin, public);
    let client = reqwest::Client::new();
    // Signed against the virtual clock, as the builder's documentation says.
    let deliver = |id: &str, secret: &str| {
        let body = serde_json::to_vec(&serde_json::json!({ "id": id, "type": "ping" })).unwrap();
        let at = t
            .now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        client
            .post(format!("{public}/Hooks/onEvent"))
            .header("content-type", "application/json")
            .header(
                "stripe-signature",
                restate_runtime::webhook::stripe_signature(secret, at, &body),
            )
            .body(body)
            .send()
    };
    let delivered = deliver("evt_1", "whsec_t").await.unwrap();
    assert_eq!(delivered.status(), 200);
    assert_eq!(delivered.text().await.unwrap(), "\"evt_1\"");
    assert_eq!(
        deliver("evt_2", "whsec_forged").await.unwrap().status(),
        401
    );
    // The public port serves webhooks and nothing else.
    let other = client.get(format!("{public}/restate/health")).send().await;
    assert_eq!(other.unwrap().status(), 404);
    // The admin API finds the event's invocation by its id, after a restart too.
    t.restart().await;
    assert_eq!(t.admin_url().unwrap(), admin);
    assert_eq!(t.webhook_url().unwrap(), public);
    let listed: serde_json::Value = client
        .get(format!("{admin}/invocations?idempotency_key=evt_1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let found = listed["invocations"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{listed}");
    assert_eq!(found[0]["status"], "completed");
    assert_eq!(deliver("evt_1", "whsec_t").await.unwrap().status(), 200);
    // Without the methods, no port at all.
    let quiet = TestRuntime::builder().build().await;
    assert!(quiet.admin_url().is_none() && quiet.webhook_url().is_none());
}

static STORAGE_FAILURES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn count_storage_failure(_reason: &str) {
    STORAGE_FAILURES.fetch_add(1, Ordering::SeqCst);
}

/// A crash fails the store of the engine it ends on purpose: no storage failure to react to,
/// on the in-memory store as on a data folder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_storage_failure_is_not_called_for_injected_crashes() {
    let folders = tempfile::tempdir().unwrap();
    for folder in [None, Some(folders.path())] {
        for n in 1..=3 {
            let t = builder_on(folder, n)
                .on_storage_failure(count_storage_failure)
                .suspend_after(Duration::from_secs(1))
                .bind(Payments::default())
                .bind(Steps::default())
                .build()
                .await;
            t.crash_after_commits(n);
            let _ = t.handle().client::<Payments>().pay("x".into()).send().await;
            t.run_until_idle().await;
            assert!(t.crashed(), "crash after commit {n}");
            t.restart().await;
            t.crash_at("suspend.committed", 1);
            let _ = t.handle().object::<Steps>("s").hourly(1).send().await;
            t.advance(Duration::from_secs(60)).await;
            assert!(t.crashed(), "crash point");
            t.restart().await;
            t.advance(HOUR).await;
            assert_eq!(
                t.invocations(InvocationFilter::default().status("completed"))
                    .len(),
                2,
                "{n}"
            );
        }
    }
    // Time for a wrongly called hook to have run.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(STORAGE_FAILURES.load(Ordering::SeqCst), 0);
}

/// A name the runtime does not serve, read back as "nothing there", would let an assertion of
/// absence pass on a typo: the inspection methods say what is bound instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspecting_under_a_misspelt_name_panics_with_what_is_bound() {
    let t = TestRuntime::builder()
        .bind(Steps::default())
        .bind(Gated)
        .build()
        .await;
    let panics = |read: &dyn Fn()| {
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read))
            .expect_err("a misspelt name panics");
        panic.downcast_ref::<String>().cloned().unwrap_or_default()
    };
    let message = panics(&|| {
        let _ = t.state::<u32>("Stepz", "k", "n");
    });
    assert!(
        message.contains("no service named `Stepz` is bound"),
        "{message}"
    );
    assert!(
        message.contains("\"Steps\""),
        "names what is bound: {message}"
    );
    let message = panics(&|| drop(t.state_keys("Gated", "k")));
    assert!(message.contains("`Gated` is a service"), "{message}");
    let message = panics(&|| drop(t.invocations(InvocationFilter::default().service("Stepz"))));
    assert!(message.contains("no service named `Stepz`"), "{message}");
    let filter = InvocationFilter::default().service("Steps").handler("nope");
    let message = panics(&|| drop(t.invocations(filter.clone())));
    assert!(
        message.contains("`Steps` has no handler `nope`"),
        "{message}"
    );
    let filter = InvocationFilter::default().handler("nope");
    let message = panics(&|| drop(t.invocations(filter.clone())));
    assert!(
        message.contains("no bound service has a handler `nope`"),
        "{message}"
    );
    // Bound names that match nothing yet read as nothing.
    assert_eq!(t.state::<u32>("Steps", "k", "n"), None);
    assert!(t.state_keys("Steps", "k").is_empty());
    let filter = InvocationFilter::default().service("Steps").handler("note");
    assert!(t.invocations(filter).is_empty());
}
