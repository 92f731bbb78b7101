//! Claims on derived invocation ids (an idempotency key's, a workflow run's): whoever may
//! create the invocation of such an id holds its claim from the look for an existing one to
//! the insert of the new one (a handler's call or send, until the journal entry that records
//! the new one is queued, or the new one is dropped because that entry was refused: a
//! duplicate never joins an invocation nobody recorded). The look reads the store, so it runs
//! outside the in-flight lock, which every completion, suspension and start takes; the claim
//! keeps a second creator of the same id out meanwhile, and ids on other stripes go on. A
//! manual purge holds its id's claim from its read to its queued delete; the purge by expiry
//! scans first, then, under every claim, leaves out ids of a slot created in since the scan
//! began: neither deletes a new invocation that replaced one the other deleted.
//!
//! A request from outside reads the store before it takes the claim, without blocking its
//! thread (a network round trip on PostgreSQL): the read stands if no invocation of the id's
//! slot was created since it began ([`Claims::creations`]); otherwise it is read again under
//! the claim.

use std::hash::{BuildHasher as _, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::ids::InvocationId;

/// Stripes: creations of different ids rarely wait on each other.
const STRIPES: usize = 32;
/// Creation counts, finer than the stripes: a read made outside the claim is read again only
/// if an id of its slot was created meanwhile, rarely another's under load.
const SLOTS: usize = 4096;

pub(super) struct Claims {
    stripes: [Mutex<()>; STRIPES],
    /// Per slot, how many invocations of its ids were created.
    created: Box<[AtomicU64]>,
    hasher: RandomState,
}

impl Default for Claims {
    fn default() -> Self {
        Self {
            stripes: std::array::from_fn(|_| Mutex::new(())),
            created: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
        }
    }
}

/// A held claim; dropping it lets the next creator of its ids look.
pub(crate) type Claim<'a> = MutexGuard<'a, ()>;

impl Claims {
    /// The claim on `id`, taken before the in-flight lock.
    pub(super) fn of(&self, id: &InvocationId) -> Claim<'_> {
        lock(&self.stripes[self.stripe(id)])
    }

    /// How many invocations of `id`'s slot were created so far: taken before a read of the
    /// store that is to stand without the claim.
    pub(super) fn creations(&self, id: &InvocationId) -> u64 {
        self.created[self.slot(id)].load(Ordering::SeqCst)
    }

    /// A claim holder created an invocation of `id`: called once it is in the in-flight map,
    /// so that whoever read the store before it, and did not find it in the map, reads again.
    pub(super) fn created(&self, id: &InvocationId) {
        self.created[self.slot(id)].fetch_add(1, Ordering::SeqCst);
    }

    /// Every slot's creation count, taken before a scan whose ids are checked under the
    /// claims later ([`Self::created_since`]).
    pub(super) fn counts(&self) -> Vec<u64> {
        self.created
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .collect()
    }

    /// Whether an invocation of `id`'s slot was created since `counts` were taken.
    pub(super) fn created_since(&self, counts: &[u64], id: &InvocationId) -> bool {
        let slot = self.slot(id);
        self.created[slot].load(Ordering::SeqCst) != counts[slot]
    }

    fn stripe(&self, id: &InvocationId) -> usize {
        self.hasher.hash_one(id) as usize % STRIPES
    }

    fn slot(&self, id: &InvocationId) -> usize {
        (self.hasher.hash_one(id) >> 32) as usize % SLOTS
    }

    /// The claims of `ids`, each stripe once and in stripe order (a stripe is not re-entrant,
    /// and holders of several take them in one order, so none deadlocks), for a creator of a
    /// few ids at once: what an invocation's end sends.
    pub(super) fn several(&self, ids: &[InvocationId]) -> Vec<Claim<'_>> {
        let mut stripes: Vec<usize> = ids.iter().map(|id| self.stripe(id)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
            .into_iter()
            .map(|s| lock(&self.stripes[s]))
            .collect()
    }

    /// Every claim at once (in stripe order, so two holders never deadlock), for a creator or
    /// deleter of many ids: a page of forwarded invocations, a slice of expired ones.
    pub(super) fn all(&self) -> Vec<Claim<'_>> {
        self.stripes.iter().map(lock).collect()
    }
}

/// A stripe guards nothing but the order of creators: a panic while one was held leaves
/// nothing half-done behind it.
fn lock(stripe: &Mutex<()>) -> MutexGuard<'_, ()> {
    stripe
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free(claims: &Claims, stripe: usize) -> bool {
        claims.stripes[stripe].try_lock().is_ok()
    }

    #[test]
    fn a_claim_holds_its_ids_stripe_until_dropped_and_all_holds_every_stripe() {
        let claims = Claims::default();
        let id = InvocationId::idempotent("Svc", None, "h", "k");
        let stripe = claims.stripe(&id);
        assert_eq!(
            stripe,
            claims.stripe(&id),
            "an id always maps to one stripe"
        );
        let held = claims.of(&id);
        assert!(!free(&claims, stripe), "a second creator of the id waits");
        assert!(
            (0..STRIPES)
                .filter(|s| *s != stripe)
                .all(|s| free(&claims, s)),
            "creators of ids on other stripes do not"
        );
        drop(held);
        assert!(free(&claims, stripe));
        let all = claims.all();
        assert!((0..STRIPES).all(|s| !free(&claims, s)));
        drop(all);
        assert!((0..STRIPES).all(|s| free(&claims, s)));
        let before = claims.creations(&id);
        let counts = claims.counts();
        assert!(!claims.created_since(&counts, &id));
        claims.created(&id);
        assert_eq!(claims.creations(&id), before + 1);
        assert!(claims.created_since(&counts, &id));
    }
}
