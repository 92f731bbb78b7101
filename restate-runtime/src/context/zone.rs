//! Where a handler may not create a context operation: inside a `ctx.run` closure, and while
//! `ctx.select` polls a branch. An operation's journal position is taken when it is created;
//! created there, its position would depend on timing (a replay polls only the recorded winner
//! of a select, and never runs a journaled step's closure), so every later position would
//! shift on replay. Such an attempt is paused at once, with the reason, instead of being told
//! "the code changed" at some later replay.
//!
//! The zone is the thread's while a poll of the closure or branch runs: a poll is synchronous,
//! so only what that future does meanwhile sees it.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;

use crate::filter::PauseReason;

/// A place no context operation may be created from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Zone {
    /// A `ctx.run` closure: the side effect, whose journal entry is its result.
    RunClosure,
    /// The branch at this position of a `ctx.select` being decided.
    SelectBranch(usize),
}

thread_local! {
    static CURRENT: Cell<Option<Zone>> = const { Cell::new(None) };
}

/// The zone a poll on this thread is in, if any.
pub(crate) fn current() -> Option<Zone> {
    CURRENT.with(Cell::get)
}

/// Polls `future` inside `zone`.
pub(crate) async fn inside<F: Future>(zone: Zone, future: F) -> F::Output {
    let mut future = pin!(future);
    std::future::poll_fn(|cx| {
        let outer = CURRENT.with(|c| c.replace(Some(zone)));
        // Restored when the poll returns or unwinds.
        let _restore = Restore(outer);
        future.as_mut().poll(cx)
    })
    .await
}

struct Restore(Option<Zone>);

impl Drop for Restore {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

impl Zone {
    /// Why an operation (`what`) created in this zone pauses the invocation.
    pub(crate) fn refusal(self, what: &str) -> String {
        let marker = PauseReason::NonDeterminism.marker();
        match self {
            Self::RunClosure => format!(
                "{marker}: {what} inside a `ctx.run` closure; the closure is the side effect \
                 and only its result is journaled, so a replay would not meet the operation. \
                 Do it before or after the step"
            ),
            Self::SelectBranch(branch) => format!(
                "{marker}: {what} created while `ctx.select` polled its branch {branch} (an \
                 async block that awaits context operations); a replay polls only the recorded \
                 winner, so every later journal position would shift. Pass operations created \
                 before the select (a call, `ctx.sleep(..)`, `ctx.run(..)`, an awakeable), or \
                 run the branch's steps one after the other around it"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_zone_holds_only_while_its_future_is_polled_and_nests() {
        assert_eq!(current(), None);
        let inner = inside(Zone::RunClosure, async { current() });
        let seen = inside(Zone::SelectBranch(1), async {
            let outer = current();
            (outer, inner.await, current())
        })
        .await;
        assert_eq!(
            seen,
            (
                Some(Zone::SelectBranch(1)),
                Some(Zone::RunClosure),
                Some(Zone::SelectBranch(1))
            )
        );
        assert_eq!(current(), None);
    }

    #[tokio::test]
    async fn a_panicking_poll_leaves_no_zone_behind() {
        use futures::FutureExt as _;
        let unwound =
            std::panic::AssertUnwindSafe(inside(Zone::RunClosure, async { panic!("boom") }))
                .catch_unwind()
                .await;
        assert!(unwound.is_err());
        assert_eq!(current(), None);
    }
}
