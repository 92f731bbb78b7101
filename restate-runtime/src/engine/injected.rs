//! Failures a test runtime injects: into the next attempts of named `ctx.run` steps, and
//! crashes at the engine's named crash points (the ones `RESTATE_FAILPOINTS` kills a process
//! at, see `failpoints`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::Engine;

/// The engine's crash points a test runtime can crash at.
pub(crate) const CRASH_POINTS: [&str; 7] = [
    "suspend.committed",
    "wake.committed",
    "resume.loaded",
    "delayed.parked",
    "cancel.recorded",
    "cancel.delivered",
    "kill.propagated",
];

/// What an injected attempt of a `ctx.run` step does instead of running its closure.
///
/// ```no_run
/// # async fn demo(t: restate_runtime::testing::TestRuntime) {
/// use restate_runtime::testing::RunFault;
/// // The next two attempts of the step named "charge" fail and are retried.
/// t.fail_run("charge", 2, RunFault::Retryable);
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunFault {
    /// Fails with a retryable error: the step's retry policy (or the invocation's) applies.
    Retryable,
    /// Fails with a terminal error (code 500), which the journal records as the step's result.
    Terminal,
    /// Panics, as a closure with a bug would.
    Panic,
}

impl RunFault {
    /// The message every injected failure carries.
    pub(crate) fn message(self, step: &str) -> String {
        format!("failure injected by the test runtime into `{step}`")
    }
}

/// Faults waiting for the next attempts of each step, by step name, and crashes waiting at
/// crash points.
#[derive(Default)]
pub(crate) struct InjectedFaults {
    runs: Mutex<HashMap<String, VecDeque<RunFault>>>,
    /// Passes to go before a crash, by point (1: the next).
    crashes: Mutex<HashMap<String, u64>>,
    /// What a crash does to the store (a process kill: nothing later reaches it).
    kill_store: Option<Arc<dyn Fn() + Send + Sync>>,
    /// How many kills the store has seen: one since this engine started is a crash too (the
    /// one `crash_after_commits` sets off inside a commit).
    store_kills: Option<Arc<dyn Fn() -> u64 + Send + Sync>>,
    /// The store's kill count when this engine started.
    born_at: AtomicU64,
    /// A crash point has crashed this engine.
    crashed: AtomicBool,
}

impl std::fmt::Debug for InjectedFaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InjectedFaults")
            .field("runs", &self.runs)
            .field("crashes", &self.crashes)
            .finish_non_exhaustive()
    }
}

impl InjectedFaults {
    /// Faults whose crashes call `kill_store`, on a store that counts its kills.
    pub(crate) fn with_store(
        kill_store: impl Fn() + Send + Sync + 'static,
        store_kills: impl Fn() -> u64 + Send + Sync + 'static,
    ) -> Self {
        let born_at = AtomicU64::new(store_kills());
        Self {
            kill_store: Some(Arc::new(kill_store)),
            store_kills: Some(Arc::new(store_kills)),
            born_at,
            ..Self::default()
        }
    }

    /// Crash the `pass`-th time from now (1: the next) the engine passes `point`.
    pub(crate) fn crash_at(&self, point: &str, pass: u64) {
        assert!(
            CRASH_POINTS.contains(&point),
            "unknown crash point `{point}`: use one of {CRASH_POINTS:?}"
        );
        assert!(pass > 0, "the 0th pass from now has happened");
        self.crashes
            .lock()
            .expect("faults lock")
            .insert(point.to_owned(), pass);
    }

    /// Counts a pass of `point`; the one a crash waits for kills the store. True once the
    /// engine has crashed (now or before): the caller stops where it is.
    fn pass(&self, point: &str) -> bool {
        let mut crashes = self.crashes.lock().expect("faults lock");
        if let Some(left) = crashes.get_mut(point) {
            *left -= 1;
            if *left == 0 {
                crashes.remove(point);
                drop(crashes);
                self.crashed.store(true, Ordering::SeqCst);
                if let Some(kill) = &self.kill_store {
                    kill();
                }
            }
        }
        self.crashed()
    }

    /// Whether this engine has crashed: at a crash point, or its store was killed after a
    /// commit. A dead engine starts nothing more.
    pub(crate) fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
            || self
                .store_kills
                .as_ref()
                .is_some_and(|kills| kills() != self.born_at.load(Ordering::SeqCst))
    }

    /// A new engine starts: the last one's crash is behind.
    pub(crate) fn recovered(&self) {
        self.crashed.store(false, Ordering::SeqCst);
        if let Some(kills) = &self.store_kills {
            self.born_at.store(kills(), Ordering::SeqCst);
        }
    }

    /// The next `times` attempts of steps named `step` do `fault`, after those already queued.
    pub(crate) fn add(&self, step: &str, times: usize, fault: RunFault) {
        let mut runs = self.runs.lock().expect("faults lock");
        runs.entry(step.to_owned())
            .or_default()
            .extend(std::iter::repeat_n(fault, times));
    }

    /// The faults queued that no attempt has taken, by step name, in name order.
    pub(crate) fn unused_runs(&self) -> Vec<(String, usize)> {
        let runs = self.runs.lock().expect("faults lock");
        let mut unused: Vec<_> = (runs.iter())
            .filter(|(_, queue)| !queue.is_empty())
            .map(|(step, queue)| (step.clone(), queue.len()))
            .collect();
        unused.sort();
        unused
    }

    /// The fault for this attempt of `step`, if one is queued (it is used up).
    pub(crate) fn take(&self, step: &str) -> Option<RunFault> {
        let mut runs = self.runs.lock().expect("faults lock");
        let queue = runs.get_mut(step)?;
        let fault = queue.pop_front();
        if queue.is_empty() {
            runs.remove(step);
        }
        fault
    }
}

impl Engine {
    /// Passes the crash point `point`: a process armed by `RESTATE_FAILPOINTS` dies here, and
    /// a test runtime armed by `crash_at` crashes. True when this (test) engine is dead: the
    /// caller goes no further, as nothing would in a killed process.
    #[must_use = "a dead engine goes no further"]
    pub(crate) fn crash_point(&self, point: &'static str) -> bool {
        crate::failpoints::hit(point);
        self.config()
            .injected
            .as_ref()
            .is_some_and(|injected| injected.pass(point))
    }

    /// Why this engine takes nothing more, if so: its store failed, or a test runtime crashed
    /// it (its store may learn of the kill only at its next write).
    pub(crate) fn failed(&self) -> Option<String> {
        if self.config().injected.as_ref().is_some_and(|i| i.crashed()) {
            return Some("the test runtime crashed this engine".into());
        }
        self.storage.failure().borrow().clone()
    }

    /// Hands a failure of the store to the configured reaction (`on_storage_failure`), unless
    /// a test runtime crashed this engine: a crash fails its store on purpose, which is no
    /// failure to react to. (The faults tell until the next engine starts, which is once this
    /// one's tasks have been dropped.)
    pub(crate) fn storage_failed(&self, reason: &str) {
        if self.config().injected.as_ref().is_some_and(|i| i.crashed()) {
            return tracing::warn!(%reason, "the store of a crashed test engine failed");
        }
        (self.config().on_storage_failure)(reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_used_up_in_order_per_step() {
        let faults = InjectedFaults::default();
        faults.add("a", 2, RunFault::Retryable);
        faults.add("a", 1, RunFault::Panic);
        faults.add("b", 1, RunFault::Terminal);
        assert_eq!(faults.take("a"), Some(RunFault::Retryable));
        assert_eq!(faults.take("b"), Some(RunFault::Terminal));
        assert_eq!(faults.take("b"), None);
        assert_eq!(faults.take("a"), Some(RunFault::Retryable));
        assert_eq!(faults.take("a"), Some(RunFault::Panic));
        assert_eq!(faults.take("a"), None);
    }
}
