//! Concurrency limits: at most `limit` invocations of a handler (or steps) hold a permit of a
//! bucket at once, per name and optional key (`#[handler(concurrency = 10)]`,
//! `#[handler(concurrency(limit = 2, key = Self::tenant))]`, `ctx.run(..).limiter("stripe")`).
//! The others wait, acknowledged and suspended, in arrival order. A bucket is one key of an
//! internal object (`object.rs`), so the count survives crashes and has one writer; a step's
//! permit is given back by a send journaled when the step ends, and every permit an invocation
//! asked for by a release committed with its end, however it ends.

mod gate;
mod object;

use std::collections::HashMap;
use std::sync::RwLock;

pub(crate) use gate::holder;
pub(crate) use object::{LIMITER, LimiterObject, stored};

/// Limits by name set at run time (the builder, then the admin API): they win over a
/// handler's attribute. A name with no limit anywhere lets everything through.
#[derive(Debug, Default)]
pub(crate) struct ConcurrencyLimits(RwLock<HashMap<String, u32>>);

impl ConcurrencyLimits {
    pub(crate) fn new(limits: HashMap<String, u32>) -> Self {
        Self(RwLock::new(limits))
    }

    pub(crate) fn get(&self, name: &str) -> Option<u32> {
        self.0.read().expect("limits lock").get(name).copied()
    }

    pub(crate) fn set(&self, name: &str, limit: u32) {
        self.0
            .write()
            .expect("limits lock")
            .insert(name.to_owned(), limit.max(1));
    }

    /// Every configured limit, by name.
    pub(crate) fn all(&self) -> Vec<(String, u32)> {
        let mut all: Vec<_> = self
            .0
            .read()
            .expect("limits lock")
            .iter()
            .map(|(n, l)| (n.clone(), *l))
            .collect();
        all.sort();
        all
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
