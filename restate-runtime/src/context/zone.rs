//! Where a handler may not create a context operation: inside a `ctx.run` closure, and in a
//! poll of a `ctx.select` branch that does not finish it. An operation's journal position is
//! taken when it is created;
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
    /// What the select branch being polled created in this poll, if anything.
    static CREATED: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// The zone a poll on this thread is in, if any.
pub(crate) fn current() -> Option<Zone> {
    CURRENT.with(Cell::get)
}

/// An operation (`what`) is being created: inside a `ctx.run` closure, the reason it is
/// refused; inside a select branch, nothing yet (the branch's poll decides, see [`branch`]).
pub(crate) fn created(what: &'static str) -> Option<String> {
    match current()? {
        Zone::RunClosure => Some(Zone::RunClosure.refusal(what)),
        Zone::SelectBranch(_) => {
            CREATED.with(|c| {
                if c.get().is_none() {
                    c.set(Some(what));
                }
            });
            None
        }
    }
}

/// Polls the branch at position `n` of a select. What it creates in a poll that leaves it
/// pending is refused (`refuse` is told why): a replay that polls only the winner would not
/// create it. What it creates in the poll in which it finishes is the winner's, created at
/// the same positions when a replay polls it again.
pub(crate) async fn branch<F: Future>(n: usize, future: F, refuse: impl Fn(String)) -> F::Output {
    let mut future = pin!(future);
    std::future::poll_fn(|cx| {
        let zone = Zone::SelectBranch(n);
        let outer = CURRENT.with(|c| c.replace(Some(zone)));
        let outer_created = CREATED.with(|c| c.replace(None));
        let polled = {
            let _restore = Restore(outer);
            future.as_mut().poll(cx)
        };
        let created = CREATED.with(|c| c.replace(outer_created));
        if let (std::task::Poll::Pending, Some(what)) = (&polled, created) {
            refuse(zone.refusal(what));
        }
        polled
    })
    .await
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
                "{marker}: {what} created while `ctx.select` polled its branch {branch}, which \
                 had not finished (an async block that awaits context operations); a replay \
                 polls only the recorded winner, so every later journal position would shift. \
                 Pass operations created before the select (a call, `ctx.sleep(..)`, \
                 `ctx.run(..)`, an awakeable), or run the branch's steps one after the other \
                 around it"
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
    async fn a_branch_may_create_in_the_poll_it_finishes_in_but_not_in_one_it_waits_in() {
        let refused = std::sync::Mutex::new(Vec::new());
        let refuse = |reason: String| refused.lock().unwrap().push(reason);
        // Created in its last poll: the winner's, replayed in place.
        let finishing = branch(0, async { created("a send") }, refuse).await;
        assert_eq!(finishing, None);
        assert!(refused.lock().unwrap().is_empty());
        // Created, then waits: refused when that poll ends.
        let mut yielded = false;
        let waiting = std::future::poll_fn(|cx| {
            created("a sleep");
            if yielded {
                std::task::Poll::Ready(())
            } else {
                yielded = true;
                cx.waker().wake_by_ref();
                std::task::Poll::Pending
            }
        });
        branch(1, waiting, refuse).await;
        let refused = refused.lock().unwrap();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(refused[0].contains("a sleep created while `ctx.select` polled its branch 1"));
        assert_eq!(CREATED.with(Cell::get), None);
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
