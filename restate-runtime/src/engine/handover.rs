//! A drained process's leases on a shared database: its partitions are released once no
//! attempt of this process runs, so that the other processes (the next version, in a deploy)
//! take them over at once instead of after the lease's length; held again by an undrain, which
//! opens the drain's gate only once what is still this process's is renewed. Once others took
//! every released partition, this one is handed over: it stays drained, runs nothing, and
//! serves what it still gets by forwarding actions and reading results from the database.
//!
//! Each drain and undrain is one generation: the tasks a drain or an undrain leaves behind act
//! only while theirs is the latest, so a drain, an undrain and a drain again in quick
//! succession end with the lease released, whatever order their transactions answer in.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Engine;
use super::drain::DrainStatus;
use crate::storage::{CommitWaiter, StorageError};

/// Where this process's lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lease {
    /// No lease to release: a store of one process, or a standby that holds none.
    None,
    Held,
    /// Draining: released once no attempt runs.
    Releasing,
    /// Free for another process to take; this one commits meanwhile.
    Released,
    /// Undrained: renewed again before any attempt starts.
    Holding,
    /// Another process took it: this one runs nothing more.
    HandedOver,
}

impl Lease {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Held => "held",
            Self::Releasing => "releasing",
            Self::Released => "released",
            Self::Holding => "holding",
            Self::HandedOver => "handed over",
        }
    }

    /// Stopping the process now leaves nothing for another to wait for.
    pub(crate) fn settled(self) -> bool {
        matches!(self, Self::None | Self::Released | Self::HandedOver)
    }
}

/// The lease's hand-over state.
#[derive(Default)]
pub(crate) struct Handover {
    state: Mutex<State>,
    /// Handed over: the owner's loops (timers, purge) end.
    gone: AtomicBool,
}

#[derive(Default)]
struct State {
    /// `None` until the first drain of a process that owns its store.
    lease: Option<Lease>,
    generation: u64,
}

/// Why a drain did not end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UndrainError {
    #[error(
        "this process released its lease while drained and another process took the database's \
         invocations over; restart it to serve again (as a standby)"
    )]
    HandedOver,
    #[error("holding the lease again failed: {0}")]
    Hold(StorageError),
}

/// The rest of an undrain on a shared database: the lease's renewal, then the gate.
pub(crate) struct Holding {
    generation: u64,
    renewed: CommitWaiter,
}

/// How often a release waiting for the last attempt looks again without a notification (a
/// standby becoming the owner while drained sends none).
const RECHECK: Duration = Duration::from_millis(100);

impl Engine {
    /// Where the lease stands, for `GET /drain`.
    pub(crate) fn lease(&self) -> Lease {
        let state = self.handover.state.lock().expect("handover lock");
        if state.lease == Some(Lease::HandedOver) {
            return Lease::HandedOver;
        }
        if !self.shared_store || !self.runs_invocations() {
            return Lease::None;
        }
        state.lease.unwrap_or(Lease::Held)
    }

    /// Handed over to another process: the owner's loops end, and what is left in memory
    /// is no one's to report.
    pub(crate) fn handed_over(&self) -> bool {
        self.handover.gone.load(Ordering::Acquire)
    }

    /// Starts a drain; on a shared database the lease is released once no attempt runs.
    pub(crate) fn start_drain(&self) -> DrainStatus {
        let mut state = self.handover.state.lock().expect("handover lock");
        let status = self.drain.set(true);
        let released = matches!(
            state.lease,
            Some(Lease::Releasing | Lease::Released | Lease::HandedOver)
        );
        if self.shared_store && !released {
            state.generation += 1;
            state.lease = Some(Lease::Releasing);
            let (engine, generation) = (self.clone(), state.generation);
            self.tasks
                .spawn(async move { engine.release_when_idle(generation).await });
        }
        status
    }

    /// Ends a drain at once where no lease was released (`Ok(None)`); otherwise the lease's
    /// renewal is queued and [`Self::finish_undrain`] opens the gate once it committed.
    pub(crate) fn begin_undrain(&self) -> Result<Result<DrainStatus, Holding>, UndrainError> {
        let mut state = self.handover.state.lock().expect("handover lock");
        if state.lease == Some(Lease::HandedOver) {
            return Err(UndrainError::HandedOver);
        }
        if !self.runs_invocations() {
            // A standby holds no lease (a release waits for it to own the store, under this
            // lock): nothing to renew.
            state.generation += 1;
            state.lease = None;
            return Ok(Ok(self.drain.set(false)));
        }
        match state.lease {
            Some(Lease::Releasing | Lease::Released | Lease::Holding) if self.shared_store => {
                state.generation += 1;
                state.lease = Some(Lease::Holding);
                // Queued under the lock: after any release a drain queued before.
                Ok(Err(Holding {
                    generation: state.generation,
                    renewed: self.storage.release_lease(false),
                }))
            }
            _ => Ok(Ok(self.drain.set(false))),
        }
    }

    /// Waits for the lease's renewal, then ends the drain (unless a later drain or undrain
    /// took over meanwhile: its outcome decides).
    pub(crate) async fn finish_undrain(
        &self,
        holding: Holding,
    ) -> Result<DrainStatus, UndrainError> {
        let renewed = holding.renewed.await;
        let mut state = self.handover.state.lock().expect("handover lock");
        if state.lease == Some(Lease::HandedOver) {
            return Err(UndrainError::HandedOver);
        }
        if state.generation != holding.generation {
            return Ok(self.drain.status());
        }
        match renewed {
            Ok(()) => {
                state.lease = Some(Lease::Held);
                Ok(self.drain.set(false))
            }
            // Taken by another process before the renewal (the store says so before it answers
            // the renewal), or the store stops (the writer poisons itself): the drain stays.
            Err(_) if !*self.storage.ownership().borrow() => Err(UndrainError::HandedOver),
            Err(e) => {
                state.lease = Some(Lease::Released);
                Err(UndrainError::Hold(e))
            }
        }
    }

    /// Ends a drain, waiting for the lease's renewal where it was released.
    pub(crate) async fn undrain(&self) -> Result<DrainStatus, UndrainError> {
        match self.begin_undrain()? {
            Ok(status) => Ok(status),
            Err(holding) => self.finish_undrain(holding).await,
        }
    }

    /// Once this process owns its store and no attempt runs (still draining, generation
    /// `generation`), releases the lease.
    async fn release_when_idle(&self, generation: u64) {
        let mut shutdown = self.shutdown_signal();
        let released = loop {
            let idle = self.drain.idle();
            {
                let state = self.handover.state.lock().expect("handover lock");
                if state.generation != generation {
                    return;
                }
                // Queued under the lock: an undrain's renewal comes after it.
                if self.runs_invocations() && self.drain.status().running_attempts == 0 {
                    break self.storage.release_lease(true);
                }
            }
            tokio::select! {
                () = idle => {}
                () = tokio::time::sleep(RECHECK) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        };
        let released = released.await;
        if released.is_ok() && self.crash_point("lease.released") {
            return;
        }
        let mut state = self.handover.state.lock().expect("handover lock");
        if state.generation != generation {
            return;
        }
        match released {
            Ok(()) => {
                tracing::info!(
                    "drained: this process released its lease; another process may take its \
                     invocations over now"
                );
                state.lease = Some(Lease::Released);
            }
            // A failed transaction stops the store; a hand-over is told by the ownership.
            Err(e) => tracing::warn!("releasing the lease after the drain failed: {e}"),
        }
    }

    /// Waits until another process took this one's lease over (only after a release): this
    /// one then stays drained for good, its in-memory invocations dropped (their waiters hear
    /// they are lost here: the new owner runs them, and their results are in the database),
    /// and it serves on as a standby.
    pub(super) async fn watch_handover(self) {
        let mut ownership = self.storage.ownership();
        let mut shutdown = self.shutdown_signal();
        tokio::select! {
            lost = ownership.wait_for(|owner| !*owner) => if lost.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        {
            let mut state = self.handover.state.lock().expect("handover lock");
            state.lease = Some(Lease::HandedOver);
            state.generation += 1;
            self.drain.set(true);
            self.handover.gone.store(true, Ordering::Release);
        }
        // Its invocations leave with its partitions (`ownership::follow`).
    }
}
