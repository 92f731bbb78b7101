//! Awakeables: a journaled promise that something outside the handler completes (over HTTP at
//! `/restate/a/{id}/resolve|reject`, or from another handler). The first completion wins.

use serde::{Serialize, de::DeserializeOwned};
use tracing::Instrument;

use super::invocation::{Abort, InvocationContext};
use super::run::outcome_to_result;
use crate::codec::encode_json;
use crate::engine::{AwakeableSubmission, Completion};
use crate::error::TerminalError;
use crate::ids::AwakeableId;
use crate::storage::{JournalEntry, Outcome};
use crate::telemetry;

impl InvocationContext {
    pub(crate) fn awakeable<T: DeserializeOwned>(
        &self,
    ) -> (
        String,
        impl Future<Output = Result<T, TerminalError>> + Send + '_,
    ) {
        self.awakeable_at(self.take_index())
    }

    /// [`Self::awakeable`] at a position taken earlier.
    pub(crate) fn awakeable_at<T: DeserializeOwned>(
        &self,
        index: u32,
    ) -> (
        String,
        impl Future<Output = Result<T, TerminalError>> + Send + '_,
    ) {
        let mut span = tracing::Span::none();
        let ok = match self.replayed(index) {
            Some(JournalEntry::Awakeable { .. }) => true,
            Some(other) => {
                self.mismatch(index, &other, "awakeable");
                false
            }
            None if self.replay_ends() => false,
            None => {
                span = telemetry::step_span("awakeable", &index);
                self.journal(index, JournalEntry::Awakeable { outcome: None }, Vec::new())
                    .is_some()
            }
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
        }
        .instrument(span);
        (id, wait)
    }

    /// Submits the completion of another invocation's awakeable with this handler's own
    /// journal entry, in one batch; `None` when a replay finds the entry already journaled.
    fn submit_awakeable_completion(
        &self,
        id: &str,
        outcome: Result<Outcome, TerminalError>,
    ) -> Result<Option<AwakeableSubmission>, TerminalError> {
        let index = self.take_index();
        match self.replayed(index) {
            Some(JournalEntry::CompleteAwakeable { id: recorded }) if recorded == id => {
                return Ok(None);
            }
            Some(other) => {
                self.mismatch(index, &other, &format!("complete_awakeable `{id}`"));
                return Ok(None);
            }
            None if self.replay_ends() || self.halted() => return Ok(None),
            None => {}
        }
        let parsed: AwakeableId = id.parse().map_err(|e: crate::ids::IdParseError| {
            TerminalError::new_with_code(
                400,
                format!("bad awakeable id '{id}': {}", e.of_awakeable()),
            )
        })?;
        let outcome = outcome?;
        let own = Completion {
            id: self.id(),
            index,
            entry: JournalEntry::CompleteAwakeable { id: id.to_owned() },
            wakes: false,
        };
        match self.engine.submit_awakeable(parsed, outcome, Some(own)) {
            // Its invocation has not journaled it again since a crash: nothing was written,
            // this entry neither; the attempt retries, by when the replay has.
            Ok(submission) if submission.unjournaled => {
                self.stop(Abort::Retry(format!(
                    "awakeable {id} is not journaled yet (its invocation is being recovered)"
                )));
                Ok(None)
            }
            Ok(submission) => Ok(Some(submission)),
            Err(e) => {
                self.stop(Abort::Retry(format!("awakeable read failed: {e}")));
                Ok(None)
            }
        }
    }

    /// Completes another invocation's awakeable without waiting for the commit (the
    /// deprecated synchronous API).
    pub(crate) fn complete_awakeable(
        &self,
        id: &str,
        outcome: Result<Outcome, TerminalError>,
    ) -> Result<(), TerminalError> {
        if let Some(submission) = self.submit_awakeable_completion(id, outcome)? {
            self.engine.tasks().spawn(async move {
                if let Err(e) = submission.finish().await {
                    tracing::warn!(error = %e, "cannot complete awakeable");
                }
            });
        }
        Ok(())
    }

    /// Completes another invocation's awakeable and returns once the completion and this
    /// handler's entry are durable. The answer is the same on replay: a completion that
    /// finds the awakeable already completed, or its invocation gone, changes nothing.
    pub(crate) async fn complete_awakeable_durably(
        &self,
        id: &str,
        outcome: Result<Outcome, TerminalError>,
    ) -> Result<(), TerminalError> {
        match self.submit_awakeable_completion(id, outcome)? {
            Some(submission) => {
                if let Err(e) = submission.finish().await {
                    self.stop(Abort::Retry(format!("awakeable write failed: {e}")));
                    return std::future::pending().await;
                }
            }
            // Stopped (a mismatch, a check's end): the handler goes no further.
            None if self.is_stopped() => return std::future::pending().await,
            None => {}
        }
        Ok(())
    }
}

/// The outcome resolving an awakeable with `value` records.
pub(crate) fn resolved<T: Serialize + 'static>(value: &T) -> Result<Outcome, TerminalError> {
    encode_json(value)
        .map(|b| Outcome::Success(b.to_vec()))
        .map_err(|e| TerminalError::new(e.to_string()))
}

/// Another invocation's awakeable, by the id its waiter handed out, to resolve or reject from
/// a handler (`ctx.awakeable_handle(id)`). Each completion is journaled, and its future ends
/// once the completion is durable; the first completion of an awakeable wins, and completing
/// one that is already completed (or whose invocation is gone) changes nothing.
///
/// ```
/// use restate_runtime::prelude::*;
/// #[derive(Default)]
/// pub struct Reviewer;
/// #[service]
/// impl Reviewer {
///     #[handler]
///     async fn decide(&self, ctx: Context<'_>, (awakeable_id, ok): (String, bool)) -> HandlerResult<()> {
///         let review = ctx.awakeable_handle(awakeable_id);
///         if ok {
///             review.resolve(true).await?;
///         } else {
///             review
///                 .reject(TerminalError::new_with_code(403, "denied").with_metadata("by", "reviewer"))
///                 .await?;
///         }
///         Ok(())
///     }
/// }
/// ```
#[must_use = "an awakeable is completed only by awaiting `resolve` or `reject`"]
pub struct AwakeableHandle<'a> {
    ctx: &'a InvocationContext,
    id: String,
}

impl<'a> AwakeableHandle<'a> {
    pub(crate) fn new(ctx: &'a InvocationContext, id: String) -> Self {
        Self { ctx, id }
    }

    /// The awakeable's id.
    ///
    /// ```
    /// # use restate_runtime::prelude::*;
    /// # fn demo(ctx: Context<'_>) {
    /// assert_eq!(ctx.awakeable_handle("sign_1x").id(), "sign_1x");
    /// # }
    /// ```
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Resolves the awakeable with `value`; its waiter gets it. A malformed id is a 400.
    ///
    /// ```
    /// # use restate_runtime::prelude::*;
    /// # async fn demo(ctx: Context<'_>, id: String) -> HandlerResult<()> {
    /// ctx.awakeable_handle(id).resolve("approved").await?;
    /// # Ok(()) }
    /// ```
    pub async fn resolve<T: Serialize + 'static>(self, value: T) -> Result<(), TerminalError> {
        self.ctx
            .complete_awakeable_durably(&self.id, resolved(&value))
            .await
    }

    /// Rejects the awakeable: its waiter gets `error` (code, message and metadata), or a
    /// message alone as code 500.
    ///
    /// ```
    /// # use restate_runtime::prelude::*;
    /// # async fn demo(ctx: Context<'_>, id: String) -> HandlerResult<()> {
    /// ctx.awakeable_handle(id).reject("signature missing").await?;
    /// # Ok(()) }
    /// ```
    pub async fn reject(self, error: impl Into<TerminalError>) -> Result<(), TerminalError> {
        let outcome = Ok(Outcome::failure(&error.into()));
        self.ctx.complete_awakeable_durably(&self.id, outcome).await
    }
}
