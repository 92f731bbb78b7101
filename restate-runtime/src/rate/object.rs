//! `restate.RateLimiter`: one key per bucket, holding the bucket's theoretical arrival time
//! (GCRA): a reservation moves it one interval on and answers how long the caller waits.

use bytes::Bytes;
use futures::future::BoxFuture;

use serde::{Deserialize, Serialize};

use super::{RateLimit, Reserve};
use crate::context::{FromInvocation, InvocationContext, ObjectContext};
use crate::error::HandlerError;
use crate::registry::{HandlerKind, Service, ServiceDefinition, ServiceKind, internal_handler};

/// The object whose keys are buckets.
pub(crate) const RATE_LIMITER: &str = "restate.RateLimiter";
/// The bucket's theoretical arrival time (when it is full again, in microseconds since the
/// epoch), a bare number as every binary writes and reads it.
const TAT: &str = "tat_us";
/// The limit its latest reservation used, beside the time (older binaries ignore it).
const LIMIT: &str = "limit";

/// A bucket: its time and, when known, the limit its latest reservation used. Read from the
/// time alone, or (as one build wrote it) from both in one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Bucket {
    Kept {
        tat_us: u64,
        limit: RateLimit,
    },
    /// As written before the limit was kept beside the time.
    TatOnly(u64),
}

impl Bucket {
    fn tat_us(&self) -> u64 {
        match self {
            Self::Kept { tat_us, .. } | Self::TatOnly(tat_us) => *tat_us,
        }
    }

    /// The limit its latest reservation used, when stored.
    pub(crate) fn limit(&self) -> Option<RateLimit> {
        match self {
            Self::Kept { limit, .. } => Some(*limit),
            Self::TatOnly(_) => None,
        }
    }

    /// When a reservation made at `now_us` under `limit` may go (µs), and the time it leaves.
    pub(super) fn reserve(tat_us: u64, limit: RateLimit, now_us: u64) -> (u64, u64) {
        let interval = limit.interval_us();
        let tat = tat_us.max(now_us);
        (
            tat.saturating_sub(tolerance(limit)).max(now_us),
            tat.saturating_add(interval),
        )
    }

    /// How many tokens a caller at `now_ms` finds under `limit`, and when the next one is
    /// there (ms since the epoch; `now_ms` while one is).
    pub(crate) fn tokens(&self, limit: RateLimit, now_ms: u64) -> (u32, u64) {
        let now_us = now_ms.saturating_mul(1000);
        let tat = self.tat_us().max(now_us);
        let ahead = now_us.saturating_add(tolerance(limit)).checked_sub(tat);
        match ahead {
            Some(ahead) => {
                let tokens = ahead / limit.interval_us().max(1) + 1;
                (tokens.min(u64::from(limit.max_burst())) as u32, now_ms)
            }
            None => (0, (tat - tolerance(limit)).div_ceil(1000)),
        }
    }

    /// When it is full again (ms since the epoch).
    pub(crate) fn full_at_ms(&self) -> u64 {
        self.tat_us().div_ceil(1000)
    }
}

/// How far ahead of now the arrival time may be while a token is there: the burst less one.
fn tolerance(limit: RateLimit) -> u64 {
    limit
        .interval_us()
        .saturating_mul(u64::from(limit.max_burst() - 1))
}

/// Reserves one token: when it is due (ms since the epoch; the caller's now while the
/// bucket holds tokens). The caller's time comes with the request, so a reservation is one
/// state read and two writes, with no step of its own to wait for.
async fn reserve(ctx: &InvocationContext, request: Reserve) -> Result<u64, HandlerError> {
    let object = ObjectContext::from_invocation(ctx);
    let now_us = request.now_ms.saturating_mul(1000);
    let stored = object.get::<Bucket>(TAT).await?;
    let (allowed_at, tat_us) =
        Bucket::reserve(stored.map_or(0, |b| b.tat_us()), request.limit, now_us);
    object.set(TAT, tat_us);
    object.set(LIMIT, request.limit);
    // Rounded up: a caller never goes early.
    Ok(allowed_at.div_ceil(1000))
}

/// The bucket `key` as stored (no invocation: the admin API's read); `None` before its
/// first reservation.
pub(crate) fn stored(
    engine: &crate::engine::Engine,
    key: &str,
) -> Result<Option<Bucket>, crate::storage::StorageError> {
    let Some(bucket) = engine.object_state::<Bucket>(RATE_LIMITER, key, TAT)? else {
        return Ok(None);
    };
    let limit = engine.object_state::<RateLimit>(RATE_LIMITER, key, LIMIT)?;
    Ok(Some(match limit {
        Some(limit) => Bucket::Kept {
            tat_us: bucket.tat_us(),
            limit,
        },
        None => bucket,
    }))
}

/// `restate.RateLimiter`.
pub(crate) struct RateLimiterObject;

impl Service for RateLimiterObject {
    fn definition() -> ServiceDefinition {
        ServiceDefinition {
            name: RATE_LIMITER,
            kind: ServiceKind::VirtualObject,
            handlers: vec![internal_handler(
                "reserve",
                HandlerKind::Exclusive,
                Some("Reserve"),
                "u64",
            )],
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
                "reserve" => match crate::__private::input::<Reserve>().decode(&bytes, ctx) {
                    Ok(request) => crate::__private::output(reserve(ctx, request).await),
                    Err(e) => Err(e),
                },
                other => Err(crate::__private::unknown_handler(RATE_LIMITER, other)),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_counts_its_tokens_as_reservations_take_them() {
        let limit = RateLimit::new(10, Duration::from_secs(1)).burst(3);
        let now_ms = 1_000_000;
        let mut tat = 0;
        let fresh = Bucket::TatOnly(tat);
        assert_eq!(fresh.tokens(limit, now_ms), (3, now_ms));
        for left in [2, 1, 0] {
            let (at, next) = Bucket::reserve(tat, limit, now_ms * 1000);
            assert_eq!(at, now_ms * 1000, "a token was there");
            tat = next;
            let kept = Bucket::Kept { tat_us: tat, limit };
            assert_eq!(kept.tokens(limit, now_ms).0, left);
        }
        let empty = Bucket::Kept { tat_us: tat, limit };
        assert_eq!(
            empty.tokens(limit, now_ms),
            (0, now_ms + 100),
            "one every 100 ms"
        );
        assert_eq!(empty.tokens(limit, now_ms + 100).0, 1);
        assert_eq!(empty.full_at_ms(), now_ms + 300);
        // A bucket stored before the limit was kept reads back.
        let old: Bucket = serde_json::from_slice(b"1700000000000000").unwrap();
        assert_eq!(old, Bucket::TatOnly(1_700_000_000_000_000));
        assert_eq!(old.limit(), None);
        let kept = serde_json::to_vec(&empty).unwrap();
        assert_eq!(serde_json::from_slice::<Bucket>(&kept).unwrap(), empty);
    }
}
