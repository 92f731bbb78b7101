//! What an invocation's end sends on its behalf, read from its journal alone (so a kill, which
//! runs no code, sends it too) and committed in the same batch as the end (effects commit with
//! their cause): the concurrency permits it held or waited for go back, and a debounce burst
//! it still waits in lets it go.

use std::sync::Arc;

use super::{Claim, Engine, Inflight, Origin, Submission, Submitted};
use crate::storage::{InboxMessage, WriteOp};

/// The records of what an end sends, the invocations to launch once they commit, and their
/// ids' claims, held until those records are queued with the end.
pub(super) type EndSends<'a> = (Vec<WriteOp>, Vec<Arc<Inflight>>, Vec<Claim<'a>>);

impl Engine {
    /// The records of the invocations `inflight`'s end sends, to commit with its end, and the
    /// invocations, to launch once that commit is submitted. Each has an idempotency key: an
    /// end recorded twice (a kill racing the handler's own end) sends once.
    /// An end whose sends cannot be made (the store cannot be read to find an earlier one) is
    /// an error: committed without them, a permit or a burst would wait for ever.
    /// Their ids' claims come with them: a kill or a duplicate of one (by its idempotency key)
    /// finds it only once its record is queued with the end, never before it (a kill would be
    /// undone by it).
    pub(super) fn end_sends(&self, inflight: &Arc<Inflight>) -> Result<EndSends<'_>, String> {
        // One walk of the journal: most have neither, and it runs at every end.
        let requests: Vec<_> = {
            let state = inflight.state();
            let (id, seq, journal) = (inflight.id, state.record.seq, &state.journal);
            journal
                .iter()
                .filter_map(|(index, entry)| {
                    crate::concurrency::release(id, *index, entry)
                        .or_else(|| crate::debounce::leave(id, seq, journal, *index, entry))
                })
                .collect()
        };
        let mut prepared = Vec::with_capacity(requests.len());
        for request in requests {
            let target = request.target.to_string();
            let made = request
                .into_invoke(None)
                .map_err(|e| e.to_string())
                .and_then(|req| self.prepare(req, None).map_err(|e| e.to_string()))
                .map_err(|e| format!("cannot send {target} at its end: {e}"))?;
            prepared.push((target, made));
        }
        let ids: Vec<_> = prepared.iter().map(|(_, p)| p.id).collect();
        let claims = self.claims.several(&ids);
        let mut ops = Vec::new();
        let mut launches = Vec::new();
        for (target, prepared) in prepared {
            // Another process runs its key: it is sent there, with the end.
            if self.elsewhere(&prepared.id) {
                let message = InboxMessage::Invoke(Box::new(prepared.record));
                ops.push(WriteOp::forward(prepared.id, &message));
                continue;
            }
            // Kept to send it there after all, should its key's partition leave meanwhile.
            let routed = self
                .shared_store
                .then(|| (prepared.id, prepared.record.clone()));
            let submitted = self.submit_claimed(prepared, Origin::Handler, None);
            match submitted {
                Ok(Submitted {
                    id,
                    submission:
                        Submission::Running {
                            inflight,
                            new: true,
                            ..
                        },
                    ..
                }) => {
                    let mut state = inflight.state();
                    state.persisted = true;
                    ops.push(WriteOp::put_invocation(id, &state.record));
                    drop(state);
                    launches.push(inflight);
                }
                // Sent already (the key found an earlier one).
                Ok(_) => {}
                Err(e) if super::ownership::is_moved(&e) => {
                    let (id, record) = routed.expect("only a shared store's partitions move");
                    let message = InboxMessage::Invoke(Box::new(record));
                    ops.push(WriteOp::forward(id, &message));
                }
                Err(e) => {
                    // Those made so far were never stored: forgotten, so that the end made
                    // again after recovery makes them anew.
                    for made in &launches {
                        self.discard_unrecorded(made);
                    }
                    return Err(format!("cannot send {target} at its end: {e}"));
                }
            }
        }
        Ok((ops, launches, claims))
    }
}
