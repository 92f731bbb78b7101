//! Delayed invocations wait on disk: once its `Scheduled` record is durable, a delayed send or
//! call leaves memory, keeping only its timer; the timer loads it back when it is due (see
//! `Engine::resume`). A cancel, kill, attach or duplicate request meanwhile finds it in the store
//! the way it finds a suspended invocation.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Engine, Inflight};
use crate::storage::Status;

impl Engine {
    /// Arms the timer of a new delayed invocation and parks it once its record is durable.
    pub(super) fn launch_delayed(&self, inflight: Arc<Inflight>, at_ms: u64) {
        self.timers.schedule(at_ms, inflight.id);
        let durable = inflight.make_durable(self.storage().as_ref());
        let engine = self.clone();
        self.tasks.spawn(async move {
            // A failed commit is the writer's failure, which stops the process (law 10); a
            // refused one (its partition taken away on a shared database) takes the partition,
            // and this invocation with it, to the next owner.
            if durable.await.is_ok() {
                // Durable now: see `Engine::suspend` for why the timer is armed again.
                engine.timers.schedule(at_ms, inflight.id);
                engine.park(inflight);
            }
        });
    }

    /// Drops a delayed invocation from memory unless something reached it first: its timer
    /// fired, a cancel or kill is on its way, or it finished.
    fn park(&self, inflight: Arc<Inflight>) {
        let id = inflight.id;
        {
            let mut map = self.inflight.lock().expect("inflight map");
            if !map.get(&id).is_some_and(|f| Arc::ptr_eq(f, &inflight))
                || inflight.running.load(Ordering::SeqCst)
                || inflight.finished.load(Ordering::SeqCst)
                || inflight.kill_requested.load(Ordering::SeqCst)
            {
                return;
            }
            let state = inflight.state();
            if !matches!(state.record.status, Status::Scheduled { .. })
                || state.record.cancel_requested
            {
                return;
            }
            drop(state);
            map.remove(&id);
        }
        // Its finish channel stays only while someone attached listens on it.
        drop(inflight);
        self.drop_finisher_if_idle(&id);
        // The last step: a crash here has nothing left to stop.
        let _ = self.crash_point("delayed.parked");
    }
}
