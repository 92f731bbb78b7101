//! Support for the code the macros generate. Not a public API: it changes without notice.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

pub use crate::client::{Caller, RequestParts, parts};
pub use crate::context::{FromInvocation, InvocationContext};
pub use crate::registry::{
    HandlerDefinition, HandlerKind, HandlerOptions, InputShape, OnMaxAttempts, Registration,
    RetryPolicy, Service, ServiceDefinition, ServiceKind,
};
pub use futures::future::BoxFuture;
pub use inventory;

use crate::codec::{DecodeError, EncodeError, RawInput, decode_json, encode_json};
use crate::error::{HandlerError, TerminalError};

/// What a handler's input type must be: the generated code checks it once, on the type's span,
/// so a type without serde's traits is one error that says what to derive.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler's input: it must implement `serde::Serialize` and `serde::de::DeserializeOwned`",
    label = "the handler's input type",
    note = "derive both: `#[derive(serde::Serialize, serde::Deserialize)]` (callers encode it, the handler decodes it)",
    note = "to take the request body as it is, take `RawInput` instead"
)]
pub trait HandlerInput: Serialize + DeserializeOwned + 'static {}

#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned + 'static> HandlerInput for T {}

/// What a handler's output type must be (see [`HandlerInput`]).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler's output: it must implement `serde::Serialize`",
    label = "the handler's output type",
    note = "derive it: `#[derive(serde::Serialize)]` (callers that decode it with `.call()` also need `serde::Deserialize`); `()` for no output"
)]
pub trait HandlerOutput: Serialize + 'static {}

#[diagnostic::do_not_recommend]
impl<T: Serialize + 'static> HandlerOutput for T {}

/// What a handler's error type must be: convertible into [`HandlerError`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler's error type: it must convert into `HandlerError`",
    label = "the handler's error type",
    note = "use `HandlerResult<T>`, or an error type that is `TerminalError`, `anyhow::Error`, \
            or implements `std::error::Error + Send + Sync + 'static` (retried), or `From<YourError> for HandlerError`"
)]
pub trait HandlerErrorType: Into<HandlerError> {}

#[diagnostic::do_not_recommend]
impl<E: Into<HandlerError>> HandlerErrorType for E {}

/// The codec of a handler's input, reached through one generic function so that a type that
/// is not one is reported once: the three uses (check, decode, encode) make the same error at
/// the same span, which the compiler shows once, and the codec's methods need no bound of
/// their own (they call what `input` put in it).
pub fn input<T: HandlerInput>() -> InputCodec<T> {
    InputCodec {
        check: |bytes| decode_json::<T>(bytes).map(drop),
        decode: decode_json::<T>,
        encode: |value| encode_json(value),
    }
}

/// See [`input`].
pub struct InputCodec<T> {
    check: fn(&[u8]) -> Result<(), DecodeError>,
    decode: fn(&[u8]) -> Result<T, DecodeError>,
    encode: fn(&T) -> Result<Bytes, EncodeError>,
}

impl<T> InputCodec<T> {
    /// Checks that a payload decodes as `T` (the ingress does, before accepting it).
    pub fn check(self) -> fn(&[u8]) -> Result<(), DecodeError> {
        self.check
    }

    /// Decodes a handler's input. What was accepted was checked against the input type or
    /// encoded from it, so a payload that does not decode means the type changed since: the
    /// invocation is paused, as a bad deploy's are (the runtime's own handlers retry).
    pub fn decode(self, bytes: &[u8], ctx: &InvocationContext) -> Result<T, HandlerError> {
        (self.decode)(bytes).map_err(|e| ctx.undecodable_input(&e))
    }

    /// Encodes a client's input.
    pub fn encode(self, value: &T) -> Result<Bytes, EncodeError> {
        (self.encode)(value)
    }
}

/// Checks a handler's output and error types and turns its result into the dispatcher's.
pub fn output<T: HandlerOutput, E: HandlerErrorType>(
    result: Result<T, E>,
) -> Result<Bytes, HandlerError> {
    let value = result.map_err(Into::into)?;
    encode_json(&value).map_err(|e| TerminalError::new(e.to_string()).into())
}

/// Requires a handler's future to be `Send` (the runtime runs handlers on a multi-threaded
/// executor), checked on the handler's name.
pub fn send_future<'a, F: Future + Send + 'a>(future: F) -> BoxFuture<'a, F::Output> {
    Box::pin(future)
}

/// Accepts any payload (raw and no-input handlers are checked by shape instead).
pub fn accept_any(_: &[u8]) -> Result<(), DecodeError> {
    Ok(())
}

/// The raw body and headers for a [`RawInput`] handler.
pub fn raw_input(bytes: Bytes, ctx: &InvocationContext) -> RawInput {
    RawInput::new(bytes, ctx.headers.clone())
}

/// The error for a handler name the dispatcher does not know.
pub fn unknown_handler(service: &str, handler: &str) -> HandlerError {
    TerminalError::new_with_code(
        404,
        format!("service '{service}' has no handler '{handler}'"),
    )
    .into()
}

/// Parses a duration the macro already validated.
pub fn duration_ms(ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(ms)
}

/// Finds a `Default` value for a service type when it has one (autoref specialisation: the
/// by-value impl needs `Default`, the by-reference one is the fallback).
pub struct DefaultProbe<T>(PhantomData<T>);

impl<T> DefaultProbe<T> {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

pub trait ViaDefault {
    fn instance(&self) -> Option<Arc<dyn Service>>;
}

impl<T: Service + Default> ViaDefault for DefaultProbe<T> {
    fn instance(&self) -> Option<Arc<dyn Service>> {
        Some(Arc::new(T::default()))
    }
}

pub trait WithoutDefault {
    fn instance(&self) -> Option<Arc<dyn Service>>;
}

impl<T> WithoutDefault for &DefaultProbe<T> {
    fn instance(&self) -> Option<Arc<dyn Service>> {
        None
    }
}

/// A handler's result, its error searched for a [`TerminalError`] when it is an
/// `anyhow::Error` (autoref specialisation: the by-value impl is for `anyhow::Error`, the
/// by-reference one passes any other result on unchanged, for `output` to check).
pub struct ResultProbe<T, E>(std::cell::Cell<Option<Result<T, E>>>);

impl<T, E> ResultProbe<T, E> {
    pub fn new(result: Result<T, E>) -> Self {
        Self(std::cell::Cell::new(Some(result)))
    }

    fn take(&self) -> Result<T, E> {
        self.0.take().expect("a handler's result is probed once")
    }
}

pub trait AnyhowTerminal<T> {
    fn probed(&self) -> Result<T, HandlerError>;
}

impl<T> AnyhowTerminal<T> for ResultProbe<T, anyhow::Error> {
    fn probed(&self) -> Result<T, HandlerError> {
        self.take().map_err(HandlerError::from_anyhow)
    }
}

pub trait AsReturned<T, E> {
    fn probed(&self) -> Result<T, E>;
}

impl<T, E> AsReturned<T, E> for &ResultProbe<T, E> {
    fn probed(&self) -> Result<T, E> {
        self.take()
    }
}

pub use crate::rate::RateLimit;

/// The gate of a handler with `concurrency(..)`: waits (durably) until it holds a permit of
/// the bucket `name` (per `key` if given), which goes back with the invocation's end.
pub async fn concurrency_gate(
    ctx: &InvocationContext,
    name: &str,
    key: Option<String>,
    declared: Option<u32>,
) -> Result<(), HandlerError> {
    if let Some(plan) = ctx.plan_permit(name, key.as_deref(), declared) {
        ctx.acquire_permit(plan, None).await?;
    }
    Ok(())
}
pub use crate::schedules::{CatchUp, CronOptions, Overlap};

/// The gate of a handler with `debounce(..)`, before its body: a durable wait for the verdict
/// of this arrival's burst (per `key` if given). `Some`: the output of the one that ran in its
/// place, which this invocation ends with (recorded superseded); `None`: run the body.
pub async fn debounce_gate(
    ctx: &InvocationContext,
    name: &str,
    key: Option<String>,
    period_ms: u64,
    max_wait_ms: Option<u64>,
) -> Result<Option<Bytes>, HandlerError> {
    let window = crate::debounce::Window {
        period_ms,
        max_wait_ms,
    };
    match ctx.debounce(name, key.as_deref(), window).await? {
        None => Ok(None),
        Some(outcome) => Ok(Some(Bytes::from(outcome.into_result()?))),
    }
}

/// The gate of a handler with `rate(..)`, before its body: a durable wait for a token of the
/// bucket `name` (per `key` if given).
pub async fn rate_gate(
    ctx: &InvocationContext,
    name: &str,
    key: Option<String>,
    declared: Option<RateLimit>,
) -> Result<(), HandlerError> {
    Ok(crate::rate::rate_gate(ctx, name, key.as_deref(), declared).await?)
}

/// What a scheduled handler's input may be: the tick's time, nothing else.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the input of a handler with `cron`: a schedule passes the tick's time",
    label = "the scheduled handler's input type",
    note = "take `restate_runtime::ScheduledTime`, or no input"
)]
pub trait ScheduledInput {}

impl ScheduledInput for crate::ScheduledTime {}

/// Checks a scheduled handler's input type (on its span).
pub fn scheduled_time_input<T: ScheduledInput>() {}
