//! One life of a test runtime's engine, from start (with recovery) to the crash that ends it:
//! the tokio runtime its tasks run on, the engine, and the ingress if served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::TestRuntimeError;
use crate::clock::{Clock, VirtualClock};
use crate::engine::tasks::Activity;
use crate::runtime::{Assembled, Runtime};
use crate::storage::{MemoryDisk, RedbStorage, Storage};

/// How long a crash waits for the old engine's worker threads to drop their tasks.
const STOP_WAIT: Duration = Duration::from_secs(10);

pub(super) struct Incarnation {
    /// Taken apart by [`Incarnation::stop`] or, when the test runtime is dropped, by `Drop`.
    tokio: Option<tokio::runtime::Runtime>,
    pub(super) runtime: Runtime,
    activity: Arc<Activity>,
    /// A task moving the clock while everything waits has been started.
    driving: AtomicBool,
}

impl Incarnation {
    /// Opens the store on `disk`, recovers, and serves the ingress on `ingress` if given.
    pub(super) fn start(
        assembled: &Assembled,
        disk: &MemoryDisk,
        clock: &Arc<VirtualClock>,
        ingress: Option<SocketAddr>,
    ) -> Result<Self, TestRuntimeError> {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("restate-test")
            .enable_all()
            .build()
            .map_err(TestRuntimeError::Threads)?;
        let activity = Arc::new(Activity::default());
        let runtime = {
            let _inside = tokio.enter();
            let storage = RedbStorage::open_in_memory(disk, &assembled.redb_options())
                .map_err(|e| TestRuntimeError::Build(e.into()))?;
            let runtime = assembled.start(
                Arc::new(storage),
                Clock::Virtual(clock.clone()),
                Some(activity.clone()),
            )?;
            if let Some(addr) = ingress {
                let listener = std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .and_then(tokio::net::TcpListener::from_std)
                    .map_err(|source| TestRuntimeError::Listen { addr, source })?;
                let router = runtime.ingress_router();
                tokio.spawn(async move { axum::serve(listener, router).await });
            }
            runtime
        };
        Ok(Self {
            tokio: Some(tokio),
            runtime,
            activity,
            driving: AtomicBool::new(false),
        })
    }

    /// What tells whether this engine is idle.
    pub(super) fn probe(&self) -> Probe {
        Probe {
            activity: self.activity.clone(),
            storage: self.runtime.engine().storage().clone(),
        }
    }

    /// Starts the task that moves `clock` to the next due time whenever this engine is idle
    /// and `on` holds (once per incarnation; it ends with it).
    pub(super) fn drive_clock(&self, clock: Arc<VirtualClock>, on: Arc<AtomicBool>) {
        if self.driving.swap(true, Ordering::SeqCst) {
            return;
        }
        let probe = self.probe();
        let engine = self.runtime.engine().clone();
        let Some(tokio) = &self.tokio else { return };
        tokio.spawn(async move {
            loop {
                if on.load(Ordering::SeqCst) && probe.idle() {
                    tokio::task::yield_now().await;
                    if probe.idle()
                        && let Some(at) = clock.next_due()
                    {
                        clock.set(at);
                        engine.purge_due().await;
                        continue;
                    }
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
    }

    /// Drops every task (waiting for the worker threads to let go of them) and the engine.
    pub(super) async fn stop(mut self) {
        let tokio = self.tokio.take();
        // Blocking: a runtime cannot be shut down from inside an asynchronous context.
        let stopped = tokio::task::spawn_blocking(move || {
            if let Some(tokio) = tokio {
                tokio.shutdown_timeout(STOP_WAIT);
            }
            drop(self);
        })
        .await;
        if let Err(e) = stopped {
            tracing::warn!(error = %e, "the crashed engine did not stop cleanly");
        }
    }
}

impl Drop for Incarnation {
    fn drop(&mut self) {
        // The test runtime is dropped, maybe inside the test's own tokio runtime, where
        // nothing may wait for threads: the worker threads end on their own.
        if let Some(tokio) = self.tokio.take() {
            tokio.shutdown_background();
        }
    }
}

/// Whether an engine is idle: no task scheduled, no `ctx.run` closure running, no write
/// unanswered.
pub(super) struct Probe {
    activity: Arc<Activity>,
    storage: Arc<dyn Storage>,
}

impl Probe {
    pub(super) fn idle(&self) -> bool {
        !self.activity.busy() && self.storage.unanswered() == 0
    }
}
