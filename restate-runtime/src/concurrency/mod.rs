//! Concurrency limits: at most `limit` invocations of a handler (or steps) hold a permit of a
//! bucket at once, per name and optional key (`#[handler(concurrency = 10)]`,
//! `#[handler(concurrency(limit = 2, key = Self::tenant))]`, `ctx.run(..).limiter("stripe")`).
//! The others wait, acknowledged and suspended, in arrival order. A bucket is one key of an
//! internal object (`object.rs`), so the count survives crashes and has one writer; a step's
//! permit is given back by a send journaled when the step ends, and every permit an invocation
//! asked for by a release committed with its end, however it ends.

mod gate;
mod object;

use std::collections::{BTreeSet, HashMap};
use std::sync::RwLock;

pub(crate) use gate::holder;
pub(crate) use object::{LIMITER, LimiterObject, stored};

/// Unkeyed limits in use that `/metrics` names at most (each is one store read per scrape).
const MAX_USED_NAMES: usize = 64;

/// Limits by name set at run time (the builder, then the admin API): they win over a
/// handler's attribute. A name with no limit anywhere lets everything through. Also the names
/// of the unkeyed limits this process's handlers and steps have used, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ConcurrencyLimits {
    configured: RwLock<HashMap<String, u32>>,
    used: RwLock<BTreeSet<String>>,
}

impl ConcurrencyLimits {
    pub(crate) fn new(limits: HashMap<String, u32>) -> Self {
        Self {
            configured: RwLock::new(limits),
            used: RwLock::default(),
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<u32> {
        self.configured
            .read()
            .expect("limits lock")
            .get(name)
            .copied()
    }

    pub(crate) fn set(&self, name: &str, limit: u32) {
        self.configured
            .write()
            .expect("limits lock")
            .insert(name.to_owned(), limit.max(1));
    }

    /// Notes that an unkeyed limit named `name` was asked for a permit. Names usually come
    /// from the code; one built from data (a name per tenant) could grow the set, and the
    /// series `/metrics` shows, without end: past [`MAX_USED_NAMES`] no more are noted.
    pub(crate) fn note_used(&self, name: &str) {
        if self.used.read().expect("limits lock").contains(name) {
            return;
        }
        let mut used = self.used.write().expect("limits lock");
        if used.len() < MAX_USED_NAMES {
            used.insert(name.to_owned());
        }
    }

    /// The names of the configured limits and of the unkeyed ones used, in order.
    pub(crate) fn known(&self) -> Vec<String> {
        let mut known = self.used.read().expect("limits lock").clone();
        known.extend(self.configured.read().expect("limits lock").keys().cloned());
        known.into_iter().collect()
    }
}

/// Whether a journal ends waiting for a permit: its last entry is a gate's awakeable not yet
/// completed, right after the gate's request to a bucket (see `gate.rs`), and that request
/// was not granted at once (then the awakeable is never used, and the holder runs on with no
/// entry journaled yet). Such an invocation is shown as `queued`.
pub(crate) fn waits_for_permit(journal: &[(u32, crate::storage::JournalEntry)]) -> bool {
    use crate::storage::{JournalEntry, Outcome};
    match journal {
        [
            ..,
            (
                request,
                JournalEntry::Call {
                    target, outcome, ..
                },
            ),
            (wait, JournalEntry::Awakeable { outcome: None }),
        ] => {
            let granted = matches!(outcome, Some(Outcome::Success(v)) if v.as_slice() == b"true");
            *wait == request + 1
                && target.service == LIMITER
                && target.handler == "acquire"
                && !granted
        }
        _ => false,
    }
}

/// The release of the permit a journal entry of invocation `id` asked for, if it is a
/// request for one, with an idempotency key so that a permit goes back once.
pub(crate) fn release(
    id: crate::InvocationId,
    index: u32,
    entry: &crate::storage::JournalEntry,
) -> Option<crate::client::RequestParts> {
    match entry {
        crate::storage::JournalEntry::Call { target, .. }
            if target.service == LIMITER && target.handler == "acquire" =>
        {
            let holder = holder(id, index);
            let mut release = crate::client::parts(
                LIMITER,
                Some(target.key.as_deref()?),
                "release",
                crate::codec::encode_json(&holder),
            );
            release.idempotency_key = Some(format!("release:{holder}"));
            Some(release)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{LIMITER, waits_for_permit};
    use crate::storage::{JournalEntry, Outcome, Target};

    fn gate(answer: Option<&[u8]>) -> Vec<(u32, JournalEntry)> {
        let target = Target {
            service: LIMITER.into(),
            handler: "acquire".into(),
            key: Some("Jobs/long".into()),
        };
        vec![
            (
                0,
                JournalEntry::Run {
                    name: "before".into(),
                    outcome: Outcome::Success(b"null".to_vec()),
                },
            ),
            (
                1,
                JournalEntry::Call {
                    target,
                    invocation_id: crate::InvocationId::random(1),
                    outcome: answer.map(|a| Outcome::Success(a.to_vec())),
                },
            ),
            (2, JournalEntry::Awakeable { outcome: None }),
        ]
    }

    #[test]
    fn a_gate_waits_until_its_permit_comes_unless_granted_at_once() {
        assert!(waits_for_permit(&gate(None)), "the request is on its way");
        assert!(
            waits_for_permit(&gate(Some(b"false"))),
            "the bucket is full"
        );
        assert!(!waits_for_permit(&gate(Some(b"true"))), "granted: it runs");
        let mut passed = gate(Some(b"false"));
        passed[2].1 = JournalEntry::Awakeable {
            outcome: Some(Outcome::Success(b"null".to_vec())),
        };
        assert!(!waits_for_permit(&passed), "the permit came");
        let mut on = gate(Some(b"true"));
        on.push((3, JournalEntry::Awakeable { outcome: None }));
        assert!(!waits_for_permit(&on), "an awakeable of the handler's own");
    }
}
