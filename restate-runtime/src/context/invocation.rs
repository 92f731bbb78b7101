//! The per-attempt context of one invocation: the journal cursor, replay checks, and the abort
//! signal that lets a context operation stop the attempt (non-determinism, a retryable failure
//! inside `run`, a storage failure).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{Notify, watch};

use crate::engine::{Engine, Inflight};
use crate::filter::PauseReason;
use crate::ids::InvocationId;
use crate::storage::{CommitWaiter, JournalEntry, Outcome, WriteOp};

/// Why an attempt stopped early.
#[derive(Debug, Clone)]
pub(crate) enum Abort {
    /// Retry the invocation (with backoff).
    Retry(String),
    /// Stop and pause: retrying cannot help (non-determinism).
    Pause(String),
    /// Storage failed: nothing more may be acknowledged.
    Lost(String),
    /// Waiting for long: release the task. `seen` is the journal version the wait last saw, so
    /// a completion that raced the decision is not lost; `wake_at_ms` is when the earliest
    /// sleep the handler awaits is due (the suspended record's timer).
    Suspend { seen: u64, wake_at_ms: Option<u64> },
    /// Under a replay check: the handler reached an operation the journal does not hold yet,
    /// or a wait it has not seen complete; the code agrees with the journal up to here.
    ReplayEnds,
}

/// A journal entry the handler's code does not match.
#[derive(Debug, Clone)]
pub(crate) struct Mismatch {
    pub index: u32,
    /// The entry's kind and what names it (`run` (name `charge`)).
    pub journal: String,
    /// What the code does there instead.
    pub code: String,
}

/// The engine's side of a running handler. Handlers see it through the typed context wrappers.
#[doc(hidden)]
pub struct InvocationContext {
    pub(crate) engine: Engine,
    pub(crate) inflight: Arc<Inflight>,
    pub(crate) key: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
    next_index: AtomicU32,
    abort: Mutex<Option<Abort>>,
    aborted: Notify,
    /// Seeded from the invocation id on first use: most handlers never draw a number, and the
    /// generator's state (320 bytes) would otherwise sit in every invocation's task.
    rng: Mutex<Option<Box<StdRng>>>,
    /// The waits the handler has pending now (several under a `select` or a join).
    waits: Mutex<Waits>,
    /// Each patch marker's answer in this attempt, so one change is decided once.
    pub(super) patches: Mutex<Vec<(String, bool)>>,
    /// The first journal entry the code did not match, for a replay check's report.
    mismatch: std::sync::OnceLock<Box<Mismatch>>,
    /// A debounced invocation that did not run: the one that ran in its place (its end
    /// records it superseded).
    superseded_by: std::sync::OnceLock<InvocationId>,
}

impl InvocationContext {
    pub(crate) fn new(engine: Engine, inflight: Arc<Inflight>) -> Self {
        let (key, headers) = {
            let state = inflight.state();
            (
                state.record.target.key.clone(),
                state.record.headers.clone(),
            )
        };
        Self {
            engine,
            inflight,
            key,
            headers,
            next_index: AtomicU32::new(0),
            abort: Mutex::new(None),
            aborted: Notify::new(),
            rng: Mutex::new(None),
            waits: Mutex::new(Waits::default()),
            patches: Mutex::new(Vec::new()),
            mismatch: std::sync::OnceLock::new(),
            superseded_by: std::sync::OnceLock::new(),
        }
    }

    /// Records that `by` ran in this invocation's place (a debounce gate's verdict).
    pub(crate) fn supersede(&self, by: InvocationId) {
        let _ = self.superseded_by.set(by);
    }

    /// How this attempt's end is recorded: `outcome`, or for a superseded invocation that
    /// outcome as the one that ran in its place ended with.
    pub(crate) fn ending(&self, outcome: Outcome) -> Outcome {
        match self.superseded_by.get() {
            Some(by) => Outcome::Superseded {
                by: *by,
                outcome: Box::new(outcome),
            },
            None => outcome,
        }
    }

    /// Runs `draw` on the invocation's deterministic generator, the same sequence on every
    /// attempt. Its seed is a MAC of the invocation id under the store's secret: the same on
    /// every replay, unpredictable from outside.
    pub(crate) fn with_rng<T>(&self, draw: impl FnOnce(&mut StdRng) -> T) -> T {
        self.refuse_in_zone("a draw from `ctx.rand()`");
        let mut rng = self.rng.lock().expect("rng lock");
        draw(rng.get_or_insert_with(|| {
            let seed = self.engine.mac(&[b"rand", &self.inflight.id.to_bytes()]);
            Box::new(StdRng::from_seed(seed))
        }))
    }

    pub(crate) fn id(&self) -> InvocationId {
        self.inflight.id
    }

    /// The journal position of the next operation. Taken when an operation is created (not when
    /// it is first polled), so concurrent operations get positions in program order.
    pub(crate) fn take_index(&self) -> u32 {
        self.refuse_in_zone("a context operation");
        self.next_index.fetch_add(1, Ordering::Relaxed)
    }

    /// Pauses the attempt when an operation (`what`) is created where its position would
    /// depend on timing (see `zone.rs`). The operation goes on; the attempt is stopping.
    pub(crate) fn refuse_in_zone(&self, what: &'static str) {
        if let Some(reason) = super::zone::created(what) {
            self.stop(Abort::Pause(reason));
        }
    }

    /// Takes position `index` only when it is still the next one: for an operation that
    /// decides from the entry there whether it takes a position at all (a patch marker).
    pub(crate) fn take_index_if_next(&self, index: u32) -> bool {
        self.refuse_in_zone("a context operation");
        self.next_index
            .compare_exchange(index, index + 1, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// The position the next operation will take.
    /// Whether a gate at `index` (a request to one of the runtime's objects there, and the
    /// awakeable its answer comes through at the next position, journaled first) is made by
    /// this attempt: the journal ends before it, or holds only its awakeable (a crash came
    /// between the two).
    pub(crate) fn gate_is_fresh(&self, index: u32) -> bool {
        let last = self.inflight.state().journal.last_index();
        last.is_none_or(|last| last < index)
            || (last == Some(index + 1)
                && matches!(
                    self.replayed(index + 1),
                    Some(JournalEntry::Awakeable { .. })
                ))
    }

    pub(crate) fn peek_index(&self) -> u32 {
        self.next_index.load(Ordering::Relaxed)
    }

    /// `count` consecutive journal positions, for an operation that makes several decisions
    /// (a stream in completion order); returns the first.
    pub(crate) fn take_indices(&self, count: u32) -> u32 {
        self.refuse_in_zone("a context operation");
        self.next_index.fetch_add(count, Ordering::Relaxed)
    }

    /// The entry recorded at `index` by an earlier attempt, if any.
    pub(crate) fn replayed(&self, index: u32) -> Option<JournalEntry> {
        self.inflight.state().journal.get(index).cloned()
    }

    /// Whether calling `target` would wait on the key this invocation holds exclusively.
    pub(crate) fn exclusive_on(&self, target: &crate::storage::Target) -> bool {
        use crate::registry::HandlerKind::{Exclusive, Workflow};
        let own = self.inflight.state().record.target.clone();
        let exclusive = |t: &crate::storage::Target| {
            self.engine
                .resolve(t)
                .is_ok_and(|(_, h)| matches!(h.kind, Exclusive | Workflow))
        };
        own.service == target.service
            && own.key == target.key
            && exclusive(&own)
            && exclusive(target)
    }

    /// The error for an input the handler's type cannot decode: the invocation is paused, as
    /// a bad deploy's are. What was accepted was checked against the input type then (the
    /// ingress, a webhook, a schedule) or encoded by a typed client of that type, so the type
    /// changed since (found from outside: such an invocation ended with a terminal 400 that
    /// no fix could resume; the version it records need not differ, a field's type is not in
    /// it). The error returned is the one a handler without a pause would give.
    pub(crate) fn undecodable_input(
        &self,
        e: &crate::codec::DecodeError,
    ) -> crate::error::HandlerError {
        let accepted_by = self.inflight.state().record.version.clone();
        self.stop(Abort::Pause(format!(
            "{}: the input, accepted by version {}, does not decode as the handler's input \
             type now ({e}); keep the type able to read it (`#[serde(default)]`), then resume",
            PauseReason::NonDeterminism.marker(),
            accepted_by.as_deref().unwrap_or("unknown"),
        )));
        crate::error::TerminalError::new_with_code(400, format!("input validation error: {e}"))
            .into()
    }

    /// Records a journal mismatch and stops the attempt.
    pub(crate) fn mismatch(&self, index: u32, recorded: &JournalEntry, actual: &str) {
        self.stop(Abort::Pause(self.record_mismatch(index, recorded, actual)));
    }

    /// Records a journal mismatch (the first one stays); the pause reason that names it.
    fn record_mismatch(&self, index: u32, recorded: &JournalEntry, actual: &str) -> String {
        let journal = format!("`{}` ({})", recorded.kind(), describe(recorded));
        let reason = format!(
            "{}: journal entry {index} is {journal} but the handler now does `{actual}`; \
             the handler's code changed or depends on something not journaled",
            PauseReason::NonDeterminism.marker(),
        );
        let _ = self.mismatch.set(Box::new(Mismatch {
            index,
            journal,
            code: actual.to_owned(),
        }));
        reason
    }

    /// For a handler that returned: when its code ended before the journal does (an entry
    /// at or after the next position it would have taken), its code changed or depends on
    /// something not journaled; the first such entry is recorded as a mismatch, and the pause
    /// reason naming it returned (the replay check reports the same as `ends early`).
    pub(crate) fn ended_early(&self) -> Option<String> {
        let next = self.peek_index();
        let (index, entry) = {
            let state = self.inflight.state();
            if state.journal.last_index().is_none_or(|last| last < next) {
                return None;
            }
            state
                .journal
                .iter()
                .find(|(index, _)| **index >= next)
                .map(|(index, entry)| (*index, entry.clone()))?
        };
        Some(self.record_mismatch(index, &entry, "return"))
    }

    /// The first journal entry the code did not match, if any.
    pub(crate) fn mismatched(&self) -> Option<&Mismatch> {
        self.mismatch.get().map(|m| &**m)
    }

    /// Under a replay check, the journal ends at this operation (it would act, or wait, now):
    /// stops the attempt, and the operation must do nothing more. False outside a check.
    pub(crate) fn replay_ends(&self) -> bool {
        if !self.engine.config().replay_check {
            return false;
        }
        self.stop(Abort::ReplayEnds);
        true
    }

    /// [`Self::replay_ends`] for a position that may stay empty in a journal that goes on (a
    /// combinator's decision, journaled only when there was one to make): the check ends
    /// only when the journal holds nothing from `index` on.
    pub(crate) fn replay_ends_at(&self, index: u32) -> bool {
        let later = self
            .inflight
            .state()
            .journal
            .last_index()
            .is_some_and(|last| last >= index);
        !later && self.replay_ends()
    }

    /// How the attempt was stopped, if it was.
    pub(crate) fn stopped_with(&self) -> Option<Abort> {
        self.abort.lock().expect("abort lock").clone()
    }

    /// Whether the attempt is stopped, for an operation about to write that does not go
    /// through [`Self::journal`]: as there, a stop that asked to suspend makes the engine run
    /// the attempt again instead, since the handler got past a wait.
    pub(crate) fn halted(&self) -> bool {
        match self.abort.lock().expect("abort lock").as_mut() {
            Some(Abort::Suspend { seen, .. }) => {
                *seen = u64::MAX;
                true
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Registers a pending wait (a sleep due at `wake_at_ms`, or an entry's completion) until
    /// the guard drops; the wait reports each journal version it looks at.
    pub(crate) fn waiting(&self, wake_at_ms: Option<u64>) -> WaitGuard<'_> {
        let seen = self.inflight.version();
        let mut waits = self.waits.lock().expect("waits lock");
        waits.next += 1;
        let token = waits.next;
        waits.pending.push(PendingWait {
            token,
            seen,
            wake_at_ms,
        });
        WaitGuard { ctx: self, token }
    }

    /// Stops the attempt to suspend it. The version passed on is the oldest one a pending wait
    /// has looked at: a sibling wait (the other branch of a `select`) that has not looked since
    /// a completion makes the engine run the attempt again instead of suspending past it. The
    /// wake-up time is the earliest pending sleep's.
    pub(crate) fn suspend(&self) {
        let (seen, wake_at_ms) = {
            let waits = self.waits.lock().expect("waits lock");
            let seen = waits.pending.iter().map(|w| w.seen).min();
            let wake = waits.pending.iter().filter_map(|w| w.wake_at_ms).min();
            (seen.unwrap_or_else(|| self.inflight.version()), wake)
        };
        self.stop(Abort::Suspend { seen, wake_at_ms });
    }

    /// Suspends once every sibling wait has been polled: the other branches of a combinator,
    /// polled after this one, register their waits (and may turn out complete) in the pass
    /// this yield lets run. A wait whose deadline passed at its very first poll (the thread was
    /// descheduled in between) would otherwise suspend before a sibling whose entry is already
    /// complete, or whose timer is the only wake-up, was counted.
    pub(crate) async fn suspend_after_siblings(&self) {
        self.engine.tasks().yield_now().await;
        self.suspend();
    }

    /// Stops the attempt; the engine sees it at the handler's next await point.
    pub(crate) fn stop(&self, abort: Abort) {
        let mut slot = self.abort.lock().expect("abort lock");
        if slot.is_none() {
            *slot = Some(abort);
            self.aborted.notify_one();
        }
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.abort.lock().expect("abort lock").is_some()
    }

    /// Resolves when the attempt was stopped.
    pub(crate) async fn aborted(&self) -> Abort {
        loop {
            if let Some(abort) = self.abort.lock().expect("abort lock").clone() {
                return abort;
            }
            self.aborted.notified().await;
        }
    }

    /// Appends `entry` at `index` (with `extra` ops in the same batch) and returns the commit
    /// waiter. Nothing is written once the attempt is stopped.
    pub(crate) fn journal(
        &self,
        index: u32,
        entry: JournalEntry,
        extra: Vec<WriteOp>,
    ) -> Option<CommitWaiter> {
        self.journal_fenced(index, entry, extra, None, Vec::new())
    }

    /// [`Self::journal`] of a one-way send whose new invocation the entry's commit places
    /// ([`Placement`](crate::storage::Placement)).
    pub(crate) fn journal_placing(
        &self,
        index: u32,
        entry: JournalEntry,
        extra: Vec<WriteOp>,
        placement: Arc<crate::storage::Placement>,
    ) -> Option<CommitWaiter> {
        self.journal_fenced(index, entry, extra, None, vec![placement])
    }

    /// [`Self::journal`] of an entry that records another invocation's result, `source`.
    /// One read `in_memory` here may still be committing, or be stale (this process's hold
    /// on its partition lost while it was paused): on a shared database the entry then
    /// commits only if that partition's writes before it did, and only while the partition
    /// still runs here (otherwise the attempt runs again). One read from the store after
    /// this process's own writes were decided needs no fence.
    pub(crate) fn journal_result_of(
        &self,
        index: u32,
        entry: JournalEntry,
        source: InvocationId,
        in_memory: bool,
    ) -> Option<CommitWaiter> {
        let fenced_on = in_memory.then(|| self.engine.fence_of(&source)).flatten();
        self.journal_fenced(index, entry, Vec::new(), fenced_on, Vec::new())
    }

    fn journal_fenced(
        &self,
        index: u32,
        entry: JournalEntry,
        extra: Vec<WriteOp>,
        fenced_on: Option<u64>,
        placements: Vec<Arc<crate::storage::Placement>>,
    ) -> Option<CommitWaiter> {
        if self.engine.config().replay_check {
            return None;
        }
        if let Some(abort) = self.abort.lock().expect("abort lock").as_mut() {
            // A wait asked to suspend, yet the handler got past a wait (the other branch of a
            // `select` was already complete): suspending now would spend the wake-up of what it
            // just consumed without its entry. Make the engine run the attempt again instead.
            if let Abort::Suspend { seen, .. } = abort {
                *seen = u64::MAX;
            }
            return None;
        }
        let mut state = self.inflight.state();
        let mut ops = extra;
        ops.push(WriteOp::put_journal(self.inflight.id, index, &entry));
        let Ok(_held) = self.engine.hold_for(&ops, fenced_on, self.leaving_key()) else {
            drop(state);
            self.stop(moved());
            return None;
        };
        state.journal.insert(index, entry);
        let storage = self.engine.storage().as_ref();
        Some((self.inflight).submit_with_record(storage, &mut state, ops, fenced_on, placements))
    }

    /// Delivers a pending cancellation at this await point: `entry` (the operation's entry
    /// completed with the cancellation error) replaces the one at `index`, durably and once.
    /// A call being waited on is cancelled too: its request commits with the delivery, so a
    /// crash between the two cannot leave the caller cancelled and its callee running on.
    pub(crate) fn deliver_cancel(&self, index: u32, entry: impl FnOnce() -> JournalEntry) -> bool {
        if !self.cancel_pending() {
            return false;
        }
        let entry = entry();
        let callee = match &entry {
            JournalEntry::Call { invocation_id, .. } => Some(*invocation_id),
            _ => None,
        };
        // Asked before this invocation's lock: it takes the in-flight map's and the callee's.
        let request = callee.map_or_else(Vec::new, |c| self.engine.cancel_request_ops(c));
        let mut state = self.inflight.state();
        // The attempt stopped meanwhile: the next one delivers the cancellation here again.
        if !self.cancel_deliverable(&state.record) {
            return false;
        }
        state.record.cancel_delivered = true;
        let mut ops = vec![
            WriteOp::put_invocation(self.inflight.id, &state.record),
            WriteOp::put_journal(self.inflight.id, index, &entry),
        ];
        ops.extend(request);
        let Ok(_held) = self.engine.hold_for(&ops, None, self.leaving_key()) else {
            state.record.cancel_delivered = false;
            drop(state);
            self.stop(moved());
            return false;
        };
        state.journal.insert(index, entry);
        let durable = self.inflight.submit_with_record(
            self.engine.storage().as_ref(),
            &mut state,
            ops,
            None,
            Vec::new(),
        );
        drop(state);
        // Another process's callee gets the request through its inbox.
        if let Some(callee) = callee.filter(|c| !self.engine.elsewhere(c)) {
            let engine = self.engine.clone();
            self.engine.tasks().spawn(async move {
                if durable.await.is_err() || engine.crash_point("cancel.delivered") {
                    return;
                }
                let _ = engine.cancel_here(callee).await;
            });
        }
        true
    }

    /// Its partition's key while the partition leaves this process and the attempt has not
    /// left it yet: a step that ended as its partition leaves still journals its result.
    fn leaving_key(&self) -> Option<u64> {
        (self.inflight.leaving.load(Ordering::SeqCst) && !self.inflight.left.load(Ordering::SeqCst))
            .then(|| self.inflight.id.partition_key())
    }

    /// A cancellation was asked for and the next await point is to deliver it.
    pub(crate) fn cancel_pending(&self) -> bool {
        self.cancel_deliverable(&self.inflight.state().record)
    }

    fn cancel_deliverable(&self, record: &crate::storage::InvocationRecord) -> bool {
        record.cancel_requested
            && !record.cancel_delivered
            && !self.is_stopped()
            && !self.engine.config().replay_check
    }

    /// Waits until the entry at `index` satisfies `done`, suspending the invocation when the wait
    /// outlasts the engine's suspension delay. A pending cancellation completes the entry with
    /// the cancellation error.
    pub(crate) async fn await_entry<T>(
        &self,
        index: u32,
        done: impl Fn(&JournalEntry) -> Option<T>,
    ) -> T {
        let mut changes = self.inflight.changes();
        let clock = &self.engine.config().clock;
        let deadline = clock.deadline_after(self.engine.config().suspend_after);
        let wait = self.waiting(None);
        let mut slot_watch = self.slot_watch();
        loop {
            let seen = *changes.borrow_and_update();
            wait.saw(seen);
            if let Some(value) = self.replayed(index).as_ref().and_then(&done) {
                return value;
            }
            if self.replay_ends() {
                return std::future::pending().await;
            }
            if let Some(current) = self.replayed(index)
                && self.deliver_cancel(index, || with_outcome(current, cancelled_outcome()))
            {
                continue;
            }
            let suspend = tokio::select! {
                _ = changes.changed() => false,
                _ = clock.sleep_until(deadline) => true,
                () = self.slot_given_up(slot_watch.as_mut()) => true,
            };
            if suspend {
                self.suspend_after_siblings().await;
                return std::future::pending().await;
            }
        }
    }

    /// For a wait of one loaded from disk, which holds a slot of a bounded pace (see
    /// `engine/slots.rs`): what [`Self::slot_given_up`] watches.
    pub(super) fn slot_watch(&self) -> Option<SlotWatch> {
        let wanted = self.inflight.slot_wanted()?;
        Some(SlotWatch { wanted })
    }

    /// Resolves when a wait that holds a slot (`watch`) should give it up by suspending: a load
    /// of its pool waits for a slot, and no `ctx.run` closure of this attempt is executing
    /// (suspending would cut it off, to run again on resume). Never without a slot.
    pub(super) async fn slot_given_up(&self, watch: Option<&mut SlotWatch>) {
        let Some(watch) = watch else {
            return std::future::pending().await;
        };
        loop {
            let wanted = *watch.wanted.borrow_and_update() > 0;
            tokio::select! {
                () = self.inflight.closures_idle(), if wanted => return,
                changed = watch.wanted.changed() => {
                    // The pool is gone with its last load: nobody will want its slots.
                    if changed.is_err() {
                        return std::future::pending().await;
                    }
                }
            }
        }
    }

    /// Waits for a commit; on failure stops the attempt and never resolves.
    pub(crate) async fn durable(&self, waiter: Option<CommitWaiter>) {
        let failure = match waiter {
            Some(w) => match w.await {
                Ok(()) => return,
                Err(e) => Abort::Lost(e.to_string()),
            },
            // Under a replay check nothing is journaled: the check ends where a write would be.
            None if self.engine.config().replay_check => Abort::ReplayEnds,
            None => Abort::Retry("attempt already stopped".into()),
        };
        self.stop(failure);
        std::future::pending::<()>().await;
    }
}

impl InvocationContext {
    /// Completes `pending` (entry `index`, waiting on invocation `source`) with `source`'s result
    /// once it is known: for results that do not arrive by themselves (an attach; a duplicate
    /// call whose result goes to another caller; a call pending at a restart).
    pub(crate) fn forward_outcome(&self, index: u32, source: InvocationId, pending: JournalEntry) {
        // Another process runs the source: its owner sends the outcome to this one's inbox.
        if self.replay_ends() || self.engine.elsewhere(&source) {
            return;
        }
        {
            let mut forwarding = self.inflight.forwarding.lock().expect("forwarding lock");
            if forwarding.contains(&index) {
                return;
            }
            forwarding.push(index);
        }
        let (engine, me, inflight) = (self.engine.clone(), self.id(), self.inflight.clone());
        self.engine.tasks().spawn(async move {
            let _done = ForwardGuard(inflight, index);
            // Ends at shutdown: after a restart the durable result waiter takes over.
            let mut shutdown = engine.shutdown_signal();
            let attached = tokio::select! {
                attached = engine.attach_here(source) => attached,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let outcome = match attached {
                Ok(Some(done)) => done.outcome.clone(),
                Ok(None) => Outcome::Failure {
                    code: 404,
                    message: format!("invocation {source} not found"),
                },
                Err(e) => {
                    tracing::warn!(invocation = %me, error = %e, "cannot fetch a result");
                    return;
                }
            };
            let completion = crate::engine::Completion {
                id: me,
                index,
                entry: with_outcome(pending, outcome),
                wakes: true,
            };
            if let Err(e) = engine
                .submit_completions(Vec::new(), vec![completion])
                .finish()
                .await
            {
                tracing::error!(invocation = %me, error = %e, "cannot record a result");
            }
        });
    }
}

/// The waits pending in one attempt.
#[derive(Default)]
struct Waits {
    pending: Vec<PendingWait>,
    next: u64,
}

struct PendingWait {
    token: u64,
    /// The journal version this wait last looked at.
    seen: u64,
    wake_at_ms: Option<u64>,
}

/// A pending wait; see [`InvocationContext::waiting`].
pub(crate) struct WaitGuard<'a> {
    ctx: &'a InvocationContext,
    token: u64,
}

impl WaitGuard<'_> {
    /// This wait has looked at the journal as of `version`.
    pub(crate) fn saw(&self, version: u64) {
        let mut waits = self.ctx.waits.lock().expect("waits lock");
        if let Some(w) = waits.pending.iter_mut().find(|w| w.token == self.token) {
            w.seen = version;
        }
    }
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let mut waits = self.ctx.waits.lock().expect("waits lock");
        waits.pending.retain(|w| w.token != self.token);
    }
}

/// Ends an entry's forward however its task ends.
struct ForwardGuard(Arc<Inflight>, u32);

impl Drop for ForwardGuard {
    fn drop(&mut self) {
        let mut forwarding = self.0.forwarding.lock().expect("forwarding lock");
        forwarding.retain(|i| *i != self.1);
    }
}

/// Why an attempt stops when a partition it would write moved to another process: it runs
/// again, and makes it through the partition's new owner.
fn moved() -> Abort {
    Abort::Retry("a partition it writes moved to another process".into())
}

/// What a handler sees where a cancellation lands.
pub(crate) fn cancelled_outcome() -> Outcome {
    Outcome::Failure {
        code: 409,
        message: "cancelled".into(),
    }
}

/// An awaited entry completed with `outcome`.
pub(crate) fn with_outcome(entry: JournalEntry, outcome: Outcome) -> JournalEntry {
    let outcome = Some(outcome);
    match entry {
        JournalEntry::Call {
            target,
            invocation_id,
            ..
        } => JournalEntry::Call {
            target,
            invocation_id,
            outcome,
        },
        JournalEntry::Attach { invocation_id, .. } => JournalEntry::Attach {
            invocation_id,
            outcome,
        },
        JournalEntry::GetPromise { name, .. } => JournalEntry::GetPromise { name, outcome },
        JournalEntry::Awakeable { .. } => JournalEntry::Awakeable { outcome },
        other => other,
    }
}

fn describe(entry: &JournalEntry) -> String {
    match entry {
        JournalEntry::Run { name, .. }
        | JournalEntry::GetPromise { name, .. }
        | JournalEntry::PeekPromise { name, .. }
        | JournalEntry::CompletePromise { name, .. }
        | JournalEntry::GetState { name, .. }
        | JournalEntry::SetState { name, .. }
        | JournalEntry::ClearState { name } => format!("name `{name}`"),
        JournalEntry::Send { target, .. } | JournalEntry::Call { target, .. } => {
            format!("target `{target}`")
        }
        JournalEntry::StateKeys { .. } | JournalEntry::ClearAllState => String::new(),
        JournalEntry::Sleep { wake_at_ms, .. } => format!("until {wake_at_ms} ms"),
        JournalEntry::Awakeable { .. } => String::new(),
        JournalEntry::CompleteAwakeable { id } => format!("awakeable `{id}`"),
        JournalEntry::Select { winner } => format!("winner {winner}"),
        JournalEntry::Attach { invocation_id, .. }
        | JournalEntry::GetOutput { invocation_id, .. }
        | JournalEntry::CancelInvocation { invocation_id } => format!("invocation {invocation_id}"),
        JournalEntry::Patch { change } => format!("change `{change}`"),
    }
}

/// What a wait that holds a slot watches; see [`InvocationContext::slot_given_up`].
pub(super) struct SlotWatch {
    /// The count of loads waiting for a slot of its pool.
    wanted: watch::Receiver<usize>,
}
