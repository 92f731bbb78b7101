//! Typed clients: what the generated `XClient` methods return, from inside a handler (journaled)
//! and from outside any handler (through a [`RuntimeHandle`](crate::RuntimeHandle), no HTTP).

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::codec::EncodeError;
use crate::context::InvocationContext;
use crate::context::invocation::Abort;
use crate::context::run::outcome_to_result;
use crate::engine::{Engine, EngineError, InvokeRequest, SendStatus, Submission};
use crate::error::TerminalError;
use crate::ids::InvocationId;
use crate::storage::{JournalEntry, Outcome, Target, WriteOp};

/// A request being built: target, input and options, plus who sends it.
#[doc(hidden)]
pub struct RequestParts {
    target: Target,
    input: Result<Bytes, EncodeError>,
    headers: Vec<(String, String)>,
    idempotency_key: Option<String>,
}

impl RequestParts {
    fn into_invoke(self, delay: Option<Duration>) -> Result<InvokeRequest, TerminalError> {
        let input = self
            .input
            .map_err(|e| TerminalError::new_with_code(400, e.to_string()))?;
        Ok(InvokeRequest {
            target: self.target,
            input,
            headers: self.headers,
            idempotency_key: self.idempotency_key,
            delay,
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

/// Builds a generated service client from a caller: `ctx.service_client::<XClient>()`.
pub trait IntoServiceClient<C: Caller> {
    /// Builds the client.
    fn create(caller: C) -> Self;
}

/// Builds a generated virtual-object client for one key: `ctx.object_client::<XClient>(key)`.
pub trait IntoObjectClient<C: Caller> {
    /// Builds the client.
    fn create(caller: C, key: String) -> Self;
}

/// Builds a generated workflow client for one key: `ctx.workflow_client::<XClient>(key)`.
pub trait IntoWorkflowClient<C: Caller> {
    /// Builds the client.
    fn create(caller: C, key: String) -> Self;
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

/// The options both request builders share; each caller passes its own examples.
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

/// The id of a sent invocation, and what can be done with it: attach to its result, cancel
/// or kill it (from a handler's context or a [`RuntimeHandle`](crate::RuntimeHandle)).
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
///         let handle: InvocationHandle = ctx.service_client::<ReportsClient>().build(month).send();
///         // Its id, for the caller to attach to later (`GET /restate/invocation/{id}/attach`).
///         Ok(handle.invocation_id().to_string())
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvocationHandle {
    id: InvocationId,
}

impl InvocationHandle {
    /// The invocation id.
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
    /// let reports = handle.service_client::<ReportsClient<RuntimeHandle>>();
    /// let sent = reports.build("2024-05".into()).send().await?;
    /// let id = sent.invocation_id();
    /// assert_eq!(id.to_string().len(), 38); // `inv_1…`, as the admin API lists it
    /// # Ok(()) }
    /// ```
    pub fn invocation_id(&self) -> InvocationId {
        self.id
    }
}

impl From<InvocationId> for InvocationHandle {
    fn from(id: InvocationId) -> Self {
        Self { id }
    }
}

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
///         let request = ctx.service_client::<MailClient>().deliver(to.clone());
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
        ///         let payments = ctx.service_client::<PaymentsClient>();
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
        ///         let request = ctx.service_client::<SearchClient>().query(q).header("X-Tenant", "acme");
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
    ///         if !ctx.service_client::<InventoryClient>().in_stock(sku.clone()).call().await? {
    ///             return Err(TerminalError::new_with_code(409, "out of stock").into());
    ///         }
    ///         Ok(format!("ordered {sku}"))
    ///     }
    /// }
    /// ```
    pub fn call(self) -> impl Future<Output = Result<O, TerminalError>> + Send + 'a {
        let ctx = self.ctx;
        let index = ctx.take_index();
        let plan = plan_call(ctx, index, self.parts);
        async move {
            let outcome = match plan {
                CallPlan::Done(outcome) => outcome,
                // The callee's completion fills in the entry (and resumes us if suspended).
                CallPlan::Wait => {
                    ctx.await_entry(index, |e| match e {
                        JournalEntry::Call {
                            outcome: Some(o), ..
                        } => Some(o.clone()),
                        _ => None,
                    })
                    .await
                }
                CallPlan::Stopped => return std::future::pending().await,
            };
            outcome_to_result(outcome)
        }
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
    ///         ctx.service_client::<AuditClient>().record(format!("{user} logged in")).send();
    ///         Ok(())
    ///     }
    /// }
    /// ```
    pub fn send(self) -> InvocationHandle {
        send_from_handler(self.ctx, self.parts, None)
    }

    /// Sends one-way, to run after `delay`.
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
    ///         let carts = ctx.object_client::<CartsClient>(ctx.key());
    ///         carts.expire().send_after(Duration::from_secs(3600));
    ///         Ok(())
    ///     }
    /// }
    /// ```
    pub fn send_after(self, delay: Duration) -> InvocationHandle {
        send_from_handler(self.ctx, self.parts, Some(delay))
    }
}

enum CallPlan {
    Done(Outcome),
    Wait,
    Stopped,
}

fn plan_call(ctx: &InvocationContext, index: u32, parts: RequestParts) -> CallPlan {
    if let Some(recorded) = ctx.replayed(index) {
        return match recorded {
            JournalEntry::Call {
                target,
                invocation_id,
                outcome,
            } if target == parts.target => match outcome {
                Some(outcome) => CallPlan::Done(outcome),
                None => {
                    let pending = JournalEntry::Call {
                        target,
                        invocation_id,
                        outcome: None,
                    };
                    ctx.forward_outcome(index, invocation_id, pending);
                    CallPlan::Wait
                }
            },
            other => {
                ctx.mismatch(index, &other, &format!("call `{}`", parts.target));
                CallPlan::Stopped
            }
        };
    }
    let target = parts.target.clone();
    if ctx.exclusive_on(&target) {
        let outcome = failure(&TerminalError::new_with_code(
            409,
            format!(
                "deadlock: `{target}` is an exclusive handler on the key this exclusive handler holds; \
                 a call to it would wait forever. Use `.send()`, or make the callee a shared handler"
            ),
        ));
        drop(ctx.journal(
            index,
            JournalEntry::Call {
                target,
                invocation_id: ctx.id(),
                outcome: Some(outcome.clone()),
            },
            Vec::new(),
        ));
        return CallPlan::Done(outcome);
    }
    let req = match parts.into_invoke(None) {
        Ok(req) => req,
        Err(e) => return CallPlan::Done(failure(&e)),
    };
    let submitted = match ctx.engine.submit(req, Some((ctx.id(), index))) {
        Ok(s) => s,
        Err(e) => return refuse(ctx, index, target, e),
    };
    let (id, mut extra, launch, forward) = match submitted.submission {
        Submission::Finished(done) => {
            let entry = JournalEntry::Call {
                target,
                invocation_id: submitted.id,
                outcome: Some(done.outcome.clone()),
            };
            let waiter = ctx.journal(index, entry, Vec::new());
            drop(waiter);
            return CallPlan::Done(done.outcome.clone());
        }
        Submission::Running {
            inflight,
            new: true,
            ..
        } => {
            let mut state = inflight.state();
            state.persisted = true;
            let extra = vec![WriteOp::put_invocation(submitted.id, &state.record)];
            drop(state);
            (submitted.id, extra, Some(inflight), false)
        }
        Submission::Running { new: false, .. } | Submission::Stored => {
            // A duplicate (idempotency key) of an invocation another caller started: its
            // result goes to that caller. This one is recorded as a result waiter, completed
            // with the result (also after a restart), and fetched in memory once journaled.
            let waiter = ctx
                .engine
                .result_waiter(submitted.id, ctx.id(), index, true);
            (submitted.id, vec![waiter], None, true)
        }
    };
    let entry = JournalEntry::Call {
        target,
        invocation_id: id,
        outcome: None,
    };
    match ctx.journal(index, entry.clone(), std::mem::take(&mut extra)) {
        Some(_) => {
            if let Some(inflight) = launch {
                launch_gated(ctx, inflight, None);
            }
            if forward {
                ctx.forward_outcome(index, id, entry);
            }
            CallPlan::Wait
        }
        None => {
            if let Some(inflight) = launch {
                ctx.engine.discard_unrecorded(&inflight);
            }
            CallPlan::Stopped
        }
    }
}

/// Queues an invocation created by the caller's latest journal entry; it runs once that entry
/// is durable (an empty batch commits after everything queued before it).
fn launch_gated(
    ctx: &InvocationContext,
    inflight: std::sync::Arc<crate::engine::Inflight>,
    at: Option<u64>,
) {
    inflight.set_gate(ctx.engine.storage.submit(Vec::new()));
    ctx.engine.launch(inflight, at);
}

fn failure(e: &TerminalError) -> Outcome {
    Outcome::Failure {
        code: e.code(),
        message: e.message().to_owned(),
    }
}

/// A target that cannot be invoked: journaled as a failed call, so the handler sees a terminal
/// error now and the same error on replay.
fn refuse(ctx: &InvocationContext, index: u32, target: Target, e: EngineError) -> CallPlan {
    let outcome = failure(&TerminalError::new_with_code(404, e.to_string()));
    let entry = JournalEntry::Call {
        target,
        invocation_id: ctx.id(),
        outcome: Some(outcome.clone()),
    };
    drop(ctx.journal(index, entry, Vec::new()));
    CallPlan::Done(outcome)
}

fn send_from_handler(
    ctx: &InvocationContext,
    parts: RequestParts,
    delay: Option<Duration>,
) -> InvocationHandle {
    let index = ctx.take_index();
    if let Some(recorded) = ctx.replayed(index) {
        return match recorded {
            JournalEntry::Send {
                target,
                invocation_id,
            } if target == parts.target => InvocationHandle { id: invocation_id },
            other => {
                ctx.mismatch(index, &other, &format!("send `{}`", parts.target));
                InvocationHandle { id: ctx.id() }
            }
        };
    }
    let target = parts.target.clone();
    let submitted = parts
        .into_invoke(delay)
        .map_err(|e| e.to_string())
        .and_then(|req| ctx.engine.submit(req, None).map_err(|e| e.to_string()));
    let submitted = match submitted {
        Ok(s) => s,
        Err(reason) => {
            // A send to a target this binary does not serve is a bug to fix and redeploy: retry.
            ctx.stop(Abort::Retry(format!("cannot send to `{target}`: {reason}")));
            return InvocationHandle { id: ctx.id() };
        }
    };
    let mut extra = Vec::new();
    let mut launch = None;
    if let Submission::Running {
        inflight,
        new: true,
        ..
    } = submitted.submission
    {
        let mut state = inflight.state();
        state.persisted = true;
        extra.push(WriteOp::put_invocation(submitted.id, &state.record));
        drop(state);
        launch = Some(inflight);
    }
    let entry = JournalEntry::Send {
        target,
        invocation_id: submitted.id,
    };
    match (ctx.journal(index, entry, extra), launch) {
        (Some(_), Some(inflight)) => launch_gated(ctx, inflight, submitted.execution_time_ms),
        (None, Some(inflight)) => ctx.engine.discard_unrecorded(&inflight),
        _ => {}
    }
    InvocationHandle { id: submitted.id }
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
/// let greeter = runtime.handle().service_client::<GreeterClient<RuntimeHandle>>();
/// let request = greeter.greet("Ada".into()).header("x-request-id", "r-1");
/// assert_eq!(request.call().await?, "Hello Ada");
/// # Ok(()) }
/// ```
#[must_use = "a request does nothing until called or sent"]
pub struct ExternalRequest<O> {
    engine: Engine,
    parts: RequestParts,
    _out: PhantomData<fn() -> O>,
}

impl<O> ExternalRequest<O> {
    pub(crate) fn new(engine: Engine, parts: RequestParts) -> Self {
        Self {
            engine,
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
/// let greeter = handle.service_client::<GreeterClient<RuntimeHandle>>();
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
        /// let greeter = handle.service_client::<GreeterClient<RuntimeHandle>>();
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
        /// let greeter = handle.service_client::<GreeterClient<RuntimeHandle>>();
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
    /// let greeter = handle.service_client::<GreeterClient<RuntimeHandle>>();
    /// let greeting: String = greeter.greet("Ada".into()).call().await?;
    /// assert_eq!(greeting, "Hello Ada");
    /// # Ok(()) }
    /// ```
    pub async fn call(self) -> Result<O, ClientError> {
        let req = self.parts.into_invoke(None)?;
        let (_, done, _) = self.engine.call(req).await?;
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
    /// let greeter = handle.service_client::<GreeterClient<RuntimeHandle>>();
    /// // Survives a crash from here on; the result can be fetched later.
    /// let sent = greeter.greet("Ada".into()).send().await?;
    /// let greeting: String = handle.attach(sent).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send(self) -> Result<InvocationHandle, ClientError> {
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
    /// let greeter = handle.service_client::<GreeterClient<RuntimeHandle>>();
    /// // Runs in an hour, also if the process restarts in between.
    /// let scheduled = greeter.greet("Ada".into()).send_after(Duration::from_secs(3600)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_after(self, delay: Duration) -> Result<InvocationHandle, ClientError> {
        self.send_inner(Some(delay)).await
    }

    async fn send_inner(self, delay: Option<Duration>) -> Result<InvocationHandle, ClientError> {
        let req = self.parts.into_invoke(delay)?;
        let (id, _status, _): (InvocationId, SendStatus, _) = self.engine.send(req).await?;
        Ok(InvocationHandle { id })
    }
}

/// Waits for the result of an invocation sent earlier, through a runtime handle.
pub(crate) async fn attach_typed<O: DeserializeOwned>(
    engine: &Engine,
    id: InvocationId,
) -> Result<O, ClientError> {
    let done = engine
        .attach(id)
        .await?
        .ok_or_else(|| TerminalError::new_with_code(404, format!("invocation {id} not found")))?;
    Ok(outcome_to_result(done.outcome.clone())?)
}
