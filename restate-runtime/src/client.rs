//! Typed clients: what the generated `XClient` methods return, from inside a handler (journaled)
//! and from outside any handler (through a [`RuntimeHandle`](crate::RuntimeHandle), no HTTP).

use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::codec::EncodeError;
use crate::context::run::outcome_to_result;
use crate::context::{DurableFuture, InvocationContext};
use crate::engine::{EngineError, InvokeRequest, SendStatus};
use crate::error::TerminalError;
use crate::handle::InvocationHandle;
use crate::ids::InvocationId;
use crate::runtime::RuntimeHandle;
use crate::storage::Target;

/// A request being built: target, input and options, plus who sends it.
#[doc(hidden)]
pub struct RequestParts {
    pub(crate) target: Target,
    input: Result<Bytes, EncodeError>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) idempotency_key: Option<String>,
}

impl RequestParts {
    /// The encoded input, or why it did not encode.
    pub(crate) fn input(&self) -> Result<Bytes, EncodeError> {
        self.input.clone()
    }

    pub(crate) fn into_invoke(
        self,
        delay: Option<Duration>,
    ) -> Result<InvokeRequest, TerminalError> {
        let input = self
            .input
            .map_err(|e| TerminalError::new_with_code(400, e.to_string()))?;
        Ok(InvokeRequest {
            target: self.target,
            input,
            headers: self.headers,
            idempotency_key: self.idempotency_key,
            delay,
            relayed: None,
        })
    }
}

/// Who a generated client sends through: a handler's context or a runtime handle.
///
/// Implemented by [`HandlerCaller`] and [`RuntimeHandle`](crate::RuntimeHandle); generated
/// clients are generic over it, so one client type serves both.
pub trait Caller: Clone {
    /// The request builder this caller hands out.
    type Request<I, O>;
    #[doc(hidden)]
    fn request<I, O>(&self, parts: RequestParts) -> Self::Request<I, O>;
}

/// Builds a generated service client from a caller, for `ctx.service_client::<XClient>()`
/// (deprecated; `ctx.client::<X>()` names the service type instead).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not the client of a `#[service]` for the caller `{C}`",
    label = "expected the generated client of a `#[service]`",
    note = "`service_client::<XClient>()` takes the client generated for a `#[service]` type `X`; \
            for an `#[object]` use `object::<X>(key)`, for a `#[workflow]` `workflow::<X>(key)`",
    note = "simpler: `client::<X>()` with the service type itself",
    note = "a generated client names its caller: `XClient` inside handlers, `XClient<RuntimeHandle>` \
            outside them (on a `RuntimeHandle`)"
)]
pub trait IntoServiceClient<C: Caller> {
    /// Builds the client.
    fn create(caller: C) -> Self;
}

/// Builds a generated virtual-object client for one key, for
/// `ctx.object_client::<XClient>(key)` (deprecated; `ctx.object::<X>(key)` instead).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not the client of an `#[object]` for the caller `{C}`",
    label = "expected the generated client of an `#[object]`",
    note = "`object_client::<XClient>(key)` takes the client generated for an `#[object]` type `X`; \
            for a `#[service]` use `client::<X>()`, for a `#[workflow]` `workflow::<X>(key)`",
    note = "simpler: `object::<X>(key)` with the object type itself",
    note = "a generated client names its caller: `XClient` inside handlers, `XClient<RuntimeHandle>` \
            outside them (on a `RuntimeHandle`)"
)]
pub trait IntoObjectClient<C: Caller> {
    /// Builds the client.
    fn create(caller: C, key: String) -> Self;
}

/// Builds a generated workflow client for one key, for
/// `ctx.workflow_client::<XClient>(key)` (deprecated; `ctx.workflow::<X>(key)` instead).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not the client of a `#[workflow]` for the caller `{C}`",
    label = "expected the generated client of a `#[workflow]`",
    note = "`workflow_client::<XClient>(key)` takes the client generated for a `#[workflow]` type `X`; \
            for a `#[service]` use `client::<X>()`, for an `#[object]` `object::<X>(key)`",
    note = "simpler: `workflow::<X>(key)` with the workflow type itself",
    note = "a generated client names its caller: `XClient` inside handlers, `XClient<RuntimeHandle>` \
            outside them (on a `RuntimeHandle`)"
)]
pub trait IntoWorkflowClient<C: Caller> {
    /// Builds the client.
    fn create(caller: C, key: String) -> Self;
}

/// A type annotated with `#[service]`, named by its type: `ctx.client::<Greeter>()` or
/// `handle.client::<Greeter>()` gives its generated client. Implemented by the macro.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `#[service]`",
    label = "`client::<T>()` takes a type annotated with `#[service]`",
    note = "for an `#[object]` use `object::<T>(key)`, for a `#[workflow]` use `workflow::<T>(key)`"
)]
pub trait HasServiceClient {
    /// The generated client (`GreeterClient` for `Greeter`).
    type Client<'a, C: Caller + 'a>: IntoServiceClient<C>;
}

/// A type annotated with `#[object]`: `ctx.object::<Counter>(key)` or
/// `handle.object::<Counter>(key)` gives its generated client for one key.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an `#[object]`",
    label = "`object::<T>(key)` takes a type annotated with `#[object]`",
    note = "for a `#[service]` use `client::<T>()`, for a `#[workflow]` use `workflow::<T>(key)`"
)]
pub trait HasObjectClient {
    /// The generated client (`CounterClient` for `Counter`).
    type Client<'a, C: Caller + 'a>: IntoObjectClient<C>;
}

/// A type annotated with `#[workflow]`: `ctx.workflow::<Signup>(key)` or
/// `handle.workflow::<Signup>(key)` gives its generated client for one workflow.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `#[workflow]`",
    label = "`workflow::<T>(key)` takes a type annotated with `#[workflow]`",
    note = "for a `#[service]` use `client::<T>()`, for an `#[object]` use `object::<T>(key)`"
)]
pub trait HasWorkflowClient {
    /// The generated client (`SignupClient` for `Signup`).
    type Client<'a, C: Caller + 'a>: IntoWorkflowClient<C>;
}

#[doc(hidden)]
pub fn parts(
    service: &str,
    key: Option<&str>,
    handler: &str,
    input: Result<Bytes, EncodeError>,
) -> RequestParts {
    RequestParts {
        target: Target {
            service: service.to_owned(),
            handler: handler.to_owned(),
            key: key.map(str::to_owned),
        },
        input,
        headers: Vec::new(),
        idempotency_key: None,
    }
}

/// The options every request builder shares; each caller passes its own examples.
macro_rules! builder_options {
    (
        idempotency_key: $(#[$idempotency_key_doc:meta])*
        header: $(#[$header_doc:meta])*
    ) => {
        /// Sets an idempotency key: one invocation per (target, key) within the retention.
        $(#[$idempotency_key_doc])*
        pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
            self.parts.idempotency_key = Some(key.into());
            self
        }

        /// Adds a header the callee sees.
        $(#[$header_doc])*
        pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
            self.parts
                .headers
                .push((name.into().to_ascii_lowercase(), value.into()));
            self
        }
    };
}
pub(crate) use builder_options;

// ---------------------------------------------------------------------------------------------
// Inside a handler.

/// Sends from inside a handler: every call and send is a journal entry.
#[derive(Clone, Copy)]
pub struct HandlerCaller<'a> {
    ctx: &'a InvocationContext,
}

impl<'a> HandlerCaller<'a> {
    pub(crate) fn new(ctx: &'a InvocationContext) -> Self {
        Self { ctx }
    }

    pub(crate) fn context(&self) -> &'a InvocationContext {
        self.ctx
    }
}

impl<'a> Caller for HandlerCaller<'a> {
    type Request<I, O> = HandlerRequest<'a, O>;
    fn request<I, O>(&self, parts: RequestParts) -> HandlerRequest<'a, O> {
        HandlerRequest {
            ctx: self.ctx,
            parts,
            _out: PhantomData,
        }
    }
}

/// A request built inside a handler, by a generated client's method: finish it with
/// [`call`](Self::call), [`send`](Self::send) or [`send_after`](Self::send_after).
///
/// ```
/// use restate_runtime::prelude::*;
/// # #[derive(Default)]
/// # pub struct Mail;
/// #[service]
/// impl Mail {
///     # #[handler]
///     # async fn deliver(&self, _ctx: Context<'_>, to: String) -> HandlerResult<()> { Ok(()) }
///     #[handler]
///     async fn welcome(&self, ctx: Context<'_>, to: String) -> HandlerResult<()> {
///         let request = ctx.client::<Mail>().deliver(to.clone());
///         request.idempotency_key(format!("welcome-{to}")).send();
///         Ok(())
///     }
/// }
/// ```
#[must_use = "a request does nothing until called or sent"]
pub struct HandlerRequest<'a, O> {
    ctx: &'a InvocationContext,
    parts: RequestParts,
    _out: PhantomData<fn() -> O>,
}

impl<'a, O: DeserializeOwned + Send + 'static> HandlerRequest<'a, O> {
    builder_options! {
        idempotency_key:
        ///
        /// ```
        /// use restate_runtime::prelude::*;
        /// # #[derive(Default)]
        /// # pub struct Payments;
        /// #[service]
        /// impl Payments {
        ///     # #[handler]
        ///     # async fn refund(&self, _ctx: Context<'_>, order: String) -> HandlerResult<()> { Ok(()) }
        ///     #[handler]
        ///     async fn cancel_order(&self, ctx: Context<'_>, order: String) -> HandlerResult<()> {
        ///         // However often orders are cancelled, each is refunded once.
        ///         let payments = ctx.client::<Payments>();
        ///         payments.refund(order.clone()).idempotency_key(format!("refund-{order}")).send();
        ///         Ok(())
        ///     }
        /// }
        /// ```
        header:
        ///
        /// ```
        /// use restate_runtime::prelude::*;
        /// # #[derive(Default)]
        /// # pub struct Search;
        /// #[service]
        /// impl Search {
        ///     # #[handler]
        ///     # async fn query(&self, _ctx: Context<'_>, q: String) -> HandlerResult<Vec<String>> { Ok(vec![q]) }
        ///     #[handler]
        ///     async fn for_tenant(&self, ctx: Context<'_>, q: String) -> HandlerResult<Vec<String>> {
        ///         // The callee reads it with `ctx.headers()` (the name arrives lower-cased).
        ///         let request = ctx.client::<Search>().query(q).header("X-Tenant", "acme");
        ///         Ok(request.call().await?)
        ///     }
        /// }
        /// ```
    }

    /// Calls and waits for the result. The call is journaled when this method runs, and the
    /// result when it arrives, so a replayed handler does not call twice.
    ///
    /// ```
    /// use restate_runtime::prelude::*;
    /// # #[derive(Default)]
    /// # pub struct Inventory;
    /// #[service]
    /// impl Inventory {
    ///     # #[handler]
    ///     # async fn in_stock(&self, _ctx: Context<'_>, sku: String) -> HandlerResult<bool> { Ok(!sku.is_empty()) }
    ///     #[handler]
    ///     async fn order(&self, ctx: Context<'_>, sku: String) -> HandlerResult<String> {
    ///         if !ctx.client::<Inventory>().in_stock(sku.clone()).call().await? {
    ///             return Err(TerminalError::new_with_code(409, "out of stock").into());
    ///         }
    ///         Ok(format!("ordered {sku}"))
    ///     }
    /// }
    /// ```
    pub fn call(self) -> DurableFuture<'a, Result<O, TerminalError>> {
        self.ctx.call(self.parts)
    }

    /// Sends one-way: journaled now, returns the new invocation's handle at once.
    ///
    /// ```
    /// use restate_runtime::prelude::*;
    /// # #[derive(Default)]
    /// # pub struct Audit;
    /// #[service]
    /// impl Audit {
    ///     # #[handler]
    ///     # async fn record(&self, _ctx: Context<'_>, event: String) -> HandlerResult<()> { Ok(()) }
    ///     #[handler]
    ///     async fn login(&self, ctx: Context<'_>, user: String) -> HandlerResult<()> {
    ///         // Delivered exactly once even if this handler is retried; no waiting for it.
    ///         ctx.client::<Audit>().record(format!("{user} logged in")).send();
    ///         Ok(())
    ///     }
    /// }
    /// ```
    pub fn send(self) -> InvocationHandle<O, HandlerCaller<'a>> {
        InvocationHandle::new(
            self.ctx.send(self.parts, None),
            HandlerCaller::new(self.ctx),
        )
    }

    /// Sends one-way, to run after `delay`. A zero delay is a plain [`send`](Self::send), in
    /// order with the handler's other sends to the key; delayed ones arrive when they fall
    /// due.
    ///
    /// ```
    /// use restate_runtime::prelude::*;
    /// use std::time::Duration;
    /// # #[derive(Default)]
    /// # pub struct Carts;
    /// #[object]
    /// impl Carts {
    ///     # #[handler]
    ///     # async fn expire(&self, ctx: ObjectContext<'_>) -> HandlerResult<()> { ctx.clear_all(); Ok(()) }
    ///     #[handler]
    ///     async fn add(&self, ctx: ObjectContext<'_>, item: String) -> HandlerResult<()> {
    ///         ctx.set("item", item);
    ///         // Unlike `ctx.sleep`, this does not hold the key for the hour.
    ///         let carts = ctx.object::<Carts>(ctx.key());
    ///         carts.expire().send_after(Duration::from_secs(3600));
    ///         Ok(())
    ///     }
    /// }
    /// ```
    pub fn send_after(self, delay: Duration) -> InvocationHandle<O, HandlerCaller<'a>> {
        // No delay is a plain send: it keeps its place among this handler's sends to the key.
        let delay = (!delay.is_zero()).then_some(delay);
        InvocationHandle::new(
            self.ctx.send(self.parts, delay),
            HandlerCaller::new(self.ctx),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Outside any handler.

/// A request built outside any handler, through a [`RuntimeHandle`](crate::RuntimeHandle).
///
/// ```no_run
/// use restate_runtime::prelude::*;
/// # #[derive(Default)]
/// # pub struct Greeter;
/// # #[service]
/// # impl Greeter {
/// #     #[handler]
/// #     async fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> { Ok(format!("Hello {name}")) }
/// # }
/// # async fn demo(runtime: Runtime) -> anyhow::Result<()> {
/// let greeter = runtime.handle().client::<Greeter>();
/// let request = greeter.greet("Ada".into()).header("x-request-id", "r-1");
/// assert_eq!(request.call().await?, "Hello Ada");
/// # Ok(()) }
/// ```
#[must_use = "a request does nothing until called or sent"]
pub struct ExternalRequest<O> {
    runtime: RuntimeHandle,
    parts: RequestParts,
    _out: PhantomData<fn() -> O>,
}

impl<O> ExternalRequest<O> {
    pub(crate) fn new(runtime: RuntimeHandle, parts: RequestParts) -> Self {
        Self {
            runtime,
            parts,
            _out: PhantomData,
        }
    }
}

/// Errors of a call or send made outside any handler.
///
/// ```no_run
/// use restate_runtime::{ClientError, prelude::*};
/// # #[derive(Default)]
/// # pub struct Greeter;
/// # #[service]
/// # impl Greeter {
/// #     #[handler]
/// #     async fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> { Ok(format!("Hello {name}")) }
/// # }
/// # async fn demo(handle: RuntimeHandle) {
/// let greeter = handle.client::<Greeter>();
/// match greeter.greet("Ada".into()).call().await {
///     Ok(greeting) => println!("{greeting}"),
///     // The handler's own answer, with its code: report it, do not retry.
///     Err(ClientError::Terminal(e)) => eprintln!("refused ({}): {}", e.code(), e.message()),
///     // The runtime could not take the request (storage failure, shutting down).
///     Err(ClientError::Engine(e)) => eprintln!("not accepted: {e}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The handler ended with a terminal error.
    #[error("{0}")]
    Terminal(TerminalError),
    /// The runtime could not take the request (unknown target, storage failure).
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<TerminalError> for ClientError {
    fn from(e: TerminalError) -> Self {
        Self::Terminal(e)
    }
}

impl<O: DeserializeOwned + Send + 'static> ExternalRequest<O> {
    builder_options! {
        idempotency_key:
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
        /// let greeter = handle.client::<Greeter>();
        /// let first = greeter.greet("Ada".into()).idempotency_key("signup-42").send().await?;
        /// // A retried request (say, after a timeout) finds the same invocation.
        /// let again = greeter.greet("Ada".into()).idempotency_key("signup-42").send().await?;
        /// assert_eq!(first, again);
        /// # Ok(()) }
        /// ```
        header:
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
        /// let greeter = handle.client::<Greeter>();
        /// // The handler finds `("x-request-id", "r-17")` in `ctx.headers()`.
        /// let greeting = greeter.greet("Ada".into()).header("X-Request-Id", "r-17").call().await?;
        /// # Ok(()) }
        /// ```
    }

    /// Calls and waits for the result.
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
    /// let greeter = handle.client::<Greeter>();
    /// let greeting: String = greeter.greet("Ada".into()).call().await?;
    /// assert_eq!(greeting, "Hello Ada");
    /// # Ok(()) }
    /// ```
    pub async fn call(self) -> Result<O, ClientError> {
        let req = self.parts.into_invoke(None)?;
        let (_, done, _) = self.runtime.engine()?.call(req).await?;
        Ok(outcome_to_result(done.outcome.clone())?)
    }

    /// Sends one-way; returns once the invocation is durable.
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
    /// let greeter = handle.client::<Greeter>();
    /// // Survives a crash from here on; the result can be fetched later.
    /// let sent = greeter.greet("Ada".into()).send().await?;
    /// let greeting: String = handle.attach(sent).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send(self) -> Result<InvocationHandle<O, RuntimeHandle>, ClientError> {
        self.send_inner(None).await
    }

    /// Sends one-way to run after `delay`; returns once the invocation is durable.
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
    /// use std::time::Duration;
    /// let greeter = handle.client::<Greeter>();
    /// // Runs in an hour, also if the process restarts in between.
    /// let scheduled = greeter.greet("Ada".into()).send_after(Duration::from_secs(3600)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_after(
        self,
        delay: Duration,
    ) -> Result<InvocationHandle<O, RuntimeHandle>, ClientError> {
        self.send_inner(Some(delay)).await
    }

    async fn send_inner(
        self,
        delay: Option<Duration>,
    ) -> Result<InvocationHandle<O, RuntimeHandle>, ClientError> {
        let req = self.parts.into_invoke(delay)?;
        let engine = self.runtime.engine()?;
        let (id, _status, _): (InvocationId, SendStatus, _) = engine.send(req).await?;
        Ok(self.runtime.invocation(id).typed())
    }
}
