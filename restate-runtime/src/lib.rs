//! Durable execution embedded in your binary.
//!
//! Annotate plain `async fn`s with [`service`], [`object`] or [`workflow`] and [`handler`]; the
//! runtime serves them over Restate's HTTP ingress API and runs them durably on a redb journal
//! in a local data folder: side effects (`ctx.run`) are journaled, calls and messages between
//! services survive crashes, retries resume by replay, and idempotency keys make each request
//! take effect once.
//!
//! ```no_run
//! use restate_runtime::prelude::*;
//!
//! #[derive(Default)]
//! pub struct Greeter;
//!
//! #[service]
//! impl Greeter {
//!     /// POST /Greeter/greet with a JSON string.
//!     #[handler]
//!     async fn greet(&self, ctx: Context<'_>, name: String) -> HandlerResult<String> {
//!         let n: u32 = ctx.run(|| async { Ok(42) }).name("lucky number").await?;
//!         Ok(format!("Hello {name}, your number is {n}"))
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> anyhow::Result<()> {
//!     Runtime::builder().data_dir("./data").build()?.serve().await?;
//!     Ok(())
//! }
//! ```

#![warn(missing_docs)]

mod admin;
mod bearer;
mod cli;
mod client;
mod clock;
mod codec;
mod concurrency;
mod config;
mod context;
mod debounce;
mod duration;
mod engine;
mod error;
mod failpoints;
mod filter;
mod handle;
mod headers;
mod ids;
mod ingress;
mod listener;
mod logs;
mod mac;
mod maps;
mod metrics;
mod percent;
mod rate;
mod registry;
mod remote;
mod replay;
mod runtime;
mod schedules;
pub mod storage;
mod telemetry;
pub mod testing;
pub mod webhook;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use bytes::Bytes;
pub use client::{
    Caller, ClientError, ExternalRequest, HandlerCaller, HandlerRequest, HasObjectClient,
    HasServiceClient, HasWorkflowClient, IntoObjectClient, IntoServiceClient, IntoWorkflowClient,
};
pub use codec::{DecodeError, EncodeError, RawInput};
pub use config::{Config, ConfigError, DEFAULT_SECRET_HEADERS};
pub use context::{
    AwakeableHandle, Context, DeterministicRng, DurableFuture, ObjectContext, Run,
    SharedObjectContext, SharedWorkflowContext, Unordered, WorkflowContext,
};
pub use duration::parse as parse_duration;
pub use engine::{
    ControlError, DrainStatus, EngineError, STORAGE_FAILURE_EXIT_CODE, exit_on_storage_failure,
};
pub use error::{HandlerError, HandlerResult, TerminalError, TerminalErrorExt};
pub use futures::future::Either;
pub use handle::{HandleCaller, InvocationHandle};
pub use headers::Headers;
pub use ids::{AwakeableId, IdParseError, InvocationId};
pub use rate::{RateLimit, RateLimitError};
pub use registry::{
    HandlerDefinition, HandlerKind, HandlerOptions, InputShape, OnMaxAttempts, RegistryError,
    RetryPolicy, Service, ServiceDefinition, ServiceKind,
};
pub use remote::{HttpIngress, HttpRequest, IngressError};
pub use replay::{Problem, ReplayCheckError, ReplayOptions, ReplayProblem, ReplayReport};
pub use runtime::{BuildError, Runtime, RuntimeBuilder, RuntimeHandle, ServeError};
pub use schedules::{
    CatchUp, CronOptions, LastRun, Overlap, RunOutcome, ScheduleError, ScheduleOrigin,
    ScheduleSpec, ScheduleView, ScheduledTime, Schedules, TriggerOutcome,
};

/// Declares a stateless service on an inherent `impl` block.
///
/// Every method marked `#[handler]` becomes a durable handler at `POST /{Service}/{handler}`.
/// Options: `name = "..."` (the wire name, default the type name), `ingress_private`,
/// `retention = "24h"`, `retry(initial_interval = "500ms", factor = 2.0, max_interval = "60s",
/// max_attempts = 70, on_max_attempts = "pause" | "kill")` (defaults for every handler). The macro also generates a typed client,
/// `{Type}Client`, and registers the service with the runtime through `inventory`.
///
/// ```
/// use restate_runtime::prelude::*;
/// #[derive(Default)]
/// pub struct Greeter;
/// #[service(name = "Greeter")]
/// impl Greeter {
///     #[handler]
///     async fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> {
///         Ok(format!("Hello {name}"))
///     }
/// }
/// ```
pub use restate_macros::service;

/// Declares a virtual object: keyed handlers, exclusive (`ObjectContext`) or shared
/// (`SharedObjectContext`), at `POST /{Object}/{key}/{handler}`. Options as for [`service`].
///
/// ```
/// use restate_runtime::prelude::*;
/// #[derive(Default)]
/// pub struct Counter;
/// #[object]
/// impl Counter {
///     #[handler]
///     async fn add(&self, ctx: ObjectContext<'_>, n: u64) -> HandlerResult<u64> {
///         Ok(n + ctx.key().len() as u64)
///     }
///     #[handler]
///     async fn peek(&self, ctx: SharedObjectContext<'_>) -> HandlerResult<String> {
///         Ok(ctx.key().to_owned())
///     }
/// }
/// ```
pub use restate_macros::object;

/// Declares a workflow: a `run` handler (`WorkflowContext`) executed once per key, plus shared
/// handlers (`SharedWorkflowContext`). Options as for [`service`].
///
/// ```
/// use restate_runtime::prelude::*;
/// #[derive(Default)]
/// pub struct Signup;
/// #[workflow]
/// impl Signup {
///     #[handler]
///     async fn run(&self, ctx: WorkflowContext<'_>, email: String) -> HandlerResult<String> {
///         Ok(format!("{} signed up as {email}", ctx.key()))
///     }
///     #[handler]
///     async fn status(&self, _ctx: SharedWorkflowContext<'_>) -> HandlerResult<()> {
///         Ok(())
///     }
/// }
/// ```
pub use restate_macros::workflow;

/// Marks a method of a `#[service]`, `#[object]` or `#[workflow]` impl as a handler.
///
/// Options: `name = "..."`, `ingress_private`, `retention = "..."`, `retry(..)`; on a service's
/// handler `cron = "..."` (with `timezone`, `catch_up`, `overlap`: see the README's
/// "Schedules") and `debounce(period = "..", max_wait = "..", key = Self::f)`; on any handler
/// `rate(limit = .., per = "..", burst = .., key = Self::f, name = "..")` and `concurrency = n`
/// or `concurrency(limit = .., key = Self::f, name = "..")`. A `key` names a function of the
/// input that gives the bucket (or burst) key.
///
/// ```
/// use restate_runtime::prelude::*;
/// #[derive(serde::Serialize, serde::Deserialize)]
/// pub struct Event { invoice: String }
/// #[derive(Default)]
/// pub struct Payments;
/// #[service]
/// impl Payments {
///     #[handler(name = "onEvent", ingress_private, retry(max_attempts = 5))]
///     async fn on_event(&self, _ctx: Context<'_>, _event: serde_json::Value) -> HandlerResult<()> {
///         Ok(())
///     }
///
///     /// Every night at two, Paris time.
///     #[handler(cron = "0 2 * * *", timezone = "Europe/Paris")]
///     async fn nightly(&self, _ctx: Context<'_>) -> HandlerResult<()> {
///         Ok(())
///     }
///
///     /// Ten a second, two at a time per invoice, once per burst of changes to an invoice.
///     #[handler(
///         debounce(key = Self::invoice, period = "30s", max_wait = "5m"),
///         rate(limit = 10, per = "1s"),
///         concurrency(limit = 2, key = Self::invoice)
///     )]
///     async fn settle(&self, _ctx: Context<'_>, _event: Event) -> HandlerResult<()> {
///         Ok(())
///     }
/// }
/// impl Payments {
///     fn invoice(event: &Event) -> &str {
///         &event.invoice
///     }
/// }
/// ```
pub use restate_macros::handler;

/// Installs a `tracing` subscriber that logs to standard output (to standard error when the
/// binary was started to run a command, see [`RuntimeBuilder::main`]), filtered by `RUST_LOG`
/// (default `info`). Call it once at the start of `main`; it does nothing if a subscriber is
/// already set.
///
/// With the `otel` feature and `OTEL_EXPORTER_OTLP_ENDPOINT` set (for example
/// `http://localhost:4318`), it also exports traces over OTLP (http/protobuf): a span per
/// invocation attempt, with child spans for its runs, calls, sends, sleeps and waits, in the
/// trace of the request that started the invocation (its W3C `traceparent` header), across
/// suspensions and restarts. The standard `OTEL_*` variables apply (`OTEL_SERVICE_NAME`,
/// `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_TRACES_EXPORTER=none`...).
///
/// ```
/// restate_runtime::init_tracing();
/// ```
pub fn init_tracing() {
    use std::io::IsTerminal as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A command's report is its standard output: its logs go to standard error. Colours only
    // for a terminal, and not with `NO_COLOR`: a log file or collector gets plain text.
    fn logs<S>() -> tracing_subscriber::fmt::Layer<
        S,
        tracing_subscriber::fmt::format::DefaultFields,
        logs::Lines,
        tracing_subscriber::fmt::writer::BoxMakeWriter,
    >
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        use tracing_subscriber::fmt::writer::BoxMakeWriter;
        let (terminal, writer) = match cli::command_requested() {
            true => (
                std::io::stderr().is_terminal(),
                BoxMakeWriter::new(std::io::stderr),
            ),
            false => (
                std::io::stdout().is_terminal(),
                BoxMakeWriter::new(std::io::stdout),
            ),
        };
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        tracing_subscriber::fmt::layer()
            .with_ansi(terminal && !no_color)
            .with_writer(writer)
            .event_format(logs::Lines::default())
    }
    #[cfg(feature = "otel")]
    if let Some(export) = telemetry::layer() {
        use tracing_subscriber::Layer as _;
        // The log filter is the log layer's own: spans it leaves out may still be exported.
        let registry = tracing_subscriber::registry().with(logs().with_filter(filter));
        let _ = registry.with(export).try_init();
        return;
    }
    // Without an exporter the filter is global: a span or event it leaves out is not even
    // created, which costs less per invocation than a per-layer filter.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(logs())
        .try_init();
}

/// The README's examples, compiled as doc tests.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The serde this runtime is built with, for apps that derive through it without depending
/// on serde themselves.
///
/// ```
/// use restate_runtime::prelude::*;
///
/// #[derive(Serialize, Deserialize)]
/// #[serde(crate = "restate_runtime::serde")]
/// pub struct Invoice {
///     id: String,
/// }
/// # let _ = Invoice { id: "in_1".into() }.id;
/// ```
pub use serde;

/// Everything a handler module needs: `use restate_runtime::prelude::*;`.
pub mod prelude {
    pub use crate::{
        ClientError, Context, DurableFuture, HandlerError, HandlerResult, InvocationHandle,
        ObjectContext, RawInput, RetryPolicy, Runtime, RuntimeHandle, SharedObjectContext,
        SharedWorkflowContext, TerminalError, TerminalErrorExt, WorkflowContext, handler, object,
        service, workflow,
    };
    pub use rand::RngCore as _;
    pub use serde::{Deserialize, Serialize};
}
