//! The replay check: every unfinished invocation (and on request every finished one) replayed
//! against the code of this binary, on an engine that writes nothing and stops each handler
//! where its journal ends, so that no step runs, nothing is sent and nothing is committed.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;

use super::Engine;
use super::journal::Journal;
use crate::context::InvocationContext;
use crate::context::invocation::Abort;
use crate::ids::InvocationId;
use crate::registry::InputShape;
use crate::replay::{Problem, ReplayOptions, ReplayProblem, ReplayReport};
use crate::storage::{InvocationRecord, Outcome, Status, StorageError};

/// How long one replay may take before it is reported stuck.
const STUCK_AFTER: Duration = Duration::from_secs(10);
/// Invocations read from the store at a time.
const PAGE: usize = 500;

impl Engine {
    /// Replays the store's invocations against this binary's handlers (an engine built with
    /// `replay_check` set, never started).
    pub(crate) async fn check_replay(
        &self,
        options: &ReplayOptions,
    ) -> Result<ReplayReport, StorageError> {
        let mut report = ReplayReport {
            checked: 0,
            problems: Vec::new(),
        };
        let mut after = None;
        loop {
            let page = self.storage.invocations(after, PAGE)?;
            let Some((last, _)) = page.last() else {
                return Ok(report);
            };
            after = Some(*last);
            for (id, record) in page {
                let finished = matches!(record.status, Status::Completed { .. });
                if finished && !options.include_completed {
                    continue;
                }
                report.checked += 1;
                // As the admin API shows it (`pending` for one waiting for its key).
                let (status, version) = (self.shown_status(&id, &record), record.version.clone());
                let target = record.target.to_string();
                if let Some(problem) = self.replay_one(id, record).await? {
                    report.problems.push(ReplayProblem {
                        invocation_id: id,
                        target,
                        status,
                        version,
                        problem,
                    });
                }
            }
        }
    }

    /// Replays one invocation's journal: the problem it shows, if any.
    async fn replay_one(
        &self,
        id: InvocationId,
        record: InvocationRecord,
    ) -> Result<Option<Problem>, StorageError> {
        let (service, handler) = match self.resolve(&record.target) {
            Ok((service, handler)) => (service.instance.clone(), handler),
            Err(e) => {
                return Ok(Some(Problem::UnknownTarget {
                    reason: e.to_string(),
                }));
            }
        };
        // Its input was accepted by the old code: one that has not started yet (a delayed
        // send) would fail at its first attempt on this one.
        if handler.input == InputShape::Json
            && let Err(e) = (handler.check_input)(&record.input)
        {
            return Ok(Some(Problem::Fails {
                message: format!("its input cannot be decoded by this code: {e}"),
            }));
        }
        let handler = handler.name;
        let journal: Journal = match self.storage.journal(&id) {
            Ok(entries) => entries.into_iter().collect(),
            Err(e @ StorageError::Decode(_)) => {
                return Ok(Some(Problem::Fails {
                    message: format!("its journal cannot be read: {e}"),
                }));
            }
            Err(e) => return Err(e),
        };
        let Some(last_index) = journal.last_index() else {
            // Nothing journaled yet: whatever the code does now is its first attempt.
            return Ok(None);
        };
        let recorded = match &record.status {
            Status::Completed { outcome, .. } => Some(outcome.clone()),
            _ => None,
        };
        let input = Bytes::from(record.input.clone());
        let inflight = self.new_inflight(id, record, true, journal);
        let ctx = InvocationContext::new(self.clone(), inflight);
        let handler_run = AssertUnwindSafe(service.invoke(handler, &ctx, input)).catch_unwind();
        let problem = tokio::select! {
            returned = handler_run => match returned {
                Err(panic) => Some(Problem::Fails {
                    message: format!("handler panicked: {}", crate::error::panic_message(&panic)),
                }),
                // Stopped, and then returned before the stop was seen.
                Ok(_) if ctx.mismatched().is_some() || ctx.stopped_with().is_some() => {
                    stopped(&ctx, ctx.stopped_with().unwrap_or(Abort::ReplayEnds))
                }
                Ok(result) => {
                    let next = ctx.peek_index();
                    let unreached = (next..=last_index)
                        .find_map(|i| ctx.replayed(i).map(|e| (i, e)));
                    match (unreached, recorded) {
                        (Some((index, entry)), _) => Some(Problem::EndsEarly {
                            index,
                            journal: entry.kind().to_owned(),
                        }),
                        (None, Some(recorded)) => {
                            let now = match result {
                                Ok(output) => Some(Outcome::Success(output.to_vec())),
                                Err(e) => e.into_terminal().ok().map(|t| Outcome::failure(&t)),
                            };
                            different(&recorded, now.as_ref())
                        }
                        (None, None) => None,
                    }
                }
            },
            abort = ctx.aborted() => stopped(&ctx, abort),
            _ = tokio::time::sleep(STUCK_AFTER) => Some(Problem::Stuck {
                seconds: STUCK_AFTER.as_secs(),
            }),
        };
        drop(ctx);
        self.drop_finisher_if_idle(&id);
        Ok(problem)
    }
}

/// The problem an attempt stopped with `abort` shows: none where the journal ended.
fn stopped(ctx: &InvocationContext, abort: Abort) -> Option<Problem> {
    match (ctx.mismatched(), abort) {
        (Some(m), _) => Some(Problem::Diverges {
            index: m.index,
            journal: m.journal.clone(),
            code: m.code.clone(),
        }),
        (None, Abort::ReplayEnds | Abort::Suspend { .. }) => None,
        (None, Abort::Retry(message) | Abort::Pause(message) | Abort::Lost(message)) => {
            Some(Problem::Fails { message })
        }
    }
}

/// The problem when a finished invocation's code now ends with `now` instead of `recorded`.
fn different(recorded: &Outcome, now: Option<&Outcome>) -> Option<Problem> {
    let same = match (recorded, now) {
        (_, None) => false,
        (recorded, Some(now)) => {
            recorded.is_success() == now.is_success()
                && recorded.clone().into_result() == now.clone().into_result()
        }
    };
    let show = |o: &Outcome| match o.clone().into_result() {
        Ok(bytes) => format!("`{}`", String::from_utf8_lossy(&bytes)),
        Err(e) => format!("error {} `{}`", e.code(), e.message()),
    };
    (!same).then(|| Problem::DifferentResult {
        recorded: show(recorded),
        code: now.map_or_else(|| "a retryable error".to_owned(), show),
    })
}
