//! Which invocations of ids derived from a key (an idempotency key's, a workflow run's) the
//! redb store may hold, in memory: a request with a fresh idempotency key learns that none is
//! stored without a B-tree lookup (a redb read costs more than a tenth of such a request).
//!
//! A counting Bloom filter over the derived ids of the records in redb, kept exact by the
//! transactions that apply writes: a row that appears counts up before its commit, one that
//! goes counts down after its commit, so a record in redb is never missed; writes not yet
//! applied are the kept-aside groups', which a read looks at first. A full counter stays full
//! (it may stand for more ids than it can count); a count never goes below what is stored.
//! Built at open by one scan of the invocations, unless there are more than
//! [`SCAN_LIMIT`] of them (then every read goes to redb, as without it).

use std::sync::atomic::{AtomicU8, Ordering};

use crate::ids::InvocationId;

/// Counters (one byte each): 4 MiB. With three per id, about 1.5% of fresh ids still read
/// redb at half a million stored derived records, 13% at two million.
const COUNTERS: usize = 1 << 22;
const COUNTER_BITS: u32 = COUNTERS.trailing_zeros();
const HASHES: u64 = 3;
/// A store with more invocations than this opens without the filter: its scan would hold
/// up the open for seconds.
pub(super) const SCAN_LIMIT: u64 = 1 << 20;

/// The filter; see the module documentation.
pub(super) struct DerivedIds {
    /// `None`: not built (too many records at open); every id may be stored.
    counters: Option<Box<[AtomicU8]>>,
}

impl DerivedIds {
    /// An empty filter.
    pub(super) fn new() -> Self {
        Self {
            counters: Some((0..COUNTERS).map(|_| AtomicU8::new(0)).collect()),
        }
    }

    /// A filter that answers "maybe" for every id.
    pub(super) fn unknown() -> Self {
        Self { counters: None }
    }

    /// False only if no record of `id` is in redb.
    pub(super) fn may_hold(&self, id: &InvocationId) -> bool {
        let Some(counters) = &self.counters else {
            return true;
        };
        slots(id).all(|slot| counters[slot].load(Ordering::SeqCst) > 0)
    }

    /// A record of `id` is about to be committed to redb where it had none.
    pub(super) fn add(&self, id: &InvocationId) {
        let Some(counters) = &self.counters else {
            return;
        };
        for slot in slots(id) {
            let _ = counters[slot]
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_add(1));
        }
    }

    /// The record of `id` has left redb (committed).
    pub(super) fn remove(&self, id: &InvocationId) {
        let Some(counters) = &self.counters else {
            return;
        };
        for slot in slots(id) {
            // A full counter may count more than it can hold: it stays full.
            let _ = counters[slot].fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n != u8::MAX).then(|| n.saturating_sub(1))
            });
        }
    }
}

/// Whether an invocation record's id is derived from its key, as the engine derives it: the
/// record has an idempotency key, or its id is the workflow run's of its key.
pub(super) fn is_derived(
    id: &InvocationId,
    idempotent: bool,
    service: &str,
    key: Option<&str>,
) -> bool {
    idempotent || key.is_some_and(|key| InvocationId::workflow(service, key) == *id)
}

/// The counters of `id`: derived ids are hashes already, their two halves give the probes.
fn slots(id: &InvocationId) -> impl Iterator<Item = usize> {
    let bytes = id.to_bytes();
    let half = |at: usize| u64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    // The uuid's halves; the partition key is no hash for an idempotency key of an object.
    let (low, high) = (half(16), half(8) | 1);
    (0..HASHES)
        .map(move |i| (low.wrapping_add(i.wrapping_mul(high)) >> (64 - COUNTER_BITS)) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn derived(n: usize) -> InvocationId {
        InvocationId::workflow("Wf", &format!("key-{n}"))
    }

    #[test]
    fn an_added_id_is_held_until_removed_as_often() {
        let ids = DerivedIds::new();
        let id = derived(1);
        assert!(!ids.may_hold(&id));
        ids.add(&id);
        ids.add(&id);
        assert!(ids.may_hold(&id));
        ids.remove(&id);
        assert!(ids.may_hold(&id), "added twice, removed once");
        ids.remove(&id);
        assert!(!ids.may_hold(&id));
        // More removals than additions never wrap a counter round.
        ids.remove(&id);
        ids.add(&id);
        assert!(ids.may_hold(&id));
    }

    #[test]
    fn ids_sharing_counters_are_each_held() {
        let ids = DerivedIds::new();
        let held: Vec<_> = (0..50_000).map(derived).collect();
        held.iter().for_each(|id| ids.add(id));
        assert!(held.iter().all(|id| ids.may_hold(id)));
        // Half of them go: the others stay, whatever counters they share.
        held.iter().step_by(2).for_each(|id| ids.remove(id));
        assert!(held.iter().skip(1).step_by(2).all(|id| ids.may_hold(id)));
        let fresh = (50_000..60_000)
            .filter(|n| ids.may_hold(&derived(*n)))
            .count();
        assert!(fresh < 100, "{fresh} of 10000 fresh ids look held");
    }

    #[test]
    fn a_full_counter_stays_full() {
        let ids = DerivedIds::new();
        let id = derived(7);
        (0..300).for_each(|_| ids.add(&id));
        (0..300).for_each(|_| ids.remove(&id));
        assert!(
            ids.may_hold(&id),
            "a counter that overflowed cannot count down"
        );
    }

    #[test]
    fn an_unknown_filter_holds_everything() {
        assert!(DerivedIds::unknown().may_hold(&derived(3)));
    }

    #[test]
    fn the_derived_ids_are_the_engines() {
        let wf = InvocationId::workflow("Wf", "k");
        assert!(is_derived(&wf, false, "Wf", Some("k")));
        assert!(!is_derived(&wf, false, "Wf", Some("other")));
        assert!(!is_derived(&wf, false, "Wf", None));
        assert!(is_derived(&InvocationId::random(1), true, "Svc", None));
    }
}
