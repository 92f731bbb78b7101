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

/// The permits an invocation asked for, as (bucket, holder): each acquire in its journal.
pub(crate) fn asked_for(
    id: crate::InvocationId,
    journal: &crate::engine::Journal,
) -> Vec<(String, String)> {
    journal
        .iter()
        .filter_map(|(index, entry)| match entry {
            crate::storage::JournalEntry::Call { target, .. }
                if target.service == LIMITER && target.handler == "acquire" =>
            {
                Some((target.key.clone()?, holder(id, *index)))
            }
            _ => None,
        })
        .collect()
}

/// The invocations that give back `permits` (each `release` once, by an idempotency key): their
/// records, to commit with the end of the invocation that held them, and the invocations, to
/// launch once that commit is submitted.
pub(crate) fn releases(
    engine: &crate::engine::Engine,
    permits: Vec<(String, String)>,
) -> (
    Vec<crate::storage::WriteOp>,
    Vec<std::sync::Arc<crate::engine::Inflight>>,
) {
    let mut ops = Vec::new();
    let mut launches = Vec::new();
    for (bucket, holder) in permits {
        let mut release = crate::client::parts(
            LIMITER,
            Some(&bucket),
            "release",
            crate::codec::encode_json(&holder),
        );
        release.idempotency_key = Some(format!("release:{holder}"));
        let submitted = release
            .into_invoke(None)
            .map_err(|e| e.to_string())
            .and_then(|req| engine.submit(req, None).map_err(|e| e.to_string()));
        match submitted {
            Ok(crate::engine::Submitted {
                id,
                submission:
                    crate::engine::Submission::Running {
                        inflight,
                        new: true,
                        ..
                    },
                ..
            }) => {
                let mut state = inflight.state();
                state.persisted = true;
                ops.push(crate::storage::WriteOp::put_invocation(id, &state.record));
                drop(state);
                launches.push(inflight);
            }
            // Given back already (the key found an earlier release).
            Ok(_) => {}
            Err(e) => tracing::error!(%holder, error = %e, "a permit cannot be given back"),
        }
    }
    (ops, launches)
}
