//! Waiting on several durable operations. `join` needs nothing special (each operation has its
//! own journal entry); `select` journals which branch won, so a replay takes the same branch even
//! if both are complete by then.

use futures::future::Either;

use super::invocation::{Abort, InvocationContext};
use super::run::outcome_to_result;
use crate::engine::OutputState;
use crate::error::TerminalError;
use crate::ids::InvocationId;
use crate::storage::{JournalEntry, Outcome};

impl InvocationContext {
    pub(crate) async fn select<A, B>(&self, a: A, b: B) -> Either<A::Output, B::Output>
    where
        A: Future,
        B: Future,
    {
        let index = self.take_index();
        let recorded = match self.replayed(index) {
            Some(JournalEntry::Select { winner }) => Some(winner),
            Some(other) => {
                self.mismatch(index, &other, "select");
                return std::future::pending().await;
            }
            None => None,
        };
        match recorded {
            Some(0) => Either::Left(a.await),
            Some(_) => Either::Right(b.await),
            None => {
                let (winner, result) = tokio::select! {
                    biased;
                    v = a => (0u8, Either::Left(v)),
                    v = b => (1u8, Either::Right(v)),
                };
                drop(self.journal(index, JournalEntry::Select { winner }, Vec::new()));
                result
            }
        }
    }

    /// Journals a cancellation request together with the request itself (the target's record
    /// marked, with a wake-up), then delivers it in memory once durable (a queued target ends at
    /// once, a suspended one is resumed). A replay delivers it again (cancellation is
    /// idempotent).
    pub(crate) fn cancel_invocation(&self, id: InvocationId) {
        let index = self.take_index();
        let durable = match self.replayed(index) {
            Some(JournalEntry::CancelInvocation { invocation_id }) if invocation_id == id => None,
            Some(other) => {
                self.mismatch(index, &other, &format!("cancel {id}"));
                return;
            }
            None => {
                let entry = JournalEntry::CancelInvocation { invocation_id: id };
                let request = self.engine.cancel_request_ops(id);
                match self.journal(index, entry, request) {
                    Some(waiter) => Some(waiter),
                    None => return,
                }
            }
        };
        let engine = self.engine.clone();
        tokio::spawn(async move {
            if let Some(Err(e)) = futures::future::OptionFuture::from(durable).await {
                tracing::warn!(invocation = %id, error = %e, "cancel not recorded");
                return;
            }
            if let Err(e) = engine.cancel(id).await {
                tracing::debug!(error = %e, "cancel had no effect");
            }
        });
    }

    pub(crate) fn attach_invocation<T: serde::de::DeserializeOwned>(
        &self,
        id: InvocationId,
    ) -> impl Future<Output = Result<T, TerminalError>> + Send + '_ {
        let index = self.take_index();
        let pending = || JournalEntry::Attach {
            invocation_id: id,
            outcome: None,
        };
        // Journaled now, or replayed without its result: the result is fetched once known.
        let ok = match self.replayed(index) {
            Some(JournalEntry::Attach {
                invocation_id,
                outcome,
            }) if invocation_id == id => {
                if outcome.is_none() {
                    self.forward_outcome(index, id, pending());
                }
                true
            }
            Some(other) => {
                self.mismatch(index, &other, &format!("attach {id}"));
                false
            }
            None => {
                // Finished already (or unknown): the result is journaled at once. Otherwise the
                // entry is recorded as a result waiter of `id`, whose completion completes it
                // (also after a restart), and fetched in memory meanwhile.
                let known = match self.engine.output(id) {
                    Ok(OutputState::Done(done)) => Ok(Some(done.outcome.clone())),
                    Ok(OutputState::NotFound) => Ok(Some(Outcome::Failure {
                        code: 404,
                        message: format!("invocation {id} not found"),
                    })),
                    Ok(OutputState::NotReady) => Ok(None),
                    Err(e) => Err(e),
                };
                match known {
                    Err(e) => {
                        self.stop(Abort::Retry(format!("attach lookup failed: {e}")));
                        false
                    }
                    Ok(Some(outcome)) => {
                        let entry = JournalEntry::Attach {
                            invocation_id: id,
                            outcome: Some(outcome),
                        };
                        self.journal(index, entry, Vec::new()).is_some()
                    }
                    Ok(None) => {
                        let waiter = self.engine.result_waiter(id, self.id(), index, false);
                        let ok = self.journal(index, pending(), vec![waiter]).is_some();
                        if ok {
                            self.forward_outcome(index, id, pending());
                        }
                        ok
                    }
                }
            }
        };
        async move {
            if !ok {
                return std::future::pending().await;
            }
            let outcome = self
                .await_entry(index, |e| match e {
                    JournalEntry::Attach {
                        outcome: Some(o), ..
                    } => Some(o.clone()),
                    _ => None,
                })
                .await;
            outcome_to_result(outcome)
        }
    }
}
