//! Recovery after a restart, at a bounded pace: what the store holds unfinished comes back
//! without all of it entering memory at once, so a restart after an overload cannot itself run
//! out of memory.
//!
//! - Suspended invocations stay on disk, holding their key; delayed ones stay on disk too.
//!   Their timers are in the store's due index, which the timers read as they come near.
//! - Paused ones are loaded.
//! - Runnable ones (and suspended ones with a wake-up they have not seen) are restored in
//!   arrival order, at most [`EngineConfig::recovery_concurrency`](super::EngineConfig) in
//!   memory at once; the rest wait on disk and are restored as those finish or suspend.
//! - Of an object or workflow key, only the first of them is restored that way; the others stay
//!   on disk in the key's lane ([`super::lanes::Lane::stored`]) and are loaded one by one as the
//!   key frees, before anything that arrives after the restart.
//! - Except that an exclusive invocation that had started before the restart (it has journal
//!   entries) holds its key first, whatever its arrival number or status: it was the key's
//!   holder, and its replay reads the state as it recorded it. A delayed one that fired and
//!   started is still `Scheduled` on disk; it runs at once rather than waiting for its timer.
//! - A delayed exclusive invocation that fell due before the restart but had not started (it
//!   waited behind the key's holder, or its first step had not committed) reached its key when
//!   it fell due: it takes its place in the key's queue by its due time, among the others by
//!   the time they were accepted ([`KeyArrivals`]), not behind everything restored (its timer,
//!   firing after recovery, would have queued it last).
//!
//! A duplicate request, an attach, a completion or a kill meanwhile finds an invocation on disk
//! the way it finds a suspended one.
//!
//! Recovery reads only the hints it acts on: a suspended invocation without a key and a delayed
//! one not yet due are passed over by the head of their hint, undecoded, so a restart costs
//! what runs, not what waits.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::slots::{Pool, Slot};

use super::{Engine, EngineError, Inflight};
use crate::ids::InvocationId;
use crate::storage::{Partitions, StateScope, Status, Target};

/// Default of [`EngineConfig::recovery_concurrency`](super::EngineConfig).
pub(crate) const DEFAULT_RECOVERY_CONCURRENCY: usize = 256;

impl Engine {
    /// Reads every unfinished invocation of the partitions `only` and queues each on its key:
    /// returns those to restore ([`Self::resume_recovered`]), in arrival order.
    pub(super) fn recover(&self, only: &Partitions) -> Result<Vec<InvocationId>, EngineError> {
        let woken: HashSet<InvocationId> = self
            .storage
            .woken()?
            .into_iter()
            .filter(|id| only.holds(id))
            .collect();
        let now = self.now_ms();
        let mut highest_seq = 0;
        let mut unfinished = self.storage.unfinished_where(&mut |id, head| {
            let Some(head) = head else {
                return only.holds(&id);
            };
            // Of every partition: arrivals here come after all that the store holds.
            highest_seq = highest_seq.max(head.seq);
            if !only.holds(&id) {
                return false;
            }
            if woken.contains(&id) {
                return true;
            }
            if head.suspended {
                // Unless it may hold an object or workflow key, it waits on disk for its
                // completion or its timer (in the due index): nothing to do now.
                return head.keyed;
            }
            // A delayed start not yet due has not fired, so it has not started: it waits on
            // disk for its timer. Unless it is keyed: a clock set back further than the time
            // since one fired would leave a started one without the key it held.
            head.keyed || head.due_at_ms.is_none_or(|at| at <= now)
        })?;
        // Arrival order, so each key's queue is rebuilt as it was.
        unfinished.sort_by_key(|(_, hint)| hint.seq);
        if let Some((_, last)) = unfinished.last() {
            highest_seq = highest_seq.max(last.seq);
        }
        self.seq.fetch_max(highest_seq, Ordering::Relaxed);
        let mut to_restore = Vec::new();
        // Exclusive invocations that had not started, by key: queued once the loop has put the
        // holders in place, in the order they reached their key.
        let mut arrivals = crate::maps::FastMap::<StateScope, KeyArrivals>::default();
        let mut restarted = Vec::new();
        let mut unserved = std::collections::BTreeMap::<String, usize>::new();
        {
            let mut map = self.inflight.lock().expect("inflight map");
            for (id, hint) in unfinished {
                // In memory already (a wake-up or a control operation loaded it while this
                // read): it runs from there, and takes its key there.
                if map.contains_key(&id) {
                    continue;
                }
                if self.resolve(&hint.target).is_err() {
                    let target = Target {
                        key: None,
                        ..hint.target.clone()
                    };
                    *unserved.entry(target.to_string()).or_default() += 1;
                }
                let woken = woken.contains(&id);
                if let (Some(_), false) = (hint.suspended, woken) {
                    // Stays on disk; it only holds its key, and its timer is in the due index.
                    self.hold_lane(&hint.target, id);
                    continue;
                }
                let Some(record) = self.storage.invocation(&id)? else {
                    continue;
                };
                if let Some(original) = super::restart::unstarted_copy_of(&record) {
                    restarted.push((original, record.target.clone()));
                }
                // An exclusive invocation that had started (it has journal entries) was its
                // key's holder: only the holder runs. It holds the key again, ahead of any that
                // arrived before it but had not started (a delayed send that fired after them,
                // a send that reached the key first): run after those, its replay would act on
                // state they changed (its recorded reads are older). A delayed one that fired
                // and started is still `Scheduled` on disk; it runs now instead of waiting again.
                let started = matches!(
                    record.status,
                    Status::Runnable | Status::Suspended { .. } | Status::Scheduled { .. }
                ) && self.exclusive_scope_of(&record.target).is_some()
                    && !self.storage.journal(&id)?.is_empty();
                if started {
                    self.hold_lane(&record.target, id);
                    to_restore.push((hint.seq, id));
                    continue;
                }
                let scope = self.exclusive_scope_of(&record.target);
                let arrived = record.arrived_ms();
                match (record.status, scope) {
                    // Fell due before the restart: it reached its key then. One whose
                    // cancellation a handler recorded is left to its timer, which ends it
                    // without running it.
                    (Status::Scheduled { at_ms }, Some(scope))
                        if at_ms <= now && !record.cancel_requested =>
                    {
                        let due = (arrived, hint.seq, id);
                        arrivals.entry(scope).or_default().due.push(due);
                    }
                    // Waits on disk; its timer, in the due index, loads it when due.
                    (Status::Scheduled { .. }, _) => {}
                    (Status::Runnable | Status::Suspended { .. }, Some(scope)) => {
                        let accepted = (arrived, hint.seq, id);
                        arrivals.entry(scope).or_default().plain.push(accepted);
                    }
                    // A paused invocation keeps its key, as before the restart (law 5).
                    (Status::Paused, _) => {
                        self.load_into(&mut map, id, false, false)?;
                        self.hold_lane(&record.target, id);
                    }
                    // Unkeyed, or shared: restored now.
                    (Status::Runnable | Status::Suspended { .. }, None) => {
                        to_restore.push((hint.seq, id));
                    }
                    (Status::Completed { .. }, _) => {}
                }
            }
            for (scope, key) in arrivals {
                for (seq, id) in key.in_order() {
                    if self.queue_on_key(&scope, id) {
                        to_restore.push((seq, id));
                    }
                }
            }
        }
        // Restored in arrival order.
        to_restore.sort_unstable();
        let to_restore: Vec<InvocationId> = to_restore.into_iter().map(|(_, id)| id).collect();
        for (target, count) in unserved {
            tracing::warn!(
                %target,
                count,
                "unfinished invocations of a handler this binary does not serve: they are paused \
                 when they run, until a binary that serves it resumes them (or they are killed)"
            );
        }
        if !to_restore.is_empty() {
            tracing::info!(
                count = to_restore.len(),
                at_once = self.config.recovery_concurrency,
                "resuming invocations after restart"
            );
        }
        // Before anything runs: a source that completes must know it has result waiters.
        self.complete_orphaned_result_waiters(only)?;
        self.end_restarted(restarted);
        Ok(to_restore)
    }

    /// Restores what [`Self::recover`] found to run: the first ones at once, the rest by a
    /// task that keeps at most `recovery_concurrency` of them in memory.
    pub(super) fn resume_recovered(&self, to_restore: Vec<InvocationId>) {
        let slots = Pool::new(self.config.recovery_concurrency);
        let mut rest = to_restore.into_iter();
        // The first ones start before the listeners open; a task restores the rest.
        self.metrics.recovery_pending.set(0);
        for id in rest.by_ref() {
            let Some(slot) = slots.try_take() else {
                let engine = self.clone();
                let rest: Vec<_> = std::iter::once(id).chain(rest).collect();
                self.metrics.recovery_pending.set(rest.len() as i64);
                self.tasks
                    .spawn(async move { engine.restore_paced(rest, slots).await });
                break;
            };
            self.restore(id, slot);
        }
    }

    /// Loads an invocation from the store into the map (as runnable when `run`), unless it is
    /// there already or finished. `restoring`: one that may have been running when its process
    /// ended, whose first attempt here is counted ([`super::interrupted`]); not the next of a
    /// key's queue on disk, which had not started.
    fn load_into(
        &self,
        map: &mut crate::maps::FastMap<InvocationId, Arc<Inflight>>,
        id: InvocationId,
        run: bool,
        restoring: bool,
    ) -> Result<Option<Arc<Inflight>>, EngineError> {
        // Checked under the map lock, as partitions leave: another process runs it now.
        if map.contains_key(&id) || !self.may_load(&id) {
            return Ok(None);
        }
        let Some((record, journal)) = self.load_stored(&id)? else {
            return Ok(None);
        };
        let suspended = matches!(record.status, Status::Suspended { .. });
        // One with a completion it has not seen committed after its suspension (law 9), or
        // a delayed one that had fired and started before the restart (made runnable once in
        // memory, which keeps its start time).
        let runnable = match record.status {
            Status::Completed { .. } => return Ok(None),
            Status::Suspended { .. } | Status::Scheduled { .. } if run => true,
            Status::Runnable | Status::Suspended { .. } if !run => return Ok(None),
            _ => false,
        };
        let inflight = self.new_inflight(id, record, true, journal);
        {
            let mut state = inflight.state();
            state.stored_suspended = suspended;
            if restoring {
                state.restored = Some(state.record.status.clone());
            }
            if runnable {
                state.record.status = Status::Runnable;
            }
        }
        map.insert(id, inflight.clone());
        Ok(Some(inflight))
    }

    /// Queues a runnable invocation of an exclusive handler behind what already holds its key
    /// (`false`: it waits on disk in the lane), or makes it the key's holder (`true`: restore
    /// it).
    fn queue_on_key(&self, scope: &StateScope, id: InvocationId) -> bool {
        let scope = scope.clone();
        let mut lanes = self.lanes.lock().expect("lanes");
        let lane = lanes.entry(scope).or_default();
        if lane.running.is_some() {
            lane.queue_stored(id, true);
            return false;
        }
        lane.running = Some(id);
        true
    }

    /// Restores `ids` in order, each once a slot is free (slots come back as restored
    /// invocations leave memory).
    async fn restore_paced(&self, ids: Vec<InvocationId>, slots: Pool) {
        let mut shutdown = self.shutdown_signal();
        let mut left = ids.len() as i64;
        for id in ids {
            let slot = tokio::select! {
                slot = slots.take() => match slot {
                    Some(slot) => slot,
                    None => return,
                },
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            self.restore(id, slot);
            left -= 1;
            self.metrics.recovery_pending.set(left);
        }
    }

    /// Loads a runnable invocation and starts it, holding `slot` until it leaves memory. One
    /// finished or loaded meanwhile (killed, cancelled, woken) is left as it is.
    fn restore(&self, id: InvocationId, slot: Slot) {
        let loaded = {
            let mut map = self.inflight.lock().expect("inflight map");
            let loaded = self.load_into(&mut map, id, true, true);
            // Held before the map lock goes: nothing runs it before the slot is its own.
            if let Ok(Some(inflight)) = &loaded {
                inflight.hold_slot(slot);
            }
            loaded
        };
        match loaded {
            Ok(Some(inflight)) => self.spawn_resumed(inflight),
            Ok(None) => {}
            Err(e) => tracing::error!(invocation = %id, error = %e, "cannot restore"),
        }
    }

    /// Runs `id`, the next invocation a key held on disk, now that the key is free; `slot` stays
    /// with it while it is in memory. `false`: there is nothing to run (it finished meanwhile),
    /// so the key moves on.
    pub(super) fn start_stored(&self, scope: &StateScope, id: InvocationId, slot: Slot) -> bool {
        let inflight = {
            let mut map = self.inflight.lock().expect("inflight map");
            match map.get(&id) {
                // A cancel loaded it, and it queued behind the key's holder: it runs now, in
                // its place.
                Some(inflight) => Some(inflight.clone()),
                None => match self.load_into(&mut map, id, true, false) {
                    Ok(loaded) => loaded,
                    Err(e) => {
                        tracing::error!(invocation = %id, error = %e, "cannot restore");
                        None
                    }
                },
            }
        };
        // A kill completed it meanwhile (its commit may still be in flight).
        let Some(inflight) = inflight.filter(|f| !f.finished.load(Ordering::SeqCst)) else {
            return false;
        };
        // Its copy in memory may wait in the queue too (a cancel loaded it, and it queued):
        // it runs now, in its place. Looked for only then: a deep queue is not walked for each.
        if inflight.queued.load(Ordering::SeqCst)
            && let Some(lane) = self.lanes.lock().expect("lanes").get_mut(scope)
        {
            lane.remove(&id);
        }
        inflight.hold_slot(slot);
        self.start_holder(inflight);
        true
    }
}

/// The exclusive invocations of one key that had not started before a restart, in the order
/// recovery found them: plain arrivals by arrival number, and delayed ones that had fallen due,
/// each of which reached the key when it fell due (its timer queued it then, behind what the
/// key held, ahead of what came later).
#[derive(Debug, Default)]
struct KeyArrivals {
    /// (accepted at, arrival number, id), in arrival order.
    plain: Vec<(u64, u64, InvocationId)>,
    /// (due at, arrival number, id).
    due: Vec<(u64, u64, InvocationId)>,
}

impl KeyArrivals {
    /// Arrival number and id, in the order they reached the key: a delayed one ahead of the
    /// plain ones that were all accepted after it fell due, behind any accepted before (or in
    /// the same millisecond: a timer fires at its time or later). The plain ones keep their
    /// arrival order even where their acceptance times do not follow it (a restarted copy
    /// takes its original's arrival number; another process's clock, on a shared store).
    fn in_order(mut self) -> impl Iterator<Item = (u64, InvocationId)> {
        self.due.sort_unstable();
        // The earliest acceptance from each plain one on.
        let mut earliest: Vec<u64> = self.plain.iter().map(|(at, _, _)| *at).collect();
        for i in (0..earliest.len().saturating_sub(1)).rev() {
            earliest[i] = earliest[i].min(earliest[i + 1]);
        }
        let mut due = self.due.into_iter().peekable();
        let mut plain = self.plain.into_iter().zip(earliest).peekable();
        std::iter::from_fn(move || {
            let due_first = match (due.peek(), plain.peek()) {
                (Some(d), Some((_, earliest))) => d.0 < *earliest,
                (Some(_), None) => true,
                (None, _) => false,
            };
            let (_, seq, id) = match due_first {
                true => due.next(),
                false => plain.next().map(|(p, _)| p),
            }?;
            Some((seq, id))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delayed_arrivals_take_their_place_by_due_time_and_plain_ones_keep_their_order() {
        let id = |n: u64| InvocationId::fresh(n, n);
        let key = KeyArrivals {
            // Plain arrivals in arrival order, one with a clock set back (keeps its place).
            plain: vec![(100, 1, id(1)), (300, 4, id(4)), (250, 6, id(6))],
            due: vec![(300, 5, id(5)), (200, 2, id(2)), (50, 3, id(3))],
        };
        let order: Vec<u64> = key.in_order().map(|(seq, _)| seq).collect();
        // 3 fell due before 1 was accepted, 2 between 1 and 4; 5, due in the millisecond 4
        // was accepted, comes after it (and after 6, accepted after 4 under a clock set back).
        assert_eq!(order, vec![3, 1, 2, 4, 6, 5]);
        // A restarted copy (its original's arrival number, accepted late) ahead of a plain one
        // accepted before the delayed one fell due: both stay ahead of it.
        let key = KeyArrivals {
            plain: vec![(10_000, 1, id(1)), (3_000, 2, id(2))],
            due: vec![(5_000, 3, id(3))],
        };
        let order: Vec<u64> = key.in_order().map(|(seq, _)| seq).collect();
        assert_eq!(order, vec![1, 2, 3]);
        let only_due = KeyArrivals {
            plain: Vec::new(),
            due: vec![(7, 9, id(9)), (7, 8, id(8))],
        };
        let order: Vec<u64> = only_due.in_order().map(|(seq, _)| seq).collect();
        assert_eq!(order, vec![8, 9]);
    }
}
