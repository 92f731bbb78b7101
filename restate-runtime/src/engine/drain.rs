//! Drain: while draining no attempt starts (each waits at the gate until the drain ends),
//! the attempts running finish, fail or suspend, and their count tells when the process can
//! be stopped without interrupting any.

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use tokio::sync::{Notify, futures::Notified, watch};

/// Whether this process drains, and how many attempts run.
pub(crate) struct Drain {
    draining: watch::Sender<bool>,
    running: AtomicUsize,
    /// Notified when the last running attempt ends.
    idle: Notify,
}

/// Where a drain stands, as `GET /drain` and [`Runtime::drain`](crate::Runtime::drain) report
/// it.
///
/// ```
/// use restate_runtime::DrainStatus;
/// let status = DrainStatus { draining: true, running_attempts: 0 };
/// assert!(status.ready());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainStatus {
    /// New invocations are refused (503 with `Retry-After`) and no attempt starts.
    pub draining: bool,
    /// Attempts running now (handlers executing, or their ending being committed).
    pub running_attempts: usize,
}

impl DrainStatus {
    /// Draining and no attempt running: stopping the process now interrupts nothing.
    pub fn ready(&self) -> bool {
        self.draining && self.running_attempts == 0
    }
}

/// One attempt counted as running until dropped.
pub(crate) struct Running<'a>(&'a Drain);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        // Only a drain waits for the last attempt: no wake-up to send otherwise.
        if self.0.running.fetch_sub(1, SeqCst) == 1 && self.0.is_draining() {
            self.0.idle.notify_waiters();
        }
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            draining: watch::channel(false).0,
            running: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }
}

impl Drain {
    /// Starts (`true`) or ends a drain; returns where it stands then.
    pub(crate) fn set(&self, draining: bool) -> DrainStatus {
        self.draining.send_replace(draining);
        self.status()
    }

    pub(crate) fn status(&self) -> DrainStatus {
        DrainStatus {
            draining: self.is_draining(),
            running_attempts: self.running.load(SeqCst),
        }
    }

    /// Resolves at the next moment no attempt runs (after it was created).
    pub(crate) fn idle(&self) -> Notified<'_> {
        self.idle.notified()
    }

    pub(crate) fn is_draining(&self) -> bool {
        *self.draining.borrow()
    }

    /// Counts an attempt as running, once no drain holds it back. Counted before the drain
    /// flag is read, and the flag set before the count is read: a drain that finds no attempt
    /// running is never followed by one that read the flag too early.
    pub(crate) async fn start_attempt(&self) -> Running<'_> {
        loop {
            self.running.fetch_add(1, SeqCst);
            let running = Running(self);
            if !self.is_draining() {
                return running;
            }
            drop(running);
            let mut draining = self.draining.subscribe();
            while *draining.borrow_and_update() {
                if draining.changed().await.is_err() {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn attempts_wait_while_draining_and_are_counted_while_running() {
        let drain = Drain::default();
        let first = drain.start_attempt().await;
        assert_eq!(drain.set(true).running_attempts, 1);
        assert!(!drain.status().ready());
        drop(first);
        assert!(drain.status().ready());
        let mut held = Box::pin(drain.start_attempt());
        assert!(futures::poll!(held.as_mut()).is_pending());
        assert_eq!(drain.status().running_attempts, 0);
        drain.set(false);
        let running = held.await;
        assert_eq!(drain.status().running_attempts, 1);
        drop(running);
        assert_eq!(
            drain.status(),
            DrainStatus {
                draining: false,
                running_attempts: 0
            }
        );
    }
}
