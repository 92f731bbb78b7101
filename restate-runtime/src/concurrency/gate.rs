//! The gate of a concurrency-limited handler or step: a request for a permit (a call to the
//! bucket's key) and an awakeable the permit comes through when it is not free at once, at two
//! journal positions before what they guard; for a step, a send that gives the permit back
//! after it.

use super::object::{Acquire, LIMITER};
use crate::context::{DurableFuture, InvocationContext};
use crate::error::TerminalError;
use crate::storage::JournalEntry;

/// A gate whose request is journaled (or replayed), to be passed.
pub(crate) struct PermitPlan<'a> {
    bucket: String,
    holder: String,
    granted: DurableFuture<'a, Result<bool, TerminalError>>,
    arrived: futures::future::BoxFuture<'a, Result<(), TerminalError>>,
}

/// A permit held by a step: given back with [`InvocationContext::release_permit`].
pub(crate) struct Permit {
    bucket: String,
    holder: String,
}

/// The holder name of the gate at `index` of invocation `id`: unique, and known from the
/// journal alone (a kill gives back the permits of what it kills).
pub(crate) fn holder(id: crate::InvocationId, index: u32) -> String {
    format!("{id}#{index}")
}

impl InvocationContext {
    /// Whether a gate stands at the next position, decided as every replay decides it: the
    /// journal's request there if it has one; a limit configured now if the journal ends
    /// before it. Takes the gate's two positions and journals the awakeable, then the
    /// request, at once, in program order.
    pub(crate) fn plan_permit(
        &self,
        name: &str,
        key: Option<&str>,
        declared: Option<u32>,
    ) -> Option<PermitPlan<'_>> {
        let index = self.peek_index();
        let configured = self.engine.concurrency_limits().get(name).or(declared);
        let fresh = self.gate_is_fresh(index);
        let limit = match self.replayed(index) {
            Some(JournalEntry::Call { target, .. }) if target.service == LIMITER => {
                configured.unwrap_or(1)
            }
            None if fresh => configured?,
            _ => return None,
        };
        if !self.take_index_if_next(index) {
            return None;
        }
        if key.is_none() {
            self.engine.concurrency_limits().note_used(name);
        }
        self.take_index();
        let holder = holder(self.id(), index);
        // The awakeable first: a permit that comes later finds it journaled.
        let (awakeable, arrived) = self.awakeable_at::<()>(index + 1);
        let bucket = crate::rate::bucket(name, key);
        let (seq, at_ms) = {
            let record = &self.inflight.state().record;
            (record.seq, record.created_at_ms)
        };
        let request = crate::client::parts(
            LIMITER,
            Some(&bucket),
            "acquire",
            crate::codec::encode_json(&Acquire {
                holder: holder.clone(),
                seq,
                at_ms,
                awakeable,
                limit,
            }),
        );
        Some(PermitPlan {
            bucket,
            holder,
            granted: self.call_at(index, request),
            arrived: Box::pin(arrived),
        })
    }

    /// Waits until the permit is held (durably: a long wait suspends). A wait that ends in an
    /// error (a cancellation) gives up its place, at `release` (the next position if `None`).
    pub(crate) async fn acquire_permit(
        &self,
        plan: PermitPlan<'_>,
        release: Option<u32>,
    ) -> Result<Permit, TerminalError> {
        let permit = Permit {
            bucket: plan.bucket,
            holder: plan.holder,
        };
        let waited = match plan.granted.await {
            Ok(true) => Ok(()),
            Ok(false) => plan.arrived.await,
            Err(e) => Err(e),
        };
        match waited {
            Ok(()) => Ok(permit),
            Err(e) => {
                self.release_permit(permit, release);
                Err(e)
            }
        }
    }

    /// Gives a permit back: a send journaled at `index` (the next position when `None`).
    pub(crate) fn release_permit(&self, permit: Permit, index: Option<u32>) {
        let release = crate::client::parts(
            LIMITER,
            Some(&permit.bucket),
            "release",
            crate::codec::encode_json(&permit.holder),
        );
        let index = index.unwrap_or_else(|| self.take_index());
        self.send_at(index, release, None);
    }
}
