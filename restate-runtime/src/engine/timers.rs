//! Timers of delayed starts and suspended sleeps: the next [`EngineConfig::timer_window`] of
//! them in memory, the rest in the store's due-time index, read as they come near. Memory is
//! set by what falls due soon, not by what waits.
//!
//! The window covers every stored due time up to `covered`; a load raises `covered` before it
//! reads the store, so an entry committed while the load reads is either in what it reads or
//! scheduled after its commit (suspension and parking schedule again once durable), which then
//! finds it covered. An entry loaded twice (scheduled and read) fires once; one fired and then
//! read again by a later load fires again, which a wake-up tolerates (it finds the invocation
//! done, or running, or not due and suspending again).
//!
//! [`EngineConfig::timer_window`]: super::EngineConfig

use std::collections::{BTreeSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use super::Engine;
use crate::ids::InvocationId;
use crate::storage::Partitions;

/// Entries read from the store at most per load: a burst due at once comes in slices.
const LOAD_LIMIT: usize = 4096;

/// Queues that fired timers of invocations on disk wait in for a slot and their store read,
/// each in firing order; one key's always in the same queue (by its partition key), so
/// delayed sends to one key arrive in the order they fired, while keys apart load side by side.
const FIRED_QUEUES: usize = 8;

/// A position in the due-time index: due time, then the id's storage bytes (the store's order).
type DueKey = (u64, [u8; 24]);

/// The window in milliseconds, at least 100 (a shorter one would read the store on every tick).
/// On a virtual clock it is all time: the clock jumps, and a reload every half window would be
/// a due time of its own for a test to step through.
fn window_ms(config: &super::EngineConfig) -> u64 {
    if config.clock.is_virtual() {
        return u64::MAX / 4;
    }
    u64::try_from(config.timer_window.as_millis())
        .unwrap_or(u64::MAX / 2)
        .max(100)
}

fn key(at_ms: u64, id: InvocationId) -> DueKey {
    (at_ms, id.storage_key())
}

pub(crate) struct Timers {
    window: Mutex<Window>,
    changed: Notify,
    /// Invocations a timer woke from disk that may be in memory at once (the bound of a
    /// restore after a restart, [`EngineConfig::recovery_concurrency`](super::EngineConfig)).
    slots: super::slots::Pool,
    /// Fired timers of invocations on disk waiting for a slot. The window loads no more from
    /// the store while [`LOAD_LIMIT`] of them wait: an overdue backlog (after downtime) comes
    /// into memory at the pace its invocations leave it.
    backlog: AtomicUsize,
    /// Fired timers waiting for a slot, in [`FIRED_QUEUES`] queues in firing order.
    fired: [Mutex<Fired>; FIRED_QUEUES],
}

/// Clears a queue's mark of being taken in if its task ends other than by finding it empty
/// (a later timer then starts a task again).
struct Draining<'a>(Option<&'a Mutex<Fired>>);

impl Drop for Draining<'_> {
    fn drop(&mut self) {
        if let Some(Ok(mut fired)) = self.0.map(Mutex::lock) {
            fired.draining = false;
        }
    }
}

/// One queue of fired timers, and whether a task takes them in (at most one per queue).
#[derive(Default)]
struct Fired {
    waiting: VecDeque<(InvocationId, u64)>,
    draining: bool,
}

#[derive(Default)]
struct Window {
    due: BTreeSet<(u64, InvocationId)>,
    /// Every stored entry at or before this position is in `due` (or fired). `None` until the
    /// first load.
    covered: Option<DueKey>,
}

impl Window {
    fn covers(&self, at_ms: u64, id: InvocationId) -> bool {
        self.covered.is_some_and(|c| key(at_ms, id) <= c)
    }
}

impl Timers {
    pub(crate) fn new(slots: usize) -> Self {
        Self {
            window: Mutex::default(),
            changed: Notify::new(),
            slots: super::slots::Pool::new(slots),
            backlog: AtomicUsize::new(0),
            fired: Default::default(),
        }
    }

    fn backlogged(&self) -> bool {
        self.backlog.load(Ordering::SeqCst) >= LOAD_LIMIT
    }

    /// Arms a timer if it falls in the window; one beyond it is in the store's index (or will
    /// be, once the write that records it commits) and is loaded when it comes near.
    pub(crate) fn schedule(&self, at_ms: u64, id: InvocationId) {
        let mut window = self.window.lock().expect("timers lock");
        if window.covers(at_ms, id) {
            window.due.insert((at_ms, id));
            drop(window);
            self.changed.notify_one();
        }
    }

    /// Reads the store's due times from the start again (partitions joined whose timers the
    /// window passed over: they were another process's). What is armed stays armed.
    pub(crate) fn reload(&self) {
        self.window.lock().expect("timers lock").covered = None;
        self.changed.notify_one();
    }

    /// Disarms the timers of the partitions `lost` (another process runs them now).
    pub(crate) fn forget(&self, lost: &Partitions) {
        let mut window = self.window.lock().expect("timers lock");
        window.due.retain(|(_, id)| !lost.holds(id));
    }

    /// Disarms the timers of a finished invocation at these times (its sleeps).
    pub(crate) fn disarm(&self, id: InvocationId, at_ms: impl IntoIterator<Item = u64>) {
        let mut window = self.window.lock().expect("timers lock");
        for at in at_ms {
            window.due.remove(&(at, id));
        }
    }

    /// Timers fired for invocations on disk, waiting for a slot.
    pub(crate) fn waiting_for_slot(&self) -> usize {
        self.backlog.load(Ordering::SeqCst)
    }

    /// The slots of the wake from disk.
    pub(super) fn slots(&self) -> &super::slots::Pool {
        &self.slots
    }

    /// Timers armed in memory.
    pub(crate) fn len(&self) -> usize {
        self.window.lock().expect("timers lock").due.len()
    }

    fn pop_due(&self, now: u64) -> Result<Vec<(u64, InvocationId)>, Option<u64>> {
        let mut window = self.window.lock().expect("timers lock");
        let mut fired = Vec::new();
        while let Some(&(at, id)) = window.due.first() {
            if at > now {
                break;
            }
            window.due.pop_first();
            fired.push((at, id));
        }
        if fired.is_empty() {
            Err(window.due.first().map(|(at, _)| *at))
        } else {
            Ok(fired)
        }
    }

    /// When the window needs its next load: once `covered` is less than half a window ahead
    /// (after a load stopped at its limit, `covered` is the last entry it read).
    fn next_load_at(&self, window_ms: u64) -> u64 {
        match self.window.lock().expect("timers lock").covered {
            None => 0,
            Some((covered, _)) => covered.saturating_sub(window_ms / 2),
        }
    }
}

impl Engine {
    /// Wakes `id`, on disk, for its timer at `at_ms` once a slot is free; the slot stays with
    /// it until it leaves memory again. With a slot free and none waiting, at once, in the
    /// order the timers fire: delayed sends to one key due together arrive in the order they
    /// were sent (their ids sort by creation). On a shared store the read goes to a task, off
    /// the timers' loop, which takes its queue's timers in that order too.
    pub(super) fn wake_from_disk(&self, id: InvocationId, at_ms: u64) {
        if !self.shared_store
            && self.timers.backlog.load(Ordering::SeqCst) == 0
            && let Some(slot) = self.timers.slots.try_take()
        {
            self.resume_at(id, Some(at_ms), Some(slot));
            return;
        }
        if !self.shared_store && self.reach_key_now(id, at_ms) {
            return;
        }
        self.timers.backlog.fetch_add(1, Ordering::SeqCst);
        let queue = (id.partition_key() % FIRED_QUEUES as u64) as usize;
        {
            let mut fired = self.timers.fired[queue].lock().expect("fired timers");
            fired.waiting.push_back((id, at_ms));
            if std::mem::replace(&mut fired.draining, true) {
                return;
            }
        }
        let engine = self.clone();
        self.tasks
            .spawn(async move { engine.take_in_fired(queue).await });
    }

    /// A delayed start of an exclusive handler whose timer fired with no slot free reaches its
    /// key now, as it would with one (found from outside: a send that came later ran first):
    /// behind a busy key it is queued at once, on disk (see `queued_on_disk`), and an idle
    /// key it holds for itself until a slot loads it. `true` when it was queued; otherwise it
    /// waits for a slot (a sleep's wake-up, an unkeyed or shared one too). Not on a shared
    /// store, whose reads do not belong on the timers' loop.
    fn reach_key_now(&self, id: InvocationId, at_ms: u64) -> bool {
        {
            // Read under the map lock, as `resume_at` reads: one that a kill or cancel ends
            // meanwhile is in the map now, or ended in the store (else a key held for an ended
            // invocation would never be let go).
            let map = self.inflight.lock().expect("inflight map");
            if map.contains_key(&id) {
                return false;
            }
            let record = match self.storage.invocation(&id) {
                Ok(Some(record)) => record,
                _ => return false,
            };
            let crate::storage::Status::Scheduled { at_ms: start } = record.status else {
                return false;
            };
            // A start of its own time only, and not one a handler's cancel ends unrun.
            if start != at_ms || record.cancel_requested || !self.runs(&id) {
                return false;
            }
            let Some(scope) = self.exclusive_scope_of(&record.target) else {
                return false;
            };
            let mut lanes = self.lanes.lock().expect("lanes");
            let lane = lanes.entry(scope).or_default();
            if lane.running.is_none() {
                // Held for it: what comes later queues behind it, and the slot's wake-up
                // finds it the key's holder.
                lane.running = Some(id);
                return false;
            }
        }
        self.resume_at(id, Some(at_ms), None);
        true
    }

    /// Wakes the fired timers of queue `queue` one by one, in order, each once a slot is free;
    /// ends when the queue is empty.
    async fn take_in_fired(&self, queue: usize) {
        // Should this end early (a panic), the queue is not left marked as taken in.
        let mut draining = Draining(Some(&self.timers.fired[queue]));
        loop {
            let next = {
                let mut fired = self.timers.fired[queue].lock().expect("fired timers");
                let next = fired.waiting.pop_front();
                fired.draining = next.is_some();
                next
            };
            let Some((id, at_ms)) = next else {
                // Cleared under the lock above: a task started since is that queue's now.
                draining.0 = None;
                return;
            };
            let slot = self.timers.slots.take().await;
            if let Some(slot) = slot {
                self.resume_at(id, Some(at_ms), Some(slot));
            }
            // Once resumed: counted until then, a later timer of the key does not go first
            // (the loop wakes one in place only when none waits).
            if self.timers.backlog.fetch_sub(1, Ordering::SeqCst) == LOAD_LIMIT {
                // No longer backlogged: the window may load again.
                self.timers.changed.notify_one();
            }
        }
    }

    /// Reads the store's due times up to a window ahead of now into memory; false when the
    /// store could not be read (the window stays where it was).
    fn load_due(&self) -> bool {
        let window_ms = window_ms(&self.config);
        let until = self.now_ms().saturating_add(window_ms);
        let from = {
            let mut window = self.timers.window.lock().expect("timers lock");
            let from = window.covered;
            if from.is_some_and(|c| c >= (until, [0xff; 24])) {
                return true;
            }
            // Raised before reading: what commits meanwhile is scheduled into the window.
            window.covered = Some((until, [0xff; 24]));
            from
        };
        let after = from.and_then(|(at, id)| Some((at, InvocationId::from_storage_key(&id)?)));
        match self.storage.due(after, until, LOAD_LIMIT) {
            Ok(entries) => {
                let mut window = self.timers.window.lock().expect("timers lock");
                if entries.len() == LOAD_LIMIT
                    && let Some(&(at, id)) = entries.last()
                {
                    // More is due within the window: the next load goes on from here.
                    window.covered = Some(key(at, id));
                }
                // Those of partitions another process runs fire there.
                window
                    .due
                    .extend(entries.into_iter().filter(|(_, id)| self.runs(id)));
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read due timers; retrying in a second");
                self.timers.window.lock().expect("timers lock").covered = from;
                return false;
            }
        }
        true
    }
}

pub(crate) async fn run(engine: Engine) {
    let mut shutdown = engine.shutdown_signal();
    let window_ms = window_ms(&engine.config);
    loop {
        // Handed over to another process (after a drain): its timers are the new owner's.
        if engine.handed_over() {
            return;
        }
        // A failed read is retried in a second; what is armed fires meanwhile. While woken
        // invocations wait for slots, nothing more is read (a slot freed notifies).
        let backlogged = engine.timers.backlogged();
        let loaded = backlogged
            || engine.now_ms() < engine.timers.next_load_at(window_ms)
            || engine.load_due();
        let until = match engine.timers.pop_due(engine.now_ms()) {
            Ok(ids) => {
                for (at, id) in ids {
                    engine.fire(id, at);
                }
                // A backlog (overdue after downtime) comes in slices; others run in between.
                engine.tasks().yield_now().await;
                continue;
            }
            // On a virtual clock only real due times count; a failed read is retried a
            // second later all the same.
            Err(next) if engine.config().clock.is_virtual() && loaded => next,
            Err(next) if engine.config().clock.is_virtual() => Some(
                next.unwrap_or(u64::MAX)
                    .min(engine.now_ms().saturating_add(1000)),
            ),
            Err(next) => {
                let load = if loaded && !backlogged {
                    engine.timers.next_load_at(window_ms)
                } else {
                    engine.now_ms() + 1000
                };
                // At least a millisecond ahead: a load that stopped at its limit may leave
                // the next one due now, and the loop must not spin.
                Some(
                    next.map_or(load, |next| next.min(load))
                        .max(engine.now_ms() + 1),
                )
            }
        };
        let due = async {
            match until {
                Some(at) => engine.config().clock.sleep_until_ms(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = due => {}
            _ = engine.timers.changed.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}
