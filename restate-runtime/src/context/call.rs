//! Calls and one-way sends from inside a handler: each is a journal entry, and the invocation it
//! creates commits with that entry (a call also registers where its result goes).

use std::sync::Arc;
use std::time::Duration;

use tracing::{Instrument, Span};

use super::durable::DurableFuture;
use super::invocation::{Abort, InvocationContext};
use super::run::outcome_to_result;
use crate::client::RequestParts;
use crate::engine::{Created, EngineError, Inflight, Submission};
use crate::error::TerminalError;
use crate::ids::InvocationId;
use crate::storage::{CommitWaiter, JournalEntry, Outcome, Target, WriteOp};
use crate::telemetry;

impl InvocationContext {
    /// Calls a handler and waits for its result. The call is journaled now, the result when
    /// it arrives, so a replayed handler does not call twice.
    pub(crate) fn call<O: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        parts: RequestParts,
    ) -> DurableFuture<'_, Result<O, TerminalError>> {
        self.call_at(self.take_index(), parts)
    }

    /// [`Self::call`] at a position taken earlier (an operation that takes several at once).
    pub(crate) fn call_at<O: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        index: u32,
        parts: RequestParts,
    ) -> DurableFuture<'_, Result<O, TerminalError>> {
        let plan = plan_call(self, index, parts);
        DurableFuture::new(self, async move {
            let outcome = match plan {
                CallPlan::Done(outcome) => outcome,
                // The callee's completion fills in the entry (and resumes us if suspended).
                CallPlan::Wait(span) => {
                    let outcome = self
                        .await_entry(index, |e| match e {
                            JournalEntry::Call {
                                outcome: Some(o), ..
                            } => Some(o.clone()),
                            _ => None,
                        })
                        .instrument(span.clone())
                        .await;
                    if let Outcome::Failure { message, .. } = &outcome {
                        telemetry::record_error(&span, message);
                    }
                    outcome
                }
                CallPlan::Stopped => return std::future::pending().await,
            };
            outcome_to_result(outcome)
        })
    }

    /// Sends one-way (after `delay`): journaled now; returns the new invocation's id.
    pub(crate) fn send(&self, parts: RequestParts, delay: Option<Duration>) -> InvocationId {
        send_from_handler(self, self.take_index(), parts, delay)
    }

    /// [`Self::send`] at a position taken earlier.
    pub(crate) fn send_at(
        &self,
        index: u32,
        parts: RequestParts,
        delay: Option<Duration>,
    ) -> InvocationId {
        send_from_handler(self, index, parts, delay)
    }
}

enum CallPlan {
    Done(Outcome),
    /// Wait for the callee's outcome, in the call's span (none for a call replayed from the
    /// journal: its span belongs to the attempt that made it).
    Wait(Span),
    Stopped,
}

fn plan_call(ctx: &InvocationContext, index: u32, parts: RequestParts) -> CallPlan {
    if let Some(recorded) = ctx.replayed(index) {
        return match recorded {
            JournalEntry::Call {
                target,
                invocation_id,
                outcome,
            } if target == parts.target => match outcome {
                Some(outcome) => CallPlan::Done(outcome),
                None => {
                    let pending = JournalEntry::Call {
                        target,
                        invocation_id,
                        outcome: None,
                    };
                    ctx.forward_outcome(index, invocation_id, pending);
                    CallPlan::Wait(Span::none())
                }
            },
            other => {
                ctx.mismatch(index, &other, &format!("call `{}`", parts.target));
                CallPlan::Stopped
            }
        };
    }
    if ctx.replay_ends() {
        return CallPlan::Stopped;
    }
    let target = parts.target.clone();
    if ctx.exclusive_on(&target) {
        let outcome = Outcome::failure(&TerminalError::new_with_code(
            409,
            format!(
                "deadlock: `{target}` is an exclusive handler on the key this exclusive handler holds; \
                 a call to it would wait forever. Use `.send()` (and do not wait for its result \
                 in this handler), or make the callee a shared handler"
            ),
        ));
        drop(ctx.journal(
            index,
            JournalEntry::Call {
                target,
                invocation_id: ctx.id(),
                outcome: Some(outcome.clone()),
            },
            Vec::new(),
        ));
        return CallPlan::Done(outcome);
    }
    let span = telemetry::step_span("call", &target);
    let mut req = match parts.into_invoke(None) {
        Ok(req) => req,
        Err(e) => return CallPlan::Done(Outcome::failure(&e)),
    };
    // The callee's attempts are children of this call, in this trace.
    telemetry::propagate(&span, &mut req.headers);
    // A stopped attempt writes no entry: it creates nothing either, not even for a moment.
    if ctx.halted() {
        return CallPlan::Stopped;
    }
    // Held until the entry that records a new callee is queued (or the callee discarded).
    let created = match ctx.engine.submit_recorded(req, Some((ctx.id(), index))) {
        Ok(created) => created,
        // A target this binary cannot invoke fails the call for good; a store that failed or
        // is full for now fails only this attempt, which is retried.
        Err(
            e @ (EngineError::UnknownService(_)
            | EngineError::UnknownHandler { .. }
            | EngineError::BadTarget(_)
            | EngineError::WorkflowAlreadyInvoked),
        ) => return refuse(ctx, index, target, e),
        Err(e) => {
            ctx.stop(Abort::Retry(format!("cannot call `{target}` now: {e}")));
            return CallPlan::Stopped;
        }
    };
    let (submitted, claim) = match created {
        Created::Here(submitted, claim) => (submitted, claim),
        // Its partition's owner sends the outcome to this one's inbox.
        Created::Elsewhere(id, message) => {
            let entry = JournalEntry::Call {
                target,
                invocation_id: id,
                outcome: None,
            };
            return match ctx.journal(index, entry, vec![message]) {
                Some(_) => CallPlan::Wait(span),
                None => CallPlan::Stopped,
            };
        }
    };
    let (id, mut extra, launch, forward) = match submitted.submission {
        Submission::Finished(done) => {
            let entry = JournalEntry::Call {
                target,
                invocation_id: submitted.id,
                outcome: Some(done.outcome.clone()),
            };
            let waiter = ctx.journal(index, entry, Vec::new());
            drop(waiter);
            return CallPlan::Done(done.outcome.clone());
        }
        Submission::Running {
            inflight,
            new: true,
            ..
        } => {
            let mut state = inflight.state();
            state.persisted = true;
            let extra = vec![WriteOp::put_invocation(submitted.id, &state.record)];
            drop(state);
            (submitted.id, extra, Some(inflight), false)
        }
        Submission::Running { new: false, .. } | Submission::Stored => {
            // A duplicate (idempotency key) of an invocation another caller started: its
            // result goes to that caller. This one is recorded as a result waiter, completed
            // with the result (also after a restart), and fetched in memory once journaled.
            let waiter = ctx
                .engine
                .result_waiter(submitted.id, ctx.id(), index, true);
            (submitted.id, vec![waiter], None, true)
        }
    };
    let entry = JournalEntry::Call {
        target,
        invocation_id: id,
        outcome: None,
    };
    let journaled = ctx.journal(index, entry.clone(), std::mem::take(&mut extra));
    if journaled.is_none()
        && let Some(inflight) = &launch
    {
        ctx.engine.discard_unrecorded(inflight);
    }
    drop(claim);
    match journaled {
        Some(recorded) => {
            if let Some(inflight) = launch {
                launch_gated(ctx, inflight, recorded, None);
            }
            if forward {
                ctx.forward_outcome(index, id, entry);
            }
            CallPlan::Wait(span)
        }
        None => CallPlan::Stopped,
    }
}

/// Queues an invocation created by the caller's latest journal entry; it runs once that entry
/// (`recorded`, which carries its record) is durable, and never if it was refused.
fn launch_gated(
    ctx: &InvocationContext,
    inflight: Arc<Inflight>,
    recorded: CommitWaiter,
    at: Option<u64>,
) {
    inflight.set_gate(recorded);
    ctx.engine.launch(inflight, at);
}

/// A target that cannot be invoked: journaled as a failed call, so the handler sees a terminal
/// error now and the same error on replay.
fn refuse(ctx: &InvocationContext, index: u32, target: Target, e: EngineError) -> CallPlan {
    let outcome = Outcome::failure(&TerminalError::new_with_code(404, e.to_string()));
    let entry = JournalEntry::Call {
        target,
        invocation_id: ctx.id(),
        outcome: Some(outcome.clone()),
    };
    drop(ctx.journal(index, entry, Vec::new()));
    CallPlan::Done(outcome)
}

fn send_from_handler(
    ctx: &InvocationContext,
    index: u32,
    parts: RequestParts,
    delay: Option<Duration>,
) -> InvocationId {
    if let Some(recorded) = ctx.replayed(index) {
        return match recorded {
            JournalEntry::Send {
                target,
                invocation_id,
            } if target == parts.target => invocation_id,
            other => {
                ctx.mismatch(index, &other, &format!("send `{}`", parts.target));
                ctx.id()
            }
        };
    }
    if ctx.replay_ends() {
        return ctx.id();
    }
    // A stopped attempt writes no entry: it creates nothing either, not even for a moment.
    if ctx.halted() {
        return ctx.id();
    }
    let target = parts.target.clone();
    let span = telemetry::step_span("send", &target);
    // Held until the entry that records a new invocation is queued (or it is discarded).
    let submitted = parts
        .into_invoke(delay)
        .map(|mut req| {
            telemetry::propagate(&span, &mut req.headers);
            req
        })
        .map_err(|e| e.to_string())
        .and_then(|req| (ctx.engine.submit_sent(req)).map_err(|e| e.to_string()));
    let (submitted, claim) = match submitted {
        Ok(Created::Here(submitted, claim)) => (submitted, claim),
        Ok(Created::Elsewhere(id, message)) => {
            let entry = JournalEntry::Send {
                target,
                invocation_id: id,
            };
            drop(ctx.journal(index, entry, vec![message]));
            return id;
        }
        Err(reason) => {
            // A send to a target this binary does not serve is a bug to fix and redeploy: retry.
            ctx.stop(Abort::Retry(format!("cannot send to `{target}`: {reason}")));
            return ctx.id();
        }
    };
    let mut extra = Vec::new();
    let mut launch = None;
    if let Submission::Running {
        inflight,
        new: true,
        ..
    } = submitted.submission
    {
        let mut state = inflight.state();
        state.persisted = true;
        extra.push(WriteOp::put_invocation(submitted.id, &state.record));
        drop(state);
        launch = Some(inflight);
    }
    let entry = JournalEntry::Send {
        target,
        invocation_id: submitted.id,
    };
    let placement = launch
        .as_ref()
        .and_then(|i| i.undecided_placement().cloned());
    let journaled = match placement {
        Some(placement) => ctx.journal_placing(index, entry, extra, placement),
        None => ctx.journal(index, entry, extra),
    };
    if journaled.is_none()
        && let Some(inflight) = &launch
    {
        ctx.engine.discard_unrecorded(inflight);
    }
    drop(claim);
    if let (Some(recorded), Some(inflight)) = (journaled, launch) {
        launch_gated(ctx, inflight, recorded, submitted.execution_time_ms);
    }
    submitted.id
}
