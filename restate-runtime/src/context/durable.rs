//! [`DurableFuture`]: what every waiting context operation returns (a call, a sleep, an
//! awakeable, a promise, an attach, a combinator), so that any of them can be raced against a
//! durable timer with [`or_timeout`](DurableFuture::or_timeout).

use std::fmt;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use futures::future::BoxFuture;

use super::invocation::InvocationContext;
use crate::error::TerminalError;

/// A durable operation in progress: its journal entry is taken when the operation is created
/// (in program order, so a replay matches it), and awaiting it gives its result.
///
/// It is an ordinary [`Future`]; the combinators ([`Context::all`](crate::Context::all),
/// [`race`](crate::Context::race), [`unordered`](crate::Context::unordered)) take any number of
/// them, and [`or_timeout`](Self::or_timeout) bounds one by a durable timer.
///
/// ```
/// use restate_runtime::prelude::*;
/// use std::time::Duration;
/// # #[derive(Default)]
/// # pub struct Quotes;
/// #[service]
/// impl Quotes {
///     # #[handler]
///     # async fn fetch(&self, _ctx: Context<'_>) -> HandlerResult<u64> { Ok(42) }
///     #[handler]
///     async fn price(&self, ctx: Context<'_>) -> HandlerResult<u64> {
///         let quote: DurableFuture<'_, Result<u64, TerminalError>> =
///             ctx.client::<Quotes>().fetch().call();
///         // A terminal error with code 408 after 5 s, the same on every replay.
///         match quote.or_timeout(Duration::from_secs(5)).await {
///             Ok(price) => Ok(price),
///             Err(e) if e.code() == 408 => Ok(0), // the fallback price
///             Err(e) => Err(e.into()),
///         }
///     }
/// }
/// ```
#[must_use = "a durable future does nothing unless awaited (its journal entry is already taken)"]
pub struct DurableFuture<'a, T> {
    ctx: &'a InvocationContext,
    inner: BoxFuture<'a, T>,
}

impl<'a, T> DurableFuture<'a, T> {
    pub(crate) fn new(
        ctx: &'a InvocationContext,
        inner: impl Future<Output = T> + Send + 'a,
    ) -> Self {
        Self {
            ctx,
            inner: Box::pin(inner),
        }
    }
}

impl<'a, T: Send + 'a> DurableFuture<'a, T> {
    /// The same operation, its output passed through `f` once it completes: operations of
    /// different output types then go into one combinator. `f` runs on every replay too, so it
    /// must be a plain function of the output: no context operations, no side effects.
    ///
    /// ```
    /// use restate_runtime::prelude::*;
    /// # #[derive(Default)]
    /// # pub struct Quotes;
    /// enum Reply {
    ///     Price(u64),
    ///     Rejected(String),
    /// }
    /// #[service]
    /// impl Quotes {
    ///     # #[handler]
    ///     # async fn fetch(&self, _ctx: Context<'_>) -> HandlerResult<u64> { Ok(42) }
    ///     #[handler]
    ///     async fn price(&self, ctx: Context<'_>) -> HandlerResult<u64> {
    ///         let (_id, rejected) = ctx.awakeable::<String>();
    ///         let fetched = ctx.client::<Quotes>().fetch().call();
    ///         // A price or a rejection, whichever comes first (the same on every replay).
    ///         let (_, reply) = ctx
    ///             .race([
    ///                 fetched.map(|r| r.map(Reply::Price)),
    ///                 rejected.map(|r| r.map(Reply::Rejected)),
    ///             ])
    ///             .await;
    ///         match reply? {
    ///             Reply::Price(price) => Ok(price),
    ///             Reply::Rejected(why) => Err(TerminalError::new(why).into()),
    ///         }
    ///     }
    /// }
    /// ```
    pub fn map<U>(self, f: impl FnOnce(T) -> U + Send + 'a) -> DurableFuture<'a, U> {
        let ctx = self.ctx;
        DurableFuture::new(ctx, async move { f(self.await) })
    }
}

impl<'a, T: Send + 'a> DurableFuture<'a, Result<T, TerminalError>> {
    /// Bounds the wait by a durable timer: the result if it comes within `timeout`, otherwise a
    /// [`TerminalError`] with code 408. Which of the two came first is journaled, so a replay
    /// gives the same answer; the timer itself is a journaled sleep (it survives restarts and
    /// lets the invocation suspend meanwhile). The operation itself is not cancelled: a call
    /// that times out still runs to its end.
    ///
    /// ```
    /// use restate_runtime::prelude::*;
    /// use std::time::Duration;
    /// # #[derive(Default)]
    /// # pub struct Review;
    /// #[service]
    /// impl Review {
    ///     #[handler]
    ///     async fn ask(&self, ctx: Context<'_>) -> HandlerResult<bool> {
    ///         let (_id, approved) = ctx.awakeable::<bool>();
    ///         // No answer within a day counts as a refusal.
    ///         match approved.or_timeout(Duration::from_secs(24 * 3600)).await {
    ///             Err(e) if e.code() == 408 => Ok(false),
    ///             other => Ok(other?),
    ///         }
    ///     }
    /// }
    /// ```
    pub fn or_timeout(self, timeout: Duration) -> DurableFuture<'a, Result<T, TerminalError>> {
        let ctx = self.ctx;
        let timer = ctx.sleep(timeout);
        let timer = DurableFuture::new(ctx, async move {
            timer.await?;
            Err(timed_out(timeout))
        });
        let choice = ctx.choose(vec![self, timer]);
        DurableFuture::new(ctx, async move { choice.await.1 })
    }
}

fn timed_out(after: Duration) -> TerminalError {
    TerminalError::new_with_code(408, format!("timed out after {after:?}"))
}

impl<T> Future for DurableFuture<'_, T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<T> {
        self.inner.as_mut().poll(cx)
    }
}

impl<T> fmt::Debug for DurableFuture<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DurableFuture")
            .field("invocation", &self.ctx.id())
            .finish_non_exhaustive()
    }
}
