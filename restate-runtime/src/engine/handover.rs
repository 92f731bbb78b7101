//! A drained process's lease on a shared database: released once no attempt of this process
//! runs, so that another process (the next version, in a deploy) takes the invocations over at
//! once instead of after the lease's length; held again by an undrain, unless another process
//! has taken it by then (handed over: this process runs nothing more and stays drained).

use std::sync::Mutex;
use std::time::Duration;

use super::Engine;
use super::drain::DrainStatus;

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
            Self::HandedOver => "handed over",
        }
    }

    /// Stopping the process now leaves nothing for another to wait for.
    pub(crate) fn settled(self) -> bool {
        matches!(self, Self::None | Self::Released | Self::HandedOver)
    }
}

/// The lease's hand-over state; `None` until this process owns its store (and on stores of
/// one process, where it is never set).
#[derive(Default)]
pub(crate) struct Handover(Mutex<Option<Lease>>);

/// An undrain refused: another process runs the invocations now.
#[derive(Debug, thiserror::Error)]
#[error(
    "this process released its lease while drained and another process took the database's \
     invocations over; restart it to serve again (as a standby)"
)]
pub(crate) struct HandedOver;

/// How often a release waiting for the last attempt looks again without a notification (a
/// standby becoming the owner while drained sends none).
const RECHECK: Duration = Duration::from_millis(100);

impl Engine {
    /// Where the lease stands, for `GET /drain`.
    pub(crate) fn lease(&self) -> Lease {
        let state = *self.handover.0.lock().expect("handover lock");
        if state == Some(Lease::HandedOver) {
            return Lease::HandedOver;
        }
        if !self.shared_store || !self.runs_invocations() {
            return Lease::None;
        }
        state.unwrap_or(Lease::Held)
    }

    /// Starts (`true`) or ends a drain; on a shared database also releases the lease once no
    /// attempt runs, or holds it again. Ending a drain after a hand-over is refused.
    pub(crate) fn set_draining(&self, draining: bool) -> Result<DrainStatus, HandedOver> {
        let mut state = self.handover.0.lock().expect("handover lock");
        if *state == Some(Lease::HandedOver) {
            return if draining {
                Ok(self.drain.status())
            } else {
                Err(HandedOver)
            };
        }
        let status = self.drain.set(draining);
        if !self.shared_store {
            return Ok(status);
        }
        if draining {
            if !matches!(*state, Some(Lease::Releasing | Lease::Released)) {
                *state = Some(Lease::Releasing);
                let engine = self.clone();
                self.tasks
                    .spawn(async move { engine.release_when_idle().await });
            }
        } else if *state != Some(Lease::Held) {
            *state = Some(Lease::Held);
            // Queued before any attempt held back by the drain writes: their transactions
            // renew the lease again.
            let held = self.storage.release_lease(false);
            self.tasks.spawn(async move {
                if let Err(e) = held.await {
                    tracing::warn!("holding the lease again after the drain failed: {e}");
                }
            });
        }
        Ok(status)
    }

    /// Once this process owns its store and no attempt runs (still draining), releases the
    /// lease.
    async fn release_when_idle(&self) {
        let mut shutdown = self.shutdown_signal();
        let released = loop {
            let idle = self.drain.idle();
            {
                let state = self.handover.0.lock().expect("handover lock");
                if *state != Some(Lease::Releasing) {
                    return;
                }
                // Queued under the lock: an undrain's `release_lease(false)` comes after it.
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
        let mut state = self.handover.0.lock().expect("handover lock");
        match released {
            Ok(()) if *state == Some(Lease::Releasing) => {
                tracing::info!(
                    "drained: this process released its lease; another process may take its \
                     invocations over now"
                );
                *state = Some(Lease::Released);
            }
            Ok(()) => {}
            Err(e) => tracing::warn!("releasing the lease after the drain failed: {e}"),
        }
    }

    /// Waits until another process took this one's lease over (only after a release): this
    /// one then stays drained for good, so that nothing it holds in memory starts again.
    pub(super) async fn watch_handover(self) {
        let mut ownership = self.storage.ownership();
        let mut shutdown = self.shutdown_signal();
        tokio::select! {
            lost = ownership.wait_for(|owner| !*owner) => if lost.is_err() { return },
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let mut state = self.handover.0.lock().expect("handover lock");
        *state = Some(Lease::HandedOver);
        self.drain.set(true);
    }
}
