//! One invocation held in memory while it is not finished: its record, its journal, whether the
//! record is durable yet, and the channel its waiters listen on.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::EngineError;
use super::journal::Journal;
use crate::ids::InvocationId;
use crate::storage::{
    CommitWaiter, InvocationRecord, JournalEntry, Outcome, Placement, StateScope, Storage, WriteOp,
};

/// A finished invocation as callers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    /// Result or terminal error.
    pub outcome: Outcome,
    /// When the result will be purged (ms since the epoch).
    pub expires_at_ms: u64,
}

/// What waiters of an invocation are told.
#[derive(Debug, Clone)]
pub(crate) enum Finish {
    /// Still going.
    Pending,
    /// Still going, and idle since the wait began: suspended (its record durable, nothing of
    /// it in memory until it is woken) or paused (until an operator resumes it). It may be
    /// running again by now; said once, to whoever waits then.
    Idle,
    /// Finished with a result.
    Done(Arc<Completed>),
    /// The engine could not finish it (storage failure, shutdown): no answer can be given.
    Lost(String),
    /// The engine stopped before it finished, with its record stored: it goes on after a
    /// restart, so its waiters are told to attach rather than that it was lost.
    Interrupted(String),
    /// Its partition left this process: the process that runs the partition now finishes it,
    /// if it was stored (see `Engine::wait_or_follow`).
    Moved,
}

/// Why a wait for an invocation ended without its result.
#[derive(Debug)]
pub(crate) enum WaitEnd {
    /// See [`Finish::Lost`].
    Lost(String),
    /// See [`Finish::Interrupted`].
    Interrupted(String),
    /// See [`Finish::Moved`].
    Moved,
}

impl From<WaitEnd> for EngineError {
    fn from(end: WaitEnd) -> Self {
        match end {
            WaitEnd::Lost(reason) | WaitEnd::Interrupted(reason) => Self::Lost(reason),
            WaitEnd::Moved => super::ownership::moved(),
        }
    }
}

pub(crate) struct InflightState {
    pub record: InvocationRecord,
    /// Whether `record` has been submitted to storage (a request-response invocation that nobody
    /// was told about may stay in memory until its first durable effect).
    pub persisted: bool,
    /// Whether the stored record may say `Suspended` (it was loaded suspended, or a suspension
    /// was submitted): completions then commit a wake-up with their entry (law 9).
    pub stored_suspended: bool,
    pub journal: Journal,
    /// Between attempts after a failed one: when the next starts (ms since the epoch). Shown as
    /// `backing-off` with its `next_retry_at` while the wait lasts (the record's `retry` says
    /// the same to whoever reads it from the store).
    pub retry_at_ms: Option<u64>,
    /// Restored from the store by a restart or a takeover, its first attempt here not yet
    /// begun: the status its stored record has. That attempt is counted in the record before
    /// it runs ([`super::interrupted`]).
    pub restored: Option<crate::storage::Status>,
}

pub(crate) struct Inflight {
    pub id: InvocationId,
    /// The object or workflow key it runs on (fixed by its target).
    pub scope: StateScope,
    /// Whether its handler holds the key alone (exclusive or workflow `run`).
    pub exclusive: bool,
    state: Mutex<InflightState>,
    finish: watch::Sender<Finish>,
    /// Bumped whenever something outside the handler completes one of its journal entries.
    version: watch::Sender<u64>,
    /// For an invocation created by another handler's journal entry: resolves once that entry
    /// is durable. The invocation may be queued before, but runs only after.
    gate: Mutex<Option<CommitWaiter>>,
    /// For a one-way send to an object key on a shared database: where the commit of the
    /// sender's entry puts it (here, or behind its key's messages in the inbox, from where
    /// it is taken in again as a new copy).
    placement: std::sync::OnceLock<Arc<Placement>>,
    /// Created from outside on a shared store, for a request whose answer says whether it
    /// was the first: the verdict of its record's first commit against other processes.
    acceptance: std::sync::OnceLock<Arc<crate::storage::Acceptance>>,
    /// A task is executing it (not queued, scheduled, paused or between attempts).
    pub running: AtomicBool,
    /// Created by a call another process relayed here: its result is kept at least
    /// [`RELAYED_RETENTION`](super::forward::RELAYED_RETENTION).
    pub relayed: AtomicBool,
    /// It waits in its key's queue (`Lane::waiting`): a second start does not queue it again.
    pub queued: AtomicBool,
    /// Set by kill: the executing task stops at once.
    pub killed: tokio::sync::Notify,
    /// Set by an operator's resume while it backs off: the next attempt starts now.
    retry_now: tokio::sync::Notify,
    /// A kill was requested: a suspension or pause committing meanwhile must not leave the
    /// invocation where the kill cannot reach it.
    pub kill_requested: AtomicBool,
    /// Completion happened (guards against completing twice when kill races the handler).
    pub finished: AtomicBool,
    /// Its partition left this process: its task stops where it is, writing nothing more,
    /// and the partition's new owner runs it.
    pub left: AtomicBool,
    /// Its partition is leaving this process while one of its `ctx.run` closures executes:
    /// that one ends and journals its result, no other starts, and then it has `left`.
    pub leaving: AtomicBool,
    /// Its `ctx.run` closures executing now ([`Inflight::closure_running`]).
    closures: AtomicUsize,
    /// Set once something waits for them to end ([`Inflight::closures_idle`]): only then does
    /// an end that leaves none notify `closures_ended` (most never have a watcher).
    closures_watched: AtomicBool,
    closures_ended: tokio::sync::Notify,
    /// Entries with a task forwarding another invocation's result into them: a replay of a
    /// pending attach does not start a second one.
    pub forwarding: Mutex<Vec<u32>>,
    /// Its input's length (fixed), counted while it runs or waits to run.
    input_len: usize,
    /// When it was due to run (ms since the epoch): its creation, or a delayed one's start
    /// time. Fixed, so a restart that runs it later still knows (a debounce gate's arrival).
    pub arrived_ms: u64,
    /// What it holds while it runs or waits to run on its key, given back when its task ends
    /// (it completes, suspends or pauses) or it leaves its key's queue.
    active: Mutex<Active>,
}

/// What an invocation takes while it runs or waits to run.
#[derive(Default)]
struct Active {
    /// Its input's bytes, in the engine's count of what running work holds.
    input: Option<HeldInput>,
    /// For one brought back from disk (restored after a restart, woken by a timer): its slot
    /// of that bounded pace.
    disk_slot: Option<super::slots::Slot>,
}

/// An invocation's input bytes in the engine's count, until dropped.
struct HeldInput {
    count: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for HeldInput {
    fn drop(&mut self) {
        self.count.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

impl Inflight {
    pub fn new(
        id: InvocationId,
        record: InvocationRecord,
        persisted: bool,
        journal: Journal,
        finish: watch::Sender<Finish>,
        exclusive: bool,
    ) -> Arc<Self> {
        Arc::new(Self {
            id,
            scope: StateScope::of(&record.target),
            exclusive,
            input_len: record.input.len(),
            arrived_ms: record.arrived_ms(),
            state: Mutex::new(InflightState {
                stored_suspended: matches!(record.status, crate::storage::Status::Suspended { .. }),
                retry_at_ms: None,
                restored: None,
                record,
                persisted,
                journal,
            }),
            finish,
            version: watch::channel(0).0,
            gate: Mutex::new(None),
            placement: std::sync::OnceLock::new(),
            acceptance: std::sync::OnceLock::new(),
            running: AtomicBool::new(false),
            relayed: AtomicBool::new(false),
            queued: AtomicBool::new(false),
            killed: tokio::sync::Notify::new(),
            retry_now: tokio::sync::Notify::new(),
            kill_requested: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            left: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
            closures: AtomicUsize::new(0),
            closures_watched: AtomicBool::new(false),
            closures_ended: tokio::sync::Notify::new(),
            forwarding: Mutex::new(Vec::new()),
            active: Mutex::default(),
        })
    }

    /// Counts its input in `count` (once) while it runs or waits to run.
    pub fn engage(&self, count: &Arc<AtomicUsize>) {
        let mut active = self.active.lock().expect("active lock");
        if active.input.is_none() {
            let bytes = self.input_len;
            count.fetch_add(bytes, Ordering::Relaxed);
            active.input = Some(HeldInput {
                count: count.clone(),
                bytes,
            });
        }
    }

    /// Counts a `ctx.run` closure as executing until the guard drops; `None` (nothing counted)
    /// while its partition is leaving this process: no closure starts then.
    pub fn closure_running(&self) -> Option<ClosureRunning<'_>> {
        self.closures.fetch_add(1, Ordering::SeqCst);
        let guard = ClosureRunning(self);
        // After the count: a departure that set `leaving` before it read the count either
        // sees this closure or is seen here.
        (!self.leaving.load(Ordering::SeqCst)).then_some(guard)
    }

    /// Whether one of its `ctx.run` closures executes now.
    pub fn closures_running(&self) -> bool {
        self.closures.load(Ordering::SeqCst) > 0
    }

    /// Resolves once none of its `ctx.run` closures executes (at once when none does).
    pub async fn closures_idle(&self) {
        self.closures_watched.store(true, Ordering::SeqCst);
        loop {
            // Listening before the count is read: an end in between still wakes this.
            let ended = self.closures_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if !self.closures_running() {
                return;
            }
            ended.await;
        }
    }

    /// Keeps a slot of a bounded restore from disk until it stops running.
    pub fn hold_slot(&self, slot: super::slots::Slot) {
        self.active.lock().expect("active lock").disk_slot = Some(slot);
    }

    /// For one holding a slot of a bounded restore from disk: the count of loads waiting for
    /// a slot of its pool, watched.
    pub fn slot_wanted(&self) -> Option<watch::Receiver<usize>> {
        let active = self.active.lock().expect("active lock");
        active.disk_slot.as_ref().map(super::slots::Slot::wanted)
    }

    /// Gives back its slot of a bounded restore from disk: it waits behind its key's holder,
    /// which may itself need a slot to wake (a holder suspended on a timer).
    pub fn release_slot(&self) {
        self.active.lock().expect("active lock").disk_slot = None;
    }

    /// Gives back what it took to run: its task ended, or it left its key's queue unrun.
    pub fn disengage(&self) {
        *self.active.lock().expect("active lock") = Active::default();
    }

    pub fn set_gate(&self, gate: CommitWaiter) {
        *self.gate.lock().expect("gate lock") = Some(gate);
    }

    pub fn take_gate(&self) -> Option<CommitWaiter> {
        self.gate.lock().expect("gate lock").take()
    }

    /// Makes it a send placed by its entry's commit (see the field `placement`).
    pub fn set_placement(&self, placement: Arc<Placement>) {
        let _ = self.placement.set(placement);
    }

    /// Its placement while the commit that decides it has not committed.
    pub fn undecided_placement(&self) -> Option<&Arc<Placement>> {
        self.placement.get().filter(|p| !p.settled())
    }

    /// A send whose place its sender's commit decides (see the field `placement`).
    pub fn placed_by_commit(&self) -> bool {
        self.placement.get().is_some()
    }

    /// A send whose place is being decided, or that was put into the inbox: not the copy
    /// that control operations act on (see the field `placement`).
    pub fn placing(&self) -> bool {
        self.undecided_placement().is_some() || self.moved_to_inbox()
    }

    /// The commit of its sender's entry put it into the inbox: this copy is not to run (the
    /// one taken in from there runs). Final once that commit is answered (its gate); set
    /// before any process can read the message.
    pub fn moved_to_inbox(&self) -> bool {
        self.placement.get().is_some_and(|p| p.moved())
    }

    /// The key's lane it must hold, if it is exclusive.
    pub fn lane(&self) -> Option<&StateScope> {
        self.exclusive.then_some(&self.scope)
    }

    /// Sets the verdict its first commit gives (see [`Self::accepted_second`]).
    pub fn set_acceptance(&self, acceptance: Arc<crate::storage::Acceptance>) {
        let _ = self.acceptance.set(acceptance);
    }

    /// Whether another process accepted the request that created it first, as its record's
    /// first commit found (read once that commit is answered): its creator's answer is then
    /// a duplicate's.
    pub fn accepted_second(&self) -> bool {
        self.acceptance.get().is_some_and(|a| a.second())
    }

    pub fn state(&self) -> MutexGuard<'_, InflightState> {
        self.state.lock().expect("inflight lock")
    }

    /// Waits on `clock` until `retry_at_ms`, the time of its next attempt after a failure,
    /// shown as backing off meanwhile, until the wait ends or is dropped (a kill, a stop) or an
    /// operator's resume ends it.
    pub(crate) async fn back_off(&self, clock: &crate::clock::Clock, retry_at_ms: u64) {
        struct Shown<'a>(&'a Inflight);
        impl Drop for Shown<'_> {
            fn drop(&mut self) {
                self.0.state().retry_at_ms = None;
            }
        }
        self.state().retry_at_ms = Some(retry_at_ms);
        let _shown = Shown(self);
        tokio::select! {
            () = clock.sleep_until_ms(retry_at_ms) => {}
            () = self.retry_now.notified() => {}
        }
    }

    /// Whether a cancellation was requested and not yet delivered to its handler.
    pub(crate) fn cancel_undelivered(&self) -> bool {
        let state = self.state();
        state.record.cancel_requested && !state.record.cancel_delivered
    }

    /// Resolves once a cancellation was requested and not yet delivered to its handler.
    pub(crate) async fn cancel_requested(&self) {
        let mut changes = self.changes();
        loop {
            if self.cancel_undelivered() {
                return;
            }
            if changes.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Ends its wait between attempts, if it is in one (an operator's resume, as in Restate):
    /// `false` when it is not backing off.
    pub(crate) fn retry_now(&self) -> bool {
        let state = self.state();
        if state.retry_at_ms.is_none() {
            return false;
        }
        // Under its state's lock, which the wait's end takes too: no stored permit cuts a
        // later wait short.
        self.retry_now.notify_waiters();
        true
    }

    /// Submits `ops` after this invocation's record if the record is not durable yet, so the
    /// record always commits first. Submitting under the lock keeps the invocation's writes in
    /// journal order. `fenced_on`: a partition key the batch is fenced on as well
    /// ([`Storage::submit_fenced`]); `placements`: new invocations of `ops` that its commit
    /// places ([`Storage::submit_placing`]).
    pub fn submit_with_record(
        &self,
        storage: &dyn Storage,
        state: &mut InflightState,
        mut ops: Vec<WriteOp>,
        fenced_on: Option<u64>,
        placements: Vec<Arc<Placement>>,
    ) -> CommitWaiter {
        if !state.persisted {
            state.persisted = true;
            ops.insert(0, WriteOp::put_invocation(self.id, &state.record));
        }
        storage.submit_placing(ops, fenced_on, placements)
    }

    /// Resolves once everything this invocation submitted so far, record included, is durable.
    pub fn make_durable(&self, storage: &dyn Storage) -> CommitWaiter {
        let mut state = self.state();
        if state.persisted {
            // Decided after every batch queued before it, and fenced on this invocation's
            // partition: an earlier write of it that a shared database refused fails it too.
            return storage.barrier(self.id.partition_key());
        }
        self.submit_with_record(storage, &mut state, Vec::new(), None, Vec::new())
    }

    /// Records an entry completed from outside (a call result, an awakeable, a promise) and
    /// wakes the handler waiting on it.
    pub fn complete_entry(&self, index: u32, entry: JournalEntry) {
        self.state().journal.insert(index, entry);
        self.bump();
    }

    /// Wakes the handler's waits so they look again (a completion or a cancellation).
    pub fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<Finish> {
        self.finish.subscribe()
    }

    /// Tells whoever waits that it is idle ([`Finish::Idle`]), unless it ended already.
    pub fn idle(&self) {
        self.finish.send_if_modified(|finish| {
            let pending = matches!(finish, Finish::Pending);
            if pending {
                *finish = Finish::Idle;
            }
            pending
        });
    }

    pub fn finish(&self, finish: Finish) {
        self.finish.send_replace(finish);
    }

    /// [`super::end_wait`] on its channel.
    pub fn end_wait(&self, finish: Finish) {
        super::end_wait(&self.finish, finish);
    }
}

/// Waits until the invocation finishes.
pub(crate) async fn wait_finished(rx: watch::Receiver<Finish>) -> Result<Arc<Completed>, WaitEnd> {
    wait_finished_or_idle(rx, || {}).await
}

/// [`wait_finished`], calling `idle` once if the invocation suspends or pauses meanwhile.
pub(crate) async fn wait_finished_or_idle(
    mut rx: watch::Receiver<Finish>,
    idle: impl FnOnce(),
) -> Result<Arc<Completed>, WaitEnd> {
    let mut idle = Some(idle);
    loop {
        let now_idle = match &*rx.borrow_and_update() {
            Finish::Done(c) => return Ok(c.clone()),
            Finish::Lost(reason) => return Err(WaitEnd::Lost(reason.clone())),
            Finish::Interrupted(reason) => return Err(WaitEnd::Interrupted(reason.clone())),
            Finish::Moved => return Err(WaitEnd::Moved),
            Finish::Pending => false,
            Finish::Idle => true,
        };
        if now_idle && let Some(idle) = idle.take() {
            idle();
        }
        if rx.changed().await.is_err() {
            return Err(WaitEnd::Lost("the runtime is shutting down".into()));
        }
    }
}

/// A `ctx.run` closure counted as executing; see [`Inflight::closure_running`].
pub(crate) struct ClosureRunning<'a>(&'a Inflight);

impl Drop for ClosureRunning<'_> {
    fn drop(&mut self) {
        let inflight = self.0;
        if inflight.closures.fetch_sub(1, Ordering::SeqCst) == 1
            && inflight.closures_watched.load(Ordering::SeqCst)
        {
            inflight.closures_ended.notify_waiters();
        }
    }
}
