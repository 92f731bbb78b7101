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

/// Decodes a handler's input; a bad payload is a terminal 400 (the ingress checks it first, so
/// this only fires for calls between handlers).
pub fn decode_input<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, HandlerError> {
    decode_json(bytes).map_err(|e| {
        TerminalError::new_with_code(400, format!("input validation error: {e}")).into()
    })
}

/// Checks that a payload decodes as `T`.
pub fn check_input<T: DeserializeOwned>(bytes: &[u8]) -> Result<(), DecodeError> {
    decode_json::<T>(bytes).map(drop)
}

/// Accepts any payload (raw and no-input handlers are checked by shape instead).
pub fn accept_any(_: &[u8]) -> Result<(), DecodeError> {
    Ok(())
}

/// The raw body and headers for a [`RawInput`] handler.
pub fn raw_input(bytes: Bytes, ctx: &InvocationContext) -> RawInput {
    RawInput::new(bytes, ctx.headers.clone())
}

/// Encodes a handler's output.
pub fn encode_output<T: Serialize + 'static>(value: &T) -> Result<Bytes, HandlerError> {
    encode_json(value).map_err(|e| TerminalError::new(e.to_string()).into())
}

/// Encodes a client's input.
pub fn encode_input<T: Serialize + 'static>(value: &T) -> Result<Bytes, EncodeError> {
    encode_json(value)
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
