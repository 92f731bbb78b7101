//! [`InvocationHandle`]: a sent invocation's id, typed by its handler's output and bound to
//! whoever sent it, so that attaching, peeking at the output and cancelling go through the
//! same caller (journaled inside a handler, direct through a [`RuntimeHandle`]).

use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::client::{ClientError, HandlerCaller};
use crate::context::DurableFuture;
use crate::engine::{ControlError, EngineError, EngineRef, OutputState};
use crate::error::TerminalError;
use crate::ids::InvocationId;
use crate::runtime::RuntimeHandle;

/// A sent invocation: its id, the output type `T` of its handler, and the caller `C` it was
/// sent through (a handler's context or a [`RuntimeHandle`]), which
/// [`attach`](Self::attach), [`output`](Self::output) and [`cancel`](Self::cancel) go through.
///
/// `.send()` and `.send_after(..)` on a generated client return one. A handle built from a bare
/// id (`InvocationHandle::from(id)`, `T = serde_json::Value`, `C = ()`) carries only the id,
/// for [`RuntimeHandle::attach`] or [`Context::attach`](crate::Context::attach).
///
/// ```
/// use restate_runtime::prelude::*;
/// # #[derive(Default)]
/// # pub struct Reports;
/// #[service]
/// impl Reports {
///     # #[handler]
///     # async fn build(&self, _ctx: Context<'_>, month: String) -> HandlerResult<String> { Ok(month) }
///     #[handler]
///     async fn start(&self, ctx: Context<'_>, month: String) -> HandlerResult<String> {
///         let report = ctx.client::<Reports>().build(month).send();
///         // Attach later: the output type (`String`) comes with the handle.
///         let built: String = report.attach().await?;
///         Ok(format!("{} built {built}", report.invocation_id()))
///     }
/// }
/// ```
pub struct InvocationHandle<T = serde_json::Value, C: HandleCaller = ()> {
    id: InvocationId,
    caller: C::Kept,
    _output: PhantomData<fn() -> T>,
}

/// A caller an [`InvocationHandle`] can be bound to, and what the handle keeps of it: all of
/// `Copy` but the [`HttpIngress`](crate::HttpIngress)'s, so those handles are too (one sent
/// through a runtime handle keeps a non-owning reference to the runtime, not the runtime).
pub trait HandleCaller {
    #[doc(hidden)]
    type Kept: Clone;
}

impl HandleCaller for () {
    type Kept = ();
}

impl<'a> HandleCaller for HandlerCaller<'a> {
    type Kept = HandlerCaller<'a>;
}

impl HandleCaller for RuntimeHandle {
    type Kept = EngineRef;
}

impl<T, C: HandleCaller> InvocationHandle<T, C> {
    pub(crate) fn new(id: InvocationId, caller: C::Kept) -> Self {
        Self {
            id,
            caller,
            _output: PhantomData,
        }
    }

    /// The invocation id (`inv_1…`, as the admin API and `GET /restate/invocation/{id}/attach`
    /// know it).
    ///
    /// ```no_run
    /// # use restate_runtime::prelude::*;
    /// # #[derive(Default)]
    /// # pub struct Reports;
    /// # #[service]
    /// # impl Reports {
    /// #     #[handler]
    /// #     async fn build(&self, _ctx: Context<'_>, month: String) -> HandlerResult<String> { Ok(month) }
    /// # }
    /// # async fn demo(handle: RuntimeHandle) -> anyhow::Result<()> {
    /// let sent = handle.client::<Reports>().build("2024-05".into()).send().await?;
    /// assert_eq!(sent.invocation_id().to_string().len(), 38);
    /// # Ok(()) }
    /// ```
    pub fn invocation_id(&self) -> InvocationId {
        self.id
    }

    pub(crate) fn caller(&self) -> &C::Kept {
        &self.caller
    }

    /// The same invocation with another expected output type (for a handle rebuilt from an
    /// id, say).
    ///
    /// ```no_run
    /// # use restate_runtime::prelude::*;
    /// # async fn demo(handle: RuntimeHandle, id: restate_runtime::InvocationId) -> anyhow::Result<()> {
    /// let report = handle.invocation(id).typed::<String>();
    /// let built: String = report.attach().await?;
    /// # Ok(()) }
    /// ```
    pub fn typed<U>(self) -> InvocationHandle<U, C> {
        InvocationHandle::new(self.id, self.caller)
    }
}

impl<T, C: HandleCaller> Clone for InvocationHandle<T, C> {
    fn clone(&self) -> Self {
        Self::new(self.id, self.caller.clone())
    }
}

impl<T, C: HandleCaller> Copy for InvocationHandle<T, C> where C::Kept: Copy {}

impl<T, C: HandleCaller> fmt::Debug for InvocationHandle<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvocationHandle")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Two handles are equal when they name the same invocation.
impl<T, C: HandleCaller, U, D: HandleCaller> PartialEq<InvocationHandle<U, D>>
    for InvocationHandle<T, C>
{
    fn eq(&self, other: &InvocationHandle<U, D>) -> bool {
        self.id == other.id
    }
}

impl<T, C: HandleCaller> Eq for InvocationHandle<T, C> {}

impl<T, C: HandleCaller> Hash for InvocationHandle<T, C> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

impl From<InvocationId> for InvocationHandle {
    fn from(id: InvocationId) -> Self {
        Self::new(id, ())
    }
}

impl<T, C: HandleCaller> From<InvocationHandle<T, C>> for InvocationId {
    fn from(handle: InvocationHandle<T, C>) -> Self {
        handle.id
    }
}

impl<T, C: HandleCaller> From<&InvocationHandle<T, C>> for InvocationId {
    fn from(handle: &InvocationHandle<T, C>) -> Self {
        handle.id
    }
}

/// Inside a handler: each operation is journaled like any other context operation.
impl<'a, T: DeserializeOwned + Send + 'a> InvocationHandle<T, HandlerCaller<'a>> {
    /// Waits for the invocation's result (journaled; a long wait suspends the handler).
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
    ///         let results = ctx.all(handles.iter().map(|h| h.attach())).await?;
    ///         Ok(results.iter().sum())
    ///     }
    /// }
    /// ```
    pub fn attach(&self) -> DurableFuture<'a, Result<T, TerminalError>> {
        let ctx = self.caller.context();
        DurableFuture::new(ctx, ctx.attach_invocation(self.id))
    }

    /// The invocation's result if it has finished, `None` if it is still running; journaled,
    /// so a replay sees what the first execution saw.
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
    ///     async fn poll_once(&self, ctx: Context<'_>) -> HandlerResult<Option<u64>> {
    ///         let job = ctx.client::<Jobs>().work(21).send();
    ///         Ok(job.output().await?)
    ///     }
    /// }
    /// ```
    pub fn output(&self) -> DurableFuture<'a, Result<Option<T>, TerminalError>> {
        let ctx = self.caller.context();
        DurableFuture::new(ctx, ctx.peek_output(self.id))
    }

    /// Requests the invocation's cancellation (journaled; idempotent): its handler gets a 409
    /// terminal error at its next await point.
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
    ///     async fn with_deadline(&self, ctx: Context<'_>) -> HandlerResult<()> {
    ///         let export = ctx.client::<Exports>().export().send();
    ///         if export.attach().or_timeout(Duration::from_secs(600)).await.is_err() {
    ///             export.cancel();
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// ```
    pub fn cancel(&self) {
        self.caller.context().cancel_invocation(self.id);
    }
}

/// Outside any handler, through a [`RuntimeHandle`]: the operations run in this process.
impl<T: DeserializeOwned + Send + 'static> InvocationHandle<T, RuntimeHandle> {
    /// Waits for the invocation's result.
    ///
    /// ```no_run
    /// # use restate_runtime::prelude::*;
    /// # #[derive(Default)]
    /// # pub struct Greeter;
    /// # #[service]
    /// # impl Greeter {
    /// #     #[handler]
    /// #     async fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> { Ok(format!("Hello {name}")) }
    /// # }
    /// # async fn demo(handle: RuntimeHandle) -> anyhow::Result<()> {
    /// let sent = handle.client::<Greeter>().greet("Ada".into()).send().await?;
    /// assert_eq!(sent.attach().await?, "Hello Ada");
    /// # Ok(()) }
    /// ```
    pub async fn attach(&self) -> Result<T, ClientError> {
        self.runtime()?.attach(self.id).await
    }

    /// The invocation's result if it has finished, `None` while it runs (a terminal error with
    /// code 404 for an id this runtime does not know).
    ///
    /// ```no_run
    /// # use restate_runtime::prelude::*;
    /// # #[derive(Default)]
    /// # pub struct Greeter;
    /// # #[service]
    /// # impl Greeter {
    /// #     #[handler]
    /// #     async fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> { Ok(format!("Hello {name}")) }
    /// # }
    /// # async fn demo(handle: RuntimeHandle) -> anyhow::Result<()> {
    /// let sent = handle.client::<Greeter>().greet("Ada".into()).send().await?;
    /// if let Some(greeting) = sent.output().await? {
    ///     println!("done already: {greeting}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn output(&self) -> Result<Option<T>, ClientError> {
        match self.runtime()?.engine()?.output(self.id)? {
            OutputState::Done(done) => Ok(Some(crate::context::run::outcome_to_result(
                done.outcome.clone(),
            )?)),
            OutputState::NotReady => Ok(None),
            OutputState::NotFound => Err(not_found(self.id).into()),
        }
    }

    /// Requests the invocation's cancellation: its handler gets a 409 terminal error at its
    /// next await point and can compensate.
    ///
    /// ```no_run
    /// # use restate_runtime::prelude::*;
    /// # #[derive(Default)]
    /// # pub struct Exports;
    /// # #[service]
    /// # impl Exports {
    /// #     #[handler]
    /// #     async fn export(&self, ctx: Context<'_>, month: String) -> HandlerResult<String> {
    /// #         ctx.sleep(std::time::Duration::from_secs(3600)).await?;
    /// #         Ok(month)
    /// #     }
    /// # }
    /// # async fn demo(handle: RuntimeHandle) -> anyhow::Result<()> {
    /// let export = handle.client::<Exports>().export("2024-05".into()).send().await?;
    /// export.cancel().await?;
    /// assert!(matches!(export.attach().await, Err(restate_runtime::ClientError::Terminal(e)) if e.code() == 409));
    /// # Ok(()) }
    /// ```
    pub async fn cancel(&self) -> Result<(), ControlError> {
        self.runtime()?.cancel(self.id).await.map(|_| ())
    }

    /// The runtime it was sent through, unless that has shut down since.
    fn runtime(&self) -> Result<RuntimeHandle, EngineError> {
        self.caller
            .get()
            .map(RuntimeHandle::from_engine)
            .ok_or_else(|| {
                EngineError::Lost(
                    "the runtime this invocation was sent through has shut down".into(),
                )
            })
    }
}

pub(crate) fn not_found(id: InvocationId) -> TerminalError {
    TerminalError::new_with_code(404, format!("invocation {id} not found"))
}
