//! Which process accepted a request first, when two accept it at once: the owner of its
//! partition, creating the invocation in memory, and another process, forwarding it to the
//! owner's inbox. Each checks for the other, but neither check sees a write the other has not
//! committed yet, so without more both answered as the first (a send `Accepted` at both).
//!
//! The forwarder's insert of a message that starts an invocation is unique per id in the
//! inbox (`restate_inbox_starts`), and an insert waits for any uncommitted row of the same
//! id. So the owner's transaction that first stores such an invocation's record claims the
//! id there too: it inserts an empty message for the id, then deletes it again before its
//! commit (no other transaction ever sees it). A claim that finds a forwarded message (one
//! committed, or one being written, waited for) lost: the owner's answer is a duplicate's.
//! A forwarder that comes while the claim is held waits for the owner's commit and then finds
//! the record (the forwarder's second look, `LATE_DUPLICATES`, sees what committed since its
//! insert began).

use std::sync::{Arc, Mutex, Weak};

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use super::pg_error;
use crate::ids::InvocationId;
use crate::maps::FastMap;
use crate::storage::{Acceptance, WriteOp};

/// Inserts the claims of a group, in id order (as the forwarder inserts: two transactions take
/// the unique index's locks in one order), and returns the ids claimed.
pub(super) const CLAIM: &str = "INSERT INTO restate_inbox (partition_key, id, starts, message) \
     SELECT t.p, t.i, true, ''::bytea FROM unnest($1::int8[], $2::bytea[]) AS t(p, i) \
     ORDER BY t.i \
     ON CONFLICT (id) WHERE starts DO NOTHING RETURNING id";

/// Deletes the group's claims again: an empty message is never a forwarded one.
pub(super) const UNCLAIM: &str = "DELETE FROM restate_inbox \
     WHERE id = ANY($1::bytea[]) AND starts AND message = ''::bytea";

/// The invocations whose first commit is to claim their id, each with the verdict its
/// creator reads. Held weakly: one whose creator went (an invocation lost before it was
/// stored) is dropped as the map grows.
#[derive(Default)]
pub(super) struct Acceptances {
    waiting: Mutex<Waiting>,
    /// Whether the map may hold any: a group without claims takes no lock.
    any: std::sync::atomic::AtomicBool,
}

/// Entries the map holds before it first drops those whose creators went.
const PRUNE_AT: usize = 4_096;

/// The registered invocations, and the size at which the next prune runs: twice what the
/// last one kept, so that many claims alive at once cost a scan per doubling, not per claim.
#[derive(Default)]
struct Waiting {
    map: FastMap<InvocationId, Weak<Acceptance>>,
    prune_at: usize,
}

/// One group's claims.
pub(super) type Claims = Vec<(InvocationId, Arc<Acceptance>)>;

impl Acceptances {
    /// Registers `id` for the claim of its first commit.
    pub(super) fn register(&self, id: InvocationId) -> Arc<Acceptance> {
        let acceptance = Arc::new(Acceptance::default());
        let mut waiting = self.waiting.lock().expect("acceptances lock");
        if waiting.map.len() >= waiting.prune_at.max(PRUNE_AT) {
            waiting.map.retain(|_, weak| weak.strong_count() > 0);
            waiting.prune_at = 2 * waiting.map.len();
        }
        waiting.map.insert(id, Arc::downgrade(&acceptance));
        self.any.store(true, std::sync::atomic::Ordering::SeqCst);
        acceptance
    }

    /// The claims of the records that `ops` put for invocations registered here, taken off
    /// the map (a record's first put claims; a later one finds nothing).
    pub(super) fn take(&self, ops: &[WriteOp]) -> Claims {
        if !self.any.load(std::sync::atomic::Ordering::SeqCst) {
            return Vec::new();
        }
        let mut waiting = self.waiting.lock().expect("acceptances lock");
        let claims = (ops.iter())
            .filter_map(|op| match op {
                WriteOp::PutInvocation { id, .. } => waiting
                    .map
                    .remove(id)
                    .and_then(|weak| weak.upgrade())
                    .map(|acceptance| (*id, acceptance)),
                _ => None,
            })
            .collect();
        if waiting.map.is_empty() {
            self.any.store(false, std::sync::atomic::Ordering::SeqCst);
        }
        claims
    }

    /// Puts back the claims of a group that did not commit and is tried again.
    pub(super) fn give_back(&self, claims: Claims) {
        if claims.is_empty() {
            return;
        }
        let mut waiting = self.waiting.lock().expect("acceptances lock");
        for (id, acceptance) in claims {
            waiting.map.insert(id, Arc::downgrade(&acceptance));
        }
        self.any.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Settles each claim of a committed group: first where the claim was written.
pub(super) fn settle(claims: &Claims, claimed: &std::collections::HashSet<Vec<u8>>) {
    for (id, acceptance) in claims {
        acceptance.settle(claimed.contains(id.storage_key().as_slice()));
    }
}

/// Claims the group's ids inside its transaction (begun, and sent ahead of this): the ids
/// claimed, read as the claim's answer; the claims are deleted by the statement sent right
/// after, without waiting.
pub(super) async fn claim(
    client: &Client,
    (claim, unclaim): (&Statement, &Statement),
    claims: &Claims,
) -> Result<std::collections::HashSet<Vec<u8>>, String> {
    if claims.is_empty() {
        return Ok(Default::default());
    }
    let keys: Vec<i64> = (claims.iter())
        .map(|(id, _)| id.partition_key() as i64)
        .collect();
    let ids: Vec<Vec<u8>> = (claims.iter())
        .map(|(id, _)| id.storage_key().to_vec())
        .collect();
    let (claim_params, unclaim_params): ([&(dyn ToSql + Sync); 2], [&(dyn ToSql + Sync); 1]) =
        ([&keys, &ids], [&ids]);
    let (claimed, unclaimed) = futures::join!(
        client.query(claim, &claim_params),
        client.execute(unclaim, &unclaim_params)
    );
    let claimed = claimed.map_err(|e| pg_error(&e))?;
    unclaimed.map_err(|e| pg_error(&e))?;
    Ok(claimed.iter().map(|row| row.get::<_, Vec<u8>>(0)).collect())
}
