//! `restate.RateLimiter`: one key per bucket, holding the bucket's theoretical arrival time
//! (GCRA): a reservation moves it one interval on and answers how long the caller waits.

use bytes::Bytes;
use futures::future::BoxFuture;

use super::Reserve;
use crate::context::{FromInvocation, InvocationContext, ObjectContext};
use crate::error::HandlerError;
use crate::registry::{
    HandlerDefinition, HandlerKind, HandlerOptions, InputShape, RetryPolicy, Service,
    ServiceDefinition, ServiceKind,
};

/// The object whose keys are buckets.
pub(crate) const RATE_LIMITER: &str = "restate.RateLimiter";
/// When the bucket is next empty-and-refilled, in microseconds since the epoch.
const TAT: &str = "tat_us";

/// Reserves one token: when it is due (ms since the epoch; the caller's now while the
/// bucket holds tokens). The caller's time comes with the request, so a reservation is one
/// state read and write, with no step of its own to wait for.
async fn reserve(ctx: &InvocationContext, request: Reserve) -> Result<u64, HandlerError> {
    let object = ObjectContext::from_invocation(ctx);
    let now_us = request.now_ms.saturating_mul(1000);
    let interval = request.limit.interval_us();
    let tolerance = interval.saturating_mul(u64::from(request.limit.max_burst() - 1));
    let tat = object.get::<u64>(TAT).await?.unwrap_or(0).max(now_us);
    let allowed_at = tat.saturating_sub(tolerance).max(now_us);
    object.set(TAT, tat.saturating_add(interval));
    // Rounded up: a caller never goes early.
    Ok(allowed_at.div_ceil(1000))
}

/// `restate.RateLimiter`.
pub(crate) struct RateLimiterObject;

impl Service for RateLimiterObject {
    fn definition() -> ServiceDefinition {
        ServiceDefinition {
            name: RATE_LIMITER,
            kind: ServiceKind::VirtualObject,
            handlers: vec![HandlerDefinition {
                name: "reserve",
                kind: HandlerKind::Exclusive,
                input_type: Some("Reserve"),
                output_type: "u64",
                options: HandlerOptions {
                    ingress_private: true,
                    // A bucket's step never fails for good: a reservation is retried.
                    retry_policy: RetryPolicy::default().forever(),
                    retention: Some(std::time::Duration::ZERO),
                    ..HandlerOptions::default()
                },
                input: InputShape::Json,
                check_input: crate::__private::input::<Reserve>().check(),
            }],
        }
    }

    fn invoke<'a>(
        &'a self,
        name: &'a str,
        ctx: &'a InvocationContext,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, HandlerError>> {
        Box::pin(async move {
            crate::error::always_retried(match name {
                "reserve" => match crate::__private::input::<Reserve>().decode(&bytes) {
                    Ok(request) => crate::__private::output(reserve(ctx, request).await),
                    Err(e) => Err(e),
                },
                other => Err(crate::__private::unknown_handler(RATE_LIMITER, other)),
            })
        })
    }
}
