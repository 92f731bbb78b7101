//! Runs one invocation to its end: attempt, retry with backoff, pause, or complete.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use futures::FutureExt;
use tokio::sync::watch;
use tracing::Instrument;

use super::{Engine, Inflight};
use crate::context::InvocationContext;
use crate::context::invocation::Abort;
use crate::error::TerminalError;
use crate::filter::PauseReason;
use crate::logs;
use crate::registry::OnMaxAttempts;
use crate::storage::Outcome;
use crate::telemetry;

/// How one attempt ended.
enum Attempt {
    Success(Bytes),
    Terminal(TerminalError),
    Retry(String),
    Pause(String),
    Lost(String),
    Suspend { seen: u64, wake_at_ms: Option<u64> },
    Killed,
    Shutdown,
}

impl Attempt {
    /// How an attempt stopped by `abort` ended.
    fn stopped(abort: Abort) -> Self {
        match abort {
            Abort::Retry(m) => Self::Retry(m),
            Abort::Pause(m) => Self::Pause(m),
            Abort::Lost(m) => Self::Lost(m),
            Abort::Suspend { seen, wake_at_ms } => Self::Suspend { seen, wake_at_ms },
            // Only a replay check's engine stops there, and it runs no attempts.
            Abort::ReplayEnds => Self::Shutdown,
        }
    }

    /// What became of the attempt, for its span, and the error if it failed.
    fn describe(&self) -> (&'static str, Option<String>) {
        match self {
            Self::Success(_) => ("success", None),
            Self::Terminal(e) => ("failure", Some(e.message().to_owned())),
            Self::Retry(reason) => ("retry", Some(reason.clone())),
            Self::Pause(reason) => ("paused", Some(reason.clone())),
            Self::Lost(reason) => ("lost", Some(reason.clone())),
            Self::Suspend { .. } => ("suspended", None),
            Self::Killed => ("killed", None),
            Self::Shutdown => ("stopped", None),
        }
    }
}

pub(crate) async fn run(engine: Engine, inflight: Arc<Inflight>) {
    let (target, input, stored_retry) = {
        let state = inflight.state();
        (
            state.record.target.clone(),
            Bytes::from(state.record.input.clone()),
            state.record.retry,
        )
    };
    let invocation = Arc::new(logs::Invocation {
        id: inflight.id,
        target,
    });
    inflight
        .running
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let guard = RunningGuard(engine.clone(), inflight.clone());
    let task = async {
        let target = &invocation.target;
        let _running = guard;
        let gate = inflight.take_gate();
        let first_run = gate.is_some();
        if let Some(Err(e)) = futures::future::OptionFuture::from(gate).await {
            return lose(&engine, &inflight, e.to_string()).await;
        }
        if inflight.moved_to_inbox() {
            return engine.leave_for_inbox(&inflight);
        }
        // Once: a resumption (after a pause before any attempt) comes without the gate.
        if first_run && inflight.placed_by_commit() {
            engine.count_placed_start(&inflight);
        }
        let (service, options) = match engine.resolve(target) {
            Ok((service, handler)) => (service.instance.clone(), handler.options.clone()),
            Err(e) => {
                // The binary no longer serves this target (a handler was removed or renamed):
                // kept, paused, for a binary that serves it again (then resumed) or a kill.
                let reason = format!(
                    "{}: {e}; deploy a binary that serves it and resume it, or kill it",
                    PauseReason::UnknownTarget.marker()
                );
                return pause(&engine, &inflight, reason).await;
            }
        };
        let mut shutdown = engine.shutdown_signal();
        let mut departures = engine.departures.subscribe();
        let policy = options.retry_policy;
        // Failures since it started afresh, which the retry policy counts, and when the next
        // attempt is due: carried over from its record, where a failure left them before the
        // process stopped (found from outside: a restart counted from nought and ran the next
        // attempt at once, so a process restarted often never reached `max_attempts`). A
        // suspension or pause writes the record without them: its resume counts afresh.
        // The wait is capped by what the policy now gives (a deploy that shortened it, a
        // clock set back, another process's clock ahead).
        let mut failures = stored_retry.map_or(0, |retry| retry.failures);
        let mut retry_at_ms = stored_retry.map(|retry| {
            let capped = engine
                .now_ms()
                .saturating_add(crate::clock::millis(policy.delay_for(failures)));
            retry.next_at_ms.min(capped)
        });
        // A cancel ends one wait between attempts, the next attempt then taking it at its
        // first await; an attempt that fails before one waits out the next delay as any.
        let mut wait_cut_by_cancel = false;
        loop {
            // Only a wait still to come: one stored earlier in this run that is past (it was
            // mid-attempt at the crash) keeps its restore slot.
            if let Some(at) = retry_at_ms.take().filter(|at| *at > engine.now_ms()) {
                // Between attempts it runs nothing: a slot of a bounded restore goes to the
                // next one on disk (found from outside: after a restart during an outage,
                // the ones backing off held every slot, and nothing else was restored).
                inflight.release_slot();
                let killed = tokio::select! {
                    () = inflight.back_off(&engine.config().clock, at) => false,
                    // The next attempt starts now and takes it at its first await (found from
                    // outside: a cancel waited out the whole delay, an hour for some).
                    () = inflight.cancel_requested(), if !wait_cut_by_cancel => {
                        wait_cut_by_cancel = true;
                        false
                    }
                    _ = inflight.killed.notified() => true,
                    () = stopped(&mut shutdown, &mut departures, &inflight) => return,
                };
                if killed {
                    return complete(&engine, &inflight, super::control::killed()).await;
                }
            }
            let running = tokio::select! {
                biased;
                () = stopped_now(&engine, &inflight) => return,
                _ = inflight.killed.notified() => None,
                running = async {
                    let running = engine.drain.start_attempt().await;
                    // Nor an attempt, while the partition may have gone unseen (a pause);
                    // looked at once the drain lets it start, which can be long after.
                    engine.lease_held(Some(&inflight.id)).await;
                    running
                } => Some(running),
                () = stopped(&mut shutdown, &mut departures, &inflight) => return,
            };
            let Some(running) = running else {
                // Killed while a drain held it back.
                return complete(&engine, &inflight, super::control::killed()).await;
            };
            match engine.count_interrupted(&inflight).await {
                super::interrupted::Counted::Run => {}
                super::interrupted::Counted::Pause(reason) => {
                    drop(running);
                    return pause(&engine, &inflight, reason).await;
                }
                // The task stops at the departure or the store's failure that refused it.
                super::interrupted::Counted::Refused => return,
            }
            let span = {
                let mut state = inflight.state();
                state.record.attempts += 1;
                let record = &state.record;
                telemetry::attempt_span(&inflight.id, target, record.attempts, &record.headers)
            };
            let ctx = InvocationContext::new(engine.clone(), inflight.clone());
            let attempt = {
                let handler = service
                    .invoke(&target.handler, &ctx, input.clone())
                    .instrument(span.clone());
                let handler = AssertUnwindSafe(handler).catch_unwind();
                tokio::select! {
                    // Looked at first: a handler that could go on as its partition leaves (or
                    // the engine stops) does not take another step here.
                    biased;
                    () = stopped_now(&engine, &inflight) => Attempt::Shutdown,
                    result = handler => match result {
                        Ok(Ok(output)) => Attempt::Success(output),
                        Ok(Err(e)) => match e.into_terminal() {
                            Ok(t) => Attempt::Terminal(t),
                            Err(e) => Attempt::Retry(e.to_string()),
                        },
                        Err(panic) => Attempt::Retry(format!("handler panicked: {}", crate::error::panic_message(&panic))),
                    },
                    abort = ctx.aborted() => Attempt::stopped(abort),
                    _ = inflight.killed.notified() => Attempt::Killed,
                    () = stopped(&mut shutdown, &mut departures, &inflight) => Attempt::Shutdown,
                }
            };
            // A handler stopped by something it did (a write it could not make) may return in
            // the same poll: the stop wins, or what it stopped for would be lost.
            let attempt = match attempt {
                Attempt::Success(_) | Attempt::Terminal(_) if ctx.is_stopped() => {
                    match ctx.aborted().await {
                        // A suspension asked for while the handler finished, nothing refused
                        // meanwhile (a refused write marks it `u64::MAX`): the result stands.
                        Abort::Suspend { seen, .. } if seen != u64::MAX => attempt,
                        abort => Attempt::stopped(abort),
                    }
                }
                attempt => attempt,
            };
            // A handler that returns before reaching entries its journal holds took another
            // path than the attempt that wrote them: paused, not completed past them.
            // Paused directly: the attempt may have been stopped already (a suspension asked
            // for as it returned), which a stop for the pause would not replace.
            let attempt = match attempt {
                Attempt::Success(_) | Attempt::Terminal(_) => match ctx.ended_early() {
                    Some(reason) => Attempt::Pause(reason),
                    None => attempt,
                },
                attempt => attempt,
            };
            // Over a failed store no attempt can succeed and the process ends (law 10): the
            // invocation is left to the restart, not retried against it.
            let attempt = match attempt {
                Attempt::Retry(reason) if engine.storage.failure().borrow().is_some() => {
                    Attempt::Lost(reason)
                }
                attempt => attempt,
            };
            if !span.is_disabled() {
                let (outcome, error) = attempt.describe();
                telemetry::record_outcome(&span, outcome, error.as_deref());
            }
            drop(span);
            match attempt {
                Attempt::Success(output) => {
                    let outcome = ctx.ending(Outcome::Success(output.to_vec()));
                    return complete(&engine, &inflight, outcome).await;
                }
                // A cancel asked for and not yet taken, of one with nothing journaled (nothing
                // to compensate, no call to cancel with it): it ends here as its first await
                // would have ended it (found from outside: an attempt that fails before any
                // await ran again and again, each wait ended by the cancel, then was paused
                // with its retries spent). One with a journal retries, and takes the
                // cancellation at its next await, where its handler can compensate; if none
                // gets there before its retries are spent, the cancel ends it, not a pause.
                Attempt::Retry(reason)
                    if ctx.cancel_pending()
                        && (inflight.state().journal.is_empty()
                            || !policy.allows_another(failures + 1)) =>
                {
                    tracing::info!(%reason, "invocation cancelled: its attempt failed with the cancellation not yet taken");
                    // Its last error is this attempt's, as a kill's after its attempts is.
                    inflight.state().record.last_error = Some(reason);
                    let cancelled = crate::context::invocation::cancelled_outcome();
                    return complete(&engine, &inflight, ctx.ending(cancelled)).await;
                }
                Attempt::Terminal(error) => {
                    tracing::info!(code = error.code(), message = %error.message(), "invocation failed terminally");
                    return complete(&engine, &inflight, ctx.ending(Outcome::failure(&error)))
                        .await;
                }
                Attempt::Retry(reason) if policy.allows_another(failures + 1) => {
                    failures += 1;
                    engine.metrics.retries.inc();
                    if let Some(label) = engine.handler_label(target) {
                        engine.metrics.handler_retries.get_or_create(&label).inc();
                    }
                    let delay = policy.delay_for(failures);
                    tracing::warn!(attempt = failures, ?delay, %reason, "invocation attempt failed; retrying");
                    let at = engine.now_ms().saturating_add(crate::clock::millis(delay));
                    // Durable before the attempt counts as ended: a drain that then says
                    // ready, and the stop after it, keep the count and the wait.
                    if let Some(written) = engine.record_failure(&inflight, reason, failures, at) {
                        // Refused: its partition left, and the task stops at its departure.
                        let _ = written.await;
                    }
                    drop(running);
                    retry_at_ms = Some(at);
                }
                Attempt::Retry(reason) => {
                    let attempts = failures + 1;
                    return match options.on_max_attempts {
                        OnMaxAttempts::Pause => {
                            let reason = format!(
                                "{} after {}: {reason}",
                                PauseReason::RetriesExhausted.marker(),
                                crate::registry::attempts_made(attempts)
                            );
                            pause(&engine, &inflight, reason).await
                        }
                        OnMaxAttempts::Kill => {
                            // Its last error is this attempt's, as a pause's is.
                            inflight.state().record.last_error = Some(reason.clone());
                            let message = format!(
                                "killed after {}: {reason}",
                                crate::registry::attempts_made(attempts)
                            );
                            let outcome = Outcome::Failure { code: 409, message };
                            complete(&engine, &inflight, outcome).await
                        }
                    };
                }
                Attempt::Pause(reason) => return pause(&engine, &inflight, reason).await,
                Attempt::Lost(reason) => return lose(&engine, &inflight, reason).await,
                Attempt::Suspend { seen, wake_at_ms } => {
                    if suspend(&engine, &inflight, seen, wake_at_ms).await {
                        return;
                    }
                }
                Attempt::Killed => {
                    return complete(&engine, &inflight, super::control::killed()).await;
                }
                Attempt::Shutdown => return,
            }
        }
    };
    logs::within(invocation.clone(), task).await
}

/// Ready when [`stopped`] would be now, but pending without a wake-up: looked at before each
/// step of the task, it keeps the handler from taking one after a stop, while [`stopped`],
/// looked at last, wakes the task. A handler that ends in its first step (most do) then never
/// registers with the two signals (a lock each, and again to leave).
fn stopped_now<'a>(engine: &'a Engine, inflight: &'a Inflight) -> impl Future<Output = ()> + 'a {
    std::future::poll_fn(move |_| {
        let stopped =
            inflight.left.load(std::sync::atomic::Ordering::SeqCst) || *engine.shutdown.borrow();
        if stopped {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
}

/// Resolves once the engine shuts down or the invocation's partition left this process:
/// either way its task stops where it is, and writes nothing more.
pub(super) async fn stopped(
    shutdown: &mut watch::Receiver<bool>,
    departures: &mut watch::Receiver<u64>,
    inflight: &Inflight,
) {
    tokio::select! {
        _ = shutdown.wait_for(|stop| *stop) => {}
        _ = departures.wait_for(|_| inflight.left.load(std::sync::atomic::Ordering::SeqCst)) => {}
    }
}

// The endings below run once per task; boxed, their state is not part of every task for the
// whole time its handler waits (the task is 1 KiB instead of 1.6).

async fn complete(engine: &Engine, inflight: &Arc<Inflight>, outcome: Outcome) {
    Box::pin(engine.complete(inflight, outcome)).await
}

async fn lose(engine: &Engine, inflight: &Arc<Inflight>, reason: String) {
    Box::pin(engine.lose_refused(inflight, reason)).await
}

async fn pause(engine: &Engine, inflight: &Arc<Inflight>, reason: String) {
    Box::pin(engine.pause(inflight, reason)).await
}

async fn suspend(
    engine: &Engine,
    inflight: &Arc<Inflight>,
    seen: u64,
    wake_at_ms: Option<u64>,
) -> bool {
    Box::pin(engine.suspend(inflight, seen, wake_at_ms)).await
}

/// Gives back what the invocation took to run and clears `running`, however the task ends
/// (in this order: a task started right after takes its own). A kill that arrived as the task
/// ended (it paused or suspended without seeing it) is carried out here: the kill found this
/// task running and waits for it.
struct RunningGuard(Engine, Arc<Inflight>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::SeqCst;
        let inflight = &self.1;
        inflight.disengage();
        inflight.running.store(false, SeqCst);
        if inflight.kill_requested.load(SeqCst)
            && !inflight.finished.load(SeqCst)
            && !inflight.left.load(SeqCst)
            && !inflight.running.swap(true, SeqCst)
        {
            self.0
                .tasks
                .spawn(end_killed(self.0.clone(), inflight.clone()));
        }
    }
}

/// Completes `inflight` as killed in a task of its own (a boxed future: completing wakes
/// waiters, which may start tasks like the one whose guard calls this).
fn end_killed(engine: Engine, inflight: Arc<Inflight>) -> futures::future::BoxFuture<'static, ()> {
    Box::pin(async move {
        (engine.complete_claimed(&inflight, super::control::killed())).await;
    })
}
