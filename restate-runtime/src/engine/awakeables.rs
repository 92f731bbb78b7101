//! Awakeables completed from outside the invocation that waits on them: over HTTP, or by
//! another handler. The first completion wins; a handler's own `CompleteAwakeable` entry
//! commits in the same batch as the completion it caused, so a crash cannot keep one without
//! the other.

use std::collections::HashSet;
use std::sync::Mutex;

use super::wake::{Completion, PendingWake};
use super::{Engine, EngineError};
use crate::ids::{AwakeableId, InvocationId};
use crate::storage::{InboxMessage, JournalEntry, Outcome, Status, StorageError};

/// Awakeables whose completion is submitted but not durable yet: a second completer must not
/// read the store's older answer ("still open") in that window.
#[derive(Default)]
pub(crate) struct CompletingAwakeables(Mutex<HashSet<AwakeableId>>);

impl CompletingAwakeables {
    /// Whether a completion of `id` is submitted and not decided yet.
    #[cfg(test)]
    pub(super) fn contains(&self, id: &AwakeableId) -> bool {
        self.0.lock().expect("awakeables").contains(id)
    }
}

/// A submitted awakeable completion.
#[must_use = "the waiter is resumed, and the awakeable released, only by `finish`"]
pub(crate) struct AwakeableSubmission {
    engine: Engine,
    pending: PendingWake,
    /// The awakeable this submission completes (`None` when it was already completed).
    completes: Option<AwakeableId>,
    /// Whether the awakeable's invocation exists.
    pub known: bool,
    /// Its invocation runs, but the awakeable's entry is not journaled (again) yet.
    pub unjournaled: bool,
}

impl AwakeableSubmission {
    /// Resolves once the completion is durable and its waiter is resumed. That work is done
    /// by a task started here, so it goes on when whoever waits stops waiting (a handler whose
    /// partition left, a client that hung up): the awakeable is released, and a waiter that
    /// was not in memory resumed, once the batch is decided. Dropped half-way, it would keep
    /// the awakeable "being completed" here for ever, and a later completion, seeing that,
    /// would record itself without completing it.
    pub(crate) fn finish(
        self,
    ) -> impl std::future::Future<Output = Result<(), StorageError>> + Send + 'static {
        let (done, answer) = tokio::sync::oneshot::channel();
        let Self {
            engine,
            pending,
            completes,
            ..
        } = self;
        let tasks = engine.tasks.clone();
        tasks.spawn(async move {
            let result = pending.finish().await;
            if let Some(id) = completes {
                let mut completing = engine.awakeables.0.lock().expect("awakeables");
                completing.remove(&id);
            }
            let _ = done.send(result);
        });
        async move { answer.await.unwrap_or(Err(StorageError::Closed)) }
    }
}

impl Engine {
    /// The id of awakeable `index` of `invocation`, tagged with a MAC under the store's secret.
    pub(crate) fn awakeable_id(&self, invocation: InvocationId, index: u32) -> AwakeableId {
        let mac = self.mac(&[b"awakeable", &invocation.to_bytes(), &index.to_be_bytes()]);
        let tag: [u8; 16] = mac[..16].try_into().expect("16 of 32 bytes");
        AwakeableId::new(invocation, index, tag)
    }

    /// Whether `id` was made by [`Self::awakeable_id`] (compared in constant time).
    fn is_authentic(&self, id: &AwakeableId) -> bool {
        use subtle::ConstantTimeEq as _;
        let expected = self.awakeable_id(id.invocation(), id.index());
        bool::from(expected.tag().ct_eq(id.tag()))
    }

    /// Submits the completion of awakeable `id` if it is still open, with `resolver` (the
    /// completing handler's own journal entry) in the same batch.
    pub(crate) fn submit_awakeable(
        &self,
        id: AwakeableId,
        outcome: Outcome,
        resolver: Option<Completion>,
    ) -> Result<AwakeableSubmission, EngineError> {
        let mut completing = self.awakeables.0.lock().expect("awakeables");
        let (invocation, index) = (id.invocation(), id.index());
        // A forged id is unknown: nothing of it is looked up, nothing completed. What is seen
        // in memory here (`in_memory`) may still be committing.
        let (known, current, finished, in_memory) = if !self.is_authentic(&id) {
            (false, None, false, false)
        } else if completing.contains(&id) {
            (
                true,
                Some(JournalEntry::Awakeable { outcome: None }),
                true,
                true,
            )
        } else {
            match self.inflight(&invocation) {
                Some(f) => {
                    let state = f.state();
                    let finished = matches!(state.record.status, Status::Completed { .. });
                    (true, state.journal.get(index).cloned(), finished, true)
                }
                None => match self.storage.invocation(&invocation)? {
                    None => (false, None, false, false),
                    Some(record) => (
                        true,
                        self.storage
                            .journal(&invocation)?
                            .into_iter()
                            .find_map(|(i, e)| (i == index).then_some(e)),
                        matches!(record.status, Status::Completed { .. }),
                        false,
                    ),
                },
            }
        };
        let open = !finished && matches!(current, Some(JournalEntry::Awakeable { outcome: None }));
        // Handed out, but its entry is not journaled (a crash took it after its id was
        // published; the replay journals it again at the same index): not completed now, and
        // not to be answered as if it were.
        let unjournaled = known && !finished && current.is_none();
        // Nor is a completing handler's own entry written then: it would record as done a
        // completion that was dropped (its attempt retries instead).
        let mut completions: Vec<Completion> = match unjournaled {
            true => Vec::new(),
            false => resolver.into_iter().collect(),
        };
        if open {
            completing.insert(id);
            completions.push(Completion {
                id: invocation,
                index,
                entry: JournalEntry::Awakeable {
                    outcome: Some(outcome),
                },
                wakes: true,
            });
        }
        // Completed, or being completed, in memory here already: accepted as that one is,
        // and the resolver's entry commits only if that completion did.
        let behind = known && !open && !unjournaled && in_memory && !self.elsewhere(&invocation);
        let fenced_on = behind.then(|| invocation.partition_key());
        let pending = self.submit_completions_fenced(Vec::new(), completions, fenced_on);
        Ok(AwakeableSubmission {
            engine: self.clone(),
            pending,
            completes: open.then_some(id),
            known,
            unjournaled,
        })
    }

    /// Completes the awakeable named by `id` (its text form, as a client sends it) if it is
    /// still open, durably. The first completion wins; a later one is accepted and changes
    /// nothing.
    pub(crate) async fn complete_awakeable(
        &self,
        id: &str,
        outcome: Outcome,
    ) -> Result<(), AwakeableCompletionError> {
        let parsed: AwakeableId = id.parse().map_err(|e: crate::ids::IdParseError| {
            AwakeableCompletionError::Malformed {
                id: id.to_owned(),
                reason: e.of_awakeable().to_owned(),
            }
        })?;
        if self.behind_inbox(&parsed.invocation()).await? {
            // A forged id is refused here as where it runs; the rest is decided there.
            if !self.is_authentic(&parsed) {
                return Err(AwakeableCompletionError::Unknown(id.to_owned()));
            }
            let message = InboxMessage::CompleteAwakeable {
                awakeable: id.to_owned(),
                outcome,
            };
            return Ok(self.forward_message(parsed.invocation(), message).await?);
        }
        self.complete_awakeable_here(parsed, id, outcome).await
    }

    /// [`Self::complete_awakeable`] applied in this process.
    pub(super) async fn complete_awakeable_here(
        &self,
        parsed: AwakeableId,
        id: &str,
        outcome: Outcome,
    ) -> Result<(), AwakeableCompletionError> {
        let submission = self.submit_awakeable(parsed, outcome, None)?;
        let (known, unjournaled) = (submission.known, submission.unjournaled);
        submission.finish().await.map_err(EngineError::from)?;
        if unjournaled {
            Err(AwakeableCompletionError::NotJournaled(id.to_owned()))
        } else if known {
            Ok(())
        } else {
            Err(AwakeableCompletionError::Unknown(id.to_owned()))
        }
    }
}

/// Why an awakeable completed from outside a handler was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AwakeableCompletionError {
    /// Not an awakeable id (or a forged one): a 400.
    #[error("bad awakeable id '{id}': {reason}")]
    Malformed { id: String, reason: String },
    /// Its invocation is unknown (never existed or purged): a 404.
    #[error("awakeable '{0}' not found")]
    Unknown(String),
    /// Its invocation runs but has not journaled it again since a crash: nothing was
    /// completed; retried later, it is (a 503, retryable).
    #[error("awakeable '{0}' is not journaled yet (its invocation is being recovered); retry")]
    NotJournaled(String),
    /// Storage failed; nothing was completed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl AwakeableCompletionError {
    /// The caller's mistake as an HTTP status and message, or the engine's failure.
    pub(crate) fn refusal(self) -> Result<(u16, String), EngineError> {
        match self {
            Self::Malformed { .. } => Ok((400, self.to_string())),
            Self::Unknown(_) => Ok((404, self.to_string())),
            Self::NotJournaled(_) => Err(EngineError::Lost(self.to_string())),
            Self::Engine(e) => Err(e),
        }
    }
}
