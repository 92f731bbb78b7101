//! The gate before a rate-limited handler or step: a reservation (a call to the bucket's key,
//! which answers how long to wait) and the wait (a durable sleep), journaled as the two entries
//! before what they guard.

use std::time::Duration;

use super::{RATE_LIMITER, RateLimit, bucket};
use crate::context::InvocationContext;
use crate::error::TerminalError;
use crate::storage::JournalEntry;

/// Two journal positions taken for a gate, and what it reserves from.
pub(crate) struct GatePlan {
    index: u32,
    bucket: String,
    limit: RateLimit,
}

impl InvocationContext {
    /// Whether a gate stands at the next position, decided as every replay decides it: the
    /// journal's reservation there if it has one, else the limit configured now (a name
    /// without a limit lets everything through). Takes the gate's two positions.
    pub(crate) fn plan_rate_gate(
        &self,
        name: &str,
        key: Option<&str>,
        declared: Option<RateLimit>,
    ) -> Option<GatePlan> {
        let index = self.peek_index();
        let configured = self
            .engine
            .config()
            .rate_limits
            .get(name)
            .copied()
            .or(declared);
        let limit = match self.replayed(index) {
            Some(JournalEntry::Call { target, .. }) if target.service == RATE_LIMITER => {
                configured.unwrap_or(RateLimit::new(1, Duration::from_secs(1)))
            }
            Some(_) => return None,
            None => configured?,
        };
        let index = self.take_indices(2);
        Some(GatePlan {
            index,
            bucket: bucket(name, key),
            limit,
        })
    }

    /// Reserves a token and waits for it.
    pub(crate) async fn pass_rate_gate(&self, plan: GatePlan) -> Result<(), TerminalError> {
        let reserve = crate::client::parts(
            RATE_LIMITER,
            Some(&plan.bucket),
            "reserve",
            crate::codec::encode_json(&plan.limit),
        );
        let wait_ms: u64 = self.call_at(plan.index, reserve).await?;
        let metrics = self.engine.metrics();
        let label = crate::metrics::LimiterLabel {
            limiter: plan.bucket.split('/').next().unwrap_or_default().to_owned(),
        };
        metrics.rate_waits.get_or_create(&label).inc();
        metrics
            .rate_waited
            .get_or_create(&label)
            .inc_by(wait_ms as f64 / 1000.0);
        self.sleep_at(plan.index + 1, Duration::from_millis(wait_ms))
            .await
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
