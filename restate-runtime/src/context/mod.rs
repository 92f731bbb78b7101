//! The contexts handlers receive, one type per kind of handler. Each is a thin view over the
//! invocation's [`InvocationContext`]; what a context can do is fixed by its type, so calling a
//! state write from a shared handler, or touching state from a service, does not compile.

mod awakeable;
mod combinators;
pub(crate) mod invocation;
mod promise;
pub(crate) mod run;
mod state;

use std::future::Future;

use rand::RngCore;
use serde::{Serialize, de::DeserializeOwned};

pub use invocation::InvocationContext;
pub use run::Run;

use crate::client::{HandlerCaller, IntoObjectClient, IntoServiceClient, IntoWorkflowClient};
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
        self.ctx.rng.lock().expect("rng lock").next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.ctx.rng.lock().expect("rng lock").next_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.ctx.rng.lock().expect("rng lock").fill_bytes(dst)
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
            /// The id of this invocation.
            pub fn invocation_id(&self) -> InvocationId {
                self.inner.id()
            }

            /// The headers the invocation was sent with (names in lower case).
            pub fn headers(&self) -> &'a [(String, String)] {
                &self.inner.headers
            }

            /// A journaled side effect: the closure's result is durable before it is returned,
            /// and on replay the recorded result comes back without running the closure.
            /// The closure may run again if the process dies before its result is recorded.
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
            pub fn sleep(&self, duration: std::time::Duration) -> impl Future<Output = Result<(), crate::TerminalError>> + Send + 'a {
                self.inner.sleep(duration)
            }

            /// A new awakeable: its id (`sign_1…`, to hand to whoever completes it) and a future
            /// of its value. Completed over HTTP (`POST /restate/a/{id}/resolve|reject`) or by
            /// another handler; a long wait suspends the invocation.
            pub fn awakeable<T: DeserializeOwned>(&self) -> (String, impl Future<Output = Result<T, crate::TerminalError>> + Send + 'a) {
                self.inner.awakeable()
            }

            /// Resolves an awakeable with a value (first completion wins; journaled, so once).
            pub fn resolve_awakeable<T: Serialize + 'static>(&self, id: &str, value: T) -> Result<(), crate::TerminalError> {
                self.inner.resolve_awakeable(id, &value)
            }

            /// Rejects an awakeable: its waiter gets a terminal error (code 500) with `message`.
            pub fn reject_awakeable(&self, id: &str, message: &str) -> Result<(), crate::TerminalError> {
                self.inner.reject_awakeable(id, message)
            }

            /// Waits for the first of two durable operations (a call raced against a sleep, say);
            /// the winner is journaled, so a replay takes the same branch. For "all of them",
            /// `futures::join!` on durable operations is already deterministic.
            pub async fn select<A: Future, B: Future>(&self, a: A, b: B) -> futures::future::Either<A::Output, B::Output> {
                self.inner.select(a, b).await
            }

            /// Waits for the result of an invocation by its id (one this handler sent, say).
            pub fn attach<T: DeserializeOwned>(&self, handle: crate::InvocationHandle) -> impl Future<Output = Result<T, crate::TerminalError>> + Send + 'a {
                self.inner.attach_invocation(handle.invocation_id())
            }

            /// Requests cancellation of another invocation (one this handler sent, say). It is
            /// idempotent, so repeating it on replay is harmless.
            pub fn cancel(&self, handle: crate::InvocationHandle) {
                let engine = self.inner.engine.clone();
                tokio::spawn(async move {
                    if let Err(e) = engine.cancel(handle.invocation_id()).await {
                        tracing::debug!(error = %e, "cancel had no effect");
                    }
                });
            }

            /// Random numbers that replay identically (seeded from the invocation id).
            pub fn rand(&self) -> DeterministicRng<'a> {
                DeterministicRng { ctx: self.inner }
            }

            /// A random UUID (version 4 layout) that replays identically.
            pub fn rand_uuid(&self) -> String {
                let mut b = [0u8; 16];
                self.rand().fill_bytes(&mut b);
                b[6] = (b[6] & 0x0f) | 0x40;
                b[8] = (b[8] & 0x3f) | 0x80;
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
            }

            /// The current time, journaled: a replay sees the time the first execution saw.
            pub async fn now(&self) -> Result<std::time::SystemTime, crate::TerminalError> {
                let ms: u64 = self
                    .run(|| async { Ok(crate::clock::now_ms()) })
                    .name("now")
                    .await?;
                Ok(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
            }

            /// A typed client for a service: `ctx.service_client::<GreeterClient>()`.
            pub fn service_client<C: IntoServiceClient<HandlerCaller<'a>>>(&self) -> C {
                C::create(HandlerCaller::new(self.inner))
            }

            /// A typed client for one key of a virtual object.
            pub fn object_client<C: IntoObjectClient<HandlerCaller<'a>>>(
                &self,
                key: impl Into<String>,
            ) -> C {
                C::create(HandlerCaller::new(self.inner), key.into())
            }

            /// A typed client for one workflow (by its key).
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
            pub async fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, crate::TerminalError> {
                self.inner.get_state(name)
            }

            /// The names of this key's state entries, sorted.
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
            pub fn set<T: Serialize + 'static>(&self, name: &str, value: T) {
                self.inner.set_state(name, &value)
            }

            /// Removes a state entry.
            pub fn clear(&self, name: &str) {
                self.inner.clear_state(name)
            }

            /// Removes every state entry of this key.
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
            pub fn promise<T: DeserializeOwned>(&self, name: &str) -> impl Future<Output = Result<T, crate::TerminalError>> + Send + 'a {
                self.inner.promise(name)
            }

            /// The promise's value if it is resolved, `None` if not yet.
            pub async fn peek_promise<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, crate::TerminalError> {
                self.inner.peek_promise(name)
            }

            /// Resolves the promise; a second completion is refused with a 409 terminal error.
            pub async fn resolve_promise<T: Serialize + 'static>(&self, name: &str, value: T) -> Result<(), crate::TerminalError> {
                self.inner.resolve_promise(name, &value).await
            }

            /// Rejects the promise: waiters get a terminal error (code 500) with `message`.
            pub async fn reject_promise(&self, name: &str, message: &str) -> Result<(), crate::TerminalError> {
                self.inner.reject_promise(name, message).await
            }
        }
    )*};
}

context_types! {
    /// The context of a service handler: side effects, calls, timers; no state.
    Context;
    /// The context of an exclusive virtual-object handler: reads and writes its key's state.
    ObjectContext;
    /// The context of a shared virtual-object handler: reads its key's state, writes nothing.
    SharedObjectContext;
    /// The context of a workflow's `run` handler.
    WorkflowContext;
    /// The context of a workflow's shared handlers.
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
