//! Awakeables: a journaled promise that something outside the handler completes (over HTTP at
//! `/restate/a/{id}/resolve|reject`, or from another handler). The first completion wins.

use serde::{Serialize, de::DeserializeOwned};

use super::invocation::{Abort, InvocationContext};
use super::run::outcome_to_result;
use crate::codec::encode_json;
use crate::engine::Completion;
use crate::error::TerminalError;
use crate::ids::AwakeableId;
use crate::storage::{JournalEntry, Outcome};

impl InvocationContext {
    pub(crate) fn awakeable<T: DeserializeOwned>(
        &self,
    ) -> (
        String,
        impl Future<Output = Result<T, TerminalError>> + Send + '_,
    ) {
        let index = self.take_index();
        let ok = match self.replayed(index) {
            Some(JournalEntry::Awakeable { .. }) => true,
            Some(other) => {
                self.mismatch(index, &other, "awakeable");
                false
            }
            None => self
                .journal(index, JournalEntry::Awakeable { outcome: None }, Vec::new())
                .is_some(),
        };
        let id = self.engine.awakeable_id(self.id(), index).to_string();
        let wait = async move {
            if !ok {
                return std::future::pending().await;
            }
            let outcome = self
                .await_entry(index, |e| match e {
                    JournalEntry::Awakeable { outcome: Some(o) } => Some(o.clone()),
                    _ => None,
                })
                .await;
            outcome_to_result(outcome)
        };
        (id, wait)
    }

    /// Completes another invocation's awakeable, once: journaled, so a replay does not repeat it.
    pub(crate) fn complete_awakeable(
        &self,
        id: &str,
        outcome: Result<Outcome, TerminalError>,
    ) -> Result<(), TerminalError> {
        let index = self.take_index();
        match self.replayed(index) {
            Some(JournalEntry::CompleteAwakeable { id: recorded }) if recorded == id => {
                return Ok(());
            }
            Some(other) => {
                self.mismatch(index, &other, &format!("complete_awakeable `{id}`"));
                return Ok(());
            }
            None => {}
        }
        let parsed: AwakeableId = id.parse().map_err(|e| {
            TerminalError::new_with_code(400, format!("bad awakeable id '{id}': {e}"))
        })?;
        let outcome = outcome?;
        // The completion and this handler's own entry commit in one batch.
        let own = Completion {
            id: self.id(),
            index,
            entry: JournalEntry::CompleteAwakeable { id: id.to_owned() },
            wakes: false,
        };
        match self.engine.submit_awakeable(parsed, outcome, Some(own)) {
            Ok(submission) => {
                tokio::spawn(async move {
                    if let Err(e) = submission.finish().await {
                        tracing::warn!(awakeable = %parsed, error = %e, "cannot complete awakeable");
                    }
                });
            }
            Err(e) => self.stop(Abort::Retry(format!("awakeable read failed: {e}"))),
        }
        Ok(())
    }

    pub(crate) fn resolve_awakeable<T: Serialize + 'static>(
        &self,
        id: &str,
        value: &T,
    ) -> Result<(), TerminalError> {
        let outcome = encode_json(value)
            .map(|b| Outcome::Success(b.to_vec()))
            .map_err(|e| TerminalError::new(e.to_string()));
        self.complete_awakeable(id, outcome)
    }

    pub(crate) fn reject_awakeable(
        &self,
        id: &str,
        error: TerminalError,
    ) -> Result<(), TerminalError> {
        let outcome = Ok(Outcome::Failure {
            code: error.code(),
            message: error.message().to_owned(),
        });
        self.complete_awakeable(id, outcome)
    }
}
