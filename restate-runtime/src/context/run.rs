//! `ctx.run`: a side effect whose result is journaled durably before the handler sees it, and
//! returned from the journal on replay without running the closure again.

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;

use futures::FutureExt as _;

use serde::{Serialize, de::DeserializeOwned};
use tracing::Instrument;

use super::invocation::{Abort, InvocationContext};
use super::zone::{self, Zone};
use crate::codec::{decode_json, encode_json};
use crate::engine::RunFault;
use crate::error::{HandlerError, HandlerResult, TerminalError};
use crate::registry::RetryPolicy;
use crate::storage::{JournalEntry, Outcome};
use crate::telemetry;

/// A journaled side effect, built by `ctx.run(..)`; configure it, then `.await` it.
///
/// Without a retry policy, a retryable error inside the closure retries the whole invocation
/// (it replays up to this step and runs the closure again). With one, the closure is retried in
/// place and, once the policy's attempts are used up, the step resolves to a [`TerminalError`]
/// the handler can handle (compensation).
///
/// ```
/// use restate_runtime::prelude::*;
/// #[derive(Default)]
/// pub struct Shipping;
/// #[service]
/// impl Shipping {
///     #[handler]
///     async fn label(&self, ctx: Context<'_>, address: String) -> HandlerResult<String> {
///         let label: String = ctx
///             .run(|| async {
///                 if address.is_empty() {
///                     // Terminal: journaled as the step's result, never retried.
///                     return Err(TerminalError::new_with_code(400, "no address").into());
///                 }
///                 Ok(format!("label for {address}")) // a retryable `Err` would run it again
///             })
///             .name("create label")
///             .await?;
///         Ok(label)
///     }
/// }
/// ```
#[must_use = "a run does nothing until awaited"]
pub struct Run<'a, F, Fut, T> {
    ctx: &'a InvocationContext,
    closure: F,
    name: String,
    policy: Option<RetryPolicy>,
    /// The rate limit (and its key) the step waits on for a token first.
    rate: Option<(String, Option<String>)>,
    /// The concurrency limit (and its key) whose permit the step holds while it runs.
    limiter: Option<(String, Option<String>)>,
    _out: PhantomData<fn() -> (Fut, T)>,
}

impl<'a, F, Fut, T> Run<'a, F, Fut, T> {
    pub(crate) fn new(ctx: &'a InvocationContext, closure: F) -> Self {
        Self {
            ctx,
            closure,
            name: String::new(),
            policy: None,
            rate: None,
            limiter: None,
            _out: PhantomData,
        }
    }

    /// Names the step (shown in the journal; checked on replay).
    ///
    /// ```
    /// use restate_runtime::prelude::*;
    /// #[derive(Default)]
    /// pub struct Rates;
    /// #[service]
    /// impl Rates {
    ///     #[handler]
    ///     async fn to_eur(&self, ctx: Context<'_>, cents: u64) -> HandlerResult<u64> {
    ///         // The admin API's journal shows this name; a replay that reaches a step of
    ///         // another name here pauses as non-deterministic instead of mixing results.
    ///         let rate: f64 = ctx.run(|| async { Ok(0.92) }).name("USD->EUR rate").await?;
    ///         Ok((cents as f64 * rate) as u64)
    ///     }
    /// }
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Retries the closure in place with this policy; exhausted, the step fails terminally.
    ///
    /// ```
    /// use restate_runtime::prelude::*;
    /// #[derive(Default)]
    /// pub struct Payments;
    /// #[service]
    /// impl Payments {
    ///     #[handler]
    ///     async fn pay(&self, ctx: Context<'_>, cents: u64) -> HandlerResult<String> {
    ///         let three_tries = RetryPolicy::default().max_attempts(3);
    ///         let charged = ctx.run(|| charge(cents)).name("charge").retry_policy(three_tries).await;
    ///         match charged {
    ///             Ok(receipt) => Ok(receipt),
    ///             // Three failures: a terminal error to handle, not endless retries.
    ///             Err(e) => Ok(format!("payment failed, order on hold: {}", e.message())),
    ///         }
    ///     }
    /// }
    /// async fn charge(_cents: u64) -> HandlerResult<String> { Err("provider down".into()) }
    /// ```
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Waits for a token of the rate limit `name` before the step runs (a durable wait: a
    /// long one suspends the invocation). The limit is set with
    /// [`RuntimeBuilder::rate_limit`](crate::RuntimeBuilder::rate_limit); a name without one
    /// lets the step through at once. A retry of the step (after a failure) replays the
    /// reservation: it takes no second token.
    ///
    /// ```
    /// use restate_runtime::prelude::*;
    /// #[derive(Default)]
    /// pub struct Reminders;
    /// #[service]
    /// impl Reminders {
    ///     #[handler]
    ///     async fn remind(&self, ctx: Context<'_>, to: String) -> HandlerResult<()> {
    ///         // At most what the "email" limit allows, across every invocation.
    ///         ctx.run(|| async { Ok(()) }).name("send email").rate_limit("email").await?;
    ///         Ok(())
    ///     }
    /// }
    /// ```
    pub fn rate_limit(mut self, name: impl Into<String>) -> Self {
        self.rate = Some((name.into(), None));
        self
    }

    /// As [`rate_limit`](Self::rate_limit), with a bucket of its own per `key` (a tenant, an
    /// account): each key gets the whole limit.
    ///
    /// ```
    /// use restate_runtime::prelude::*;
    /// #[derive(Default)]
    /// pub struct Sync;
    /// #[object]
    /// impl Sync {
    ///     #[handler]
    ///     async fn push(&self, ctx: ObjectContext<'_>) -> HandlerResult<()> {
    ///         let tenant = ctx.key().to_owned();
    ///         ctx.run(|| async { Ok(()) }).rate_limit_key("crm-api", tenant).await?;
    ///         Ok(())
    ///     }
    /// }
    /// ```
    pub fn rate_limit_key(mut self, name: impl Into<String>, key: impl Into<String>) -> Self {
        self.rate = Some((name.into(), Some(key.into())));
        self
    }

    /// Holds a permit of the concurrency limit `name` while the step runs: at most that many
    /// such steps (and handlers with `concurrency(name = ..)`) at once, across invocations;
    /// the others wait (durably, suspended if long) in arrival order. The limit is set with
    /// [`RuntimeBuilder::concurrency_limit`](crate::RuntimeBuilder::concurrency_limit) or the
    /// admin API; a name without one lets the step through at once.
    ///
    /// ```
    /// use restate_runtime::prelude::*;
    /// #[derive(Default)]
    /// pub struct Checkout;
    /// #[service]
    /// impl Checkout {
    ///     #[handler]
    ///     async fn pay(&self, ctx: Context<'_>, cents: u64) -> HandlerResult<()> {
    ///         ctx.run(|| async { Ok(()) }).name("charge").limiter("stripe-api").await?;
    ///         Ok(())
    ///     }
    /// }
    /// ```
    pub fn limiter(mut self, name: impl Into<String>) -> Self {
        self.limiter = Some((name.into(), None));
        self
    }

    /// As [`limiter`](Self::limiter), with a limit of its own per `key` (a tenant).
    ///
    /// ```
    /// use restate_runtime::prelude::*;
    /// #[derive(Default)]
    /// pub struct Exports;
    /// #[object]
    /// impl Exports {
    ///     #[handler]
    ///     async fn export(&self, ctx: ObjectContext<'_>) -> HandlerResult<()> {
    ///         let tenant = ctx.key().to_owned();
    ///         ctx.run(|| async { Ok(()) }).limiter_key("warehouse", tenant).await?;
    ///         Ok(())
    ///     }
    /// }
    /// ```
    pub fn limiter_key(mut self, name: impl Into<String>, key: impl Into<String>) -> Self {
        self.limiter = Some((name.into(), Some(key.into())));
        self
    }
}

impl<'a, F, Fut, T> IntoFuture for Run<'a, F, Fut, T>
where
    F: FnMut() -> Fut + Send + 'a,
    Fut: Future<Output = HandlerResult<T>> + Send + 'a,
    T: Serialize + DeserializeOwned + Send + 'static,
{
    type Output = Result<T, TerminalError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        // The gate's positions come first, taken (and its reservation journaled) now, in
        // program order, as the step's own.
        let ctx = self.ctx;
        let mut gate = self.rate.as_ref().and_then(|(name, key)| {
            ctx.plan_rate_gate(name, key.as_deref(), None, crate::rate::Guarded::Step)
        });
        let permit = self
            .limiter
            .as_ref()
            .and_then(|(name, key)| ctx.plan_permit(name, key.as_deref(), None));
        let index = ctx.take_index();
        if let Some(gate) = &mut gate {
            gate.step_ended(ctx.replayed(index).is_some());
        }
        // Where the permit goes back, after the step.
        let release = permit.as_ref().map(|_| ctx.take_index());
        Box::pin(async move {
            if let Some(gate) = gate {
                ctx.pass_rate_gate(gate).await?;
            }
            let permit = match permit {
                Some(plan) => Some(ctx.acquire_permit(plan, release).await?),
                None => None,
            };
            let result = execute(self, index).await;
            if let Some(permit) = permit {
                ctx.release_permit(permit, release);
            }
            result
        })
    }
}

async fn execute<'a, F, Fut, T>(run: Run<'a, F, Fut, T>, index: u32) -> Result<T, TerminalError>
where
    F: FnMut() -> Fut + Send + 'a,
    Fut: Future<Output = HandlerResult<T>> + Send + 'a,
    T: Serialize + DeserializeOwned + Send + 'static,
{
    let ctx = run.ctx;
    if let Some(recorded) = ctx.replayed(index) {
        return match recorded {
            JournalEntry::Run { name, outcome } if name == run.name => outcome_to_result(outcome),
            other => {
                ctx.mismatch(index, &other, &format!("run (name `{}`)", run.name));
                std::future::pending().await
            }
        };
    }
    if ctx.replay_ends() {
        return std::future::pending().await;
    }
    let cancelled = JournalEntry::Run {
        name: run.name.clone(),
        outcome: super::invocation::cancelled_outcome(),
    };
    if ctx.deliver_cancel(index, || cancelled) {
        return Err(TerminalError::new_with_code(409, "cancelled"));
    }
    let span = telemetry::step_span("run", &run.name);
    let result = perform(run, index).instrument(span.clone()).await;
    if let Err(e) = &result {
        telemetry::record_error(&span, e.message());
    }
    result
}

/// Runs the closure of a step the journal does not hold yet (retried in place by its
/// policy), and journals its result.
async fn perform<'a, F, Fut, T>(mut run: Run<'a, F, Fut, T>, index: u32) -> Result<T, TerminalError>
where
    F: FnMut() -> Fut + Send + 'a,
    Fut: Future<Output = HandlerResult<T>> + Send + 'a,
    T: Serialize + DeserializeOwned + Send + 'static,
{
    let ctx = run.ctx;
    let mut failures = 0u32;
    let result: Result<T, TerminalError> = loop {
        let injected = ctx.engine.config().injected.as_ref();
        if injected.is_some_and(|faults| faults.crashed()) {
            // The process is dead: nothing more runs.
            return std::future::pending().await;
        }
        // Not while this process may have lost the partition without knowing yet (a pause
        // past its lease): the new owner may be running this very step.
        ctx.engine.lease_held(Some(&ctx.id())).await;
        let Some(step) = ctx.inflight.closure_running() else {
            // Its partition is leaving: the next owner runs this step.
            return std::future::pending().await;
        };
        let running = (
            ctx.engine.tasks().activity().map(|a| a.running_closure()),
            step,
        );
        let attempt = match injected.and_then(|faults| faults.take(&run.name)) {
            None => attempt_closure(&mut run.closure).await,
            Some(fault @ RunFault::Retryable) => Err(fault.message(&run.name).into()),
            Some(fault @ RunFault::Terminal) => {
                Err(TerminalError::new(fault.message(&run.name)).into())
            }
            Some(fault @ RunFault::Panic) => {
                let message = fault.message(&run.name);
                attempt_closure(&mut || async { panic!("{message}") }).await
            }
        };
        drop(running);
        match attempt {
            Ok(value) => break Ok(value),
            Err(e) => {
                let e = match e.into_terminal() {
                    Ok(terminal) => break Err(terminal),
                    Err(retryable) => retryable,
                };
                failures += 1;
                let Some(policy) = run.policy else {
                    ctx.stop(Abort::Retry(format!("run `{}` failed: {e}", run.name)));
                    return std::future::pending().await;
                };
                if !policy.allows_another(failures) {
                    break Err(TerminalError::new(format!(
                        "run `{}` failed after {}: {e}",
                        run.name,
                        crate::registry::attempts_made(failures)
                    )));
                }
                tracing::warn!(step = %run.name, attempt = failures, error = %e, "run step failed; retrying");
                // Shown as Restate shows a step's retry: the invocation backing off. A cancel
                // lands here, at the step's next attempt, or at once if it comes during the
                // wait (found from outside: the step retried on to success, the cancel lost).
                ctx.inflight.state().record.last_error =
                    Some(format!("run `{}` failed: {e}", run.name));
                let clock = &ctx.engine.config().clock;
                let retry_at_ms = clock
                    .now_ms()
                    .saturating_add(crate::clock::millis(policy.delay_for(failures)));
                let mut changes = ctx.inflight.changes();
                let cancelled = async {
                    while !ctx.cancel_pending() {
                        if changes.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                };
                tokio::select! {
                    () = ctx.inflight.back_off(clock, retry_at_ms) => {}
                    () = cancelled => {}
                }
                let cancelled = || JournalEntry::Run {
                    name: run.name.clone(),
                    outcome: super::invocation::cancelled_outcome(),
                };
                if ctx.deliver_cancel(index, cancelled) {
                    return Err(TerminalError::new_with_code(409, "cancelled"));
                }
            }
        }
    };
    let outcome = match &result {
        Ok(value) => match encode_json(value) {
            Ok(bytes) => Outcome::Success(bytes.to_vec()),
            Err(e) => {
                ctx.stop(Abort::Retry(format!("run `{}`: {e}", run.name)));
                return std::future::pending().await;
            }
        },
        Err(t) => Outcome::failure(t),
    };
    let name = std::mem::take(&mut run.name);
    let waiter = ctx.journal(index, JournalEntry::Run { name, outcome }, Vec::new());
    ctx.durable(waiter).await;
    result
}

/// One attempt of a step's closure, in the zone where no context operation may be created.
/// A panic is the attempt's failure, retried by the step's policy as an error would be.
async fn attempt_closure<F, Fut, T>(closure: &mut F) -> HandlerResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = HandlerResult<T>>,
{
    // Called inside the zone and the catch: its synchronous part is the step's too.
    let attempt = zone::inside(Zone::RunClosure, async { closure().await });
    match AssertUnwindSafe(attempt).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(HandlerError::from(format!(
            "panicked: {}",
            crate::error::panic_message(&panic)
        ))),
    }
}

/// Turns a recorded outcome back into the typed result.
pub(crate) fn outcome_to_result<T: DeserializeOwned>(outcome: Outcome) -> Result<T, TerminalError> {
    let bytes = outcome.into_result()?;
    decode_json(&bytes)
        .map_err(|e| TerminalError::new(format!("cannot decode journaled value: {e}")))
}
