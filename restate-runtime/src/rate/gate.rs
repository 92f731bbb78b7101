//! The gate before a rate-limited handler or step: a reservation (a call to the bucket's key,
//! which answers when the token is due) and, when it is not due yet, the wait (a durable
//! sleep), journaled at the two positions before what they guard.

use std::time::Duration;

use super::{RATE_LIMITER, RateLimit, Reserve, bucket};
use crate::context::{DurableFuture, InvocationContext};
use crate::error::TerminalError;
use crate::storage::JournalEntry;

/// A gate whose reservation is journaled (or replayed), to be passed.
pub(crate) struct GatePlan<'a> {
    index: u32,
    name: String,
    /// This attempt makes the reservation (not a replay of one).
    fresh: bool,
    reservation: DurableFuture<'a, Result<u64, TerminalError>>,
}

impl InvocationContext {
    /// Whether a gate stands at the next position, decided as every replay decides it: the
    /// journal's reservation there if it has one; a limit configured now if the journal ends
    /// before it (an empty position inside the journal is no gate: a step's entry comes when
    /// it ends). Takes the gate's two positions and journals the reservation at once, in
    /// program order.
    pub(crate) fn plan_rate_gate(
        &self,
        name: &str,
        key: Option<&str>,
        declared: Option<RateLimit>,
    ) -> Option<GatePlan<'_>> {
        let index = self.peek_index();
        let configured = self
            .engine
            .config()
            .rate_limits
            .get(name)
            .copied()
            .or(declared);
        let fresh = self
            .inflight
            .state()
            .journal
            .last_index()
            .is_none_or(|last| last < index);
        let limit = match self.replayed(index) {
            Some(JournalEntry::Call { target, .. }) if target.service == RATE_LIMITER => {
                configured.unwrap_or(RateLimit::per_second(1))
            }
            None if fresh => configured?,
            _ => return None,
        };
        if !self.take_index_if_next(index) {
            return None;
        }
        self.take_index();
        let reserve = crate::client::parts(
            RATE_LIMITER,
            Some(&bucket(name, key)),
            "reserve",
            crate::codec::encode_json(&Reserve {
                limit,
                now_ms: self.engine.now_ms(),
            }),
        );
        Some(GatePlan {
            index,
            name: name.to_owned(),
            fresh,
            reservation: self.call_at(index, reserve),
        })
    }

    /// Waits for the reserved token.
    pub(crate) async fn pass_rate_gate(&self, plan: GatePlan<'_>) -> Result<(), TerminalError> {
        let due_ms: u64 = plan.reservation.await?;
        let now = self.engine.now_ms();
        if plan.fresh {
            let metrics = self.engine.metrics();
            let label = crate::metrics::LimiterLabel {
                limiter: plan.name.into(),
            };
            metrics.rate_waits.get_or_create(&label).inc();
            let waited = due_ms.saturating_sub(now) as f64 / 1000.0;
            metrics.rate_waited.get_or_create(&label).inc_by(waited);
        }
        let wait = plan.index + 1;
        // No sleep entry for a token that is there: one commit less per token.
        if matches!(self.replayed(wait), Some(JournalEntry::Sleep { .. })) || due_ms > now {
            self.sleep_at(wait, Duration::from_millis(due_ms.saturating_sub(now)))
                .await?;
        }
        Ok(())
    }
}

/// The gate of a handler with `rate(..)`: called by the generated dispatcher before the
/// handler's body.
pub(crate) async fn rate_gate(
    ctx: &InvocationContext,
    name: &str,
    key: Option<&str>,
    declared: Option<RateLimit>,
) -> Result<(), TerminalError> {
    match ctx.plan_rate_gate(name, key, declared) {
        Some(plan) => ctx.pass_rate_gate(plan).await,
        None => Ok(()),
    }
}
