//! Invocation control, as Restate's admin API has it: cancel (a terminal error at the next await
//! point, compensation possible), kill (stop now), purge (forget a finished invocation), resume
//! (a paused or suspended one).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Engine, EngineError, Inflight};
use crate::ids::InvocationId;
use crate::storage::{InvocationRecord, Outcome, Status, WriteOp};

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

/// The result of a killed invocation.
pub(crate) fn killed() -> Outcome {
    Outcome::Failure {
        code: 409,
        message: "killed".into(),
    }
}

fn already_completed(id: InvocationId) -> ControlError {
    ControlError::Conflict(format!(
        "invocation {id} was already completed, so it cannot be cancelled nor killed; purge it instead"
    ))
}

impl Engine {
    /// The invocation in memory, or a suspended one loaded from storage (not started).
    fn load(&self, id: InvocationId) -> Result<(Arc<Inflight>, bool), ControlError> {
        if let Some(f) = self.inflight(&id) {
            return Ok((f, true));
        }
        let record: InvocationRecord = self
            .storage
            .invocation(&id)?
            .ok_or(ControlError::NotFound(id))?;
        if matches!(record.status, Status::Completed { .. }) {
            return Err(already_completed(id));
        }
        let journal: super::Journal = self.storage.journal(&id)?.into_iter().collect();
        Ok((self.new_inflight(id, record, true, journal), false))
    }

    /// Whether the invocation has not started yet (delayed, or queued behind its key).
    fn not_started(&self, inflight: &Inflight) -> bool {
        let state = inflight.state();
        matches!(state.record.status, Status::Scheduled { .. })
            || (state.record.attempts == 0 && !inflight.running.load(Ordering::SeqCst))
    }

    /// Requests cancellation. Not started: it ends at once as cancelled. Otherwise the handler
    /// gets a 409 terminal error at its next await point (suspended and paused ones are resumed
    /// for that), and the calls it waits on are cancelled too.
    pub(crate) async fn cancel(&self, id: InvocationId) -> Result<(), ControlError> {
        let (inflight, in_memory) = self.load(id)?;
        if in_memory && self.not_started(&inflight) {
            self.remove_queued(&inflight);
            self.complete(&inflight, crate::context::invocation::cancelled_outcome())
                .await;
            return Ok(());
        }
        let (waiter, status) = {
            let mut state = inflight.state();
            state.record.cancel_requested = true;
            let status = state.record.status.clone();
            let ops = vec![WriteOp::put_invocation(id, &state.record)];
            state.persisted = true;
            (self.storage.submit(ops), status)
        };
        waiter.await.map_err(EngineError::from)?;
        inflight.bump();
        match (in_memory, status) {
            (false, _) => self.resume(id).await,
            (true, Status::Paused) => self.restart_paused(&inflight),
            _ => {}
        }
        Ok(())
    }

    /// Stops the invocation now: it completes with a 409 "killed" error, no compensation runs.
    pub(crate) async fn kill(&self, id: InvocationId) -> Result<(), ControlError> {
        let (inflight, in_memory) = self.load(id)?;
        if in_memory && inflight.running.load(Ordering::SeqCst) {
            // The executing task completes it as killed (at once, or after its backoff).
            inflight.killed.notify_one();
            let _ = super::wait_finished(inflight.subscribe()).await;
            return Ok(());
        }
        if in_memory {
            self.remove_queued(&inflight);
        }
        self.complete(&inflight, killed()).await;
        Ok(())
    }

    /// Forgets a finished invocation: result, journal and idempotency key.
    pub(crate) async fn purge(&self, id: InvocationId) -> Result<(), ControlError> {
        if self.inflight(&id).is_some() {
            return Err(ControlError::Conflict(format!(
                "invocation {id} is not completed yet; only completed invocations can be purged"
            )));
        }
        let record = self
            .storage
            .invocation(&id)?
            .ok_or(ControlError::NotFound(id))?;
        if !matches!(record.status, Status::Completed { .. }) {
            return Err(ControlError::Conflict(format!(
                "invocation {id} is not completed yet; only completed invocations can be purged"
            )));
        }
        let ops = self.forget_ops(id, &record.target);
        self.storage.submit(ops).await.map_err(EngineError::from)?;
        Ok(())
    }

    /// Runs a paused invocation again (its retry count starts over), or wakes a suspended one.
    pub(crate) async fn resume_invocation(&self, id: InvocationId) -> Result<(), ControlError> {
        let (inflight, in_memory) = self.load(id)?;
        let status = inflight.state().record.status.clone();
        match (in_memory, status) {
            (true, Status::Paused) => {
                self.restart_paused(&inflight);
                Ok(())
            }
            (false, Status::Suspended { .. }) => {
                self.resume(id).await;
                Ok(())
            }
            (_, other) => Err(ControlError::Conflict(format!(
                "invocation {id} is {}, not paused",
                other.name()
            ))),
        }
    }

    fn restart_paused(&self, inflight: &Arc<Inflight>) {
        if inflight.running.load(Ordering::SeqCst) {
            return;
        }
        inflight.state().record.status = Status::Runnable;
        self.spawn_resumed(inflight.clone());
    }
}
