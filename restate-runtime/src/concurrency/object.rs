//! `restate.Limiter`: one key per bucket (a limit's name, or name and key), holding who holds
//! a permit and who waits for one in arrival order. A waiter waits on an awakeable of its own,
//! resolved when a permit comes to it.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::context::{FromInvocation, InvocationContext, ObjectContext};
use crate::error::{HandlerError, always_retried};
use crate::registry::HandlerKind::Exclusive;
use crate::registry::{Service, ServiceDefinition, ServiceKind, internal_handler};

/// The object whose keys are buckets.
pub(crate) const LIMITER: &str = "restate.Limiter";
const STATE: &str = "bucket";

/// A bucket's state (a field added later takes `#[serde(default)]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Bucket {
    /// The limit as the latest request gave it.
    pub limit: u32,
    /// Who holds a permit: an invocation id, or `<id>#<position>` for a step.
    pub holders: BTreeMap<String, u64>,
    /// Who waits, in arrival order.
    pub waiting: Vec<Waiter>,
}

/// One waiting for a permit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Waiter {
    /// When the invocation was accepted (ms since the epoch, by the accepting process's
    /// clock): the order waiters are served in, across processes too (a forwarded
    /// invocation's arrival number is the process's that took it in, later than its
    /// acceptance). 0 in state written before it was recorded.
    #[serde(default)]
    at_ms: u64,
    /// The invocation's arrival number: the order within one millisecond.
    seq: u64,
    holder: String,
    /// What to resolve when the permit comes.
    awakeable: String,
}

impl Bucket {
    /// Hands free permits to the first waiters; the awakeables to resolve.
    fn hand_out(&mut self) -> Vec<String> {
        let mut woken = Vec::new();
        while self.holders.len() < self.limit as usize && !self.waiting.is_empty() {
            let next = self.waiting.remove(0);
            self.holders.insert(next.holder, next.seq);
            woken.push(next.awakeable);
        }
        woken
    }
}

/// A request for a permit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Acquire {
    pub holder: String,
    /// The invocation's arrival number: waiters are served in this order within a millisecond.
    pub seq: u64,
    /// When the invocation arrived (see [`Waiter`]): waiters are served in this order.
    #[serde(default)]
    pub at_ms: u64,
    /// What to resolve when the permit comes later.
    pub awakeable: String,
    pub limit: u32,
}

impl Waiter {
    pub(crate) fn holder(&self) -> &str {
        &self.holder
    }
}

/// Whether the permit is held now (`true`) or will come through the awakeable.
async fn acquire(ctx: &InvocationContext, request: Acquire) -> Result<bool, HandlerError> {
    let object = ObjectContext::from_invocation(ctx);
    let mut bucket = object.get::<Bucket>(STATE).await?.unwrap_or_default();
    bucket.limit = request.limit.max(1);
    if bucket.holders.contains_key(&request.holder) {
        return Ok(true);
    }
    if bucket.waiting.iter().any(|w| w.holder == request.holder) {
        return Ok(false);
    }
    // In arrival order (then by holder): one that arrived first but asked later goes first.
    let order = (request.at_ms, request.seq, &request.holder);
    let at = bucket
        .waiting
        .partition_point(|w| (w.at_ms, w.seq, &w.holder) <= order);
    bucket.waiting.insert(
        at,
        Waiter {
            at_ms: request.at_ms,
            seq: request.seq,
            holder: request.holder.clone(),
            awakeable: request.awakeable.clone(),
        },
    );
    let woken = bucket.hand_out();
    let granted = bucket.holders.contains_key(&request.holder);
    for awakeable in woken.iter().filter(|a| **a != request.awakeable) {
        wake(ctx, awakeable)?;
    }
    object.set(STATE, bucket);
    Ok(granted)
}

/// Tells a waiter its permit has come: its awakeable, resolved in this invocation's journal
/// (the waiter's wake-up commits with it).
fn wake(ctx: &InvocationContext, awakeable: &str) -> Result<(), HandlerError> {
    Ok(ctx.complete_awakeable(awakeable, crate::context::resolved(&()))?)
}

/// Gives a permit back (or gives up waiting); the next waiters get theirs.
async fn release(ctx: &InvocationContext, holder: String) -> Result<(), HandlerError> {
    let object = ObjectContext::from_invocation(ctx);
    let Some(mut bucket) = object.get::<Bucket>(STATE).await? else {
        return Ok(());
    };
    let held = bucket.holders.remove(&holder).is_some();
    let waited = bucket.waiting.len();
    bucket.waiting.retain(|w| w.holder != holder);
    if !held && bucket.waiting.len() == waited {
        // Given back already (a kill after the handler's own release): nothing changes.
        return Ok(());
    }
    for awakeable in bucket.hand_out() {
        wake(ctx, &awakeable)?;
    }
    save(&object, bucket);
    Ok(())
}

/// Stores the bucket, or nothing once nobody holds or waits (a keyed bucket per tenant or
/// invoice would otherwise stay forever; the next request brings its limit again).
fn save(object: &ObjectContext<'_>, bucket: Bucket) {
    if bucket.holders.is_empty() && bucket.waiting.is_empty() {
        object.clear(STATE);
    } else {
        object.set(STATE, bucket);
    }
}

/// Takes a new limit (from the admin API): a raised one hands permits out at once.
async fn resize(ctx: &InvocationContext, limit: u32) -> Result<(), HandlerError> {
    let object = ObjectContext::from_invocation(ctx);
    let mut bucket = object.get::<Bucket>(STATE).await?.unwrap_or_default();
    bucket.limit = limit.max(1);
    for awakeable in bucket.hand_out() {
        wake(ctx, &awakeable)?;
    }
    save(&object, bucket);
    Ok(())
}

/// The state of bucket `key` as stored (no invocation: the admin API's read).
pub(crate) fn stored(
    engine: &crate::engine::Engine,
    key: &str,
) -> Result<Bucket, crate::storage::StorageError> {
    Ok(engine
        .object_state(LIMITER, key, STATE)?
        .unwrap_or_default())
}

/// `restate.Limiter`.
pub(crate) struct LimiterObject;

impl Service for LimiterObject {
    fn definition() -> ServiceDefinition {
        ServiceDefinition {
            name: LIMITER,
            kind: ServiceKind::VirtualObject,
            handlers: vec![
                internal_handler("acquire", Exclusive, Some("Acquire"), "bool"),
                internal_handler("release", Exclusive, Some("String"), "()"),
                internal_handler("resize", Exclusive, Some("u32"), "()"),
            ],
        }
    }

    fn invoke<'a>(
        &'a self,
        name: &'a str,
        ctx: &'a InvocationContext,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, HandlerError>> {
        use crate::__private::{input, output, unknown_handler};
        Box::pin(async move {
            always_retried(
                async {
                    match name {
                        "acquire" => {
                            output(acquire(ctx, input::<Acquire>().decode(&bytes, ctx)?).await)
                        }
                        "release" => {
                            output(release(ctx, input::<String>().decode(&bytes, ctx)?).await)
                        }
                        "resize" => output(resize(ctx, input::<u32>().decode(&bytes, ctx)?).await),
                        other => Err(unknown_handler(LIMITER, other)),
                    }
                }
                .await,
            )
        })
    }
}
