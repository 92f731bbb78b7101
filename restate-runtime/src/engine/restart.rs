//! Restart as new (Restate's `restart-as-new`): a new invocation of an old one's target, with
//! its input and headers, from the start or after a prefix of its journal whose results it
//! keeps. It applies to a finished, paused or suspended invocation; an unfinished one is killed
//! once its copy exists (whoever waits on it gets the kill), and on an object or workflow key
//! the copy takes its place: next on the key, with its arrival number (also after a restart).
//! The copy's idempotency key names the original, so restarting one invocation twice gives the
//! same copy, and a crash between the copy's commit and the original's end is mended by
//! recovery: an unstarted copy found with its original unfinished ends the original.

use super::control::ControlError;
use super::{Engine, InvokeRequest, Submission};
use crate::ids::InvocationId;
use crate::registry::HandlerKind;
use crate::storage::{InvocationRecord, JournalEntry, Status, Target, WriteOp};

/// What the idempotency key of a restart's copy starts with (then the original's id); refused
/// from everyone else ([`refuse_reserved_key`]).
const RESTART_KEY_PREFIX: &str = "restart-of:";

/// Refuses a request whose idempotency key is in the restarts' namespace: only a restart
/// makes one (recovery ends the original an unstarted copy names).
pub(super) fn refuse_reserved_key(req: &InvokeRequest) -> Result<(), super::EngineError> {
    match req.idempotency_key.as_deref() {
        Some(key) if key.starts_with(RESTART_KEY_PREFIX) => {
            Err(super::EngineError::BadTarget(format!(
                "idempotency keys starting with `{RESTART_KEY_PREFIX}` are reserved for restarts"
            )))
        }
        _ => Ok(()),
    }
}

/// The original of `record` if it is a restart's copy that has not started.
pub(super) fn unstarted_copy_of(record: &InvocationRecord) -> Option<InvocationId> {
    if record.attempts > 0 || !matches!(record.status, Status::Runnable) {
        return None;
    }
    record
        .idempotency_key
        .as_deref()?
        .strip_prefix(RESTART_KEY_PREFIX)?
        .parse()
        .ok()
}

impl Engine {
    /// Starts a new invocation like `id`, after the first `from` entries of its journal
    /// (copied, so their steps do not run again), or from the start; returns its id. Runs to
    /// its end in a task of its own, whatever happens to the request that asked for it.
    pub(crate) async fn restart_as_new(
        &self,
        id: InvocationId,
        from: Option<u32>,
    ) -> Result<InvocationId, ControlError> {
        let (engine, (tx, rx)) = (self.clone(), tokio::sync::oneshot::channel());
        self.tasks().spawn(async move {
            let _ = tx.send(engine.restart_here(id, from).await);
        });
        rx.await.unwrap_or_else(|_| {
            Err(ControlError::Conflict(
                "the restart was interrupted by a shutdown".into(),
            ))
        })
    }

    async fn restart_here(
        &self,
        id: InvocationId,
        from: Option<u32>,
    ) -> Result<InvocationId, ControlError> {
        if !self.runs(&id) {
            return Err(ControlError::Conflict(
                "restart runs in the process that runs the invocation's partition (its owner): \
                 ask it there"
                    .into(),
            ));
        }
        let (record, journal) = self.inspect(&id)?.ok_or(ControlError::NotFound(id))?;
        if crate::registry::is_internal(&record.target.service) {
            return Err(ControlError::Conflict(format!(
                "{id} is one of the runtime's own invocations ({}): change schedules through \
                 /schedules instead",
                record.target
            )));
        }
        let (arrival, scope) = (record.seq, self.exclusive_scope_of(&record.target));
        let (_, handler) = self
            .resolve(&record.target)
            .map_err(|e| ControlError::Conflict(format!("cannot restart {id}: {e}")))?;
        if handler.kind == HandlerKind::Workflow {
            return Err(ControlError::Conflict(format!(
                "{id} is a workflow's run, one per key: kill it if it has not finished, purge it, \
                 then run the workflow again"
            )));
        }
        let finished = match record.status {
            Status::Completed { .. } => true,
            Status::Paused | Status::Suspended { .. } => false,
            Status::Runnable | Status::Scheduled { .. } => {
                return Err(ControlError::Conflict(format!(
                    "{id} is {}: restart a finished, paused or suspended invocation (kill this \
                     one first, or wait for it)",
                    record.status.name()
                )));
            }
        };
        let prefix = match from {
            None => Vec::new(),
            Some(n) => journal_prefix(journal, n)?,
        };
        let request = InvokeRequest {
            target: record.target,
            input: record.input.into(),
            headers: record.headers,
            idempotency_key: Some(format!("{RESTART_KEY_PREFIX}{id}")),
            delay: None,
            relayed: None,
        };
        // Across processes, what waits in the inbox for this key comes first: not now.
        if self.behind_inbox(&id).await? || self.request_behind_inbox(&request).await? {
            return Err(ControlError::Conflict(format!(
                "messages for {id} or its key wait in the inbox: retry once they are applied"
            )));
        }
        // Claimed until the copy's record and journal are queued: a second restart of the same
        // original joins the copy only then.
        let (submitted, claim) = self.submit_from_outside_claimed(request, false).await?;
        let Submission::Running {
            inflight,
            new: true,
            ..
        } = submitted.submission
        else {
            drop(claim);
            // Restarted before: the same copy. A crash may have come between that copy's
            // commit and the original's end, so the original is ended now if it is not yet,
            // once the copy is durable (a first restart still in progress may not have
            // committed it).
            if let Submission::Running { inflight, .. } = &submitted.submission {
                inflight
                    .make_durable(self.storage.as_ref())
                    .await
                    .map_err(super::EngineError::from)?;
            }
            if !finished {
                end_original(self, id).await?;
            }
            return Ok(submitted.id);
        };
        let (takes_place, committed) = {
            // Under the copy's lock: should the original pass its key on right after the copy
            // is in line, the copy's task cannot read its journal before the copied prefix.
            let mut state = inflight.state();
            // An unfinished original holds its key: the copy goes first in line there.
            let takes_place = match &scope {
                Some(scope) if !finished => {
                    let mut lanes = self.lanes.lock().expect("lanes");
                    match lanes.get_mut(scope) {
                        Some(lane) if lane.running == Some(id) => {
                            lane.queue_stored(submitted.id, false);
                            true
                        }
                        _ => false,
                    }
                }
                _ => false,
            };
            if takes_place {
                state.record.seq = arrival;
            }
            let mut ops = Vec::with_capacity(prefix.len());
            for (index, entry) in prefix {
                ops.push(WriteOp::put_journal(submitted.id, index, &entry));
                state.journal.insert(index, entry);
            }
            let committed = inflight.submit_with_record(
                self.storage.as_ref(),
                &mut state,
                ops,
                None,
                Vec::new(),
            );
            (takes_place, committed)
        };
        drop(claim);
        committed.await.map_err(super::EngineError::from)?;
        if self.crash_point("restart.copied") {
            return Ok(submitted.id);
        }
        // The copy exists: now the original ends, and its key passes to the copy.
        if !finished {
            end_original(self, id).await?;
        }
        if !takes_place {
            self.spawn(inflight);
        }
        Ok(submitted.id)
    }
}

impl Engine {
    /// Ends the originals of restarts' copies that recovery found unstarted (`(original, the
    /// copy's target)`): a crash came between a copy's commit and its original's end. An
    /// original of another target is no original of this copy, and is left alone.
    pub(super) fn end_restarted(&self, originals: Vec<(InvocationId, Target)>) {
        for (original, target) in originals {
            let engine = self.clone();
            self.tasks.spawn(async move {
                let unfinished = match engine.inspect(&original) {
                    Ok(Some((record, _))) => {
                        record.target == target
                            && !matches!(record.status, Status::Completed { .. })
                    }
                    _ => false,
                };
                if !unfinished {
                    return;
                }
                tracing::info!(
                    invocation = %original,
                    "ending an invocation whose restart's copy was committed before a crash"
                );
                if let Err(e) = end_original(&engine, original).await {
                    tracing::error!(invocation = %original, error = %e, "cannot end a restarted invocation");
                }
            });
        }
    }
}

/// Kills the original of a copy; one that finished meanwhile is left as it is, as is one whose
/// partition moved meanwhile (the same restart asked of its new owner gives the same copy and
/// ends it).
async fn end_original(engine: &Engine, id: InvocationId) -> Result<(), ControlError> {
    match engine.kill(id).await {
        Ok(_)
        | Err(ControlError::Conflict(_))
        | Err(ControlError::Engine(super::EngineError::Overloaded(_))) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The journal's entries before `n`, each with its result: an entry still waiting (a call, an
/// attach, an awakeable, a promise) cannot be copied, since what completes it completes the
/// old invocation's entry, nor half of a gate. Positions may be empty (a join journals nothing
/// when all succeed).
fn journal_prefix(
    journal: Vec<(u32, JournalEntry)>,
    n: u32,
) -> Result<Vec<(u32, JournalEntry)>, ControlError> {
    let next = journal.last().map_or(0, |(last, _)| last + 1);
    if n > next {
        return Err(ControlError::Conflict(format!(
            "the journal has {next} positions: restart from at most {next}"
        )));
    }
    // A gate (a limit's or a debounce's) is a request to the runtime's own object and the
    // awakeable its answer comes through, at two positions: a copy of one without the other
    // would wait for an answer nobody sends.
    let at = |i: u32| {
        journal
            .iter()
            .find(|(index, _)| *index == i)
            .map(|(_, e)| e)
    };
    if let (
        Some(JournalEntry::Send { target, .. } | JournalEntry::Call { target, .. }),
        Some(JournalEntry::Awakeable { .. }),
    ) = (n.checked_sub(1).and_then(at), at(n))
        && crate::registry::is_internal(&target.service)
    {
        return Err(ControlError::Conflict(format!(
            "journal entries {} and {n} are one gate of `{}`: restart from at most {} or at least {}",
            n - 1,
            target.service,
            n - 1,
            n + 1
        )));
    }
    // A debounce gate has a third position: the chosen arrival's `started`, which its burst
    // waits for from this invocation (a copy's would name another).
    if let (Some(JournalEntry::Send { target, .. }), Some(JournalEntry::Awakeable { .. })) =
        (n.checked_sub(2).and_then(at), n.checked_sub(1).and_then(at))
        && target.service == crate::debounce::DEBOUNCER
    {
        return Err(ControlError::Conflict(format!(
            "journal entries {} to {n} are one debounce gate: restart from at most {} or at least {}",
            n - 2,
            n - 2,
            n + 1
        )));
    }
    let prefix: Vec<_> = journal.into_iter().filter(|(i, _)| *i < n).collect();
    if let Some((index, bucket)) = permit_held_at_the_cut(&prefix) {
        return Err(ControlError::Conflict(format!(
            "journal entries {index} and {} are a permit of concurrency limit `{bucket}` that \
             is still held there: a copy keeping them would run without one (the original's \
             goes back when it ends). Restart from at most {index}: the copy then waits for a \
             permit of its own",
            index + 1
        )));
    }
    for (index, entry) in &prefix {
        let waiting = matches!(
            entry,
            JournalEntry::Call { outcome: None, .. }
                | JournalEntry::Attach { outcome: None, .. }
                | JournalEntry::Awakeable { outcome: None }
                | JournalEntry::GetPromise { outcome: None, .. }
        );
        if waiting {
            return Err(ControlError::Conflict(format!(
                "journal entry {index} (`{}`) has no result yet: restart from at most {index}",
                entry.kind()
            )));
        }
    }
    Ok(prefix)
}

/// The first concurrency permit `prefix` asks for and does not give back within it (a
/// handler's own, held to its end, or a step's cut before its release): its position and
/// bucket. A step gives its permit back by a send to the same bucket after it, so the
/// requests and releases of each bucket pair up in order.
fn permit_held_at_the_cut(prefix: &[(u32, JournalEntry)]) -> Option<(u32, String)> {
    let limiter = |target: &crate::storage::Target, handler: &str| {
        target.service == crate::concurrency::LIMITER && target.handler == handler
    };
    let mut held: Vec<(u32, String)> = Vec::new();
    for (index, entry) in prefix {
        match entry {
            JournalEntry::Call { target, .. } if limiter(target, "acquire") => {
                held.push((*index, target.key.clone().unwrap_or_default()));
            }
            JournalEntry::Send { target, .. } if limiter(target, "release") => {
                let bucket = target.key.clone().unwrap_or_default();
                if let Some(at) = held.iter().position(|(_, b)| *b == bucket) {
                    held.remove(at);
                }
            }
            _ => {}
        }
    }
    held.into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Outcome, Target};

    #[test]
    fn a_copy_never_takes_half_of_a_gate() {
        let gate = Target {
            service: "restate.Debouncer".into(),
            handler: "arrive".into(),
            key: Some("k".into()),
        };
        let journal = vec![
            (
                0,
                JournalEntry::Send {
                    target: gate,
                    invocation_id: InvocationId::random(1),
                },
            ),
            (
                1,
                JournalEntry::Awakeable {
                    outcome: Some(Outcome::Success(b"1".to_vec())),
                },
            ),
            (
                2,
                JournalEntry::Run {
                    name: "step".into(),
                    outcome: Outcome::Success(b"2".to_vec()),
                },
            ),
        ];
        for n in [1, 2] {
            let error = journal_prefix(journal.clone(), n).unwrap_err();
            assert!(error.to_string().contains("gate"), "{n}: {error}");
        }
        for n in [0, 3] {
            assert_eq!(
                journal_prefix(journal.clone(), n).unwrap().len(),
                n as usize
            );
        }
    }

    #[test]
    fn a_copy_never_keeps_a_permit_held_at_the_cut() {
        let limiter = |handler: &str, bucket: &str| Target {
            service: crate::concurrency::LIMITER.into(),
            handler: handler.into(),
            key: Some(bucket.into()),
        };
        let granted = || JournalEntry::Awakeable {
            outcome: Some(Outcome::Success(b"null".to_vec())),
        };
        let step = || JournalEntry::Run {
            name: "step".into(),
            outcome: Outcome::Success(b"1".to_vec()),
        };
        // A handler's own permit (held to its end), then a step's (given back after it); both
        // waited, so their awakeables have the permits.
        let journal = vec![
            (
                0,
                JournalEntry::Call {
                    target: limiter("acquire", "Gated/work"),
                    invocation_id: InvocationId::random(1),
                    outcome: Some(Outcome::Success(b"false".to_vec())),
                },
            ),
            (1, granted()),
            (
                2,
                JournalEntry::Call {
                    target: limiter("acquire", "stripe"),
                    invocation_id: InvocationId::random(1),
                    outcome: Some(Outcome::Success(b"false".to_vec())),
                },
            ),
            (3, granted()),
            (4, step()),
            (
                5,
                JournalEntry::Send {
                    target: limiter("release", "stripe"),
                    invocation_id: InvocationId::random(1),
                },
            ),
        ];
        assert_eq!(journal_prefix(journal.clone(), 0).unwrap().len(), 0);
        // (3 would cut the step's gate in half, which is refused as such.)
        for n in [2, 4, 5, 6] {
            let error = journal_prefix(journal.clone(), n).unwrap_err();
            assert!(error.to_string().contains("`Gated/work`"), "{n}: {error}");
        }
        // Without the handler's own: the step's permit is held from its request to its release.
        let steps: Vec<_> = journal[2..].to_vec();
        for n in [4, 5] {
            let error = journal_prefix(steps.clone(), n).unwrap_err();
            assert!(error.to_string().contains("`stripe`"), "{n}: {error}");
        }
        assert_eq!(journal_prefix(steps.clone(), 6).unwrap().len(), 4);
    }
}
