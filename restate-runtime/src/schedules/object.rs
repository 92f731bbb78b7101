//! The internal objects that hold schedules: `restate.Schedule` (one key per schedule: its
//! state, its ticks as delayed sends to itself, its runs as calls) and `restate.ScheduleIndex`
//! (the ids, for listing). Ordinary durable handlers, so a schedule survives crashes as any
//! object does, and runs on one owner at a time on PostgreSQL.

use std::collections::VecDeque;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::cron::CronTimes;
use super::spec::{Overlap, ScheduleInput, ScheduleSpec, ScheduledTime};
use super::view::{LastRun, RunOutcome, ScheduleOrigin, ScheduleView, TriggerOutcome};
use crate::__private::{input, output, unknown_handler};
use crate::codec::encode_json;
use crate::context::{FromInvocation, InvocationContext, ObjectContext, SharedObjectContext};
use crate::error::{HandlerError, TerminalError, always_retried};
use crate::metrics::ScheduleLabel;
use crate::registry::{
    HandlerDefinition, HandlerKind, HandlerOptions, InputShape, RetryPolicy, Service,
    ServiceDefinition, ServiceKind,
};

/// The object whose keys are schedules.
pub(crate) const SCHEDULE: &str = "restate.Schedule";
/// The object that lists them, on one key.
pub(crate) const INDEX: &str = "restate.ScheduleIndex";
pub(crate) const INDEX_KEY: &str = "all";
/// The state entry of a schedule.
pub(crate) const STATE: &str = "schedule";
/// What outlives a deleted schedule on its key: its last generation, so that ticks and runs
/// of a deleted schedule never act on one created again with the same id.
const TOMBSTONE: &str = "generation";
/// A tick handled more than this late (or with a later one due too) was missed: a timer a
/// little late under load is not downtime, a restart after a crash is.
const GRACE_MS: u64 = 15_000;
/// Ticks waiting under `overlap = "queue"`; later ones are skipped.
const MAX_QUEUED: usize = 1000;

/// A schedule's stored state (JSON: a field added later takes `#[serde(default)]`, so that
/// what an older binary stored still reads).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Stored {
    pub spec: ScheduleSpec,
    pub origin: ScheduleOrigin,
    pub paused: bool,
    /// Bumped whenever the pending tick is replaced: a tick of another generation is stale.
    /// Never reused on a key, across deletes too (see [`TOMBSTONE`]).
    generation: u64,
    /// This schedule's life on its key: runs report back with it, and a report from a run of
    /// a deleted predecessor is ignored.
    incarnation: u64,
    pub next_fire: Option<u64>,
    last_fire: Option<u64>,
    last_run: Option<LastRun>,
    running: u32,
    /// Ticks waiting for the run before them, and whether each was a trigger.
    queued: VecDeque<(u64, bool)>,
    fired: u64,
    skipped: u64,
    /// The time of the latest manual trigger: a trigger is stamped at least a millisecond
    /// after it, so that two in one millisecond are two runs (the time is in the run's key).
    #[serde(default)]
    last_trigger: Option<u64>,
}

impl Stored {
    pub(crate) fn view(&self) -> ScheduleView {
        let spec = &self.spec;
        ScheduleView {
            id: spec.id.clone(),
            service: spec.service.clone(),
            key: spec.key.clone(),
            handler: spec.handler.clone(),
            cron: spec.cron.clone(),
            timezone: spec.timezone.clone(),
            catch_up: spec.catch_up,
            overlap: spec.overlap,
            origin: self.origin,
            paused: self.paused,
            next_fire_at: self.next_fire.map(ScheduledTime::from_millis),
            last_fire_at: self.last_fire.map(ScheduledTime::from_millis),
            last_run: self.last_run.clone(),
            running: self.running,
            queued: self.queued.len() as u32,
            fired: self.fired,
            skipped: self.skipped,
        }
    }

    fn times(&self) -> Result<CronTimes, TerminalError> {
        CronTimes::parse(&self.spec.cron, &self.spec.timezone)
            .map_err(|e| TerminalError::new_with_code(400, e))
    }

    fn skip(&mut self, ctx: &InvocationContext, tick: u64, manual: bool) {
        self.skipped += 1;
        self.last_run = Some(LastRun {
            tick_at: ScheduledTime::from_millis(tick),
            manual,
            outcome: RunOutcome::Skipped,
            error: None,
        });
        count(ctx, &self.spec.id, "skipped");
    }

    /// Applies the overlap policy to a tick that is to run.
    fn fire(&mut self, ctx: &InvocationContext, tick: u64, manual: bool) -> TriggerOutcome {
        self.fire_under(ctx, tick, manual, self.spec.overlap)
    }

    /// Applies `overlap` to a tick that is to run.
    fn fire_under(
        &mut self,
        ctx: &InvocationContext,
        tick: u64,
        manual: bool,
        overlap: Overlap,
    ) -> TriggerOutcome {
        if self.running > 0 || !self.queued.is_empty() {
            match overlap {
                Overlap::Skip => {
                    self.skip(ctx, tick, manual);
                    return TriggerOutcome::Skipped;
                }
                Overlap::Queue if self.queued.len() >= MAX_QUEUED => {
                    self.skip(ctx, tick, manual);
                    return TriggerOutcome::Skipped;
                }
                Overlap::Queue => {
                    self.queued.push_back((tick, manual));
                    count(ctx, &self.spec.id, "queued");
                    return TriggerOutcome::Queued;
                }
                Overlap::Allow => {}
            }
        }
        self.start(ctx, tick, manual);
        TriggerOutcome::Started
    }

    /// Starts the first queued tick once no run goes on (not while paused).
    fn start_queued(&mut self, ctx: &InvocationContext) {
        if self.running == 0
            && !self.paused
            && let Some((tick, manual)) = self.queued.pop_front()
        {
            self.start(ctx, tick, manual);
        }
    }

    /// Sends the run: a shared handler of this key that calls the target and reports back.
    fn start(&mut self, ctx: &InvocationContext, tick: u64, manual: bool) {
        self.running += 1;
        self.fired += 1;
        self.last_fire = Some(self.last_fire.map_or(tick, |t| t.max(tick)));
        count(ctx, &self.spec.id, "fired");
        let run = RunInput {
            incarnation: self.incarnation,
            tick,
            manual,
            service: self.spec.service.clone(),
            key: self.spec.key.clone(),
            handler: self.spec.handler.clone(),
            input: self.spec.input.clone(),
        };
        ctx.send(to_self(&self.spec.id, "run", &run), None);
    }

    /// Handles the ticks due from `first` (a tick of this expression) up to `now` by the
    /// catch-up policy, then sends the next one: what a tick does, and what a re-arm does for
    /// a tick that is overdue.
    fn catch_up(&mut self, ctx: &InvocationContext, times: &CronTimes, first: u64, now: u64) {
        let until = now.max(first);
        let (due, dropped) = match self.spec.catch_up {
            super::CatchUp::All => times.due(first, until),
            // Only the latest can run: no need to walk through the others.
            super::CatchUp::One | super::CatchUp::Skip => times.latest_due(first, until),
        };
        self.skipped += dropped;
        let latest = due.last().copied().unwrap_or(first);
        let missed = |t: u64| t != latest || now.saturating_sub(t) > GRACE_MS;
        let catching_up = due.iter().any(|&t| missed(t));
        for &t in &due {
            let missed = missed(t);
            let runs = match self.spec.catch_up {
                super::CatchUp::All => true,
                super::CatchUp::One => t == latest,
                super::CatchUp::Skip => !missed,
            };
            // Under `all` every missed tick runs: one that `skip` would drop for the run
            // before it waits for that run instead, and so does the tick on time after them
            // (else every restart would drop its last tick for the catch-up's runs). A tick
            // on time with nothing to catch up keeps the policy.
            let overlap = match (self.spec.catch_up, self.spec.overlap) {
                (super::CatchUp::All, Overlap::Skip) if catching_up => Overlap::Queue,
                (_, overlap) => overlap,
            };
            if runs {
                self.fire_under(ctx, t, false, overlap);
            } else {
                self.skip(ctx, t, false);
            }
        }
        self.arm(ctx, times, latest.max(now), now);
    }

    /// Sends the next tick after `after` (none for an expression without one).
    fn arm(&mut self, ctx: &InvocationContext, times: &CronTimes, after: u64, now: u64) {
        self.generation += 1;
        self.next_fire = times.next_after(after);
        if let Some(at) = self.next_fire {
            let tick = TickInput {
                generation: self.generation,
                at,
            };
            let delay = std::time::Duration::from_millis(at.saturating_sub(now));
            ctx.send(to_self(&self.spec.id, "tick", &tick), Some(delay));
        }
        self.show_next_fire(ctx);
    }

    fn show_next_fire(&self, ctx: &InvocationContext) {
        show_next_fire(&ctx.engine, &self.spec.id, self.next_fire);
    }
}

/// Sets schedule `id`'s gauge of its next tick (0: none).
pub(crate) fn show_next_fire(engine: &crate::engine::Engine, id: &str, next_fire_ms: Option<u64>) {
    engine
        .metrics()
        .schedule_next_fire
        .get_or_create(&ScheduleLabel::of(id))
        .set(next_fire_ms.map_or(0, |ms| (ms / 1000) as i64));
}

fn count(ctx: &InvocationContext, id: &str, outcome: &'static str) {
    ctx.engine
        .metrics()
        .schedule_ticks
        .get_or_create(&crate::metrics::ScheduleOutcomeLabel {
            schedule: id.into(),
            outcome,
        })
        .inc();
}

/// A request to a handler of schedule `id`.
fn to_self<T: Serialize + 'static>(
    id: &str,
    handler: &str,
    value: &T,
) -> crate::client::RequestParts {
    crate::client::parts(SCHEDULE, Some(id), handler, encode_json(value))
}

/// The input of `upsert`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Upsert {
    pub spec: ScheduleSpec,
    pub origin: ScheduleOrigin,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TickInput {
    generation: u64,
    at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RunInput {
    incarnation: u64,
    tick: u64,
    manual: bool,
    service: String,
    key: Option<String>,
    handler: String,
    input: ScheduleInput,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Finished {
    incarnation: u64,
    tick: u64,
    manual: bool,
    error: Option<String>,
}

fn now_ms(at: std::time::SystemTime) -> u64 {
    crate::clock::millis(at.duration_since(UNIX_EPOCH).unwrap_or_default())
}

/// The idempotency key a tick's run calls its target with: one invocation per tick, and per
/// life of the id (a schedule deleted and created again runs its ticks anew).
pub(crate) fn run_key(id: &str, tick: u64, manual: bool, incarnation: u64) -> String {
    let kind = if manual { "trigger" } else { "tick" };
    let tick = ScheduledTime::from_millis(tick);
    match incarnation {
        // The first life keeps the key that binaries before this one gave it.
        0 | 1 => format!("schedule:{id}:{kind}:{tick}"),
        n => format!("schedule:{id}:{kind}:{tick}#{n}"),
    }
}

/// What `upsert` answers: the view, or why it refused (a schedule that code declares cannot
/// be replaced through the API).
pub(crate) type UpsertOutcome = Result<ScheduleView, String>;

async fn upsert(ctx: &InvocationContext, request: Upsert) -> Result<UpsertOutcome, HandlerError> {
    let object = ObjectContext::from_invocation(ctx);
    let existing = object.get::<Stored>(STATE).await?;
    if let Some(stored) = &existing
        && stored.origin == ScheduleOrigin::Code
        && request.origin == ScheduleOrigin::Api
    {
        return Ok(Err(format!(
            "schedule `{}` is declared with `#[handler(cron = ..)]`: change it in the code",
            stored.spec.id
        )));
    }
    let fresh = existing.is_none();
    let mut stored = match existing {
        Some(stored) => stored,
        None => {
            let add =
                crate::client::parts(INDEX, Some(INDEX_KEY), "add", encode_json(&request.spec.id));
            ctx.call::<()>(add).await?;
            let generation = object.get::<u64>(TOMBSTONE).await?.unwrap_or(0);
            Stored {
                spec: request.spec.clone(),
                origin: request.origin,
                paused: false,
                generation,
                incarnation: generation + 1,
                next_fire: None,
                last_fire: None,
                last_run: None,
                running: 0,
                queued: VecDeque::new(),
                fired: 0,
                skipped: 0,
                last_trigger: None,
            }
        }
    };
    let now = now_ms(object.now().await?);
    let same_times =
        stored.spec.cron == request.spec.cron && stored.spec.timezone == request.spec.timezone;
    let overdue = stored.next_fire.filter(|at| *at <= now && same_times);
    if !fresh
        && stored.spec == request.spec
        && stored.origin == request.origin
        && (stored.paused || overdue.is_none())
    {
        // In step already, its next tick pending.
        return Ok(Ok(stored.view()));
    }
    stored.spec = request.spec;
    stored.origin = request.origin;
    let times = stored.times()?;
    match (stored.paused, overdue) {
        (true, _) => stored.generation += 1,
        // Ticks that fell due while the process was down: caught up here, and the pending
        // tick (of an older generation now) does nothing when it comes.
        (false, Some(first)) => stored.catch_up(ctx, &times, first, now),
        (false, None) => stored.arm(ctx, &times, now, now),
    }
    object.set(STATE, stored.clone());
    Ok(Ok(stored.view()))
}

/// At a start: catches up an overdue schedule whose tick has not come (or never will: the
/// tick was killed, or stopped by a binary that did not serve schedules).
async fn rearm(ctx: &InvocationContext) -> Result<(), HandlerError> {
    let object = ObjectContext::from_invocation(ctx);
    let Some(mut stored) = object.get::<Stored>(STATE).await? else {
        return Ok(());
    };
    let now = now_ms(object.now().await?);
    match stored.next_fire {
        Some(first) if !stored.paused && first <= now => {
            let times = stored.times()?;
            stored.catch_up(ctx, &times, first, now);
            object.set(STATE, stored);
        }
        _ => {}
    }
    Ok(())
}

async fn tick(ctx: &InvocationContext, tick: TickInput) -> Result<(), HandlerError> {
    let object = ObjectContext::from_invocation(ctx);
    let Some(mut stored) = object.get::<Stored>(STATE).await? else {
        return Ok(());
    };
    if stored.paused || stored.generation != tick.generation {
        return Ok(());
    }
    let now = now_ms(object.now().await?);
    let times = stored.times()?;
    stored.catch_up(ctx, &times, tick.at, now);
    object.set(STATE, stored);
    Ok(())
}

async fn finished(ctx: &InvocationContext, done: Finished) -> Result<(), HandlerError> {
    let object = ObjectContext::from_invocation(ctx);
    let Some(mut stored) = object
        .get::<Stored>(STATE)
        .await?
        .filter(|s| s.incarnation == done.incarnation)
    else {
        // A run of a schedule deleted since (and maybe created again).
        return Ok(());
    };
    stored.running = stored.running.saturating_sub(1);
    let outcome = if done.error.is_some() {
        RunOutcome::Failed
    } else {
        RunOutcome::Succeeded
    };
    let run = LastRun {
        tick_at: ScheduledTime::from_millis(done.tick),
        manual: done.manual,
        outcome,
        error: done.error,
    };
    // A later tick's skip or start stays the latest news.
    if stored
        .last_run
        .as_ref()
        .is_none_or(|last| last.tick_at <= run.tick_at)
    {
        stored.last_run = Some(run);
    }
    ctx.engine
        .metrics()
        .schedule_runs
        .get_or_create(&crate::metrics::ScheduleOutcomeLabel {
            schedule: stored.spec.id.as_str().into(),
            outcome: if outcome == RunOutcome::Failed {
                "failed"
            } else {
                "succeeded"
            },
        })
        .inc();
    stored.start_queued(ctx);
    object.set(STATE, stored);
    Ok(())
}

async fn pause(ctx: &InvocationContext) -> Result<Option<ScheduleView>, HandlerError> {
    let object = ObjectContext::from_invocation(ctx);
    let Some(mut stored) = object.get::<Stored>(STATE).await? else {
        return Ok(None);
    };
    if !stored.paused {
        stored.paused = true;
        stored.generation += 1;
        stored.next_fire = None;
        stored.show_next_fire(ctx);
        object.set(STATE, stored.clone());
    }
    Ok(Some(stored.view()))
}

async fn resume(ctx: &InvocationContext) -> Result<Option<ScheduleView>, HandlerError> {
    let object = ObjectContext::from_invocation(ctx);
    let Some(mut stored) = object.get::<Stored>(STATE).await? else {
        return Ok(None);
    };
    if stored.paused {
        let now = now_ms(object.now().await?);
        let times = stored.times()?;
        stored.paused = false;
        stored.arm(ctx, &times, now, now);
        stored.start_queued(ctx);
        object.set(STATE, stored.clone());
    }
    Ok(Some(stored.view()))
}

async fn trigger(ctx: &InvocationContext) -> Result<Option<TriggerOutcome>, HandlerError> {
    let object = ObjectContext::from_invocation(ctx);
    let Some(mut stored) = object.get::<Stored>(STATE).await? else {
        return Ok(None);
    };
    let now = now_ms(object.now().await?);
    let at = stored.last_trigger.map_or(now, |last| now.max(last + 1));
    stored.last_trigger = Some(at);
    let outcome = stored.fire(ctx, at, true);
    object.set(STATE, stored);
    Ok(Some(outcome))
}

/// What a delete through the API answers: whether the schedule existed, or why it refused (a
/// schedule that code declares goes when its declaration goes).
pub(crate) type DeleteOutcome = Result<bool, String>;

/// Deletes the schedule whatever its origin: start-up's for one no longer declared.
async fn delete(ctx: &InvocationContext) -> Result<bool, HandlerError> {
    let object = ObjectContext::from_invocation(ctx);
    let Some(stored) = object.get::<Stored>(STATE).await? else {
        return Ok(false);
    };
    remove(ctx, &object, stored).await?;
    Ok(true)
}

/// Deletes the schedule unless code declares it: decided under the key, so no start-up
/// creating the declared one can come between the check and the delete.
async fn delete_unless_declared(ctx: &InvocationContext) -> Result<DeleteOutcome, HandlerError> {
    let object = ObjectContext::from_invocation(ctx);
    let Some(stored) = object.get::<Stored>(STATE).await? else {
        return Ok(Ok(false));
    };
    if stored.origin == ScheduleOrigin::Code {
        return Ok(Err(format!(
            "schedule `{}` is declared with `#[handler(cron = ..)]`: remove the declaration \
             from the code to delete it, or pause it",
            stored.spec.id
        )));
    }
    remove(ctx, &object, stored).await?;
    Ok(Ok(true))
}

async fn remove(
    ctx: &InvocationContext,
    object: &ObjectContext<'_>,
    stored: Stored,
) -> Result<(), HandlerError> {
    let remove = crate::client::parts(
        INDEX,
        Some(INDEX_KEY),
        "remove",
        encode_json(&stored.spec.id),
    );
    ctx.call::<()>(remove).await?;
    object.clear(STATE);
    object.set(TOMBSTONE, stored.generation);
    ctx.engine.metrics().forget_schedule(&stored.spec.id);
    Ok(())
}

/// A tick's run: calls the target (the tick's time in the idempotency key), then reports
/// how it went to the schedule's exclusive handler. Shared, so the schedule's ticks, pauses
/// and deletes go on while a long run waits.
async fn run(ctx: &InvocationContext, run: RunInput) -> Result<(), HandlerError> {
    let id = SharedObjectContext::from_invocation(ctx).key().to_owned();
    let body = match &run.input {
        ScheduleInput::None => Ok(Bytes::new()),
        ScheduleInput::Json(value) => encode_json(value),
        ScheduleInput::Tick => encode_json(&ScheduledTime::from_millis(run.tick)),
    };
    let mut call = crate::client::parts(&run.service, run.key.as_deref(), &run.handler, body);
    call.idempotency_key = Some(run_key(&id, run.tick, run.manual, run.incarnation));
    let result = ctx.call::<serde::de::IgnoredAny>(call).await;
    let done = Finished {
        incarnation: run.incarnation,
        tick: run.tick,
        manual: run.manual,
        error: result.err().map(|e| e.to_string()),
    };
    ctx.send(to_self(&id, "finished", &done), None);
    Ok(())
}

/// The index holds one state entry per schedule id: adding and removing one is a small write
/// whatever the number of schedules.
async fn index_add(ctx: &InvocationContext, id: String) -> Result<(), HandlerError> {
    ObjectContext::from_invocation(ctx).set(&id, true);
    Ok(())
}

async fn index_remove(ctx: &InvocationContext, id: String) -> Result<(), HandlerError> {
    ObjectContext::from_invocation(ctx).clear(&id);
    Ok(())
}

fn decode<T: DeserializeOwned + Serialize + 'static>(
    bytes: &[u8],
    ctx: &InvocationContext,
) -> Result<T, HandlerError> {
    input::<T>().decode(bytes, ctx)
}

/// One internal handler's definition: reachable only from inside the process, retried
/// forever (a schedule must not stop on a failure: see [`always_retried`]), kept `retention` once
/// done (ticks and runs not at all; what a caller waits for, long enough to be read).
fn handler<I: DeserializeOwned + Serialize + 'static>(
    name: &'static str,
    kind: HandlerKind,
    input_type: Option<&'static str>,
    output_type: &'static str,
    retention: std::time::Duration,
) -> HandlerDefinition {
    HandlerDefinition {
        name,
        kind,
        input_type,
        output_type,
        options: HandlerOptions {
            ingress_private: true,
            retry_policy: RetryPolicy::default().forever(),
            retention: Some(retention),
            ..HandlerOptions::default()
        },
        input: if input_type.is_some() {
            InputShape::Json
        } else {
            InputShape::None
        },
        check_input: input::<I>().check(),
    }
}

const ZERO: std::time::Duration = std::time::Duration::ZERO;
/// Long enough for a caller in another process to read the answer.
const ANSWER: std::time::Duration = std::time::Duration::from_secs(600);

async fn dispatch_schedule(
    name: &str,
    ctx: &InvocationContext,
    bytes: Bytes,
) -> Result<Bytes, HandlerError> {
    match name {
        "upsert" => output(upsert(ctx, decode(&bytes, ctx)?).await),
        "rearm" => output(rearm(ctx).await),
        "tick" => output(tick(ctx, decode(&bytes, ctx)?).await),
        "finished" => output(finished(ctx, decode(&bytes, ctx)?).await),
        "pause" => output(pause(ctx).await),
        "resume" => output(resume(ctx).await),
        "trigger" => output(trigger(ctx).await),
        "delete" => output(delete(ctx).await),
        "delete_unless_declared" => output(delete_unless_declared(ctx).await),
        "run" => output(run(ctx, decode(&bytes, ctx)?).await),
        other => Err(unknown_handler(SCHEDULE, other)),
    }
}

async fn dispatch_index(
    name: &str,
    ctx: &InvocationContext,
    bytes: Bytes,
) -> Result<Bytes, HandlerError> {
    match name {
        "add" => output(index_add(ctx, decode(&bytes, ctx)?).await),
        "remove" => output(index_remove(ctx, decode(&bytes, ctx)?).await),
        other => Err(unknown_handler(INDEX, other)),
    }
}

/// `restate.Schedule`.
pub(crate) struct ScheduleObject;

impl Service for ScheduleObject {
    fn definition() -> ServiceDefinition {
        use HandlerKind::{Exclusive, Shared};
        ServiceDefinition {
            name: SCHEDULE,
            kind: ServiceKind::VirtualObject,
            handlers: vec![
                handler::<Upsert>("upsert", Exclusive, Some("Upsert"), "UpsertOutcome", ANSWER),
                handler::<()>("rearm", Exclusive, None, "()", ZERO),
                handler::<TickInput>("tick", Exclusive, Some("Tick"), "()", ZERO),
                handler::<Finished>("finished", Exclusive, Some("Finished"), "()", ZERO),
                handler::<()>("pause", Exclusive, None, "Option<ScheduleView>", ANSWER),
                handler::<()>("resume", Exclusive, None, "Option<ScheduleView>", ANSWER),
                handler::<()>("trigger", Exclusive, None, "Option<TriggerOutcome>", ANSWER),
                handler::<()>("delete", Exclusive, None, "bool", ANSWER),
                handler::<()>(
                    "delete_unless_declared",
                    Exclusive,
                    None,
                    "DeleteOutcome",
                    ANSWER,
                ),
                handler::<RunInput>("run", Shared, Some("Run"), "()", ZERO),
            ],
        }
    }

    fn invoke<'a>(
        &'a self,
        name: &'a str,
        ctx: &'a InvocationContext,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, HandlerError>> {
        Box::pin(async move { always_retried(dispatch_schedule(name, ctx, bytes).await) })
    }
}

/// `restate.ScheduleIndex`.
pub(crate) struct ScheduleIndex;

impl Service for ScheduleIndex {
    fn definition() -> ServiceDefinition {
        ServiceDefinition {
            name: INDEX,
            kind: ServiceKind::VirtualObject,
            handlers: vec![
                handler::<String>("add", HandlerKind::Exclusive, Some("String"), "()", ZERO),
                handler::<String>("remove", HandlerKind::Exclusive, Some("String"), "()", ZERO),
            ],
        }
    }

    fn invoke<'a>(
        &'a self,
        name: &'a str,
        ctx: &'a InvocationContext,
        bytes: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, HandlerError>> {
        Box::pin(async move { always_retried(dispatch_index(name, ctx, bytes).await) })
    }
}
