//! The contexts handlers receive, one type per kind of handler. Each is a thin view over the
//! invocation's [`InvocationContext`]; what a context can do is fixed by its type, so calling a
//! state write from a shared handler, or touching state from a service, does not compile.

mod awakeable;
mod call;
mod combinators;
mod durable;
pub(crate) mod invocation;
mod patch;
mod promise;
pub(crate) mod run;
mod sleep;
mod state;
mod zone;

use std::future::{Future, IntoFuture};

use rand::RngCore;
use serde::{Serialize, de::DeserializeOwned};

pub use awakeable::AwakeableHandle;
pub(crate) use awakeable::resolved as resolved_awakeable;
pub(crate) use awakeable::resolved;
pub use combinators::Unordered;
pub use durable::DurableFuture;
pub use invocation::InvocationContext;
pub use run::Run;

use crate::client::{
    HandlerCaller, HasObjectClient, HasServiceClient, HasWorkflowClient, IntoObjectClient,
    IntoServiceClient, IntoWorkflowClient,
};
use crate::error::HandlerResult;
use crate::ids::InvocationId;

/// Random numbers seeded from the invocation id: the same sequence on every replay.
///
/// ```
/// use restate_runtime::prelude::*;
/// # pub struct Dice;
/// #[service]
/// impl Dice {
///     #[handler]
///     async fn roll(&self, ctx: Context<'_>) -> HandlerResult<u32> {
///         Ok(ctx.rand().next_u32() % 6 + 1)
///     }
/// }
/// ```
pub struct DeterministicRng<'a> {
    ctx: &'a InvocationContext,
}

impl RngCore for DeterministicRng<'_> {
    fn next_u32(&mut self) -> u32 {
        self.ctx.with_rng(|rng| rng.next_u32())
    }
    fn next_u64(&mut self) -> u64 {
        self.ctx.with_rng(|rng| rng.next_u64())
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.ctx.with_rng(|rng| rng.fill_bytes(dst))
    }
}

/// Builds a context from the engine's side; used by generated dispatch code.
#[doc(hidden)]
pub trait FromInvocation<'a> {
    fn from_invocation(ctx: &'a InvocationContext) -> Self;
}

macro_rules! context_types {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy)]
        pub struct $name<'a> {
            inner: &'a InvocationContext,
        }

        impl<'a> FromInvocation<'a> for $name<'a> {
            fn from_invocation(inner: &'a InvocationContext) -> Self {
                Self { inner }
            }
        }

        impl<'a> $name<'a> {
            /// The id of this invocation: the same on every attempt and replay.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// #[derive(Default)]
            /// pub struct Payments;
            /// #[service]
            /// impl Payments {
            ///     #[handler]
            ///     async fn pay(&self, ctx: Context<'_>, cents: u64) -> HandlerResult<String> {
            ///         // Stable across retries, so the provider can deduplicate on it.
            ///         let request_id = ctx.invocation_id().to_string();
            ///         Ok(format!("charged {cents} as {request_id}"))
            ///     }
            /// }
            /// ```
            pub fn invocation_id(&self) -> InvocationId {
                self.inner.id()
            }

            /// The headers the invocation was sent with (names in lower case): by name, as an
            /// `http::HeaderMap`, or as the `(name, value)` pairs.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// #[derive(Default)]
            /// pub struct Tenants;
            /// #[service]
            /// impl Tenants {
            ///     #[handler]
            ///     async fn tenant(&self, ctx: Context<'_>) -> HandlerResult<Option<String>> {
            ///         Ok(ctx.headers().get("x-tenant").map(str::to_owned))
            ///     }
            ///     #[handler]
            ///     async fn tenant_from_pairs(&self, ctx: Context<'_>) -> HandlerResult<Option<String>> {
            ///         let found = ctx.headers().iter().find(|(name, _)| name == "x-tenant");
            ///         Ok(found.map(|(_, value)| value.clone()))
            ///     }
            /// }
            /// ```
            pub fn headers(&self) -> &'a crate::Headers {
                crate::Headers::new(&self.inner.headers)
            }

            /// A journaled side effect: the closure's result is durable before it is returned,
            /// and on replay the recorded result comes back without running the closure.
            /// The closure may run again if the process dies before its result is recorded.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// #[derive(Default)]
            /// pub struct Orders;
            /// #[service]
            /// impl Orders {
            ///     #[handler]
            ///     async fn place(&self, ctx: Context<'_>, item: String) -> HandlerResult<String> {
            ///         // A retry after this step gets the same order number without reserving again.
            ///         let order: u64 = ctx.run(|| reserve(&item)).name("reserve").await?;
            ///         Ok(format!("order {order}: {item}"))
            ///     }
            /// }
            /// async fn reserve(_item: &str) -> HandlerResult<u64> { Ok(7) }
            /// ```
            pub fn run<F, Fut, T>(&self, closure: F) -> Run<'a, F, Fut, T>
            where
                F: FnMut() -> Fut + Send + 'a,
                Fut: Future<Output = HandlerResult<T>> + Send + 'a,
                T: Serialize + DeserializeOwned + Send + 'static,
            {
                Run::new(self.inner, closure)
            }

            /// A durable timer: the wake-up time is journaled, so the sleep survives restarts and
            /// fires once. In an exclusive object handler it holds the key while sleeping;
            /// `send_after` is the non-blocking alternative.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// use std::time::Duration;
            /// #[derive(Default)]
            /// pub struct Reminders;
            /// #[service]
            /// impl Reminders {
            ///     #[handler]
            ///     async fn remind(&self, ctx: Context<'_>, note: String) -> HandlerResult<String> {
            ///         // Suspended meanwhile; a restart does not reset the day.
            ///         ctx.sleep(Duration::from_secs(24 * 3600)).await?;
            ///         Ok(format!("reminder: {note}"))
            ///     }
            /// }
            /// ```
            pub fn sleep(&self, duration: std::time::Duration) -> DurableFuture<'a, Result<(), crate::TerminalError>> {
                DurableFuture::new(self.inner, self.inner.sleep(duration))
            }

            /// A new awakeable: its id (`sign_1…`, to hand to whoever completes it) and a future
            /// of its value. Completed over HTTP (`POST /restate/a/{id}/resolve|reject`) or by
            /// another handler; a long wait suspends the invocation.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// #[derive(Default)]
            /// pub struct Review;
            /// #[service]
            /// impl Review {
            ///     #[handler]
            ///     async fn submit(&self, ctx: Context<'_>, doc: String) -> HandlerResult<bool> {
            ///         let (id, approved) = ctx.awakeable::<bool>();
            ///         // The reviewer answers with `POST /restate/a/{id}/resolve` and `true` or `false`.
            ///         ctx.run(|| notify_reviewer(&doc, &id)).name("notify").await?;
            ///         Ok(approved.await?)
            ///     }
            /// }
            /// async fn notify_reviewer(_doc: &str, _id: &str) -> HandlerResult<()> { Ok(()) }
            /// ```
            pub fn awakeable<T: DeserializeOwned + Send + 'a>(&self) -> (String, DurableFuture<'a, Result<T, crate::TerminalError>>) {
                let (id, value) = self.inner.awakeable();
                (id, DurableFuture::new(self.inner, value))
            }

            /// Another invocation's awakeable, by the id its waiter handed out: `.resolve(value)`
            /// or `.reject(error)` completes it, journaled, and returns once that is durable
            /// (the first completion wins).
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// #[derive(Default)]
            /// pub struct Reviewer;
            /// #[service]
            /// impl Reviewer {
            ///     /// Takes the id another handler got from `ctx.awakeable()`.
            ///     #[handler]
            ///     async fn approve(&self, ctx: Context<'_>, awakeable_id: String) -> HandlerResult<()> {
            ///         ctx.awakeable_handle(awakeable_id).resolve(true).await?;
            ///         Ok(())
            ///     }
            ///
            ///     #[handler]
            ///     async fn deny(&self, ctx: Context<'_>, awakeable_id: String) -> HandlerResult<()> {
            ///         // Its waiter sees this code and metadata; a message alone would be code 500.
            ///         let denied = TerminalError::new_with_code(403, "denied").with_metadata("missing", "signature");
            ///         ctx.awakeable_handle(awakeable_id).reject(denied).await?;
            ///         Ok(())
            ///     }
            /// }
            /// ```
            pub fn awakeable_handle(&self, id: impl Into<String>) -> AwakeableHandle<'a> {
                AwakeableHandle::new(self.inner, id.into())
            }

            /// Resolves an awakeable with a value, without waiting for the commit.
            #[deprecated(note = "use `ctx.awakeable_handle(id).resolve(value).await`, which returns once the completion is durable")]
            pub fn resolve_awakeable<T: Serialize + 'static>(&self, id: &str, value: T) -> Result<(), crate::TerminalError> {
                self.inner.complete_awakeable(id, awakeable::resolved(&value))
            }

            /// Rejects an awakeable, without waiting for the commit.
            #[deprecated(note = "use `ctx.awakeable_handle(id).reject(error).await`, which returns once the completion is durable")]
            pub fn reject_awakeable(&self, id: &str, error: impl Into<crate::TerminalError>) -> Result<(), crate::TerminalError> {
                self.inner.complete_awakeable(id, Ok(crate::storage::Outcome::failure(&error.into())))
            }

            /// Waits for the first of two durable operations (a call raced against a sleep, a
            /// step against a deadline); the winner is journaled, so a replay takes the same
            /// branch. A `ctx.run(..)` step may be passed as it is: its position is taken here.
            ///
            /// Pass operations, not `async` blocks that create operations as they go: a replay
            /// polls only the recorded winner, so what the loser would have created is never
            /// created and every later journal position would shift. Such a branch pauses the
            /// invocation (reason `non_determinism`) on its first run, with a message that says
            /// so. The same holds for `futures::join!`: join operations created before it (a
            /// `ctx.run(..)` step as `.into_future()`: it is `IntoFuture`), or use
            /// [`all`](Self::all).
            ///
            /// ```
            /// use restate_runtime::{Either, prelude::*};
            /// use std::time::Duration;
            /// # #[derive(Default)]
            /// # pub struct Quotes;
            /// #[service]
            /// impl Quotes {
            ///     # #[handler]
            ///     # async fn fetch(&self, _ctx: Context<'_>) -> HandlerResult<u64> { Ok(42) }
            ///     #[handler]
            ///     async fn price(&self, ctx: Context<'_>) -> HandlerResult<u64> {
            ///         let call = ctx.client::<Quotes>().fetch().call();
            ///         match ctx.select(call, ctx.sleep(Duration::from_secs(5))).await {
            ///             Either::Left(price) => Ok(price?),
            ///             Either::Right(_timed_out) => Ok(0), // the fallback price
            ///         }
            ///     }
            /// }
            /// ```
            pub async fn select<A: IntoFuture, B: IntoFuture>(&self, a: A, b: B) -> futures::future::Either<A::Output, B::Output> {
                self.inner.select(a.into_future(), b.into_future()).await
            }

            /// Waits for every operation, in any number, and gives their outputs in the order
            /// given; the first failure ends the wait with its error (the others keep running:
            /// a call still completes, a sleep still fires). Which operation failed first is
            /// journaled, so a replay fails the same way.
            ///
            /// The combinators (`all`, `race`, `unordered`) take [`DurableFuture`]s: calls,
            /// sleeps, awakeables, promises, attaches and other combinators, whose journal
            /// positions are all taken when they are created. A `ctx.run` or an `async` block
            /// is not one: it would take its positions when first polled, which a replay that
            /// only polls the recorded winner would not do.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// # #[derive(Default)]
            /// # pub struct Prices;
            /// #[service]
            /// impl Prices {
            ///     # #[handler]
            ///     # async fn quote(&self, _ctx: Context<'_>, supplier: String) -> HandlerResult<u64> { Ok(supplier.len() as u64) }
            ///     #[handler]
            ///     async fn cheapest(&self, ctx: Context<'_>, suppliers: Vec<String>) -> HandlerResult<u64> {
            ///         let prices = ctx.client::<Prices>();
            ///         // All calls run in parallel; one failure fails the whole lookup.
            ///         let quotes = ctx.all(suppliers.into_iter().map(|s| prices.quote(s).call())).await?;
            ///         Ok(quotes.into_iter().min().unwrap_or(0))
            ///     }
            /// }
            /// ```
            pub fn all<T, I>(&self, operations: I) -> DurableFuture<'a, Result<Vec<T>, crate::TerminalError>>
            where
                I: IntoIterator<Item = DurableFuture<'a, Result<T, crate::TerminalError>>>,
                T: Send + 'a,
            {
                self.inner.all(operations.into_iter().collect())
            }

            /// Waits for the first of any number of operations and gives its position in the
            /// list with its output; earlier positions win ties. The winner is journaled, so a
            /// replay takes the same branch. The others keep running.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// # #[derive(Default)]
            /// # pub struct Mirrors;
            /// #[service]
            /// impl Mirrors {
            ///     # #[handler]
            ///     # async fn fetch(&self, _ctx: Context<'_>, url: String) -> HandlerResult<String> { Ok(url) }
            ///     #[handler]
            ///     async fn fastest(&self, ctx: Context<'_>, urls: Vec<String>) -> HandlerResult<String> {
            ///         let mirrors = ctx.client::<Mirrors>();
            ///         let (winner, body) = ctx.race(urls.iter().map(|u| mirrors.fetch(u.clone()).call())).await;
            ///         Ok(format!("{}: {}", urls[winner], body?))
            ///     }
            /// }
            /// ```
            pub fn race<T, I>(&self, operations: I) -> DurableFuture<'a, (usize, T)>
            where
                I: IntoIterator<Item = DurableFuture<'a, T>>,
                T: Send + 'a,
            {
                DurableFuture::new(self.inner, self.inner.choose(operations.into_iter().collect()))
            }

            /// The outputs of any number of operations as they finish, each with its position in
            /// the list given; a [`Stream`](futures::Stream) (use `futures::StreamExt::next`).
            /// The order is journaled one item at a time, so a replay yields the same sequence.
            ///
            /// ```
            /// use futures::StreamExt;
            /// use restate_runtime::prelude::*;
            /// # #[derive(Default)]
            /// # pub struct Crawl;
            /// #[service]
            /// impl Crawl {
            ///     # #[handler]
            ///     # async fn page(&self, _ctx: Context<'_>, n: u32) -> HandlerResult<u32> { Ok(n) }
            ///     #[handler]
            ///     async fn first_two(&self, ctx: Context<'_>) -> HandlerResult<Vec<u32>> {
            ///         let crawl = ctx.client::<Crawl>();
            ///         let mut pages = ctx.unordered((1..=5).map(|n| crawl.page(n).call()));
            ///         let mut done = Vec::new();
            ///         while let Some((_position, page)) = pages.next().await {
            ///             done.push(page?);
            ///             if done.len() == 2 {
            ///                 break; // the other three still run to their end
            ///             }
            ///         }
            ///         Ok(done)
            ///     }
            /// }
            /// ```
            pub fn unordered<T, I>(&self, operations: I) -> Unordered<'a, T>
            where
                I: IntoIterator<Item = DurableFuture<'a, T>>,
            {
                self.inner.unordered(operations.into_iter().collect())
            }

            /// Waits for the result of an invocation by its id (one this handler sent, say).
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// # #[derive(Default)]
            /// # pub struct Jobs;
            /// #[service]
            /// impl Jobs {
            ///     # #[handler]
            ///     # async fn work(&self, _ctx: Context<'_>, n: u64) -> HandlerResult<u64> { Ok(n * 2) }
            ///     #[handler]
            ///     async fn fan_out(&self, ctx: Context<'_>) -> HandlerResult<u64> {
            ///         let jobs = ctx.client::<Jobs>();
            ///         // Both run in parallel; then collect their results.
            ///         let handles = [jobs.work(1).send(), jobs.work(2).send()];
            ///         let mut sum = 0;
            ///         for handle in handles {
            ///             sum += ctx.attach::<u64>(handle).await?;
            ///         }
            ///         Ok(sum)
            ///     }
            /// }
            /// ```
            pub fn attach<T: DeserializeOwned + Send + 'a>(&self, invocation: impl Into<InvocationId>) -> DurableFuture<'a, Result<T, crate::TerminalError>> {
                DurableFuture::new(self.inner, self.inner.attach_invocation(invocation.into()))
            }

            /// Requests cancellation of another invocation (one this handler sent, say). It is
            /// idempotent, so repeating it on replay is harmless.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// use std::time::Duration;
            /// # #[derive(Default)]
            /// # pub struct Exports;
            /// #[service]
            /// impl Exports {
            ///     # #[handler]
            ///     # async fn export(&self, _ctx: Context<'_>) -> HandlerResult<()> { Ok(()) }
            ///     #[handler]
            ///     async fn export_with_deadline(&self, ctx: Context<'_>) -> HandlerResult<()> {
            ///         let export = ctx.client::<Exports>().export().send();
            ///         ctx.sleep(Duration::from_secs(600)).await?;
            ///         // Done by now is fine; otherwise it gets a 409 at its next await point.
            ///         ctx.cancel(export);
            ///         Ok(())
            ///     }
            /// }
            /// ```
            pub fn cancel(&self, invocation: impl Into<InvocationId>) {
                self.inner.cancel_invocation(invocation.into());
            }

            /// Whether this invocation runs the code of change `change`: true for one that
            /// reaches this point with the new code, false for one whose journal was written by
            /// the code before the change (started before the deploy and replayed now). The
            /// answer is journaled and never changes for an invocation, so both kinds finish
            /// on the code they started with.
            ///
            /// Before, version 1 charged and then emailed:
            ///
            /// ```
            /// # use restate_runtime::prelude::*;
            /// # #[derive(Default)]
            /// # pub struct Orders;
            /// #[service]
            /// impl Orders {
            ///     #[handler]
            ///     async fn complete(&self, ctx: Context<'_>, order: String) -> HandlerResult<()> {
            ///         ctx.run(|| async { Ok(()) }).name("charge").await?;
            ///         ctx.run(|| async { Ok(()) }).name("email").await?;
            ///         Ok(())
            ///     }
            /// }
            /// ```
            ///
            /// After, version 2 reserves stock first; invocations suspended in version 1 keep
            /// version 1's steps:
            ///
            /// ```
            /// # use restate_runtime::prelude::*;
            /// # #[derive(Default)]
            /// # pub struct Orders;
            /// #[service]
            /// impl Orders {
            ///     #[handler]
            ///     async fn complete(&self, ctx: Context<'_>, order: String) -> HandlerResult<()> {
            ///         if ctx.patched("reserve-stock") {
            ///             ctx.run(|| async { Ok(()) }).name("reserve").await?;
            ///         }
            ///         ctx.run(|| async { Ok(()) }).name("charge").await?;
            ///         ctx.run(|| async { Ok(()) }).name("email").await?;
            ///         Ok(())
            ///     }
            /// }
            /// ```
            ///
            /// Once no invocation from before the change is left (the admin API lists them by
            /// `?version=`), replace the branch by [`deprecate_patch`](Self::deprecate_patch).
            pub fn patched(&self, change: &str) -> bool {
                self.inner.patched(change)
            }

            /// Retires change `change` of [`patched`](Self::patched) once every invocation
            /// from before it has finished: the new code runs unconditionally, and invocations
            /// whose journal holds the change's marker replay past it. Remove this call too
            /// once those have finished.
            ///
            /// ```
            /// # use restate_runtime::prelude::*;
            /// # #[derive(Default)]
            /// # pub struct Orders;
            /// #[service]
            /// impl Orders {
            ///     #[handler]
            ///     async fn complete(&self, ctx: Context<'_>, order: String) -> HandlerResult<()> {
            ///         ctx.deprecate_patch("reserve-stock");
            ///         ctx.run(|| async { Ok(()) }).name("reserve").await?;
            ///         ctx.run(|| async { Ok(()) }).name("charge").await?;
            ///         ctx.run(|| async { Ok(()) }).name("email").await?;
            ///         Ok(())
            ///     }
            /// }
            /// ```
            pub fn deprecate_patch(&self, change: &str) {
                self.inner.deprecate_patch(change)
            }

            /// Random numbers that replay identically (seeded from the invocation id).
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// #[derive(Default)]
            /// pub struct Raffle;
            /// #[service]
            /// impl Raffle {
            ///     #[handler]
            ///     async fn draw(&self, ctx: Context<'_>, tickets: Vec<String>) -> HandlerResult<Option<String>> {
            ///         if tickets.is_empty() {
            ///             return Ok(None);
            ///         }
            ///         // A retry draws the same winner.
            ///         let i = ctx.rand().next_u32() as usize % tickets.len();
            ///         Ok(Some(tickets[i].clone()))
            ///     }
            /// }
            /// ```
            pub fn rand(&self) -> DeterministicRng<'a> {
                DeterministicRng { ctx: self.inner }
            }

            /// A random UUID (version 4 layout) that replays identically.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// #[derive(Default)]
            /// pub struct Orders;
            /// #[service]
            /// impl Orders {
            ///     #[handler]
            ///     async fn create(&self, ctx: Context<'_>) -> HandlerResult<String> {
            ///         // Like `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`; a retry gets the same id.
            ///         let order_id = ctx.rand_uuid();
            ///         Ok(order_id)
            ///     }
            /// }
            /// ```
            pub fn rand_uuid(&self) -> String {
                let mut b = [0u8; 16];
                self.rand().fill_bytes(&mut b);
                b[6] = (b[6] & 0x0f) | 0x40;
                b[8] = (b[8] & 0x3f) | 0x80;
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
            }

            /// The current time, journaled: a replay sees the time the first execution saw.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// use std::time::UNIX_EPOCH;
            /// #[derive(Default)]
            /// pub struct Audit;
            /// #[service]
            /// impl Audit {
            ///     #[handler]
            ///     async fn stamp(&self, ctx: Context<'_>, event: String) -> HandlerResult<String> {
            ///         let secs = ctx.now().await?.duration_since(UNIX_EPOCH)?.as_secs();
            ///         Ok(format!("{event} at {secs}"))
            ///     }
            /// }
            /// ```
            pub async fn now(&self) -> Result<std::time::SystemTime, crate::TerminalError> {
                let clock = self.inner.engine.config().clock.clone();
                let ms: u64 = self
                    .run(move || std::future::ready(Ok(clock.now_ms())))
                    .name("now")
                    .await?;
                Ok(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
            }

            /// The typed client of a `#[service]`, named by its type: `ctx.client::<Greeter>()`.
            /// Calls and sends through it are journaled.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// #[derive(Default)]
            /// pub struct Greeter;
            /// #[service]
            /// impl Greeter {
            ///     #[handler]
            ///     async fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> {
            ///         Ok(format!("Hello {name}"))
            ///     }
            ///     #[handler]
            ///     async fn greet_twice(&self, ctx: Context<'_>, name: String) -> HandlerResult<String> {
            ///         let greeter = ctx.client::<Greeter>();
            ///         let first = greeter.greet(name.clone()).call().await?;
            ///         Ok(format!("{first}! {}!", greeter.greet(name).call().await?))
            ///     }
            /// }
            /// ```
            pub fn client<S: HasServiceClient>(&self) -> S::Client<'a, HandlerCaller<'a>> {
                <S::Client<'a, HandlerCaller<'a>> as IntoServiceClient<_>>::create(HandlerCaller::new(self.inner))
            }

            /// The typed client of one key of an `#[object]`: `ctx.object::<Counter>(key)`.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// # #[derive(Default)]
            /// # pub struct Stock;
            /// #[object]
            /// impl Stock {
            ///     #[handler]
            ///     async fn take(&self, ctx: ObjectContext<'_>, n: u32) -> HandlerResult<u32> {
            ///         let left = ctx.get::<u32>("left").await?.unwrap_or(10).saturating_sub(n);
            ///         ctx.set("left", left);
            ///         Ok(left)
            ///     }
            /// }
            /// # #[derive(Default)]
            /// # pub struct Shop;
            /// #[service]
            /// impl Shop {
            ///     #[handler]
            ///     async fn buy(&self, ctx: Context<'_>, item: String) -> HandlerResult<u32> {
            ///         // Calls `Stock/{item}/take`: one at a time per item.
            ///         Ok(ctx.object::<Stock>(item).take(1).call().await?)
            ///     }
            /// }
            /// ```
            pub fn object<O: HasObjectClient>(&self, key: impl Into<String>) -> O::Client<'a, HandlerCaller<'a>> {
                <O::Client<'a, HandlerCaller<'a>> as IntoObjectClient<_>>::create(HandlerCaller::new(self.inner), key.into())
            }

            /// The typed client of one `#[workflow]` (by its key): `ctx.workflow::<Signup>(key)`.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// # #[derive(Default)]
            /// # pub struct Signup;
            /// #[workflow]
            /// impl Signup {
            ///     #[handler]
            ///     async fn run(&self, _ctx: WorkflowContext<'_>, email: String) -> HandlerResult<String> {
            ///         Ok(format!("{email} verified"))
            ///     }
            /// }
            /// # #[derive(Default)]
            /// # pub struct Users;
            /// #[service]
            /// impl Users {
            ///     #[handler]
            ///     async fn register(&self, ctx: Context<'_>, email: String) -> HandlerResult<()> {
            ///         // One sign-up per address: sending `run` again for this key starts nothing.
            ///         ctx.workflow::<Signup>(email.clone()).run(email).send();
            ///         Ok(())
            ///     }
            /// }
            /// ```
            pub fn workflow<W: HasWorkflowClient>(&self, key: impl Into<String>) -> W::Client<'a, HandlerCaller<'a>> {
                <W::Client<'a, HandlerCaller<'a>> as IntoWorkflowClient<_>>::create(HandlerCaller::new(self.inner), key.into())
            }

            /// A typed client for a service: `ctx.client::<Greeter>()`.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// #[derive(Default)]
            /// pub struct Greeter;
            /// #[service]
            /// impl Greeter {
            ///     #[handler]
            ///     async fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> {
            ///         Ok(format!("Hello {name}"))
            ///     }
            ///     #[handler]
            ///     async fn greet_twice(&self, ctx: Context<'_>, name: String) -> HandlerResult<String> {
            ///         let greeter = ctx.client::<Greeter>();
            ///         let first = greeter.greet(name.clone()).call().await?;
            ///         Ok(format!("{first}! {}!", greeter.greet(name).call().await?))
            ///     }
            /// }
            /// ```
            #[deprecated(note = "name the type itself: `client::<Greeter>()` instead of `service_client::<XClient>(..)`")]
            pub fn service_client<C: IntoServiceClient<HandlerCaller<'a>>>(&self) -> C {
                C::create(HandlerCaller::new(self.inner))
            }

            /// A typed client for one key of a virtual object.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// # #[derive(Default)]
            /// # pub struct Stock;
            /// #[object]
            /// impl Stock {
            ///     #[handler]
            ///     async fn take(&self, ctx: ObjectContext<'_>, n: u32) -> HandlerResult<u32> {
            ///         let left = ctx.get::<u32>("left").await?.unwrap_or(10).saturating_sub(n);
            ///         ctx.set("left", left);
            ///         Ok(left)
            ///     }
            /// }
            /// # #[derive(Default)]
            /// # pub struct Shop;
            /// #[service]
            /// impl Shop {
            ///     #[handler]
            ///     async fn buy(&self, ctx: Context<'_>, item: String) -> HandlerResult<u32> {
            ///         // Calls `Stock/{item}/take`: one at a time per item.
            ///         Ok(ctx.object::<Stock>(item).take(1).call().await?)
            ///     }
            /// }
            /// ```
            #[deprecated(note = "name the type itself: `object::<Counter>(key)` instead of `object_client::<XClient>(..)`")]
            pub fn object_client<C: IntoObjectClient<HandlerCaller<'a>>>(
                &self,
                key: impl Into<String>,
            ) -> C {
                C::create(HandlerCaller::new(self.inner), key.into())
            }

            /// A typed client for one workflow (by its key).
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// # #[derive(Default)]
            /// # pub struct Signup;
            /// #[workflow]
            /// impl Signup {
            ///     #[handler]
            ///     async fn run(&self, _ctx: WorkflowContext<'_>, email: String) -> HandlerResult<String> {
            ///         Ok(format!("{email} verified"))
            ///     }
            /// }
            /// # #[derive(Default)]
            /// # pub struct Users;
            /// #[service]
            /// impl Users {
            ///     #[handler]
            ///     async fn register(&self, ctx: Context<'_>, email: String) -> HandlerResult<()> {
            ///         // One sign-up per address: sending `run` again for this key starts nothing.
            ///         ctx.workflow::<Signup>(email.clone()).run(email).send();
            ///         Ok(())
            ///     }
            /// }
            /// ```
            #[deprecated(note = "name the type itself: `workflow::<Signup>(key)` instead of `workflow_client::<XClient>(..)`")]
            pub fn workflow_client<C: IntoWorkflowClient<HandlerCaller<'a>>>(
                &self,
                key: impl Into<String>,
            ) -> C {
                C::create(HandlerCaller::new(self.inner), key.into())
            }
        }
    )*};
}

macro_rules! keyed {
    ($($name:ident),*) => {$(
        impl<'a> $name<'a> {
            /// The object or workflow key this invocation runs on.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// #[derive(Default)]
            /// pub struct Cart;
            /// #[object]
            /// impl Cart {
            ///     /// `POST /Cart/ada/owner` answers "cart of ada".
            ///     #[handler]
            ///     async fn owner(&self, ctx: SharedObjectContext<'_>) -> HandlerResult<String> {
            ///         Ok(format!("cart of {}", ctx.key()))
            ///     }
            /// }
            /// ```
            pub fn key(&self) -> &'a str {
                self.inner.key.as_deref().unwrap_or_default()
            }
        }
    )*};
}

macro_rules! reads_state {
    ($($name:ident),*) => {$(
        impl<'a> $name<'a> {
            /// Reads a state entry of this key (`None` when unset). Journaled: a replay sees
            /// the value the first execution saw.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// #[derive(Default)]
            /// pub struct Counter;
            /// #[object]
            /// impl Counter {
            ///     #[handler]
            ///     async fn get(&self, ctx: SharedObjectContext<'_>) -> HandlerResult<u64> {
            ///         Ok(ctx.get::<u64>("count").await?.unwrap_or(0))
            ///     }
            /// }
            /// ```
            pub async fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, crate::TerminalError> {
                self.inner.get_state(name).await
            }

            /// The names of this key's state entries, sorted.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// #[derive(Default)]
            /// pub struct Profile;
            /// #[object]
            /// impl Profile {
            ///     /// Which fields this user has filled in.
            ///     #[handler]
            ///     async fn fields(&self, ctx: SharedObjectContext<'_>) -> HandlerResult<Vec<String>> {
            ///         Ok(ctx.state_keys().await?)
            ///     }
            /// }
            /// ```
            pub async fn state_keys(&self) -> Result<Vec<String>, crate::TerminalError> {
                self.inner.state_keys()
            }
        }
    )*};
}

macro_rules! writes_state {
    ($($name:ident),*) => {$(
        impl<'a> $name<'a> {
            /// Sets a state entry; it commits with its journal entry, in order, without waiting.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// #[derive(Default)]
            /// pub struct Counter;
            /// #[object]
            /// impl Counter {
            ///     #[handler]
            ///     async fn add(&self, ctx: ObjectContext<'_>, n: u64) -> HandlerResult<u64> {
            ///         let count = ctx.get::<u64>("count").await?.unwrap_or(0) + n;
            ///         ctx.set("count", count);
            ///         Ok(count)
            ///     }
            /// }
            /// ```
            pub fn set<T: Serialize + 'static>(&self, name: &str, value: T) {
                self.inner.set_state(name, &value)
            }

            /// Removes a state entry.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// #[derive(Default)]
            /// pub struct Cart;
            /// #[object]
            /// impl Cart {
            ///     #[handler]
            ///     async fn checkout(&self, ctx: ObjectContext<'_>) -> HandlerResult<Vec<String>> {
            ///         let items: Vec<String> = ctx.get("items").await?.unwrap_or_default();
            ///         ctx.clear("items");
            ///         Ok(items)
            ///     }
            /// }
            /// ```
            pub fn clear(&self, name: &str) {
                self.inner.clear_state(name)
            }

            /// Removes every state entry of this key.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// #[derive(Default)]
            /// pub struct Account;
            /// #[object]
            /// impl Account {
            ///     /// Forgets everything stored for this user.
            ///     #[handler]
            ///     async fn erase(&self, ctx: ObjectContext<'_>) -> HandlerResult<()> {
            ///         ctx.clear_all();
            ///         Ok(())
            ///     }
            /// }
            /// ```
            pub fn clear_all(&self) {
                self.inner.clear_all_state()
            }
        }
    )*};
}

macro_rules! promises {
    ($($name:ident),*) => {$(
        impl<'a> $name<'a> {
            /// Waits for the workflow's durable promise `name` (resolved by any handler of this
            /// workflow, before or after this call). A long wait suspends the invocation.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// #[derive(Default)]
            /// pub struct Signup;
            /// #[workflow]
            /// impl Signup {
            ///     #[handler]
            ///     async fn run(&self, ctx: WorkflowContext<'_>, email: String) -> HandlerResult<String> {
            ///         // Waits (suspended, across restarts) for a handler to resolve it.
            ///         let code: String = ctx.promise("email.clicked").await?;
            ///         Ok(format!("{email} verified with {code}"))
            ///     }
            /// }
            /// ```
            pub fn promise<T: DeserializeOwned + Send + 'a>(&self, name: &str) -> DurableFuture<'a, Result<T, crate::TerminalError>> {
                DurableFuture::new(self.inner, self.inner.promise(name))
            }

            /// The promise's value if it is resolved, `None` if not yet.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// #[derive(Default)]
            /// pub struct Signup;
            /// #[workflow]
            /// impl Signup {
            ///     # #[handler]
            ///     # async fn run(&self, ctx: WorkflowContext<'_>) -> HandlerResult<String> {
            ///     #     Ok(ctx.promise("email.clicked").await?)
            ///     # }
            ///     #[handler]
            ///     async fn clicked(&self, ctx: SharedWorkflowContext<'_>) -> HandlerResult<bool> {
            ///         let code: Option<String> = ctx.peek_promise("email.clicked").await?;
            ///         Ok(code.is_some())
            ///     }
            /// }
            /// ```
            pub async fn peek_promise<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, crate::TerminalError> {
                self.inner.peek_promise(name)
            }

            /// Resolves the promise; a second completion is refused with a 409 terminal error.
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// #[derive(Default)]
            /// pub struct Signup;
            /// #[workflow]
            /// impl Signup {
            ///     # #[handler]
            ///     # async fn run(&self, ctx: WorkflowContext<'_>) -> HandlerResult<String> {
            ///     #     Ok(ctx.promise("email.clicked").await?)
            ///     # }
            ///     /// The link in the e-mail lands here; `run` is waiting on the promise.
            ///     #[handler]
            ///     async fn click(&self, ctx: SharedWorkflowContext<'_>, code: String) -> HandlerResult<()> {
            ///         ctx.resolve_promise("email.clicked", code).await?;
            ///         Ok(())
            ///     }
            /// }
            /// ```
            pub async fn resolve_promise<T: Serialize + 'static>(&self, name: &str, value: T) -> Result<(), crate::TerminalError> {
                self.inner.resolve_promise(name, &value).await
            }

            /// Rejects the promise: waiters get `error`, a [`TerminalError`](crate::TerminalError)
            /// with its code, or a message alone (code 500).
            ///
            /// ```
            /// use restate_runtime::prelude::*;
            /// #[derive(Default)]
            /// pub struct Signup;
            /// #[workflow]
            /// impl Signup {
            ///     # #[handler]
            ///     # async fn run(&self, ctx: WorkflowContext<'_>) -> HandlerResult<String> {
            ///     #     Ok(ctx.promise("email.clicked").await?)
            ///     # }
            ///     /// "This wasn't me": `run` fails with this message instead of waiting on.
            ///     #[handler]
            ///     async fn report(&self, ctx: SharedWorkflowContext<'_>) -> HandlerResult<()> {
            ///         ctx.reject_promise("email.clicked", "sign-up reported as abuse").await?;
            ///         Ok(())
            ///     }
            /// }
            /// ```
            pub async fn reject_promise(&self, name: &str, error: impl Into<crate::TerminalError>) -> Result<(), crate::TerminalError> {
                self.inner.reject_promise(name, error.into()).await
            }
        }
    )*};
}

context_types! {
    /// The context of a service handler: side effects, calls, timers; no state.
    ///
    /// ```
    /// use restate_runtime::prelude::*;
    /// #[derive(Default)]
    /// pub struct Greeter;
    /// #[service]
    /// impl Greeter {
    ///     #[handler]
    ///     async fn greet(&self, ctx: Context<'_>, name: String) -> HandlerResult<String> {
    ///         let id = ctx.rand_uuid();
    ///         Ok(format!("Hello {name}, your ticket is {id}"))
    ///     }
    /// }
    /// ```
    Context;
    /// The context of an exclusive virtual-object handler: reads and writes its key's state.
    ///
    /// ```
    /// use restate_runtime::prelude::*;
    /// #[derive(Default)]
    /// pub struct Visits;
    /// #[object]
    /// impl Visits {
    ///     /// One at a time per key, so the read-modify-write cannot race.
    ///     #[handler]
    ///     async fn visit(&self, ctx: ObjectContext<'_>) -> HandlerResult<u64> {
    ///         let n = ctx.get::<u64>("visits").await?.unwrap_or(0) + 1;
    ///         ctx.set("visits", n);
    ///         Ok(n)
    ///     }
    /// }
    /// ```
    ObjectContext;
    /// The context of a shared virtual-object handler: reads its key's state, writes nothing.
    ///
    /// ```
    /// use restate_runtime::prelude::*;
    /// #[derive(Default)]
    /// pub struct Visits;
    /// #[object]
    /// impl Visits {
    ///     /// Runs alongside exclusive handlers of the same key.
    ///     #[handler]
    ///     async fn count(&self, ctx: SharedObjectContext<'_>) -> HandlerResult<u64> {
    ///         Ok(ctx.get::<u64>("visits").await?.unwrap_or(0))
    ///     }
    /// }
    /// ```
    SharedObjectContext;
    /// The context of a workflow's `run` handler.
    ///
    /// ```
    /// use restate_runtime::prelude::*;
    /// #[derive(Default)]
    /// pub struct Onboarding;
    /// #[workflow]
    /// impl Onboarding {
    ///     /// Runs once per key; state and promises belong to that key.
    ///     #[handler]
    ///     async fn run(&self, ctx: WorkflowContext<'_>, email: String) -> HandlerResult<()> {
    ///         ctx.set("step", "welcome mail sent");
    ///         ctx.promise::<()>("profile.done").await?;
    ///         ctx.set("step", format!("{email} onboarded"));
    ///         Ok(())
    ///     }
    /// }
    /// ```
    WorkflowContext;
    /// The context of a workflow's shared handlers.
    ///
    /// ```
    /// use restate_runtime::prelude::*;
    /// #[derive(Default)]
    /// pub struct Onboarding;
    /// #[workflow]
    /// impl Onboarding {
    ///     # #[handler]
    ///     # async fn run(&self, ctx: WorkflowContext<'_>) -> HandlerResult<()> {
    ///     #     Ok(ctx.promise("profile.done").await?)
    ///     # }
    ///     /// Reads the workflow's state and completes its promises while `run` waits.
    ///     #[handler]
    ///     async fn profile_done(&self, ctx: SharedWorkflowContext<'_>) -> HandlerResult<Option<String>> {
    ///         ctx.resolve_promise("profile.done", ()).await?;
    ///         Ok(ctx.get("step").await?)
    ///     }
    /// }
    /// ```
    SharedWorkflowContext;
}

keyed!(
    ObjectContext,
    SharedObjectContext,
    WorkflowContext,
    SharedWorkflowContext
);
reads_state!(
    ObjectContext,
    SharedObjectContext,
    WorkflowContext,
    SharedWorkflowContext
);
writes_state!(ObjectContext, WorkflowContext);
promises!(WorkflowContext, SharedWorkflowContext);
