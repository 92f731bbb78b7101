//! Attempts that the process ended during: a handler that takes its process down (an abort, a
//! stack overflow, the OOM killer) would take down every restart with it, and everything else
//! the process runs, for ever. So an attempt that a restart or a takeover begins is counted in
//! the invocation's record, durably, before it runs; an attempt that ends (success, failure,
//! suspension, pause) writes its record without the count. A restart that finds the count
//! still there knows that many attempts in a row ended with their process, and past
//! [`EngineConfig::max_interrupted_attempts`](super::EngineConfig) pauses the invocation
//! instead of running it again.
//!
//! Only attempts begun from the store are counted, so nothing is written on the request path;
//! the first attempt a process ends during is therefore not counted (its record was written
//! before it began, if at all), only those after. An attempt whose journal got further than
//! the one before it starts the count afresh: a long workflow that a process ended during now
//! and then is not stuck. Which invocation took the process down cannot be told: one that
//! waited for a long step behind the culprit through as many restarts is paused with it, and a
//! resume runs it again.

use super::{Engine, Inflight};
use crate::filter::PauseReason;
use crate::storage::{Interrupted, WriteOp};

/// Default of [`EngineConfig::max_interrupted_attempts`](super::EngineConfig).
pub(crate) const DEFAULT_MAX_INTERRUPTED_ATTEMPTS: u32 = 20;

/// What an attempt about to begin does, once counted.
pub(super) enum Counted {
    /// Runs.
    Run,
    /// Is not run: the invocation is paused for this reason instead.
    Pause(String),
    /// Is not run: the count could not be written (its partition left, the store failed), and
    /// nothing of the attempt may happen here.
    Refused,
}

impl Engine {
    /// Before an attempt: for the first one of an invocation restored from the store, counts
    /// it in the record and waits for that to commit; past as many attempts in a row as
    /// allowed that ended with their process, says to pause it instead.
    pub(super) async fn count_interrupted(&self, inflight: &Inflight) -> Counted {
        let written = {
            let mut state = inflight.state();
            let max = self.config.max_interrupted_attempts;
            let Some(stored_status) = state.restored.take().filter(|_| max > 0) else {
                return Counted::Run;
            };
            let journal_len = u32::try_from(state.journal.entries().len()).unwrap_or(u32::MAX);
            let before = state
                .record
                .interrupted
                .filter(|last| last.journal_len >= journal_len)
                .map_or(0, |last| last.attempts);
            if before >= max {
                return Counted::Pause(format!(
                    "{}: its process ended during {before} attempts in a row, none getting \
                     past its first {journal_len} journal entries; fix what takes it down (an \
                     abort, a stack overflow, memory) and resume it, or kill it",
                    PauseReason::Interrupted.marker()
                ));
            }
            state.record.interrupted = Some(Interrupted {
                attempts: before + 1,
                journal_len,
            });
            // With the status it has on disk: a delayed one that fired stays `Scheduled` there
            // and a woken one `Suspended`, as recovery expects of them.
            let running = std::mem::replace(&mut state.record.status, stored_status);
            let put = WriteOp::put_invocation(inflight.id, &state.record);
            state.record.status = running;
            self.storage.submit(vec![put])
        };
        match written.await {
            Ok(()) => Counted::Run,
            Err(_) => Counted::Refused,
        }
    }
}
