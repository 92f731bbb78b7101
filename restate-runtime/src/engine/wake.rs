//! Completing the entries invocations wait on, and waking them (law 9).
//!
//! Whatever completes a waiting entry (a callee's result, a promise, an awakeable, an attached
//! invocation's end) goes through [`Engine::submit_completions`], which in one batch writes the
//! completed entry and, when the waiter's stored record may say suspended, a **wake-up row**
//! keyed by (invocation, entry index). A suspension commits its `Suspended` record together with
//! the removal of the wake-ups of the completions it saw (those in its journal in memory); the
//! rows of completions it did not see stay. Recovery resumes every suspended invocation that
//! has a wake-up row, so a wake-up survives a crash at any point: before the suspension commits,
//! between the two commits, or after a resume that had not committed anything yet.
//!
//! In memory, completion and suspension are ordered by the map of invocations in memory: both
//! submit their batch while holding its lock. A completion of an invocation in memory updates
//! its journal and bumps its version under that lock, so a suspension either is submitted first
//! (its batch clears nothing of the completion's, and its post-commit check sees the bump and
//! runs the handler again) or sees the bump before submitting and does not suspend. An
//! invocation leaves memory only once its suspension is durable and nothing woke it meanwhile;
//! a completion of an invocation not in memory resumes it from the store after the commit.
//! False wake-ups are harmless (the handler replays and suspends again); lost ones are what
//! this module exists to rule out.

use std::sync::Arc;

use super::{Engine, Inflight};
use crate::ids::InvocationId;
use crate::maps::FastMap;
use crate::storage::{
    CommitWaiter, InboxMessage, JournalEntry, Outcome, Partitions, ResultWaiter, Status,
    StorageError, WriteOp,
};

/// One journal entry completed by another party's commit.
pub(crate) struct Completion {
    /// The invocation whose entry it is.
    pub id: InvocationId,
    /// The entry's index.
    pub index: u32,
    /// The entry, completed.
    pub entry: JournalEntry,
    /// Whether it wakes its invocation: false for the completing handler's own entry (it is
    /// running), true for a waiter's.
    pub wakes: bool,
}

/// A submitted batch of completions: what to do once it is durable.
#[must_use = "the waiters not in memory are resumed only by `finish`"]
pub(crate) struct PendingWake {
    engine: Engine,
    waiter: CommitWaiter,
    /// Barriers on the partitions of completions skipped because an earlier one got there
    /// first: this one succeeds only if that one committed.
    behind: Vec<CommitWaiter>,
    /// Completions of invocations that were not in memory: resumed after the commit.
    absent: Vec<Completion>,
}

impl PendingWake {
    /// Succeeds only if what was submitted to `partition_key`'s partition before also
    /// committed: a completion that found its entry completed already answers as that one did.
    pub(super) fn behind(mut self, partition_key: u64) -> Self {
        let barrier = self.engine.storage.barrier(partition_key);
        self.behind.push(barrier);
        self
    }

    /// Waits for the commit, then brings the woken invocations that were not in memory back.
    pub(crate) async fn finish(self) -> Result<(), crate::storage::StorageError> {
        self.waiter.await?;
        for earlier in self.behind {
            earlier.await?;
        }
        if self.engine.crash_point("wake.committed") {
            return Ok(());
        }
        for c in self.absent {
            let loaded = {
                let map = self.engine.inflight.lock().expect("inflight map");
                // Loaded before the commit (a timer, another completion): give it the entry,
                // under the map lock, so a suspension deciding now sees the bump.
                map.get(&c.id).map(|f| f.complete_entry(c.index, c.entry))
            };
            if loaded.is_none() {
                self.engine.resume(c.id);
            }
        }
        Ok(())
    }
}

/// The entry kinds that something outside the handler completes: a suspension that saw one
/// completed has spent its wake-up.
pub(super) fn completed_from_outside(entry: &JournalEntry) -> bool {
    matches!(
        entry,
        JournalEntry::Call {
            outcome: Some(_),
            ..
        } | JournalEntry::Awakeable { outcome: Some(_) }
            | JournalEntry::GetPromise {
                outcome: Some(_),
                ..
            }
            | JournalEntry::Attach {
                outcome: Some(_),
                ..
            }
    )
}

/// The wake-ups a suspension of this journal has seen: its completed entries, and a
/// cancellation or explicit resume ([`crate::storage::CANCEL_WAKE`]), which is delivered
/// before any wait suspends.
pub(super) fn seen_wakes(journal: &super::Journal) -> Vec<u32> {
    journal
        .iter()
        .filter(|(_, e)| completed_from_outside(e))
        .map(|(i, _)| *i)
        .chain([crate::storage::CANCEL_WAKE])
        .collect()
}

/// The completion of a result waiter's entry with `source`'s outcome; `target` is the source's
/// (a `Call` entry names it).
pub(super) fn result_completion(
    w: ResultWaiter,
    target: &crate::storage::Target,
    outcome: &Outcome,
) -> Completion {
    let outcome = Some(outcome.clone());
    let entry = if w.call {
        JournalEntry::Call {
            target: target.clone(),
            invocation_id: w.source,
            outcome,
        }
    } else {
        JournalEntry::Attach {
            invocation_id: w.source,
            outcome,
        }
    };
    Completion {
        id: w.waiter,
        index: w.index,
        entry,
        wakes: true,
    }
}

impl Engine {
    /// The write that records entry `index` of `waiter` as waiting on `source`'s result; the
    /// source's completion then reads its waiters. A waiter recorded after that read is
    /// completed by its in-memory forward, or after a crash by recovery.
    pub(crate) fn result_waiter(
        &self,
        source: InvocationId,
        waiter: InvocationId,
        index: u32,
        call: bool,
    ) -> WriteOp {
        self.result_sources
            .lock()
            .expect("result sources")
            .insert(source);
        WriteOp::AddResultWaiter {
            source,
            waiter,
            index,
            call,
        }
    }

    /// Completes the result waiters whose source (of the partitions `only`) finished, or is
    /// gone, while they were not recorded yet, so nobody completed them: at recovery, where no
    /// in-memory forward is left.
    pub(super) fn complete_orphaned_result_waiters(
        &self,
        only: &Partitions,
    ) -> Result<(), StorageError> {
        let mut waiters = self.storage.result_waiters(None)?;
        waiters.retain(|w| only.holds(&w.source));
        let mut sources: Vec<InvocationId> = waiters.iter().map(|w| w.source).collect();
        sources.dedup();
        let mut ops = Vec::new();
        let mut completions = Vec::new();
        for source in sources {
            let mut record = self.storage.invocation(&source)?;
            if record.is_none() && self.shared_store {
                // Accepted and waiting in its partition's inbox (taken over with it, not
                // applied yet): not unknown, it runs once applied (found from outside: a call
                // whose callee waited there was failed with a 404 at the takeover).
                if self.storage.inbox_pending(&source)?.starts {
                    self.result_sources
                        .lock()
                        .expect("result sources")
                        .insert(source);
                    continue;
                }
                // Applied between the two reads: its record is stored before its message leaves.
                record = self.storage.invocation(&source)?;
            }
            let outcome = match &record {
                Some(r) => match &r.status {
                    Status::Completed { outcome, .. } => outcome.clone(),
                    _ => {
                        // Still running: its completion completes them.
                        self.result_sources
                            .lock()
                            .expect("result sources")
                            .insert(source);
                        continue;
                    }
                },
                None => Outcome::Failure {
                    code: 404,
                    message: format!("invocation {source} not found"),
                },
            };
            for w in waiters.iter().filter(|w| w.source == source) {
                let completion = match &record {
                    Some(r) => result_completion(*w, &r.target, &outcome),
                    // Gone: the waiter's own entry names the target.
                    None => match self.load_stored(&w.waiter)? {
                        Some((_, journal)) => match journal.get(w.index) {
                            Some(entry) => Completion {
                                id: w.waiter,
                                index: w.index,
                                entry: crate::context::invocation::with_outcome(
                                    entry.clone(),
                                    outcome.clone(),
                                ),
                                wakes: true,
                            },
                            None => continue,
                        },
                        None => continue,
                    },
                };
                completions.push(completion);
            }
            ops.push(WriteOp::ClearResultWaiters { source });
        }
        if !ops.is_empty() {
            let pending = self.submit_completions(ops, completions);
            self.tasks.spawn(async move {
                if let Err(e) = pending.finish().await {
                    tracing::error!(error = %e, "cannot complete result waiters");
                }
            });
        }
        Ok(())
    }

    /// Submits `ops` with `completions` in one batch (see the module docs). Invocations in
    /// memory see their entry at once; the others are resumed by [`PendingWake::finish`].
    pub(crate) fn submit_completions(
        &self,
        ops: Vec<WriteOp>,
        completions: Vec<Completion>,
    ) -> PendingWake {
        self.submit_completions_fenced(ops, completions, None)
    }

    /// [`Engine::submit_completions`] of a batch that commits only if what was submitted to
    /// `fenced_on`'s partition before committed too ([`Storage::submit_fenced`]).
    ///
    /// [`Storage::submit_fenced`]: crate::storage::Storage::submit_fenced
    pub(crate) fn submit_completions_fenced(
        &self,
        ops: Vec<WriteOp>,
        completions: Vec<Completion>,
        fenced_on: Option<u64>,
    ) -> PendingWake {
        let map = self.inflight.lock().expect("inflight map");
        self.submit_completions_locked(&map, ops, completions, fenced_on)
    }

    /// [`Engine::submit_completions_fenced`] with the map of invocations in memory already
    /// locked.
    pub(super) fn submit_completions_locked(
        &self,
        map: &FastMap<InvocationId, Arc<Inflight>>,
        mut ops: Vec<WriteOp>,
        completions: Vec<Completion>,
        fenced_on: Option<u64>,
    ) -> PendingWake {
        let mut absent = Vec::new();
        let mut woken = Vec::new();
        let mut skipped = std::collections::BTreeSet::new();
        for c in completions {
            // Its partition's owner applies it (law 9 there), and the first completion wins.
            if self.elsewhere(&c.id) {
                let message = InboxMessage::Complete {
                    index: c.index,
                    entry: c.entry,
                };
                ops.push(WriteOp::forward(c.id, &message));
                continue;
            }
            match map.get(&c.id) {
                Some(f) => {
                    let mut state = f.state();
                    // First completion wins: a cancellation delivered there, or a forward that
                    // got there first, is what the handler saw.
                    if c.wakes
                        && state
                            .journal
                            .get(c.index)
                            .is_some_and(completed_from_outside)
                    {
                        skipped.insert(c.id.partition_key());
                        continue;
                    }
                    if !state.persisted {
                        state.persisted = true;
                        ops.push(WriteOp::put_invocation(c.id, &state.record));
                    }
                    ops.push(WriteOp::put_journal(c.id, c.index, &c.entry));
                    if c.wakes && state.stored_suspended {
                        ops.push(WriteOp::Wake {
                            id: c.id,
                            index: c.index,
                        });
                    }
                    state.journal.insert(c.index, c.entry);
                    woken.push(f.clone());
                }
                None => {
                    ops.push(WriteOp::put_journal(c.id, c.index, &c.entry));
                    if c.wakes {
                        ops.push(WriteOp::Wake {
                            id: c.id,
                            index: c.index,
                        });
                        absent.push(c);
                    }
                }
            }
        }
        // Nothing of it commits unless the completions that got there first did: they may
        // still be committing, for a partition that may yet be refused. A batch is fenced
        // only on a partition held here (one that left meanwhile would refuse it, and take
        // the partitions it writes away with it): the rest are barriers after it.
        let mut fences = skipped;
        fences.extend(fenced_on);
        let (held, others): (Vec<u64>, Vec<u64>) =
            fences.into_iter().partition(|key| self.holds_key(*key));
        let mut fences = held.into_iter();
        let waiter = match fences.next() {
            Some(partition_key) => self.storage.submit_fenced(ops, partition_key),
            None => self.storage.submit(ops),
        };
        let fences = fences.chain(others);
        // Bumped after the submit, still under the map lock: a suspension deciding now sees it.
        for f in woken {
            f.bump();
        }
        let pending = PendingWake {
            engine: self.clone(),
            waiter,
            behind: Vec::new(),
            absent,
        };
        fences.fold(pending, PendingWake::behind)
    }

    /// Brings a suspended invocation back into memory and runs it by replay; or a delayed one
    /// waiting on disk, whose timer fired (nothing else completes into one that has not
    /// started).
    pub(crate) fn resume(&self, id: InvocationId) {
        self.resume_at(id, None, None)
    }

    /// A delayed start of an exclusive handler, not started and not cancelled, whose key is
    /// busy: it takes its place on the key now (after what its key held or queued, before what
    /// comes later) and waits there on disk, loaded when its turn comes (found from outside:
    /// each one loaded and queued in memory, 50,000 due together took 330 MiB). `true` when it
    /// is queued there, also if it was already (a timer that fires again for one queued since
    /// a restart).
    fn queued_on_disk(
        &self,
        id: InvocationId,
        record: &crate::storage::InvocationRecord,
        journal: &super::journal::Journal,
    ) -> bool {
        if !matches!(record.status, Status::Scheduled { .. })
            || record.cancel_requested
            || !journal.is_empty()
        {
            return false;
        }
        let Some(scope) = self.exclusive_scope_of(&record.target) else {
            return false;
        };
        let mut lanes = self.lanes.lock().expect("lanes");
        match lanes.get_mut(&scope) {
            Some(lane) if lane.running.is_some_and(|holder| holder != id) => {
                lane.queue_stored(id, true);
                true
            }
            // An idle key (no lane, or none holding it): it loads and takes the key.
            _ => false,
        }
    }

    /// [`Self::resume`] for a timer set for `timer` (ms): a delayed one is started only by
    /// the timer of its own start time. A `slot` of the bounded wake from disk stays with the
    /// invocation while it is in memory.
    pub(crate) fn resume_at(
        &self,
        id: InvocationId,
        timer: Option<u64>,
        mut slot: Option<super::slots::Slot>,
    ) {
        // Another process runs its partition: there the durable wake-up resumes it. A timer
        // loads nothing of a partition still joining either: its join reads the due index
        // again as it ends, and the timer fires then; a delayed invocation loaded before
        // recovery ran would start on its key ahead of the one that had started on it.
        let loadable = |id: &InvocationId| match timer {
            Some(_) => self.runs(id),
            None => self.may_load(id),
        };
        if !loadable(&id) {
            return;
        }
        let (inflight, cancelled) = {
            let mut map = self.inflight.lock().expect("inflight map");
            if map.contains_key(&id) || !loadable(&id) {
                return;
            }
            let (record, journal) = match self.load_stored(&id) {
                Ok(Some((r, j)))
                    if matches!(
                        r.status,
                        Status::Suspended { .. } | Status::Scheduled { .. }
                    ) =>
                {
                    if let (Status::Scheduled { at_ms }, Some(timer)) = (&r.status, timer)
                        && *at_ms != timer
                    {
                        return;
                    }
                    if timer.is_some() && self.queued_on_disk(id, &r, &j) {
                        return;
                    }
                    (r, j)
                }
                Ok(_) => return,
                Err(e) => {
                    tracing::error!(invocation = %id, error = %e, "cannot resume");
                    return;
                }
            };
            let suspended = matches!(record.status, Status::Suspended { .. });
            // A delayed one whose cancellation was recorded before it started (a handler's
            // `ctx.cancel` whose delivery a crash cut short) ends without running.
            let cancelled = !suspended && record.cancel_requested && journal.is_empty();
            // Made runnable once in memory, which keeps a delayed one's start time.
            let inflight = self.new_inflight(id, record, true, journal);
            {
                let mut state = inflight.state();
                state.stored_suspended = suspended;
                state.record.status = Status::Runnable;
            }
            // The slot is its own before anything can find it in the map and run it: held
            // after a task that another path started had ended, it would never come back.
            if let Some(slot) = slot.take().filter(|_| !cancelled) {
                inflight.hold_slot(slot);
            }
            map.insert(id, inflight.clone());
            if cancelled {
                // Claimed under the map lock, as a cancel does: nothing else starts it.
                inflight
                    .running
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
            (inflight, cancelled)
        };
        if cancelled {
            self.tasks.spawn(end_cancelled(self.clone(), inflight));
            return;
        }
        if self.crash_point("resume.loaded") {
            return;
        }
        tracing::debug!(invocation = %id, "resumed");
        self.spawn_resumed(inflight);
    }

    /// An invocation's record and journal as stored.
    pub(super) fn load_stored(
        &self,
        id: &InvocationId,
    ) -> Result<
        Option<(crate::storage::InvocationRecord, super::Journal)>,
        crate::storage::StorageError,
    > {
        let Some(record) = self.storage.invocation(id)? else {
            return Ok(None);
        };
        let journal: super::Journal = self.storage.journal(id)?.into_iter().collect();
        Ok(Some((record, journal)))
    }

    /// Runs a resumed invocation: it still holds its key's lane, if it has one.
    pub(crate) fn spawn_resumed(&self, inflight: Arc<Inflight>) {
        let holds_lane = inflight.lane().is_some_and(|scope| {
            self.lanes
                .lock()
                .expect("lanes")
                .get(scope)
                .is_some_and(|lane| lane.running == Some(inflight.id))
        });
        if holds_lane {
            self.start_holder(inflight);
        } else {
            self.spawn(inflight);
        }
    }
}

/// Completes `inflight` as cancelled, in a task of its own: its completion wakes waiters,
/// which may resume others (a boxed future, so that cycle has a type).
pub(super) fn end_cancelled(
    engine: Engine,
    inflight: Arc<Inflight>,
) -> futures::future::BoxFuture<'static, ()> {
    Box::pin(async move {
        let outcome = crate::context::invocation::cancelled_outcome();
        engine.complete_claimed(&inflight, outcome).await
    })
}
