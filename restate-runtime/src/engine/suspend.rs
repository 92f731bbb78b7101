//! Suspension: an invocation waiting for long leaves memory (record durable as `Suspended`),
//! and comes back by replay when a timer fires or one of its journal entries is completed from
//! outside (a call's result, an awakeable, a promise): see `wake.rs` for why no wake-up is lost.

use std::sync::Arc;

use tokio::sync::watch;

use super::{Engine, Finish, Inflight};
use crate::ids::InvocationId;
use crate::storage::{Status, WriteOp};

impl Engine {
    /// The finish channel of an invocation, created on first use.
    pub(crate) fn finisher(&self, id: InvocationId) -> watch::Sender<Finish> {
        self.finishers
            .lock()
            .expect("finishers")
            .entry(id)
            .or_insert_with(|| watch::channel(Finish::Pending).0)
            .clone()
    }

    /// Forgets a finish channel nobody listens on and no invocation in memory holds.
    pub(crate) fn drop_finisher_if_idle(&self, id: &InvocationId) {
        let mut finishers = self.finishers.lock().expect("finishers");
        if finishers
            .get(id)
            .is_some_and(|f| f.receiver_count() == 0 && f.sender_count() == 1)
        {
            finishers.remove(id);
        }
    }

    /// Suspends a waiting invocation unless something completed since the wait looked
    /// (`seen_version`) or the sleep it awaits (`wake_at_ms`) is already due. Returns false when
    /// the attempt should simply run again.
    ///
    /// The invocation stays in memory until its `Suspended` record is durable, so a completion
    /// or timer in that window finds it there and bumps its version; then it runs again
    /// instead of leaving (see `wake.rs`).
    pub(crate) async fn suspend(
        &self,
        inflight: &Arc<Inflight>,
        seen_version: u64,
        wake_at_ms: Option<u64>,
    ) -> bool {
        let now = self.now_ms();
        if wake_at_ms.is_some_and(|at| at <= now) {
            return false;
        }
        let waiter = {
            let _map = self.inflight.lock().expect("inflight map");
            if inflight.version() != seen_version {
                return false;
            }
            let mut state = inflight.state();
            state
                .record
                .end_attempt(Status::Suspended { wake_at_ms }, now);
            state.persisted = true;
            let mut ops = vec![WriteOp::put_invocation(inflight.id, &state.record)];
            // Wake-up rows are only written while the stored record may say suspended: an
            // invocation suspending for the first time since it was stored runnable has none.
            if state.stored_suspended {
                ops.push(WriteOp::ClearWakes {
                    id: inflight.id,
                    indexes: super::wake::seen_wakes(&state.journal),
                });
            }
            state.stored_suspended = true;
            if let Some(at) = wake_at_ms {
                self.timers.schedule(at, inflight.id);
            }
            self.storage.submit(ops)
        };
        if let Err(e) = waiter.await {
            Box::pin(self.lose_refused(inflight, e.to_string())).await;
            return true;
        }
        if self.crash_point("suspend.committed") {
            return true;
        }
        // Durable now: in the store's due index, and in the window if it came within it while
        // the write committed.
        if let Some(at) = wake_at_ms {
            self.timers.schedule(at, inflight.id);
        }
        let mut map = self.inflight.lock().expect("inflight map");
        if inflight.version() != seen_version
            || inflight
                .kill_requested
                .load(std::sync::atomic::Ordering::SeqCst)
        {
            // Woken while the suspension committed; the wake-up is durable (a wake-up row or
            // the timer in the record), so it may simply run on.
            inflight.state().record.status = Status::Runnable;
            return false;
        }
        map.remove(&inflight.id);
        // Nobody waits on it now: a suspended invocation keeps no channel (an attacher
        // creates one). Whoever waits hears that it is idle.
        let mut finishers = self.finishers.lock().expect("finishers");
        if finishers
            .get(&inflight.id)
            .is_some_and(|f| f.receiver_count() == 0)
        {
            finishers.remove(&inflight.id);
        } else {
            inflight.idle();
        }
        drop(finishers);
        drop(map);
        tracing::debug!(invocation = %inflight.id, "suspended");
        self.metrics.suspensions.inc();
        true
    }
}
