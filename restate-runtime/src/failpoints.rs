//! Named crash points for tests, compiled in only with the cargo feature `failpoints` (off by
//! default; the end-to-end test app turns it on). With `RESTATE_FAILPOINTS=name[=N],...` the
//! process kills itself with SIGKILL the Nth time (default: the first) it passes `name`, so a
//! test can crash it between two commits and check what survived. Without the feature every
//! point compiles to nothing.
//!
//! | point | where |
//! |---|---|
//! | `suspend.committed` | a suspension is durable; the invocation has not left memory yet |
//! | `wake.committed` | a completion and its wake-ups are durable; waiters not resumed yet |
//! | `resume.loaded` | a suspended (or due delayed) invocation is back in memory; it has not run yet |
//! | `delayed.parked` | a delayed invocation, durable, has left memory; its timer is armed |
//! | `cancel.recorded` | a handler's `ctx.cancel` is durable; not delivered to its target yet |
//! | `cancel.delivered` | a cancellation delivered to a caller waiting on a call is durable, with the callee's cancel request; not delivered to the callee yet |
//! | `kill.propagated` | a killed invocation's end is durable, with its callees' cancellation requests; the callees are not killed yet |
//! | `log.synced` | a group is synced in the write-ahead log; not applied to the store yet |
//! | `checkpoint.committed` | the store committed durably; the log has not restarted yet |
//! | `restart.copied` | a restarted invocation's copy is durable; the original is not ended yet |
//! | `inbox.applied` | what a page of the inbox caused is durable; its messages are not removed yet, but for those that take in invocations (removed with their records) |
//! | `lease.released` | a drained owner's release of its lease committed; no other process took it yet |
//! | `backup.copied` | a backup's copy is durable under its partial name; not renamed to the store's yet |

/// Passes the point `name`: kills the process if it is armed for this pass.
#[cfg(feature = "failpoints")]
pub(crate) fn hit(name: &str) {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static ARMED: OnceLock<HashMap<String, u64>> = OnceLock::new();
    static PASSES: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);
    let armed = ARMED.get_or_init(|| {
        std::env::var("RESTATE_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((name, n)) => (name.to_owned(), n.parse().unwrap_or(1)),
                None => (p.to_owned(), 1),
            })
            .collect()
    });
    let Some(&at) = armed.get(name) else {
        return;
    };
    let mut passes = PASSES.lock().expect("failpoint passes");
    let count = passes
        .get_or_insert_with(HashMap::new)
        .entry(name.to_owned())
        .or_default();
    *count += 1;
    if *count == at {
        eprintln!("failpoint {name} reached (pass {at}): killing the process");
        // SAFETY: sending a signal to our own process has no memory-safety preconditions.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Passes the point `name` (failpoints are compiled out).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub(crate) fn hit(_name: &str) {}
