//! Context operations created where a replay would not meet them (inside a `ctx.run` closure,
//! inside an `async` branch of `ctx.select`) pause the invocation on its first run with a
//! message that says why, instead of a "the code changed" at some later replay; the forms that
//! are safe (a step passed to `select` as it is) replay; a panicking step is retried by its
//! own policy.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use restate_runtime::prelude::*;
use restate_runtime::testing::TestRuntime;
use restate_runtime::{Either, InvocationId, RetryPolicy};

#[derive(Default, Clone)]
pub struct Misuse {
    attempts: Arc<AtomicU32>,
}

#[service]
impl Misuse {
    /// Sleeps inside a step's closure.
    #[handler]
    async fn sleep_in_step(&self, ctx: Context<'_>) -> HandlerResult<()> {
        ctx.run(|| async {
            ctx.sleep(Duration::from_secs(1)).await?;
            Ok(())
        })
        .name("inner")
        .await?;
        Ok(())
    }

    /// Draws a random number inside a step's closure.
    #[handler]
    async fn rand_in_step(&self, ctx: Context<'_>) -> HandlerResult<u32> {
        let drawn = ctx
            .run(|| async { Ok(ctx.rand().next_u32()) })
            .name("draw")
            .await?;
        Ok(drawn)
    }

    /// Races an async block of two steps against a deadline.
    #[handler]
    async fn async_branch(&self, ctx: Context<'_>) -> HandlerResult<u32> {
        let branch = async {
            ctx.sleep(Duration::from_millis(10)).await?;
            ctx.run(|| async { Ok(1u32) }).name("after").await
        };
        match ctx.select(branch, ctx.sleep(Duration::from_secs(5))).await {
            Either::Left(v) => Ok(v?),
            Either::Right(_) => Ok(0),
        }
    }

    /// Races an operation made before against a deadline; the winning branch sends a note in
    /// the poll it finishes in. Then sleeps (the test restarts there) and takes a step.
    #[handler]
    async fn notify_when_done(&self, ctx: Context<'_>) -> HandlerResult<u32> {
        let quick = ctx.sleep(Duration::from_millis(10));
        let branch = async {
            quick.await?;
            ctx.client::<Misuse>().noop().send();
            Ok::<_, TerminalError>(ctx.rand().next_u32() % 10 + 1)
        };
        let won = match ctx.select(branch, ctx.sleep(Duration::from_secs(5))).await {
            Either::Left(v) => v?,
            Either::Right(_) => 0,
        };
        ctx.sleep(Duration::from_secs(60)).await?;
        ctx.run(|| async { Ok(()) }).name("after").await?;
        Ok(won)
    }

    #[handler]
    async fn noop(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }

    /// Races a slow step, passed as it is, against a deadline, then sleeps (where the test
    /// restarts the runtime) and takes one more step.
    #[handler]
    async fn step_with_deadline(&self, ctx: Context<'_>) -> HandlerResult<String> {
        let slow = ctx.run(|| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok("slow".to_owned())
        });
        let first = match ctx
            .select(slow.name("slow"), ctx.sleep(Duration::from_secs(60)))
            .await
        {
            Either::Left(v) => v?,
            Either::Right(_) => "timed out".to_owned(),
        };
        ctx.sleep(Duration::from_secs(120)).await?;
        let last = ctx
            .run(|| async { Ok("last".to_owned()) })
            .name("last")
            .await?;
        Ok(format!("{first}, {last}"))
    }

    /// A step that panics, with a policy of three attempts.
    #[handler]
    async fn panicking_step(&self, ctx: Context<'_>) -> HandlerResult<()> {
        let attempts = self.attempts.clone();
        let result = ctx
            .run(|| async {
                attempts.fetch_add(1, Ordering::SeqCst);
                if attempts.load(Ordering::SeqCst) > 0 {
                    panic!("the card processor's client panicked");
                }
                Ok(())
            })
            .name("charge")
            .retry_policy(RetryPolicy::fixed(Duration::from_millis(10)).max_attempts(3))
            .await;
        match result {
            Err(e) => Err(TerminalError::new(format!("compensated: {}", e.message())).into()),
            Ok(()) => Ok(()),
        }
    }
}

async fn runtime(misuse: &Misuse) -> TestRuntime {
    TestRuntime::builder().bind(misuse.clone()).build().await
}

/// Why invocation `id` is paused, once the runtime has run ten seconds on.
async fn paused_after(t: &TestRuntime, id: InvocationId) -> String {
    t.advance(Duration::from_secs(10)).await;
    let view = t.invocation(id).unwrap();
    assert_eq!(view.status(), "paused", "{:?}", view.record);
    view.record.last_error.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sleep_inside_a_step_pauses_the_invocation_and_says_why() {
    let t = runtime(&Misuse::default()).await;
    let sent = t.handle().client::<Misuse>().sleep_in_step().send().await;
    let message = paused_after(&t, sent.unwrap().invocation_id()).await;
    assert!(message.contains("inside a `ctx.run` closure"), "{message}");
    assert!(message.starts_with("non-determinism"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_random_draw_inside_a_step_pauses_the_invocation() {
    let t = runtime(&Misuse::default()).await;
    let sent = t.handle().client::<Misuse>().rand_in_step().send().await;
    let message = paused_after(&t, sent.unwrap().invocation_id()).await;
    assert!(message.contains("`ctx.rand()`"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_async_branch_of_a_select_pauses_on_its_first_run() {
    let t = runtime(&Misuse::default()).await;
    let sent = t.handle().client::<Misuse>().async_branch().send().await;
    let message = paused_after(&t, sent.unwrap().invocation_id()).await;
    assert!(
        message.contains("`ctx.select` polled its branch 0"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_passed_to_select_as_it_is_wins_and_replays_after_a_restart() {
    let misuse = Misuse::default();
    let t = runtime(&misuse).await;
    let sent = t
        .handle()
        .client::<Misuse>()
        .step_with_deadline()
        .send()
        .await;
    let id = sent.unwrap().invocation_id();
    // The step's closure runs on the real clock; the deadline is a minute of virtual time.
    let done = |t: &TestRuntime| t.invocation(id).unwrap().run_names().contains(&"slow");
    while !done(&t) {
        t.advance(Duration::from_millis(1)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.advance(Duration::from_secs(61)).await;
    // Every operation of the select is complete now; the replay keeps the journaled winner.
    t.restart().await;
    t.advance(Duration::from_secs(120)).await;
    let view = t.invocation(id).unwrap();
    assert_eq!(
        view.output::<String>(),
        Some(Ok("slow, last".to_owned())),
        "{:?}",
        view.record
    );
    assert_eq!(view.run_names(), ["slow", "last"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_step_is_retried_by_its_own_policy_then_fails_terminally() {
    let misuse = Misuse::default();
    let t = runtime(&misuse).await;
    let outcome = t.handle().client::<Misuse>().panicking_step().call();
    let driven = async {
        for _ in 0..50 {
            t.advance(Duration::from_millis(100)).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let (outcome, ()) = tokio::join!(outcome, driven);
    let error = outcome.unwrap_err().to_string();
    assert!(error.contains("compensated"), "{error}");
    assert!(error.contains("panicked"), "{error}");
    assert_eq!(misuse.attempts.load(Ordering::SeqCst), 3);
}

/// Exclusive handlers that wait for what cannot end before they do.
#[derive(Default)]
pub struct Looper;

#[object]
impl Looper {
    /// Sends the next one to its own key, then waits for it.
    #[handler]
    async fn wait_for_next(&self, ctx: ObjectContext<'_>) -> HandlerResult<()> {
        let next = ctx.object::<Looper>(ctx.key()).next().send();
        next.attach().await?;
        Ok(())
    }

    /// Sends the next one to its own key, cancels it, then waits for it.
    #[handler]
    async fn wait_for_cancelled(&self, ctx: ObjectContext<'_>) -> HandlerResult<String> {
        let next = ctx.object::<Looper>(ctx.key()).next().send();
        next.cancel();
        match next.attach().await {
            Ok(()) => Ok("ran".into()),
            Err(e) => Ok(e.message().to_owned()),
        }
    }

    /// Waits for itself.
    #[handler]
    async fn wait_for_itself(&self, ctx: ObjectContext<'_>) -> HandlerResult<()> {
        ctx.attach::<()>(ctx.invocation_id()).await?;
        Ok(())
    }

    #[handler]
    async fn next(&self, _ctx: ObjectContext<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_for_an_invocation_queued_behind_on_the_key_or_for_itself_fails_at_once() {
    let t = TestRuntime::builder().bind(Looper).build().await;
    let looper = t.handle().object::<Looper>("k");
    let next = tokio::time::timeout(Duration::from_secs(30), looper.wait_for_next().call());
    let error = next.await.expect("answered").unwrap_err().to_string();
    assert!(error.contains("deadlock"), "{error}");
    let itself = tokio::time::timeout(Duration::from_secs(30), looper.wait_for_itself().call());
    let error = itself.await.expect("answered").unwrap_err().to_string();
    assert!(error.contains("deadlock"), "{error}");
    // One it cancelled first ends at once: its cancellation is the answer, not a deadlock.
    let cancelled = looper.wait_for_cancelled().call();
    let answer = tokio::time::timeout(Duration::from_secs(30), cancelled).await;
    assert_eq!(answer.expect("answered").unwrap(), "cancelled");
    // The one it sent still runs, once the key is free.
    t.run_until_idle().await;
    let ran = t.invocations(
        restate_runtime::testing::InvocationFilter::default()
            .service("Looper")
            .status("completed"),
    );
    assert_eq!(
        ran.len(),
        5,
        "three callers, the one sent, the one cancelled"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_branch_that_creates_in_the_poll_it_wins_in_runs_and_replays() {
    let t = runtime(&Misuse::default()).await;
    let sent = t
        .handle()
        .client::<Misuse>()
        .notify_when_done()
        .send()
        .await;
    let id = sent.unwrap().invocation_id();
    t.advance(Duration::from_secs(1)).await;
    t.restart().await;
    t.advance(Duration::from_secs(120)).await;
    let view = t.invocation(id).unwrap();
    let won = view.output::<u32>();
    assert!(matches!(won, Some(Ok(1..=10))), "{won:?} {:?}", view.record);
    assert_eq!(view.run_names(), ["after"]);
    let notes = t.invocations(
        restate_runtime::testing::InvocationFilter::default()
            .service("Misuse")
            .status("completed"),
    );
    assert_eq!(notes.len(), 2, "the handler and its one note");
}
