//! What a test runtime serves for a service type that has no `Default` and that its test did
//! not bind: every call fails with the error that says how to bind one. A test of one service
//! then needs no value for the others that its binary happens to link.

use bytes::Bytes;
use futures::future::BoxFuture;

use super::{Service, ServiceDefinition};
use crate::context::InvocationContext;
use crate::error::{HandlerError, TerminalError};

/// The stand-in for the service named `0`.
pub(super) struct StandIn(pub(super) &'static str);

impl Service for StandIn {
    fn definition() -> ServiceDefinition {
        unreachable!("a stand-in takes the definition of the service it stands in for")
    }

    fn invoke<'a>(
        &'a self,
        _handler: &'a str,
        _ctx: &'a InvocationContext,
        _input: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, HandlerError>> {
        let message = format!(
            "service `{}` has no value in this test runtime: derive or implement `Default` for \
             its type, or bind one with `TestRuntime::builder().bind(..)`",
            self.0
        );
        Box::pin(async move { Err(TerminalError::new(message).into()) })
    }
}
