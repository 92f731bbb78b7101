//! Failures a test runtime injects: into the next attempts of named `ctx.run` steps, and
//! crashes at the engine's named crash points (the ones `RESTATE_FAILPOINTS` kills a process
//! at, see `failpoints`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::Engine;

/// The engine's crash points a test runtime can crash at.
pub(crate) const CRASH_POINTS: [&str; 5] = [
    "suspend.committed",
    "wake.committed",
    "resume.loaded",
    "delayed.parked",
    "cancel.recorded",
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
    /// A crash has happened: no `ctx.run` closure starts any more, as none would in a dead
    /// process.
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
    /// Faults whose crashes call `kill_store`.
    pub(crate) fn with_kill(kill_store: impl Fn() + Send + Sync + 'static) -> Self {
        Self {
            kill_store: Some(Arc::new(kill_store)),
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

    /// Counts a pass of `point`; the one a crash waits for kills the store.
    fn pass(&self, point: &str) {
        let mut crashes = self.crashes.lock().expect("faults lock");
        let Some(left) = crashes.get_mut(point) else {
            return;
        };
        *left -= 1;
        if *left > 0 {
            return;
        }
        crashes.remove(point);
        drop(crashes);
        self.crashed.store(true, Ordering::SeqCst);
        if let Some(kill) = &self.kill_store {
            kill();
        }
    }

    /// Whether an injected crash has happened (in this engine's life).
    pub(crate) fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// A new engine starts: the last one's crash is behind.
    pub(crate) fn recovered(&self) {
        self.crashed.store(false, Ordering::SeqCst);
    }

    /// The next `times` attempts of steps named `step` do `fault`, after those already queued.
    pub(crate) fn add(&self, step: &str, times: usize, fault: RunFault) {
        let mut runs = self.runs.lock().expect("faults lock");
        runs.entry(step.to_owned())
            .or_default()
            .extend(std::iter::repeat_n(fault, times));
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
    /// a test runtime armed by `crash_at` crashes.
    pub(crate) fn crash_point(&self, point: &'static str) {
        crate::failpoints::hit(point);
        if let Some(injected) = &self.config().injected {
            injected.pass(point);
        }
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
