//! Restart as new (Restate's `restart-as-new`): a new invocation of an old one's target, with
//! its input and headers, from the start or after a prefix of its journal whose results it
//! keeps. An unfinished old one is killed first, so that its key is free and it cannot run
//! next to its copy; whoever waits on it gets the kill.

use super::control::ControlError;
use super::{Engine, EngineError, InvokeRequest, Submission};
use crate::ids::InvocationId;
use crate::registry::HandlerKind;
use crate::storage::{JournalEntry, Status, WriteOp};

impl Engine {
    /// Starts a new invocation like `id`, after the first `from` entries of its journal
    /// (copied, so their steps do not run again), or from the start; returns its id.
    pub(crate) async fn restart_as_new(
        &self,
        id: InvocationId,
        from: Option<u32>,
    ) -> Result<InvocationId, ControlError> {
        if !self.runs_invocations() {
            return Err(ControlError::Conflict(
                "restart runs in the process that runs the invocations (the owner): ask it there"
                    .into(),
            ));
        }
        let (record, journal) = self.inspect(&id)?.ok_or(ControlError::NotFound(id))?;
        let (_, handler) = self
            .resolve(&record.target)
            .map_err(|e| ControlError::Conflict(format!("cannot restart {id}: {e}")))?;
        if handler.kind == HandlerKind::Workflow {
            return Err(ControlError::Conflict(format!(
                "{id} is a workflow's run, one per key: purge it, then run the workflow again"
            )));
        }
        let prefix = match from {
            None => Vec::new(),
            Some(n) => journal_prefix(journal, n)?,
        };
        if !matches!(record.status, Status::Completed { .. }) {
            match self.kill(id).await {
                // Finished meanwhile: nothing to stop.
                Ok(()) | Err(ControlError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let request = InvokeRequest {
            target: record.target,
            input: record.input.into(),
            headers: record.headers,
            idempotency_key: None,
            delay: None,
        };
        let submitted = self.submit_from_outside(request)?;
        let Submission::Running { inflight, .. } = submitted.submission else {
            return Err(ControlError::Conflict(format!(
                "a new invocation of {id} was not created"
            )));
        };
        let committed = {
            let mut state = inflight.state();
            let mut ops = Vec::with_capacity(prefix.len());
            for (index, entry) in prefix {
                ops.push(WriteOp::put_journal(submitted.id, index, &entry));
                state.journal.insert(index, entry);
            }
            inflight.submit_with_record(self.storage.as_ref(), &mut state, ops)
        };
        committed.await.map_err(EngineError::from)?;
        self.spawn(inflight);
        Ok(submitted.id)
    }
}

/// The journal's first `n` entries, each with its result: an entry still waiting (a call, an
/// attach, an awakeable, a promise) cannot be copied, since what completes it completes the
/// old invocation's entry.
fn journal_prefix(
    journal: Vec<(u32, JournalEntry)>,
    n: u32,
) -> Result<Vec<(u32, JournalEntry)>, ControlError> {
    let prefix: Vec<_> = journal.into_iter().filter(|(i, _)| *i < n).collect();
    if let Some(missing) = (0..n).find(|i| prefix.get(*i as usize).is_none_or(|(at, _)| at != i)) {
        return Err(ControlError::Conflict(format!(
            "the journal has no entry {missing}: restart from at most {missing}"
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
