//! Failures a test runtime injects into the next attempts of named `ctx.run` steps.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

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

/// Faults waiting for the next attempts of each step, by step name.
#[derive(Debug, Default)]
pub(crate) struct InjectedFaults {
    runs: Mutex<HashMap<String, VecDeque<RunFault>>>,
}

impl InjectedFaults {
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
