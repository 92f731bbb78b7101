//! Durable sleep: the wake-up time is journaled, so a replay sleeps until the same instant; a
//! long sleep suspends the invocation, and a timer resumes it. A cancellation ends it early.

use std::time::Duration;

use tracing::Instrument;

use super::invocation::InvocationContext;
use crate::clock::millis;
use crate::error::TerminalError;
use crate::storage::JournalEntry;
use crate::telemetry;

impl InvocationContext {
    /// Journals the wake-up time (or reads it back on replay) and sleeps until then; a long
    /// sleep suspends the invocation, and a timer resumes it. A cancellation ends it early.
    pub(crate) fn sleep(
        &self,
        duration: Duration,
    ) -> impl Future<Output = Result<(), TerminalError>> + Send + '_ {
        self.sleep_at(self.take_index(), duration)
    }

    /// [`Self::sleep`] at a position taken earlier.
    pub(crate) fn sleep_at(
        &self,
        index: u32,
        duration: Duration,
    ) -> impl Future<Output = Result<(), TerminalError>> + Send + '_ {
        let mut span = tracing::Span::none();
        let wake_at_ms =
            match self.replay_as(index, "sleep", |e| matches!(e, JournalEntry::Sleep { .. })) {
                Ok(Some(JournalEntry::Sleep {
                    cancelled: true, ..
                })) => Err(true),
                Ok(Some(JournalEntry::Sleep { wake_at_ms, .. })) => Ok(wake_at_ms),
                Ok(_) => {
                    span = telemetry::step_span("sleep", &format_args!("{duration:?}"));
                    let wake_at_ms = self.engine.now_ms().saturating_add(millis(duration));
                    let entry = JournalEntry::Sleep {
                        wake_at_ms,
                        cancelled: false,
                    };
                    drop(self.journal(index, entry, Vec::new()));
                    Ok(wake_at_ms)
                }
                Err(()) => Err(false),
            };
        // Registered now, not when first polled: a sibling wait (an attach raced against this
        // timer by `or_timeout`, polled first) that suspends the attempt before this sleep is
        // polled must still give the suspension this wake-up time, or nothing would wake it.
        let wait = wake_at_ms.ok().map(|at| (at, self.waiting(Some(at))));
        async move {
            let (wake_at_ms, wait) = match (wait, wake_at_ms) {
                (Some(wait), _) => wait,
                (None, Err(true)) => return Err(cancelled_error()),
                (None, _) => return std::future::pending().await,
            };
            let mut changes = self.inflight.changes();
            let clock = &self.engine.config().clock;
            let suspend_at = clock.deadline_after(self.engine.config().suspend_after);
            let mut slot_watch = self.slot_watch();
            loop {
                wait.saw(*changes.borrow_and_update());
                // An elapsed sleep is done: a cancellation lands at the next await point.
                if clock.now_ms() >= wake_at_ms {
                    return Ok(());
                }
                let cancelled = JournalEntry::Sleep {
                    wake_at_ms,
                    cancelled: true,
                };
                if self.deliver_cancel(index, || cancelled) {
                    return Err(cancelled_error());
                }
                if self.replay_ends() {
                    return std::future::pending().await;
                }
                // One timer per wait: the earlier of the wake-up and the suspension delay.
                let next = clock.deadline_at_ms(wake_at_ms).min(suspend_at);
                tokio::select! {
                    _ = clock.sleep_until(next) => {
                        // A sleep due when the suspension delay ends is done, not suspended.
                        if clock.now_ms() < wake_at_ms && clock.reached(suspend_at) {
                            self.suspend_after_siblings().await;
                            return std::future::pending().await;
                        }
                    }
                    _ = changes.changed() => {}
                    () = self.slot_given_up(slot_watch.as_mut()) => {
                        self.suspend_after_siblings().await;
                        return std::future::pending().await;
                    }
                }
            }
        }
        .instrument(span)
    }
}

fn cancelled_error() -> TerminalError {
    TerminalError::new_with_code(409, "cancelled")
}
