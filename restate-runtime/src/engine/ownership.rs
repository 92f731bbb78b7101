//! Which partitions this engine runs, and how that set changes. A partition joins once what
//! the store holds of it is recovered: at start, when a standby takes a shared database over,
//! or when the store hands this process more partitions (a stopped process's, taken over).
//! Until then work for it is forwarded to its owner's inbox, and its timers and inbox
//! messages are left to that owner.
//!
//! A partition leaves when the store says another process holds it now (a lease taken over,
//! or handed over after a drain), or that it is offered back (a process joined). Its
//! invocations leave memory at once: their tasks stop at their next await point without
//! writing (the store refuses their writes anyway once the partition is taken), and whoever
//! waits on one here hears it moved. A task in the middle of a `ctx.run` closure goes on until
//! that closure ends and its result is journaled (at most [`CLOSURE_GRACE`]), and starts no
//! other: an offered-back partition is released only once its tasks stopped, so the next owner
//! replays the step instead of running its side effect again. Should the
//! partition come back, it is recovered only once those tasks have stopped and every write
//! they submitted is decided, so that no old task writes beside the recovered one.
//!
//! A process paused past its leases (SIGSTOP, a stall) and then continued cannot know before
//! its next lease round whether another process took its partitions meanwhile: until that
//! round says, it starts no attempt and runs no step's closure ([`Engine::lease_held`]), so
//! that a side effect it would repeat beside the new owner never runs.
//!
//! A handler that journals what it read of another invocation (an attach's or an output's
//! result, an awakeable found completed) reads memory only where that invocation's partition
//! runs here, and fences its entry on that partition: the entry commits only if the writes
//! it read did. Anywhere else it reads the store once this process's own writes submitted
//! before are decided, so that a result still committing for a partition that has just left
//! is not read as missing.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use super::inflight::Finish;
use super::{Engine, EngineError, Inflight, forward, purge_loop, timers};
use crate::ids::{InvocationId, partition_key_of};
use crate::storage::{Partitions, StateScope};

/// How long a `ctx.run` closure executing as its partition leaves this process may go on, to
/// end and journal its result, before its task is stopped all the same.
const CLOSURE_GRACE: Duration = Duration::from_secs(10);

/// What a waiter on an invocation of a partition that left hears.
const LEFT: &str = "another process runs this invocation's partition now";

/// An invocation not taken in here because its partition left meanwhile: nothing was done,
/// and the work goes to the partition's new owner.
pub(super) fn moved() -> EngineError {
    EngineError::Lost(LEFT.into())
}

/// Whether `e` is [`moved`].
pub(super) fn is_moved(e: &EngineError) -> bool {
    matches!(e, EngineError::Lost(m) if m == LEFT)
}

/// How often a partition that came back looks whether the tasks that ran it before stopped.
const DEPARTED_POLL: Duration = Duration::from_millis(5);

/// The partitions an engine runs, and those it is recovering to run.
pub(crate) struct Held {
    /// Recovered: their invocations run here, and work for them is taken here.
    running: Partitions,
    /// Being recovered: their invocations may be loaded, but new work still goes to the inbox
    /// (it must come after what the store holds of their keys).
    joining: Partitions,
    /// The timers, the purger and the inbox run (since the first partitions joined).
    serving: bool,
    /// How many times partitions joined or left: a read of the store made before a change
    /// may not hold for the partitions that moved (another process wrote them meanwhile).
    changes: u64,
}

impl Held {
    pub(super) fn none(count: u32) -> Self {
        Self {
            running: Partitions::none(count),
            joining: Partitions::none(count),
            serving: false,
            changes: 0,
        }
    }
}

impl Engine {
    /// The partitions it runs now.
    pub(crate) fn owned(&self) -> Partitions {
        self.held.read().expect("held lock").running.clone()
    }

    /// How many times partitions joined or left this engine.
    pub(super) fn partition_changes(&self) -> u64 {
        self.held.read().expect("held lock").changes
    }

    /// Whether it runs any partition; `false` while other processes run them all.
    pub(crate) fn runs_invocations(&self) -> bool {
        !self.held.read().expect("held lock").running.is_empty()
    }

    /// Waits until this process may take its leases for held, and (with `id`) the partition of
    /// `id` for its own: immediately on a store of one process, and while the leases are
    /// renewed in time. After a pause past them it waits for the next lease round: held
    /// again, it goes on; the partition gone, it never resolves (its task is stopped as the
    /// partition leaves).
    pub(crate) async fn lease_held(&self, id: Option<&InvocationId>) {
        let Some(mut clock) = self.storage.lease_clock() else {
            return;
        };
        let mut owned = self.storage.owned();
        loop {
            if id.is_some_and(|id| !owned.borrow_and_update().holds(id)) {
                return std::future::pending().await;
            }
            let held = clock
                .borrow_and_update()
                .is_some_and(|until| crate::clock::since_boot() < until);
            if held {
                return;
            }
            let changed = tokio::select! {
                changed = clock.changed() => changed,
                changed = owned.changed() => changed,
            };
            // The store is gone: nothing runs any more.
            if changed.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Whether it runs `id`'s partition: work for `id` is taken here.
    pub(crate) fn runs(&self, id: &InvocationId) -> bool {
        self.held.read().expect("held lock").running.holds(id)
    }

    /// Whether `id`'s partition does not run here (another process runs it, or it is still
    /// being recovered here): effects on it go to its inbox. Nothing new of a partition
    /// enters memory while recovery reads what the store holds of it, or recovery would
    /// queue it a second time, or behind what arrived after it.
    pub(crate) fn elsewhere(&self, id: &InvocationId) -> bool {
        self.shared_store && !self.runs(id)
    }

    /// On a shared store, a hold on the partitions that run here, if all those `ops` write
    /// (and `fenced_on`'s, a batch's fence) are among them: none can leave while it is held,
    /// so a batch queued under it is queued before the leave's barrier. `Err`: one of them
    /// does not run here (it left since the handler decided to write it here, or is still
    /// being recovered). `leaving`: the partition key of a leaving invocation whose closure
    /// ended, which still journals its result there (released only after its task stops, the
    /// partition takes the write; taken by another process, the fence refuses it). A store of
    /// one process needs no hold.
    pub(crate) fn hold_for(
        &self,
        ops: &[crate::storage::WriteOp],
        fenced_on: Option<u64>,
        leaving: Option<u64>,
    ) -> Result<Option<std::sync::RwLockReadGuard<'_, Held>>, ()> {
        if !self.shared_store {
            return Ok(None);
        }
        let held = self.held.read().expect("held lock");
        let here = ops
            .iter()
            .filter_map(crate::storage::WriteOp::partition_key)
            .chain(fenced_on)
            .all(|key| held.running.holds_key(key) || leaving == Some(key));
        if here { Ok(Some(held)) } else { Err(()) }
    }

    /// On a shared store, `id`'s partition key: what a batch that acts on `id`'s state seen
    /// in memory here is fenced on ([`Storage::submit_fenced`]), so that it commits only if
    /// this process still held that state's partition (a paused process's memory may be
    /// stale, its commit in flight refused).
    ///
    /// [`Storage::submit_fenced`]: crate::storage::Storage::submit_fenced
    pub(crate) fn fence_of(&self, id: &InvocationId) -> Option<u64> {
        self.shared_store.then(|| id.partition_key())
    }

    /// Whether the store no longer counts `id`'s partition as this process's while the
    /// engine still runs it: it was taken by another process, or is being offered back, and
    /// leaves at the engine's next look at the store's set.
    pub(crate) fn partition_leaving(&self, id: &InvocationId) -> bool {
        self.shared_store && self.runs(id) && !self.storage.owned().borrow().holds(id)
    }

    /// A write of `inflight` was refused: it is lost here, unless its partition is leaving
    /// this process (taken by another, or offered back with one that was): then it keeps its
    /// place on its key until the departure takes it out of memory, since giving the key up
    /// would let the next invocation on it run ahead of it; the new owner recovers it.
    pub(crate) async fn lose_refused(&self, inflight: &Arc<Inflight>, reason: String) {
        if !self.partition_leaving(&inflight.id) {
            return self.lose(inflight, reason);
        }
        let (mut shutdown, mut departures) = (self.shutdown_signal(), self.departures.subscribe());
        super::execute::stopped(&mut shutdown, &mut departures, inflight).await
    }

    /// Whether the partition of `key` runs here or is being recovered here: its lease is
    /// this process's (on a store of one process, always).
    pub(crate) fn holds_key(&self, key: u64) -> bool {
        let held = self.held.read().expect("held lock");
        !self.shared_store || held.running.holds_key(key) || held.joining.holds_key(key)
    }

    /// Whether `id` may be loaded from the store here: its partition runs here or is being
    /// recovered (what recovery finds in memory already, loaded by a wake-up or a control
    /// operation meanwhile, it leaves to memory).
    pub(crate) fn may_load(&self, id: &InvocationId) -> bool {
        let held = self.held.read().expect("held lock");
        held.running.holds(id) || held.joining.holds(id)
    }

    /// Runs the invocations of `gained` from now on: what the store holds of them is
    /// recovered first. The first partitions also start the timers, the purger and the inbox;
    /// later ones have the timers read the store's due times again, theirs among them.
    pub(super) fn run_partitions(&self, gained: &Partitions) -> Result<(), EngineError> {
        {
            let mut held = self.held.write().expect("held lock");
            held.joining = held.joining.with(gained);
            held.changes += 1;
        }
        let recovered = self.recover(gained);
        let first = {
            let mut held = self.held.write().expect("held lock");
            held.joining = held.joining.without(gained);
            if recovered.is_ok() {
                held.running = held.running.with(gained);
            }
            self.metrics
                .partitions_running
                .set(held.running.len() as i64);
            !std::mem::replace(&mut held.serving, true)
        };
        // Only now: what the restored handlers do to these partitions is done here.
        self.resume_recovered(recovered?);
        tracing::info!(
            partitions = gained.len(),
            "this process runs more partitions"
        );
        if first {
            self.tasks.spawn(timers::run(self.clone()));
            self.tasks.spawn(purge_loop(self.clone()));
            self.tasks.spawn(forward::apply_inbox(self.clone()));
            if self.shared_store {
                self.tasks.spawn(self.clone().watch_handover());
            }
        } else {
            self.timers.reload();
            self.joined.notify_one();
        }
        Ok(())
    }

    /// Stops running the invocations of `lost`: new work for them goes to their new owner,
    /// and what of them is in memory leaves it (their tasks stop without writing, their
    /// waiters here hear they are lost here, their keys' lanes and timers go).
    pub(super) fn leave_partitions(&self, lost: &Partitions) {
        let gone: Vec<Arc<Inflight>> = {
            // Under the map lock: whoever checks `may_load` under it before loading one of
            // these sees them gone.
            let mut map = self.inflight.lock().expect("inflight map");
            {
                let mut held = self.held.write().expect("held lock");
                held.running = held.running.without(lost);
                held.changes += 1;
                self.metrics
                    .partitions_running
                    .set(held.running.len() as i64);
            }
            let gone: Vec<_> = map
                .extract_if(|id, _| lost.holds(id))
                .map(|(_, inflight)| inflight)
                .collect();
            for inflight in &gone {
                inflight.leaving.store(true, Ordering::SeqCst);
                // A closure executing ends first and journals its result (the partition is
                // released only once this task stops): cut off, the next owner would run
                // its side effect again.
                if inflight.closures_running() {
                    self.leave_after_closures(inflight.clone());
                } else {
                    inflight.left.store(true, Ordering::SeqCst);
                }
            }
            gone
        };
        // The tasks look at their invocation's mark.
        self.departures.send_modify(|n| *n += 1);
        let of_scope =
            |scope: &StateScope| lost.holds_key(partition_key_of(&scope.service, &scope.key));
        self.lanes
            .lock()
            .expect("lanes")
            .retain(|scope, _| !of_scope(scope));
        self.timers.forget(lost);
        self.result_sources
            .lock()
            .expect("result sources")
            .retain(|id| !lost.holds(id));
        self.promise_waiters.forget(&of_scope);
        let finishers: Vec<_> = self
            .finishers
            .lock()
            .expect("finishers")
            .extract_if(|id, _| lost.holds(id))
            .map(|(_, finisher)| finisher)
            .collect();
        for finisher in finishers {
            finisher.send_replace(Finish::Moved);
        }
        let mut departed = self.departed.lock().expect("departed");
        departed.retain(|f| f.running.load(Ordering::SeqCst));
        for inflight in gone {
            inflight.finish(Finish::Moved);
            // What a queued or parked one held for running goes back now; a running one's
            // task gives it back as it stops.
            match inflight.running.load(Ordering::SeqCst) {
                true => departed.push(inflight),
                false => inflight.disengage(),
            }
        }
        tracing::warn!(partitions = lost.len(), "partitions left this process");
    }

    /// Marks `inflight` as left (its task stops) once its executing `ctx.run` closures have
    /// ended, or after [`CLOSURE_GRACE`] at the latest.
    fn leave_after_closures(&self, inflight: Arc<Inflight>) {
        let engine = self.clone();
        self.tasks.spawn(async move {
            let _ = tokio::time::timeout(CLOSURE_GRACE, inflight.closures_idle()).await;
            inflight.left.store(true, Ordering::SeqCst);
            engine.departures.send_modify(|n| *n += 1);
        });
    }

    /// Waits until the tasks that ran invocations of `partitions` before they left have
    /// stopped, and every write submitted before is decided (committed, or refused by the
    /// fence), so that recovering them reads what those tasks will ever have written.
    async fn await_departed(&self, partitions: &Partitions) {
        let shutdown = self.shutdown_signal();
        loop {
            let running = {
                let mut departed = self.departed.lock().expect("departed");
                departed.retain(|f| f.running.load(Ordering::SeqCst));
                departed.iter().any(|f| partitions.holds(&f.id))
            };
            if !running || *shutdown.borrow() {
                break;
            }
            tokio::time::sleep(DEPARTED_POLL).await;
        }
        let _ = self.storage.submit(Vec::new()).await;
    }
}

/// Follows the store's set of partitions for this process: recovers and joins those it
/// gains, lets go of those it loses.
pub(super) async fn follow(engine: Engine, mut offered: watch::Receiver<Partitions>) {
    let mut shutdown = engine.shutdown_signal();
    loop {
        tokio::select! {
            changed = offered.changed() => if changed.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let now = offered.borrow_and_update().clone();
        let held = engine.owned();
        let lost = held.without(&now);
        if !lost.is_empty() {
            engine.leave_partitions(&lost);
        }
        // Once what ran the partitions outside this set (now or before) stopped and its
        // writes are decided, the store may hand those it offered back to another process.
        let (departing, seen) = (engine.clone(), now.clone());
        engine.tasks.spawn(async move {
            let elsewhere = Partitions::all(seen.count()).without(&seen);
            departing.await_departed(&elsewhere).await;
            departing.storage.left(&seen);
        });
        let gained = now.without(&held);
        if gained.is_empty() {
            continue;
        }
        engine.await_departed(&gained).await;
        if *shutdown.borrow() {
            return;
        }
        if let Err(e) = engine.run_partitions(&gained) {
            return engine.storage_failed(&format!(
                "recovering {gained:?} this process took over failed: {e}"
            ));
        }
    }
}

#[cfg(test)]
mod tests;
