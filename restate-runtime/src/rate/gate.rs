//! The gate before a rate-limited handler or step: a reservation (a call to the bucket's key,
//! which answers when the token is due) and, when it is not due yet, the wait (a durable
//! sleep), journaled at the two positions before what they guard; then the process's pacer,
//! which spaces again the sleepers that woke together.

use std::time::Duration;

use super::pacer::GateId;
use super::{RATE_LIMITER, RateLimit, Reserve, bucket};
use crate::context::{DurableFuture, InvocationContext};
use crate::error::TerminalError;
use crate::storage::JournalEntry;

/// A pacer's wait shorter than this stays in memory; a longer one is journaled.
const PACED_IN_MEMORY_MS: u64 = 1000;

/// What a gate stands before, which says where the journal shows it was passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guarded {
    /// A handler's body: any entry after the gate's two.
    Handler,
    /// A `ctx.run` step: its result's entry, at a position taken after the gate's (and a
    /// permit's, which is journaled while the step waits to start), so told by
    /// [`GatePlan::step_ended`]. A later entry may be a concurrent future's.
    Step,
}

/// A gate whose reservation is journaled (or replayed), to be passed.
pub(crate) struct GatePlan<'a> {
    index: u32,
    name: String,
    bucket: String,
    /// The limit configured now; `None` for a journaled gate whose limit was switched off
    /// since: its reservation replays, and it passes without the pacer.
    limit: Option<RateLimit>,
    /// This attempt makes the reservation (not a replay of one).
    fresh: bool,
    /// The journal shows what the gate guards under way: an earlier attempt passed it, so
    /// this one takes no pacer's slot.
    passed: bool,
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
        guarded: Guarded,
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
            Some(JournalEntry::Call { target, .. }) if target.service == RATE_LIMITER => configured,
            None if fresh => Some(configured?),
            _ => return None,
        };
        if !self.take_index_if_next(index) {
            return None;
        }
        self.take_index();
        let passed = match guarded {
            Guarded::Handler => self
                .inflight
                .state()
                .journal
                .last_index()
                .is_some_and(|last| last > index + 1),
            Guarded::Step => false,
        };
        let bucket = bucket(name, key);
        // A replayed reservation's request is not sent again: any limit will do there.
        let reserve = crate::client::parts(
            RATE_LIMITER,
            Some(&bucket),
            "reserve",
            crate::codec::encode_json(&Reserve {
                limit: limit.unwrap_or(RateLimit::per_second(1)),
                now_ms: self.engine.now_ms(),
            }),
        );
        Some(GatePlan {
            index,
            name: name.to_owned(),
            bucket,
            limit,
            fresh,
            passed,
            reservation: self.call_at(index, reserve),
        })
    }

    /// Waits for the reserved token, then for the pacer's slot.
    pub(crate) async fn pass_rate_gate(&self, plan: GatePlan<'_>) -> Result<(), TerminalError> {
        let due_ms: u64 = plan.reservation.await?;
        let now = self.engine.now_ms();
        let metrics = self.engine.metrics();
        let label = crate::metrics::LimiterLabel {
            limiter: plan.name.into(),
        };
        if plan.fresh {
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
        if plan.passed || self.engine.config().replay_check {
            return Ok(());
        }
        let Some(limit) = plan.limit else {
            return Ok(());
        };
        let gate = (self.inflight.id, wait);
        let paced = self.pace(&plan.bucket, limit, &label, gate).await;
        self.engine.rate_pacers().passed(gate);
        paced
    }

    /// Waits for the pacer's slot: in memory when it is near, otherwise journaled as the
    /// gate's wait (rewritten to end later), which suspends and can be cancelled as any sleep.
    async fn pace(
        &self,
        bucket: &str,
        limit: RateLimit,
        label: &crate::metrics::LimiterLabel,
        gate: GateId,
    ) -> Result<(), TerminalError> {
        let clock = &self.engine.config().clock;
        // Asked again after each wait: one that ended long after its slot (the process
        // stalled) is moved back, once, so the slots that fell inside the stall do not pass
        // together.
        loop {
            let now = clock.now_ms();
            let slot = self.engine.rate_pacers().slot(bucket, limit, now, gate);
            if slot.at_ms <= now {
                return Ok(());
            }
            if slot.new {
                let paced = (slot.at_ms - now) as f64 / 1000.0;
                let waited = &self.engine.metrics().rate_waited;
                waited.get_or_create(label).inc_by(paced);
            }
            if slot.at_ms - now < PACED_IN_MEMORY_MS {
                self.wait_in_memory(slot.at_ms).await;
                if self.cancel_pending() {
                    return Ok(());
                }
                continue;
            }
            let entry = JournalEntry::Sleep {
                wake_at_ms: slot.at_ms,
                cancelled: false,
            };
            // Not journaled: the attempt is being stopped (to suspend or run again), and the
            // sleep would replay the entry's earlier time. It waits for its end instead.
            if self.journal(gate.1, entry, Vec::new()).is_none() {
                return std::future::pending().await;
            }
            self.sleep_at(gate.1, Duration::ZERO).await?;
        }
    }

    /// Until `at_ms`, or until a cancellation is asked for (it lands at the next await).
    async fn wait_in_memory(&self, at_ms: u64) {
        let clock = &self.engine.config().clock;
        let mut changes = self.inflight.changes();
        // Registered, so that a sibling's suspension keeps this wake-up time.
        let wait = self.waiting(Some(at_ms));
        loop {
            wait.saw(*changes.borrow_and_update());
            if clock.now_ms() >= at_ms || self.cancel_pending() {
                return;
            }
            tokio::select! {
                _ = clock.sleep_until_ms(at_ms) => {}
                changed = changes.changed() => {
                    if changed.is_err() {
                        clock.sleep_until_ms(at_ms).await;
                    }
                }
            }
        }
    }
}

impl GatePlan<'_> {
    /// The step it guards has its result journaled: an earlier attempt passed the gate.
    pub(crate) fn step_ended(&mut self, ended: bool) {
        self.passed = ended;
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
    match ctx.plan_rate_gate(name, key, declared, Guarded::Handler) {
        Some(plan) => ctx.pass_rate_gate(plan).await,
        None => Ok(()),
    }
}
