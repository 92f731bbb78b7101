//! One life of a test runtime's engine, from start (with recovery) to the crash that ends it:
//! the tokio runtime its tasks run on, the engine, and the ports it serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use super::TestRuntimeError;
use super::listeners::Ports;
use super::store::TestStore;
use crate::clock::VirtualClock;
use crate::engine::EngineHooks;
use crate::engine::tasks::Activity;
use crate::runtime::{Assembled, Runtime};
use crate::storage::Storage;

/// How long a crash waits for the old engine's worker threads to drop their tasks.
const STOP_WAIT: Duration = Duration::from_secs(10);

pub(super) struct Incarnation {
    /// Taken apart by [`Incarnation::stop`] or, when the test runtime is dropped, by `Drop`.
    tokio: Option<tokio::runtime::Runtime>,
    pub(super) runtime: Runtime,
    /// Its store, as opened.
    pub(super) storage: Arc<dyn Storage>,
    activity: Arc<Activity>,
    /// A task moving the clock while everything waits has been started.
    driving: AtomicBool,
    /// Set when this engine is taken apart: its clock driver stops at once.
    crashed: Arc<AtomicBool>,
    /// The injected faults, which also know of an injected crash.
    injected: Option<Arc<crate::engine::InjectedFaults>>,
}

impl Incarnation {
    /// Opens `store`, recovers, and serves the `ports` asked for.
    pub(super) fn start(
        assembled: &Assembled,
        hooks: &EngineHooks,
        store: &TestStore,
        ports: &Ports,
    ) -> Result<Self, TestRuntimeError> {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("restate-test")
            .enable_all()
            .build()
            .map_err(TestRuntimeError::Threads)?;
        // Counted afresh: a task of the last engine that outlived its crash counts nothing.
        let activity = Arc::new(Activity::default());
        let started = {
            let _inside = tokio.enter();
            (|| {
                let storage = store.open(assembled)?;
                let hooks = EngineHooks {
                    activity: Some(activity.clone()),
                    ..hooks.clone()
                };
                let runtime = assembled.start(storage.clone(), hooks)?;
                for (port, listener) in ports.open() {
                    // A copy of the socket the test runtime keeps: connections made while no
                    // engine runs wait in its backlog.
                    let listener = listener
                        .try_clone()
                        .and_then(tokio::net::TcpListener::from_std)
                        .map_err(TestRuntimeError::Listen)?;
                    tokio.spawn(runtime.serve_on(listener, port));
                }
                Ok::<_, TestRuntimeError>((runtime, storage))
            })()
        };
        let (runtime, storage) = match started {
            Ok(started) => started,
            Err(e) => {
                // Dropped here it would block inside the caller's asynchronous context.
                tokio.shutdown_background();
                return Err(e);
            }
        };
        Ok(Self {
            tokio: Some(tokio),
            runtime,
            storage,
            activity,
            driving: AtomicBool::new(false),
            crashed: Arc::default(),
            injected: hooks.injected.clone(),
        })
    }

    /// What tells whether this engine is idle.
    pub(super) fn probe(&self) -> Probe {
        Probe {
            activity: self.activity.clone(),
            storage: self.runtime.engine().storage().clone(),
        }
    }

    /// Starts the task that moves `clock` to the next due time whenever this engine is idle,
    /// `on` holds and nothing holds `paused` (once per incarnation; it ends with it).
    pub(super) fn drive_clock(
        &self,
        clock: Arc<VirtualClock>,
        on: Arc<AtomicBool>,
        paused: Arc<AtomicUsize>,
    ) {
        if self.driving.swap(true, Ordering::SeqCst) {
            return;
        }
        let probe = self.probe();
        let engine = self.runtime.engine().clone();
        let crashed = self.crashed.clone();
        let injected = self.injected.clone();
        let Some(tokio) = &self.tokio else { return };
        // A crashed engine's time stands still until the restart.
        let driving = move || {
            on.load(Ordering::SeqCst)
                && paused.load(Ordering::SeqCst) == 0
                && !crashed.load(Ordering::SeqCst)
                && !injected.as_ref().is_some_and(|i| i.crashed())
        };
        tokio.spawn(async move {
            loop {
                if driving() && probe.idle() {
                    tokio::task::yield_now().await;
                    if driving()
                        && probe.idle()
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

    /// Stops its clock driver: the first thing a crash does, so that time stands still.
    pub(super) fn freeze(&self) {
        self.crashed.store(true, Ordering::SeqCst);
    }

    /// Tells whoever waits on one of its invocations that it is lost, then drops every task
    /// (waiting for the worker threads to let go of them) and the engine, on a thread of its
    /// own: it ends even if nobody waits. The receiver hears when it has.
    pub(super) fn stop(mut self) -> tokio::sync::oneshot::Receiver<()> {
        self.freeze();
        self.runtime
            .engine()
            .abandon("the test runtime restarted (a simulated crash)");
        let (stopped, heard) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("restate-test-stop".into())
            .spawn(move || {
                if let Some(tokio) = self.tokio.take() {
                    tokio.shutdown_timeout(STOP_WAIT);
                }
                drop(self);
                let _ = stopped.send(());
            });
        if let Err(e) = spawned {
            // The closure was dropped here, its runtime shut down in the background (`Drop`);
            // the sender went with it, so the receiver hears at once.
            tracing::warn!(error = %e, "the crashed engine could not be stopped on a thread");
        }
        heard
    }
}

impl Drop for Incarnation {
    fn drop(&mut self) {
        // The test runtime is dropped, maybe inside the test's own tokio runtime, where
        // nothing may wait for threads: the worker threads end on their own. A handle kept
        // past the test runtime hears that its calls are lost instead of waiting for them.
        self.runtime
            .engine()
            .abandon("the test runtime was dropped");
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
    /// Reads the writes first: the writer wakes a waiting task before it stops counting the
    /// write, so a write answered between the reads still shows as a busy task.
    pub(super) fn idle(&self) -> bool {
        self.storage.unanswered() == 0 && !self.activity.busy()
    }

    /// Waits until the engine may have become idle: a count fell to zero, or a moment passed
    /// (a write answered to a task outside the engine notifies nothing); with only writes
    /// outstanding, just a yield.
    pub(super) async fn settle(&self) {
        let quieter = self.activity.quieter();
        if !self.activity.busy() {
            // Only writes outstanding (a redb folder): the writer answers them soon.
            return tokio::time::sleep(Duration::from_micros(100)).await;
        }
        let _ = tokio::time::timeout(Duration::from_millis(1), quieter).await;
    }

    /// What is still busy, for a wait that does not end.
    pub(super) fn describe(&self) -> String {
        let (scheduled, runs) = self.activity.counts();
        format!(
            "{scheduled} tasks scheduled, {runs} ctx.run closures running, {} writes unanswered",
            self.storage.unanswered()
        )
    }
}
