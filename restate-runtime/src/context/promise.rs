//! Durable promises in workflow handlers: wait for one, peek at one, complete one.

use serde::{Serialize, de::DeserializeOwned};
use tracing::Instrument;

use super::invocation::{Abort, InvocationContext};
use super::run::outcome_to_result;
use crate::codec::{decode_json, encode_json};
use crate::engine::Completion;
use crate::error::TerminalError;
use crate::storage::{JournalEntry, Outcome, WriteOp};
use crate::telemetry;

impl InvocationContext {
    /// Looks at a promise and journals what `record` makes of it, under the promise lock (see
    /// [`Engine::promise_or_wait`](crate::engine::Engine)); `None` when the look failed (the
    /// attempt is stopped).
    fn with_promise<R>(
        &self,
        name: &str,
        wait_at: Option<u32>,
        record: impl FnOnce(Option<Outcome>) -> R,
    ) -> Option<R> {
        let waiter = wait_at.map(|i| (self.id(), i));
        match self
            .engine
            .promise_or_wait(self.scope(), name, waiter, record)
        {
            Ok(r) => Some(r),
            Err(e) => {
                self.stop(Abort::Retry(format!("promise read failed: {e}")));
                None
            }
        }
    }

    pub(crate) fn promise<T: DeserializeOwned>(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<T, TerminalError>> + Send + '_ {
        let index = self.take_index();
        let mut span = tracing::Span::none();
        let ok = match self.replayed(index) {
            Some(JournalEntry::GetPromise { name: n, outcome }) if n == name => {
                if outcome.is_none() {
                    // Completed while this invocation was away? Otherwise wait to be told.
                    self.with_promise(name, Some(index), |found| {
                        if let Some(found) = found {
                            let entry = JournalEntry::GetPromise {
                                name: n,
                                outcome: Some(found),
                            };
                            drop(self.journal(index, entry, Vec::new()));
                        }
                    })
                    .is_some()
                } else {
                    true
                }
            }
            Some(other) => {
                self.mismatch(index, &other, &format!("promise `{name}`"));
                false
            }
            None if self.replay_ends() => false,
            None => self
                .with_promise(name, Some(index), |outcome| {
                    span = telemetry::step_span("promise", &name);
                    // A waiter is recorded with its entry, so a completion after a restart
                    // finds it.
                    let extra = match outcome {
                        Some(_) => Vec::new(),
                        None => vec![WriteOp::AddPromiseWaiter {
                            scope: self.scope().clone(),
                            name: name.to_owned(),
                            id: self.id(),
                            index,
                        }],
                    };
                    let entry = JournalEntry::GetPromise {
                        name: name.to_owned(),
                        outcome,
                    };
                    self.journal(index, entry, extra).is_some()
                })
                .unwrap_or(false),
        };
        async move {
            if !ok {
                return std::future::pending().await;
            }
            let outcome = self
                .await_entry(index, |e| match e {
                    JournalEntry::GetPromise {
                        outcome: Some(o), ..
                    } => Some(o.clone()),
                    _ => None,
                })
                .await;
            outcome_to_result(outcome)
        }
        .instrument(span)
    }

    pub(crate) fn peek_promise<T: DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, TerminalError> {
        let index = self.take_index();
        let outcome = match self.replayed(index) {
            Some(JournalEntry::PeekPromise { name: n, outcome }) if n == name => outcome,
            Some(other) => {
                self.mismatch(index, &other, &format!("peek_promise `{name}`"));
                return Err(TerminalError::new("journal mismatch"));
            }
            None if self.replay_ends() => return Err(TerminalError::new("replay check ends")),
            None => {
                let outcome = self
                    .with_promise(name, None, |outcome| outcome)
                    .ok_or_else(|| TerminalError::new("promise read failed"))?;
                let entry = JournalEntry::PeekPromise {
                    name: name.to_owned(),
                    outcome: outcome.clone(),
                };
                drop(self.journal(index, entry, Vec::new()));
                outcome
            }
        };
        match outcome {
            None => Ok(None),
            Some(outcome) => decode_json(&outcome.into_result()?)
                .map(Some)
                .map_err(|e| TerminalError::new(format!("promise `{name}` does not decode: {e}"))),
        }
    }

    pub(crate) async fn complete_promise(
        &self,
        name: &str,
        outcome: Outcome,
    ) -> Result<(), TerminalError> {
        let index = self.take_index();
        let accepted = match self.replayed(index) {
            Some(JournalEntry::CompletePromise { name: n, accepted }) if n == name => accepted,
            Some(other) => {
                self.mismatch(index, &other, &format!("complete_promise `{name}`"));
                return std::future::pending().await;
            }
            None if self.replay_ends() || self.halted() => return std::future::pending().await,
            None => {
                // Accepted: the engine commits this entry with the promise, in one batch.
                let own = Completion {
                    id: self.id(),
                    index,
                    entry: JournalEntry::CompletePromise {
                        name: name.to_owned(),
                        accepted: true,
                    },
                    wakes: false,
                };
                let accepted = match self
                    .engine
                    .complete_promise(self.scope().clone(), name, outcome, own)
                    .await
                {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        self.stop(Abort::Retry(format!("promise write failed: {e}")));
                        return std::future::pending().await;
                    }
                };
                if !accepted {
                    let entry = JournalEntry::CompletePromise {
                        name: name.to_owned(),
                        accepted,
                    };
                    drop(self.journal(index, entry, Vec::new()));
                }
                accepted
            }
        };
        if accepted {
            Ok(())
        } else {
            Err(TerminalError::new_with_code(
                409,
                format!("promise `{name}` was already completed; the first completion wins"),
            ))
        }
    }

    pub(crate) async fn resolve_promise<T: Serialize + 'static>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<(), TerminalError> {
        let bytes = encode_json(value).map_err(|e| TerminalError::new(e.to_string()))?;
        self.complete_promise(name, Outcome::Success(bytes.to_vec()))
            .await
    }

    pub(crate) async fn reject_promise(
        &self,
        name: &str,
        error: TerminalError,
    ) -> Result<(), TerminalError> {
        self.complete_promise(name, Outcome::failure(&error)).await
    }
}
