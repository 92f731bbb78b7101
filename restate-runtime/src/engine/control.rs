//! Invocation control, as Restate's admin API has it: cancel (a terminal error at the next await
//! point, compensation possible), kill (stop now), purge (forget a finished invocation), resume
//! (a paused or suspended one).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::inflight::Finish;
use super::{Engine, EngineError, Inflight};
use crate::ids::InvocationId;
use crate::storage::{CANCEL_WAKE, InboxMessage, Outcome, Status, WriteOp};

/// Why a control operation was refused.
///
/// ```no_run
/// use restate_runtime::{ControlError, InvocationHandle, RuntimeHandle};
/// async fn stop(handle: &RuntimeHandle, job: InvocationHandle) -> Result<(), ControlError> {
///     match handle.cancel(job).await {
///         // Finished before the cancel arrived, or purged since: nothing to stop.
///         Ok(()) | Err(ControlError::Conflict(_) | ControlError::NotFound(_)) => Ok(()),
///         Err(e) => Err(e), // storage failure: worth retrying
///     }
/// }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControlError {
    /// No such invocation.
    #[error("invocation {0} not found")]
    NotFound(InvocationId),
    /// The operation does not apply in the invocation's current state.
    #[error("{0}")]
    Conflict(String),
    /// Storage failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<crate::storage::StorageError> for ControlError {
    fn from(e: crate::storage::StorageError) -> Self {
        Self::Engine(e.into())
    }
}

/// A refusal that passes: the same action asked again shortly is decided.
fn ask_again(message: String) -> ControlError {
    ControlError::Engine(EngineError::Overloaded(message))
}

/// Where an operator's action was carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Acted {
    /// Here, and done as its answer says (a kill ended it killed).
    Here,
    /// Handed to the process that runs the invocation, which decides: accepted, not done.
    HandedOver,
}

/// The result of a killed invocation.
pub(crate) fn killed() -> Outcome {
    Outcome::Failure {
        code: 409,
        message: "killed".into(),
    }
}

/// A kill's answer once the invocation has ended: done only if it ended killed. One that
/// finished its own way first (it completed, or a cancellation ended it, while the kill was
/// on its way) was not killed, and the caller must not hear that it was.
/// Whether `outcome` is [`killed`], read without building one (every completion asks).
pub(crate) fn is_killed(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Failure { code: 409, message } if message == "killed")
}

fn ended_killed(id: InvocationId, outcome: &Outcome) -> Result<(), ControlError> {
    if is_killed(outcome) {
        return Ok(());
    }
    Err(ControlError::Conflict(format!(
        "invocation {id} completed before the kill took effect; its result stands"
    )))
}

/// How often a resume looks whether the attempt that paused an invocation has ended (it ends
/// once its pause is durable: one commit). Looked at rather than woken, so that the end of
/// every attempt pays nothing for this rare wait.
const PAUSE_END_LOOK: Duration = Duration::from_millis(1);

/// Waits while the attempt that paused `inflight` is still ending: a pause shows as soon as it
/// is decided, and its task ends once it is durable; a resume in between is taken after that
/// end instead of refused. True if it waited. A kill under way, an ending or a partition's
/// leave is not waited for (the resume is then refused or looks again).
async fn await_pausing_attempt(inflight: &Inflight) -> bool {
    let mut waited = false;
    loop {
        let ending = inflight.state().record.status == Status::Paused
            && inflight.running.load(Ordering::SeqCst)
            && !inflight.kill_requested.load(Ordering::SeqCst)
            && !inflight.finished.load(Ordering::SeqCst)
            && !inflight.left.load(Ordering::SeqCst);
        if !ending {
            return waited;
        }
        waited = true;
        tokio::time::sleep(PAUSE_END_LOOK).await;
    }
}

/// `done`: what was asked, as a past participle ("cancelled").
fn already_completed(id: InvocationId, done: &str) -> ControlError {
    ControlError::Conflict(format!(
        "invocation {id} was already completed, so it cannot be {done}; purge it instead"
    ))
}

fn not_resumable(id: InvocationId, status: &Status) -> ControlError {
    ControlError::Conflict(format!("invocation {id} is {}, not paused", status.name()))
}

fn not_completed(id: InvocationId) -> ControlError {
    ControlError::Conflict(format!(
        "invocation {id} is not completed yet; only completed invocations can be purged"
    ))
}

impl Engine {
    /// The invocation in memory, or a suspended one loaded into memory (not started); the
    /// flag says whether it was in memory already. Loaded into the map, so a completion or a
    /// resume racing the control operation finds this one copy.
    /// Under the id's claim: a handler's new callee is found only once the journal entry that
    /// records it is queued, so a kill or cancel commits after that entry and its record, never
    /// before them (they would undo it), and never ends one that is then discarded.
    /// `done` names the operation for its refusal ([`already_completed`]).
    fn load(&self, id: InvocationId, done: &str) -> Result<(Arc<Inflight>, bool), ControlError> {
        let _claim = self.claims.of(&id);
        let mut map = self.inflight.lock().expect("inflight map");
        if let Some(f) = map.get(&id) {
            // A send whose sender's commit is placing it, here or behind its key's messages
            // in the inbox: which copy runs is known within a commit.
            // Answered as a passing refusal (429 with Retry-After), not a conflict a client
            // takes as final (found from outside: a cancel during a partition's move got 409).
            if f.placing() {
                return Err(ask_again(format!(
                    "{id} is being placed on its key by its sender's commit: ask again"
                )));
            }
            return Ok((f.clone(), true));
        }
        if !self.may_load(&id) {
            return Err(ask_again(format!(
                "another process runs {id}'s partition now: ask again"
            )));
        }
        let (record, journal) = self.load_stored(&id)?.ok_or(ControlError::NotFound(id))?;
        if matches!(record.status, Status::Completed { .. }) {
            return Err(already_completed(id, done));
        }
        let inflight = self.new_inflight(id, record, true, journal);
        map.insert(id, inflight.clone());
        Ok((inflight, false))
    }

    /// Whether the invocation has not started yet: delayed (in memory, or on disk with no
    /// journal: one that fired and started before a restart is still `Scheduled` there), or
    /// queued behind its key.
    fn not_started(&self, inflight: &Inflight) -> bool {
        let state = inflight.state();
        if matches!(state.record.status, Status::Scheduled { .. }) {
            return state.journal.is_empty();
        }
        state.record.attempts == 0 && !inflight.running.load(Ordering::SeqCst)
    }

    /// Takes an invocation that has not started for a cancel or kill to end, so that nothing
    /// starts it (a delayed start firing, its key freeing) and it does not leave memory
    /// meanwhile: it is marked running, under the map lock that `fire` and parking hold.
    /// `Err(())` when `inflight` is no longer the map's copy (it left memory: look again);
    /// `Ok(false)` when it has started, or is a just-loaded copy of one that had not
    /// started but is no delayed one waiting on disk.
    fn claim_unstarted(&self, inflight: &Arc<Inflight>, in_memory: bool) -> Result<bool, ()> {
        let map = self.inflight.lock().expect("inflight map");
        if !map
            .get(&inflight.id)
            .is_some_and(|f| Arc::ptr_eq(f, inflight))
        {
            return Err(());
        }
        let delayed = matches!(inflight.state().record.status, Status::Scheduled { .. });
        Ok((in_memory || delayed)
            && self.not_started(inflight)
            && !inflight.running.swap(true, Ordering::SeqCst))
    }

    /// Ends an invocation claimed by [`Self::claim_unstarted`] with `outcome`, taking it out of
    /// its key's queue first.
    async fn end_unstarted(
        &self,
        inflight: &Arc<Inflight>,
        outcome: Outcome,
    ) -> Result<(), ControlError> {
        self.remove_queued(inflight);
        // Claimed as running, so taking it out of the queue left its input counted.
        inflight.disengage();
        // A placed send ended before it ran: counted as every other one queued on its key.
        if inflight.placed_by_commit() && inflight.take_gate().is_some() {
            self.count_placed_start(inflight);
        }
        self.complete_claimed(inflight, outcome).await;
        // An ending the store refused is no ending: the caller must not hear it was done.
        match &*inflight.subscribe().borrow() {
            Finish::Lost(reason) | Finish::Interrupted(reason) => {
                Err(ControlError::Engine(EngineError::Lost(reason.clone())))
            }
            Finish::Moved => Err(ControlError::Engine(super::ownership::moved())),
            Finish::Pending | Finish::Idle | Finish::Done(_) => Ok(()),
        }
    }

    /// Requests cancellation. Not started: it ends at once as cancelled. Otherwise the handler
    /// gets a 409 terminal error at its next await point (suspended and paused ones are resumed
    /// for that), and the calls it waits on are cancelled too. Answers once the request is
    /// durable, with its wake-up.
    pub(crate) async fn cancel(&self, id: InvocationId) -> Result<Acted, ControlError> {
        if self.behind_inbox(&id).await? {
            return self
                .forward_action(id, InboxMessage::Cancel, "cancelled")
                .await;
        }
        self.cancel_here(id).await.map(|()| Acted::Here)
    }

    /// [`Self::cancel`] applied in this process.
    pub(crate) async fn cancel_here(&self, id: InvocationId) -> Result<(), ControlError> {
        // A handler's callee that another process runs (its call is being cancelled).
        if self.elsewhere(&id) {
            return Ok(self.forward_message(id, InboxMessage::Cancel).await?);
        }
        let (inflight, waiter, restart) = loop {
            let (inflight, in_memory) = self.load(id, "cancelled")?;
            match self.claim_unstarted(&inflight, in_memory) {
                Err(()) => continue,
                Ok(true) => {
                    let cancelled = crate::context::invocation::cancelled_outcome();
                    return self.end_unstarted(&inflight, cancelled).await;
                }
                Ok(false) => {}
            }
            let map = self.inflight.lock().expect("inflight map");
            if !map.get(&id).is_some_and(|f| Arc::ptr_eq(f, &inflight)) {
                // It left memory (its suspension committed) since it was found: look again.
                continue;
            }
            // It finished meanwhile (a delayed one loaded here whose timer fired and ran it):
            // its completion is on its way to the store, and must stay the last word.
            if inflight.finished.load(Ordering::SeqCst) {
                return Err(already_completed(id, "cancelled"));
            }
            let mut state = inflight.state();
            state.record.cancel_requested = true;
            // A suspended (just loaded) or paused invocation runs again to take the error.
            let restart = !in_memory || state.record.status == Status::Paused;
            if restart {
                state.record.status = Status::Runnable;
            }
            let mut ops = vec![WriteOp::put_invocation(id, &state.record)];
            if state.stored_suspended {
                ops.push(WriteOp::Wake {
                    id,
                    index: CANCEL_WAKE,
                });
            }
            state.persisted = true;
            drop(state);
            let waiter = self.storage.submit(ops);
            // Under the map lock: a suspension committing now sees it and runs on.
            inflight.bump();
            drop(map);
            break (inflight, waiter, restart);
        };
        waiter.await.map_err(EngineError::from)?;
        if restart {
            self.restart(&inflight);
        }
        Ok(())
    }

    /// The writes that request the cancellation of `id`, to commit with the journal entry of a
    /// handler's `ctx.cancel` (so the request is durable with its cause). In memory, the
    /// request is set on the invocation at once.
    pub(crate) fn cancel_request_ops(&self, id: InvocationId) -> Vec<WriteOp> {
        // Another process runs it: the request goes to its inbox.
        if self.elsewhere(&id) {
            return vec![WriteOp::forward(id, &InboxMessage::Cancel)];
        }
        // A handler's new callee of a derived id is claimed until the entry that records it is
        // queued: its record, queued then, would undo a request marked on it before.
        let _claim = self.claims.of(&id);
        let map = self.inflight.lock().expect("inflight map");
        let wake = WriteOp::Wake {
            id,
            index: CANCEL_WAKE,
        };
        let stored_or_inbox = |wake| {
            let mut ops = vec![WriteOp::RequestCancel { id }, wake];
            // On a shared store it may still be a message in this partition's inbox (a
            // handler's call sent behind that key's earlier messages): the request follows it
            // there, and is applied after it.
            if self.shared_store {
                ops.push(WriteOp::forward(id, &InboxMessage::Cancel));
            }
            ops
        };
        let Some(inflight) = map.get(&id) else {
            return stored_or_inbox(wake);
        };
        if inflight.placing() {
            // Its record, or its message in the inbox, is written by a batch queued before
            // this one: the request reaches either (and this copy, should it be the one to run).
            inflight.state().record.cancel_requested = true;
            inflight.bump();
            return stored_or_inbox(wake);
        }
        let mut state = inflight.state();
        if matches!(state.record.status, Status::Completed { .. }) {
            return Vec::new();
        }
        state.record.cancel_requested = true;
        // Marked on the stored record as the writer applies it, not a copy of this one: the
        // invocation may complete before this batch is queued, and a copy would undo that.
        // One not stored yet is stored later from memory, with the request.
        let mut ops = vec![WriteOp::RequestCancel { id }];
        if state.stored_suspended {
            ops.push(wake);
        }
        drop(state);
        // Under the map lock: a suspension committing now sees it and runs on.
        inflight.bump();
        ops
    }

    /// Stops the invocation now: it completes with a 409 "killed" error, no compensation runs.
    /// Answers `Ok` only once it ended so ([`ended_killed`]).
    pub(crate) async fn kill(&self, id: InvocationId) -> Result<Acted, ControlError> {
        if self.behind_inbox(&id).await? {
            return self.forward_action(id, InboxMessage::Kill, "killed").await;
        }
        self.kill_here(id).await.map(|()| Acted::Here)
    }

    /// [`Self::kill`] applied in this process.
    pub(super) async fn kill_here(&self, id: InvocationId) -> Result<(), ControlError> {
        let inflight = loop {
            let (inflight, in_memory) = self.load(id, "killed")?;
            match self.claim_unstarted(&inflight, in_memory) {
                Err(()) => continue,
                // Not started (delayed, queued in memory, or on disk behind its key since a
                // restart): claimed, no task runs it.
                Ok(true) => {
                    self.end_unstarted(&inflight, killed()).await?;
                    break inflight;
                }
                Ok(false) => {}
            }
            {
                // Set under the map lock, before looking for a task: a suspension committing
                // now sees it and runs on, and a task ending now sees it once it has cleared
                // `running` (execute.rs); one of the two sides ends the invocation.
                let map = self.inflight.lock().expect("inflight map");
                if !map.get(&id).is_some_and(|f| Arc::ptr_eq(f, &inflight)) {
                    continue;
                }
                inflight.kill_requested.store(true, Ordering::SeqCst);
            }
            // Paused, or loaded suspended: no task runs it.
            if !inflight.running.swap(true, Ordering::SeqCst) {
                self.end_unstarted(&inflight, killed()).await?;
                break inflight;
            }
            // The executing task completes it as killed (at once, or after its backoff).
            inflight.killed.notify_one();
            break inflight;
        };
        let ended = super::wait_finished(inflight.subscribe())
            .await
            .map_err(|end| ControlError::Engine(end.into()))?;
        ended_killed(id, &ended.outcome)
    }

    /// Hands an operator's action on `id` to the process that runs it, unless the store says
    /// that process would refuse it at once: a finished invocation cannot be `done` (and an
    /// unfinished one cannot be purged), as where it runs. Past that the owner decides (and
    /// logs a refusal); the answer here says the action was handed over. An id the store
    /// does not hold is handed over too: a call may run in the owner's memory before its
    /// first durable step. Not read for one of this process's partitions (behind a message
    /// for its key, or a send being placed by a commit here): the action follows it through
    /// the inbox.
    async fn forward_action(
        &self,
        id: InvocationId,
        message: InboxMessage,
        done: &str,
    ) -> Result<Acted, ControlError> {
        if self.runs(&id) || self.placing(&id) {
            self.forward_message(id, message).await?;
            return Ok(Acted::HandedOver);
        }
        let stored = self.storage.invocation_async(&id).await?;
        if stored.is_none() && matches!(message, InboxMessage::Purge) {
            // Only a finished invocation is purged, and every finished one is stored (found
            // from outside: an id nobody knew was answered as purged).
            return Err(ControlError::NotFound(id));
        }
        if let Some(record) = stored {
            let finished = matches!(record.status, Status::Completed { .. });
            match &message {
                InboxMessage::Purge if !finished => return Err(not_completed(id)),
                InboxMessage::Purge => {}
                _ if finished => return Err(already_completed(id, done)),
                // Stored as neither suspended nor paused nor between attempts, it runs (or
                // waits for its time or its key): as where it runs, nothing to resume (found
                // from outside: one backing off was refused here, and resumed by its owner).
                InboxMessage::Resume
                    if !matches!(record.status, Status::Suspended { .. } | Status::Paused)
                        && super::stored_retry_at_ms(&record, self.now_ms()).is_none() =>
                {
                    return Err(not_resumable(id, &record.status));
                }
                _ => {}
            }
        }
        self.forward_message(id, message).await?;
        Ok(Acted::HandedOver)
    }

    /// Forgets a finished invocation: result, journal and idempotency key.
    pub(crate) async fn purge(&self, id: InvocationId) -> Result<Acted, ControlError> {
        if self.behind_inbox(&id).await? {
            return self.forward_action(id, InboxMessage::Purge, "purged").await;
        }
        self.purge_here(id).await.map(|()| Acted::Here)
    }

    /// [`Self::purge`] applied in this process.
    pub(super) async fn purge_here(&self, id: InvocationId) -> Result<(), ControlError> {
        let committed = {
            // Under the id's claim from the read to the queued delete: no new invocation of a
            // key's id is created in between, only to be deleted with the old one.
            let _claim = self.claims.of(&id);
            if self.inflight(&id).is_some() {
                return Err(not_completed(id));
            }
            let record = self
                .storage
                .invocation(&id)?
                .ok_or(ControlError::NotFound(id))?;
            if !matches!(record.status, Status::Completed { .. }) {
                return Err(not_completed(id));
            }
            self.storage.submit(self.forget_ops(id, &record.target))
        };
        committed.await.map_err(EngineError::from)?;
        Ok(())
    }

    /// Runs a paused invocation again (its retry count starts over), or wakes a suspended one.
    /// Answers once the invocation is durably runnable, so a crash right after the answer
    /// still runs it.
    pub(crate) async fn resume_invocation(&self, id: InvocationId) -> Result<Acted, ControlError> {
        if self.behind_inbox(&id).await? {
            return self
                .forward_action(id, InboxMessage::Resume, "resumed")
                .await;
        }
        self.resume_invocation_here(id).await.map(|()| Acted::Here)
    }

    /// [`Self::resume_invocation`] applied in this process.
    pub(super) async fn resume_invocation_here(
        &self,
        id: InvocationId,
    ) -> Result<(), ControlError> {
        // One on disk that is not suspended (waiting to be restored after a restart) is refused
        // without a copy in memory, which its restore would take for its own.
        if self.inflight(&id).is_none()
            && let Some(record) = self.storage.invocation(&id)?
            && !matches!(
                record.status,
                Status::Suspended { .. } | Status::Completed { .. }
            )
        {
            return Err(not_resumable(id, &record.status));
        }
        // After waiting for the attempt that paused it, looked up again: its copy may have
        // left memory meanwhile (its partition left, its pause was refused).
        let (inflight, in_memory) = loop {
            let (inflight, in_memory) = self.load(id, "resumed")?;
            if !await_pausing_attempt(&inflight).await {
                break (inflight, in_memory);
            }
        };
        // Backing off: its next attempt starts now, as Restate's resume does. Its record keeps
        // the wait it stored; a restart during that attempt waits at most the policy's delay.
        if in_memory && inflight.retry_now() {
            return Ok(());
        }
        let waiter = {
            let mut state = inflight.state();
            let resumable = match state.record.status {
                Status::Paused => in_memory && !inflight.running.load(Ordering::SeqCst),
                Status::Suspended { .. } => !in_memory,
                _ => false,
            };
            if !resumable {
                let status = state.record.status.name();
                drop(state);
                if !in_memory {
                    self.forget(&inflight);
                }
                return Err(ControlError::Conflict(format!(
                    "invocation {id} is {status}, not paused"
                )));
            }
            state.record.status = Status::Runnable;
            state.persisted = true;
            self.storage
                .submit(vec![WriteOp::put_invocation(id, &state.record)])
        };
        waiter.await.map_err(EngineError::from)?;
        self.restart(&inflight);
        Ok(())
    }

    /// Runs an invocation that is in memory without a task (paused, or loaded suspended).
    fn restart(&self, inflight: &Arc<Inflight>) {
        if inflight.running.load(Ordering::SeqCst) {
            return;
        }
        self.spawn_resumed(inflight.clone());
    }
}
