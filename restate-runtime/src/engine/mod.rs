//! The engine: invocation lifecycle (submit, run, retry, pause, complete), idempotency,
//! attach, delayed starts, recovery and retention. It knows nothing of HTTP.

mod awakeables;
mod claims;
mod control;
mod delayed;
mod drain;
mod end_sends;
mod execute;
mod forward;
mod handover;
mod inflight;
mod injected;
mod interrupted;
mod journal;
mod lanes;
mod memory;
mod ownership;
mod promises;
mod recovery;
mod reference;
mod replay_check;
mod restart;
mod slots;
mod stored_counts;
mod suspend;
pub(crate) mod tasks;
mod timers;
mod wake;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

pub(crate) use awakeables::AwakeableSubmission;
pub(crate) use claims::Claim;
pub(crate) use control::Acted;
pub use control::ControlError;
pub use drain::DrainStatus;
pub(crate) use forward::{RELAYED_RETENTION, RelayTo};
pub(crate) use handover::UndrainError;
pub use inflight::Completed;
pub(crate) use inflight::{Finish, Inflight, WaitEnd, wait_finished, wait_finished_or_idle};
pub(crate) use injected::InjectedFaults;
pub use injected::RunFault;
pub(crate) use interrupted::DEFAULT_MAX_INTERRUPTED_ATTEMPTS;
pub(crate) use journal::Journal;
pub(crate) use memory::release_free_heap;
pub(crate) use recovery::DEFAULT_RECOVERY_CONCURRENCY;
pub use reference::EngineRef;
pub(crate) use stored_counts::{LimiterDepth, Unfinished};
pub(crate) use wake::Completion;

use crate::clock::{Clock, now_ms};
use crate::ids::{InvocationId, partition_key_of};
use crate::maps::{FastMap, FastSet};
use crate::registry::{HandlerDefinition, HandlerKind, RegisteredService, Registry};
use crate::storage::{
    InboxMessage, InvocationRecord, JournalEntry, Outcome, StateScope, Status, Storage,
    StorageError, Target, WriteOp,
};

/// Errors of the engine, as adapters (ingress, clients) map them.
///
/// ```no_run
/// use restate_runtime::{ClientError, EngineError, prelude::*};
/// # #[derive(Default)]
/// # pub struct Signup;
/// # #[workflow]
/// # impl Signup {
/// #     #[handler]
/// #     async fn run(&self, _ctx: WorkflowContext<'_>, email: String) -> HandlerResult<String> { Ok(email) }
/// # }
/// # async fn demo(handle: RuntimeHandle) -> anyhow::Result<()> {
/// let signup = handle.workflow::<Signup>("ada");
/// let outcome: String = match signup.run("ada@example.com".into()).call().await {
///     // `run` already started for this key: its send gives that invocation's handle.
///     Err(ClientError::Engine(EngineError::WorkflowAlreadyInvoked)) => {
///         let existing = signup.run("ada@example.com".into()).send().await?;
///         handle.attach(existing).await?
///     }
///     other => other?,
/// };
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// No such service.
    #[error("service '{0}' not found, make sure to register the service before calling it.")]
    UnknownService(String),
    /// The service exists but has no such handler.
    #[error("the service '{service}' exists, but the handler '{handler}' was not found")]
    UnknownHandler {
        /// The service's name.
        service: String,
        /// The handler name that was asked for.
        handler: String,
    },
    /// A keyed service was called without a key, or a service with one.
    #[error("{0}")]
    BadTarget(String),
    /// Storage failed; nothing was acknowledged.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The invocation could not finish (storage failure or shutdown).
    #[error("invocation lost: {0}")]
    Lost(String),
    /// The wait for an invocation that was accepted ended before its result: the process is
    /// shutting down. It may still run (a stored invocation goes on after a restart, or in the
    /// process that runs its partition), so its caller attaches to `id` for the result
    /// instead of sending the request again.
    #[error(
        "invocation {id} did not finish here: {reason}. It was accepted and goes on (after a \
         restart if need be): attach to it (GET /restate/invocation/{id}/attach) for its \
         result rather than sending the request again"
    )]
    Unfinished {
        /// The invocation to attach to.
        id: InvocationId,
        /// Why the wait ended.
        reason: String,
    },
    /// A request-response call of a workflow's `run` for a key that already has one.
    #[error("the workflow method was already invoked")]
    WorkflowAlreadyInvoked,
    /// New work from outside refused for now: the invocations in memory already hold as many
    /// input bytes as allowed (`RESTATE_MAX_INVOCATION_BYTES`). Nothing was written; retry later.
    #[error("{0}")]
    Overloaded(String),
}

/// Refuses a key for a service without keys, and no key for an object or a workflow.
pub(crate) fn key_fits(service: &RegisteredService, keyed: bool) -> Result<(), EngineError> {
    let (name, kind) = (service.definition.name, service.definition.kind);
    match (kind.is_keyed(), keyed) {
        (true, false) => Err(EngineError::BadTarget(format!(
            "'{name}' is a {} and needs a key",
            kind.as_str()
        ))),
        (false, true) => Err(EngineError::BadTarget(format!(
            "'{name}' is a service and has no keys: leave the key out"
        ))),
        _ => Ok(()),
    }
}

/// Ends the wait of whoever waits on an invocation with `finish`, unless it has ended (a
/// result, or an earlier word that it is lost or unfinished, is not taken back).
pub(crate) fn end_wait(finisher: &watch::Sender<Finish>, finish: Finish) {
    finisher.send_if_modified(|now| match now {
        Finish::Pending | Finish::Idle => {
            *now = finish;
            true
        }
        _ => false,
    });
}

/// What a wait on an engine stopped for good is told.
fn abandoned() -> EngineError {
    EngineError::Lost("the runtime has shut down".into())
}

/// Refuses an idempotency key on a workflow's run, as Restate does: the run is idempotent by
/// its workflow key already, and a second key beside it would be silently ignored.
pub(crate) fn check_idempotency_key(
    workflow_run: bool,
    key: Option<&str>,
) -> Result<(), EngineError> {
    match (workflow_run, key) {
        (true, Some(_)) => Err(EngineError::BadTarget(
            "cannot use the idempotency key with workflow handlers. The handler invocation will \
             already be idempotent by the workflow key itself."
                .into(),
        )),
        _ => Ok(()),
    }
}

/// An invocation in a listing.
pub(crate) type Listed = (InvocationId, InvocationRecord);

/// An invocation's record and its journal entries by index.
pub(crate) type Inspection = (InvocationRecord, Vec<(u32, JournalEntry)>);

/// A request to start an invocation.
#[derive(Debug, Clone)]
pub(crate) struct InvokeRequest {
    pub target: Target,
    pub input: Bytes,
    pub headers: Vec<(String, String)>,
    pub idempotency_key: Option<String>,
    pub delay: Option<Duration>,
    /// The id another process of a shared store gave it when it relayed the call here
    /// ([`Engine::relay_target`]), or when its relay failed and it went through the inbox: an
    /// invocation of it may exist already, the relay's or its retry's.
    pub relayed: Option<InvocationId>,
}

/// What submitting found or created.
pub(crate) enum Submission {
    /// A new invocation (or an existing one still running, for a duplicate), with a receiver
    /// of its end subscribed while it was found (a suspension cannot drop the channel first).
    Running {
        inflight: Arc<Inflight>,
        new: bool,
        finish: watch::Receiver<Finish>,
    },
    /// A duplicate of an unfinished invocation that is not in memory (suspended): it is
    /// stored, and its result is waited for as an attach does.
    Stored,
    /// A duplicate of an invocation that already finished.
    Finished(Arc<Completed>),
}

/// A submitted invocation.
pub(crate) struct Submitted {
    pub id: InvocationId,
    pub submission: Submission,
    /// When it will run, if delayed (ms since the epoch).
    pub execution_time_ms: Option<u64>,
    /// It is a workflow's `run` (one per key).
    pub workflow_run: bool,
}

/// A new invocation's id and record, before anything is submitted.
struct Prepared {
    id: InvocationId,
    record: InvocationRecord,
    execution_time_ms: Option<u64>,
    workflow_run: bool,
    /// Its id was given by a relaying process.
    relayed: bool,
}

impl Prepared {
    /// Its id is its key's (an idempotency key's, a workflow run's) or a relayed call's: it
    /// may exist already.
    fn derived(&self) -> bool {
        self.record.idempotency_key.is_some() || self.workflow_run || self.relayed
    }
}

/// A derived id's store read made before its claim was taken ([`Engine::look`]).
struct Looked {
    /// Creations in the id's slot when the read began.
    creations: u64,
    record: Option<InvocationRecord>,
}

/// How `/send` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    /// A new invocation.
    Accepted,
    /// A duplicate of an earlier one (same idempotency key).
    PreviouslyAccepted,
}

/// The state of an invocation for `output`.
pub(crate) enum OutputState {
    NotFound,
    NotReady,
    Done(Arc<Completed>),
}

impl OutputState {
    /// What a handler's journal records of invocation `id` in this state: its outcome, a
    /// 404 if it is unknown, nothing while it runs.
    pub(crate) fn outcome(&self, id: InvocationId) -> Option<Outcome> {
        match self {
            Self::Done(done) => Some(done.outcome.clone()),
            Self::NotReady => None,
            Self::NotFound => Some(Outcome::Failure {
                code: 404,
                message: format!("invocation {id} not found"),
            }),
        }
    }
}

/// Where a handler's new invocation is ([`Engine::submit_recorded`]).
pub(crate) enum Created<'a> {
    /// In this process, with the claim of a new one of a derived id.
    Here(Submitted, Option<Claim<'a>>),
    /// In a partition another process runs: its id, and the message that creates it there
    /// (or finds the one its id names), written with the handler's entry.
    Elsewhere(InvocationId, WriteOp),
}

/// A handler's new invocation created through the inbox of its partition.
fn forwarded<'a>(prepared: Prepared) -> Created<'a> {
    let id = prepared.id;
    let message = InboxMessage::Invoke(Box::new(prepared.record));
    Created::Elsewhere(id, WriteOp::forward(id, &message))
}

/// Where new work comes from: outside (refused while the disk is nearly full) or a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// `one_way`: a send, whose answer says whether it was the first.
    Outside {
        one_way: bool,
    },
    Handler,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub(crate) struct EngineConfig {
    pub default_retention: Duration,
    /// Shortest retention by service, then handler: webhooks keep their event ids for as
    /// long as senders redeliver.
    pub min_retention: HashMap<String, HashMap<String, Duration>>,
    pub purge_interval: Duration,
    /// How long a handler may wait (timer, call, awakeable, promise) before it is suspended.
    pub suspend_after: Duration,
    /// Gives freed heap back to the OS after a burst (the global allocator's own way).
    pub release_heap: fn(),
    /// Called once the store has failed (law 10); the default ends the process.
    pub on_storage_failure: fn(&str),
    /// Invocations brought back from disk that may be in memory at once: restored after a
    /// restart, or woken by their timers.
    pub recovery_concurrency: usize,
    /// Attempts in a row the process may end during before an invocation is paused (0: never).
    pub max_interrupted_attempts: u32,
    /// Input bytes of the invocations in memory above which new work from outside is refused.
    pub max_invocation_bytes: usize,
    /// How far ahead timers are held in memory; later ones wait in the store's due index.
    pub timer_window: Duration,
    /// Recorded on every invocation accepted here.
    pub app_version: String,
    /// A replay check's engine: handlers replay their journals and stop where the journal
    /// ends, writing nothing.
    pub replay_check: bool,
    /// Rate limits by name, configured at run time (they win over a handler's `rate(..)`).
    pub rate_limits: HashMap<String, crate::RateLimit>,
    /// Concurrency limits by name, configured at run time (the builder, then the admin API).
    pub concurrency_limits: Arc<crate::concurrency::ConcurrencyLimits>,
    /// What "now" is: the wall clock, or a test's virtual clock.
    pub clock: Clock,
    /// Under a test runtime: counts what runs, to tell when nothing can.
    pub activity: Option<Arc<tasks::Activity>>,
    /// Under a test runtime: failures injected into `ctx.run` steps.
    pub injected: Option<Arc<InjectedFaults>>,
}

/// What a test runtime plugs into an engine (a real runtime: the wall clock and nothing else).
#[derive(Debug, Clone, Default)]
pub(crate) struct EngineHooks {
    pub clock: Clock,
    pub activity: Option<Arc<tasks::Activity>>,
    pub injected: Option<Arc<InjectedFaults>>,
}

/// Default of [`EngineConfig::timer_window`].
pub(crate) const DEFAULT_TIMER_WINDOW: Duration = Duration::from_secs(60);

/// Exit status of a process stopped by a storage failure (`EX_IOERR`), for supervisors that
/// tell it from a crash.
///
/// ```
/// assert_eq!(restate_runtime::STORAGE_FAILURE_EXIT_CODE, 74);
/// ```
pub const STORAGE_FAILURE_EXIT_CODE: i32 = 74;

/// The default reaction to a failed commit, sync or writer: log why and end the process at once
/// with [`STORAGE_FAILURE_EXIT_CODE`]. Nothing was acknowledged after the failure; a restart
/// recovers from what is durable (law 10). A custom reaction can end with it:
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// fn flush_then_exit(reason: &str) {
///     // e.g. flush an external log sink first
///     restate_runtime::exit_on_storage_failure(reason);
/// }
/// let runtime = restate_runtime::Runtime::builder()
///     .on_storage_failure(flush_then_exit)
///     .build()?;
/// # Ok(()) }
/// ```
pub fn exit_on_storage_failure(reason: &str) {
    let line = format!(
        "storage failed, stopping the process (a restart recovers from the journal): {reason}"
    );
    if tracing::dispatcher::has_been_set() {
        tracing::error!("{line}");
    } else {
        eprintln!("{line}");
    }
    std::process::exit(STORAGE_FAILURE_EXIT_CODE);
}

/// Waits for the store to fail, then hands the reason to the configured reaction.
async fn watch_storage(engine: Engine) {
    let mut failure = engine.storage.failure();
    let mut shutdown = engine.shutdown_signal();
    let reason = tokio::select! {
        failed = failure.wait_for(Option::is_some) => match failed {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => return,
        },
        _ = shutdown.wait_for(|stop| *stop) => return,
    };
    engine.storage_failed(&reason);
}

pub(crate) struct EngineInner {
    storage: Arc<dyn Storage>,
    registry: Registry,
    config: EngineConfig,
    inflight: Mutex<FastMap<InvocationId, Arc<Inflight>>>,
    /// Who may create the invocation of a derived id (idempotency or workflow key) now.
    claims: claims::Claims,
    /// The finish channel of every unfinished invocation somebody waits on, in memory or not
    /// (a suspended invocation has no `Inflight`, but attachers still wait on it).
    finishers: Mutex<FastMap<InvocationId, watch::Sender<Finish>>>,
    /// Per (object, key): the exclusive invocation running and those queued behind it.
    lanes: Mutex<FastMap<StateScope, lanes::Lane>>,
    /// Idle lanes waiting to be dropped once their writes are durable.
    idle_lanes: Mutex<lanes::IdleLanes>,
    /// Writes through the lanes so far: each write's number is its lane's epoch.
    lane_writes: AtomicU64,
    /// Last arrival sequence number handed out.
    seq: AtomicU64,
    timers: timers::Timers,
    promise_waiters: promises::PromiseWaiters,
    awakeables: awakeables::CompletingAwakeables,
    /// Invocations that may have durable result waiters (attaches, duplicate calls): only
    /// their completion reads the store for them, not every completion.
    result_sources: Mutex<FastSet<InvocationId>>,
    metrics: crate::metrics::Metrics,
    shutdown: watch::Sender<bool>,
    /// The store's secret: awakeable ids and random seeds are MACs under it.
    secret: [u8; 32],
    /// Input bytes held by the invocations that run or wait to run on their key (not those
    /// delayed, paused or suspended).
    held_input: Arc<std::sync::atomic::AtomicUsize>,
    /// This engine's number in the table of [`EngineRef`]s, once one was asked for.
    reference: std::sync::OnceLock<u64>,
    /// The partitions whose invocations it runs, and those it is recovering to run. Work for
    /// the others (all of them at a standby on a shared database) is forwarded to their
    /// owner's inbox.
    held: std::sync::RwLock<ownership::Held>,
    /// Bumped when partitions leave this process: the tasks of their invocations stop.
    departures: watch::Sender<u64>,
    /// Notified when partitions join: the inbox is read again at once (what was forwarded to
    /// them while they were recovered waited there).
    joined: tokio::sync::Notify,
    /// Invocations of partitions that left whose tasks may still be running: a partition
    /// that comes back is recovered only once they have stopped.
    departed: Mutex<Vec<Arc<Inflight>>>,
    /// The store is shared with other processes (it has an inbox).
    shared_store: bool,
    /// Stopped for good (`abandon`): nothing more is taken in, nothing waited on answered.
    abandoned: AtomicBool,
    tasks: tasks::Tasks,
    /// Whether attempts may start, and how many run.
    pub(crate) drain: drain::Drain,
    /// A drained process's lease on a shared database.
    handover: handover::Handover,
    /// The latest count of the store's unfinished invocations, for `/metrics`.
    stored_counts: stored_counts::CountCache,
    /// Rate limits' passes in this process, spaced again after waits that ended together.
    rate_pacers: crate::rate::Pacers,
}

/// Cheap handle to the engine.
#[derive(Clone)]
pub(crate) struct Engine(Arc<EngineInner>);

impl std::ops::Deref for Engine {
    type Target = EngineInner;
    fn deref(&self) -> &EngineInner {
        &self.0
    }
}

impl Engine {
    /// Builds the engine, resumes what the store holds, and starts timers and the purger.
    /// Must run inside a tokio runtime.
    pub(crate) fn start(
        storage: Arc<dyn Storage>,
        registry: Registry,
        config: EngineConfig,
    ) -> Result<Self, EngineError> {
        let engine = Self::new(storage, registry, config);
        let mut owned = engine.storage.owned();
        let first = owned.borrow_and_update().clone();
        if !first.is_empty() {
            engine.run_partitions(&first)?;
        }
        // What the store offered back before this first set is not run here: it may go.
        engine.storage.left(&first);
        engine.tasks.spawn(ownership::follow(engine.clone(), owned));
        engine.tasks.spawn(memory::trim_loop(engine.clone()));
        engine.tasks.spawn(watch_storage(engine.clone()));
        Ok(engine)
    }

    /// The engine alone: nothing recovered, nothing started (a replay check's).
    pub(crate) fn new(storage: Arc<dyn Storage>, registry: Registry, config: EngineConfig) -> Self {
        let secret = storage.secret();
        let partitions = storage.partitions();
        let shared_store = storage.signals().is_some();
        let recovery_concurrency = config.recovery_concurrency;
        let config_activity = config.activity.clone();
        let metrics = crate::metrics::Metrics::default();
        for service in registry.definitions() {
            for handler in &service.handlers {
                metrics.declare_handler(service.name, handler.name);
            }
        }
        Self(Arc::new(EngineInner {
            storage,
            registry,
            config,
            inflight: Mutex::default(),
            claims: claims::Claims::default(),
            finishers: Mutex::default(),
            lanes: Mutex::default(),
            idle_lanes: Mutex::new(lanes::IdleLanes::default()),
            lane_writes: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            timers: timers::Timers::new(recovery_concurrency),
            promise_waiters: promises::PromiseWaiters::default(),
            awakeables: awakeables::CompletingAwakeables::default(),
            result_sources: Mutex::default(),
            metrics,
            shutdown: watch::channel(false).0,
            secret,
            held_input: Arc::default(),
            reference: std::sync::OnceLock::new(),
            held: std::sync::RwLock::new(ownership::Held::none(partitions)),
            departures: watch::channel(0).0,
            joined: tokio::sync::Notify::new(),
            departed: Mutex::default(),
            shared_store,
            abandoned: AtomicBool::new(false),
            tasks: tasks::Tasks::current(config_activity),
            drain: drain::Drain::default(),
            handover: handover::Handover::default(),
            stored_counts: stored_counts::CountCache::default(),
            rate_pacers: crate::rate::Pacers::default(),
        }))
    }

    /// The store under the engine.
    pub(crate) fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// State `name` of an object's `key` as committed, decoded (a value that does not decode
    /// as `T` reads as absent): the admin API's reads of the runtime's own objects.
    pub(crate) fn object_state<T: serde::de::DeserializeOwned>(
        &self,
        service: &str,
        key: &str,
        name: &str,
    ) -> Result<Option<T>, crate::storage::StorageError> {
        let scope = StateScope {
            service: service.to_owned(),
            key: key.to_owned(),
        };
        Ok(self
            .storage
            .state(&scope, name)?
            .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    /// The services it runs.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    pub(crate) fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Where its tasks run.
    pub(crate) fn tasks(&self) -> &tasks::Tasks {
        &self.tasks
    }

    /// Now, by the engine's clock (ms since the epoch).
    pub(crate) fn now_ms(&self) -> u64 {
        self.config.clock.now_ms()
    }

    /// The concurrency limits configured at run time.
    pub(crate) fn concurrency_limits(&self) -> &crate::concurrency::ConcurrencyLimits {
        &self.config().concurrency_limits
    }

    /// The rate limits' pacers of this process.
    pub(crate) fn rate_pacers(&self) -> &crate::rate::Pacers {
        &self.rate_pacers
    }

    pub(crate) fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Stops timers, retries and running handlers; they resume by replay after a restart.
    pub(crate) fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// The metric labels of the handler a target names (`None` for one not served here).
    pub(crate) fn handler_label(&self, target: &Target) -> Option<crate::metrics::HandlerLabel> {
        self.resolve(target)
            .ok()
            .map(|(service, handler)| crate::metrics::HandlerLabel {
                service: service.definition.name,
                handler: handler.name,
            })
    }

    /// Finds the service and handler a target names.
    pub(crate) fn resolve(
        &self,
        target: &Target,
    ) -> Result<(&RegisteredService, &HandlerDefinition), EngineError> {
        let service = self
            .registry
            .get(&target.service)
            .ok_or_else(|| EngineError::UnknownService(target.service.clone()))?;
        let handler = service.definition.handler(&target.handler).ok_or_else(|| {
            EngineError::UnknownHandler {
                service: target.service.clone(),
                handler: target.handler.clone(),
            }
        })?;
        key_fits(service, target.key.is_some())?;
        Ok((service, handler))
    }

    /// Creates an invocation for a handler whose journal entry records it (`caller` is set
    /// for a call), or finds the one an idempotency key already maps to. A new invocation of a
    /// derived id (an idempotency key's, a workflow run's) comes with its claim, to be dropped
    /// once that entry is queued with the invocation's record, or the invocation discarded
    /// because the entry was refused. A duplicate from elsewhere waits for the claim, so it
    /// never joins an invocation that is not recorded yet: it would be told "accepted" for one
    /// that a stopped caller then discards.
    ///
    /// One whose partition another process runs is created there: the message that does so
    /// is for the handler's entry to carry, and that process finds a duplicate (law 3 across
    /// processes).
    pub(crate) fn submit_recorded(
        &self,
        req: InvokeRequest,
        caller: Option<(InvocationId, u32)>,
    ) -> Result<Created<'_>, EngineError> {
        self.submit_from_handler(req, caller, false)
    }

    /// [`Self::submit_recorded`] for a one-way send: one to an object key that waits for no
    /// inbox read here, but is placed by its entry's commit, comes with its
    /// [`Placement`](crate::storage::Placement) set ([`Inflight::undecided_placement`]).
    pub(crate) fn submit_sent(&self, req: InvokeRequest) -> Result<Created<'_>, EngineError> {
        self.submit_from_handler(req, None, true)
    }

    fn submit_from_handler(
        &self,
        req: InvokeRequest,
        caller: Option<(InvocationId, u32)>,
        sent: bool,
    ) -> Result<Created<'_>, EngineError> {
        restart::refuse_reserved_key(&req)?;
        let prepared = self.prepare(req, caller)?;
        if self.elsewhere(&prepared.id) {
            return Ok(forwarded(prepared));
        }
        let placement = (sent && self.placed_by_commit(&prepared))
            .then(|| Arc::new(crate::storage::Placement::new(prepared.id)));
        if placement.is_none() && self.keyed_behind_inbox(&prepared)? {
            return Ok(forwarded(prepared));
        }
        let (submitted, claim) = self.submit_prepared(prepared, Origin::Handler, None)?;
        if let (
            Some(placement),
            Submission::Running {
                inflight,
                new: true,
                ..
            },
        ) = (placement, &submitted.submission)
        {
            inflight.set_placement(placement);
        }
        Ok(Created::Here(submitted, claim))
    }

    /// Whether a handler's new invocation is placed by the commit of its entry rather than
    /// after an inbox read made now (which holds the handler's thread for a round trip): a
    /// one-way send to an object key on a shared store, to start at once, of an id no other
    /// sender can name (the commit then only chooses between its record and an inbox message).
    fn placed_by_commit(&self, prepared: &Prepared) -> bool {
        self.shared_store
            && prepared.record.target.key.is_some()
            && prepared.execution_time_ms.is_none()
            && !prepared.derived()
    }

    /// Whether a handler's call or send to an object or workflow key that runs here must go
    /// through the inbox all the same: a message for that key, accepted first by another
    /// process, waits there (per-key order across processes, law 5).
    fn keyed_behind_inbox(&self, prepared: &Prepared) -> Result<bool, EngineError> {
        if !self.shared_store || prepared.record.target.key.is_none() {
            return Ok(false);
        }
        // A send to the key still being placed might go into the inbox: what this handler
        // makes after it follows it there.
        if self.placements_pending_on(&StateScope::of(&prepared.record.target)) {
            return Ok(true);
        }
        Ok(self.storage.inbox_pending(&prepared.id)?.partition)
    }

    /// [`Self::submit_recorded`] for work from outside any handler: a new invocation is refused while
    /// the disk is nearly full, a duplicate still gets its answer.
    /// A derived id's store read is made first, without blocking the thread ([`Self::look`]).
    async fn submit_from_outside(
        &self,
        req: InvokeRequest,
        one_way: bool,
    ) -> Result<Submitted, EngineError> {
        // Its creator makes the record durable before it answers, and a duplicate joining
        // it before then waits for that too: the claim can go now.
        self.submit_from_outside_claimed(req, one_way)
            .await
            .map(|(submitted, _claim)| submitted)
    }

    /// [`Self::submit_from_outside`] for a creator that queues more with the new invocation's
    /// record (a restart's copied journal): a new one of a derived id comes with its claim,
    /// to be dropped once that is queued (never held across an await).
    async fn submit_from_outside_claimed(
        &self,
        req: InvokeRequest,
        one_way: bool,
    ) -> Result<(Submitted, Option<Claim<'_>>), EngineError> {
        let prepared = self.prepare(req, None)?;
        let looked = match prepared.derived() {
            true => self.look(prepared.id).await?,
            false => None,
        };
        self.submit_prepared(prepared, Origin::Outside { one_way }, looked)
    }

    /// What the store holds for a derived id, read without blocking this thread and without
    /// any lock: `None` when it is in memory (read it there). The read stands under the id's
    /// claim if no invocation of its slot was created since (see `claims.rs`).
    async fn look(&self, id: InvocationId) -> Result<Option<Looked>, EngineError> {
        let creations = self.claims.creations(&id);
        // After the count: one created before it is in the map by now, or stored.
        if self
            .inflight
            .lock()
            .expect("inflight map")
            .contains_key(&id)
        {
            return Ok(None);
        }
        let record = self.storage.derived_invocation_async(&id).await?;
        Ok(Some(Looked { creations, record }))
    }

    fn submit_prepared(
        &self,
        prepared: Prepared,
        origin: Origin,
        looked: Option<Looked>,
    ) -> Result<(Submitted, Option<Claim<'_>>), EngineError> {
        // The id is its key's: an invocation of it may exist, in memory or on disk. The claim
        // keeps other creators of the id out while the store is read, outside the in-flight
        // lock (a read must not hold up every start and end); what leaves memory meanwhile
        // was stored first (a completion, a suspension) or never (a lost one, created anew).
        let claim = prepared.derived().then(|| self.claims.of(&prepared.id));
        let submitted = self.submit_claimed(prepared, origin, looked)?;
        let new = matches!(submitted.submission, Submission::Running { new: true, .. });
        Ok((submitted, claim.filter(|_| new)))
    }

    /// [`Self::submit_prepared`] by a caller that holds the id's claim if it is derived.
    fn submit_claimed(
        &self,
        prepared: Prepared,
        origin: Origin,
        looked: Option<Looked>,
    ) -> Result<Submitted, EngineError> {
        let derived = prepared.derived();
        let Prepared {
            id,
            mut record,
            execution_time_ms,
            workflow_run,
            relayed,
        } = prepared;
        let running = |existing: &Arc<Inflight>| Submitted {
            id,
            submission: Submission::Running {
                inflight: existing.clone(),
                new: false,
                finish: existing.subscribe(),
            },
            execution_time_ms: scheduled_at(&existing.state().record.status),
            workflow_run,
        };
        if derived {
            // Joined under the map lock: a suspension, which drops a finish channel nobody
            // listens on under that lock, cannot drop this one between the look and the
            // subscription (the duplicate would wait on a channel its invocation no longer
            // sends on, forever).
            let map = self.inflight.lock().expect("inflight map");
            if let Some(existing) = map.get(&id) {
                return Ok(running(existing));
            }
            drop(map);
            let stored = match looked {
                Some(looked) if self.claims.creations(&id) == looked.creations => looked.record,
                _ => self.storage.invocation(&id)?,
            };
            let submission = match stored {
                Some(InvocationRecord {
                    status:
                        Status::Completed {
                            outcome,
                            expires_at_ms,
                            ..
                        },
                    ..
                }) => Some((
                    Submission::Finished(Arc::new(Completed {
                        outcome,
                        expires_at_ms,
                    })),
                    None,
                )),
                // Unfinished and not in memory: suspended or delayed. Never a second copy.
                Some(stored) => Some((Submission::Stored, scheduled_at(&stored.status))),
                None => None,
            };
            if let Some((submission, execution_time_ms)) = submission {
                return Ok(Submitted {
                    id,
                    submission,
                    execution_time_ms,
                    workflow_run,
                });
            }
        }
        let inflight = {
            let mut map = self.inflight.lock().expect("inflight map");
            // Under the lock that a partition's leave takes too: one that left since the
            // caller decided to take this in here gets nothing of it in memory.
            if self.elsewhere(&id) {
                return Err(ownership::moved());
            }
            // Under the lock `abandon` empties the map under: nothing taken in after it would
            // ever be answered (a `RuntimeHandle` kept past its runtime's shutdown). New work
            // from outside is refused once the engine stops too: nothing would run it here.
            let stopping = matches!(origin, Origin::Outside { .. }) && *self.shutdown.borrow();
            if stopping || self.abandoned.load(Ordering::SeqCst) {
                return Err(abandoned());
            }
            if derived && let Some(existing) = map.get(&id) {
                // Nothing should have since the read (creators hold the claim, loaders load
                // what the read saw); should something have, it is joined, never replaced.
                return Ok(running(existing));
            }
            // New work from outside waits for disk space and for memory; a handler's own calls
            // and sends are progress of work already accepted and commit into the reserve.
            if matches!(origin, Origin::Outside { .. }) {
                let refused = match self.admit_input(record.input.len()) {
                    Err(e) => Some(("input_bytes", e)),
                    Ok(()) => self.admit_storage().err(),
                };
                if let Some((reason, e)) = refused {
                    let label = crate::metrics::ReasonLabel { reason };
                    self.metrics.rejected.get_or_create(&label).inc();
                    return Err(e);
                }
            }
            self.metrics.accepted.inc();
            // Its arrival is now, under the lock, not before a read of the store: a request
            // on its key that came in meanwhile and ran first keeps its place after a restart.
            record.seq = self.next_seq();
            // A send's answer and a workflow run's say whether this request was the first:
            // another process may have accepted the same one at this moment and forwarded it.
            let first = match origin {
                Origin::Outside { one_way } if self.shared_store => {
                    workflow_run || (one_way && record.idempotency_key.is_some())
                }
                _ => false,
            };
            let acceptance = first.then(|| self.storage.first_acceptance(id)).flatten();
            let inflight = self.new_inflight(id, record, false, Journal::default());
            if relayed {
                inflight.relayed.store(true, Ordering::Relaxed);
            }
            if let Some(acceptance) = acceptance {
                inflight.set_acceptance(acceptance);
            }
            map.insert(id, inflight.clone());
            if derived {
                self.claims.created(&id);
            }
            inflight
        };
        Ok(Submitted {
            id,
            submission: Submission::Running {
                finish: inflight.subscribe(),
                inflight,
                new: true,
            },
            execution_time_ms,
            workflow_run,
        })
    }

    /// The id of an invocation of `req`: the one its idempotency key or workflow key names,
    /// or a fresh one (in its object key's partition).
    fn id_for(&self, req: &InvokeRequest, workflow_run: bool, now: u64) -> InvocationId {
        if let Some(id) = req.relayed {
            return id;
        }
        match (&req.idempotency_key, &req.target.key) {
            (_, Some(key)) if workflow_run => InvocationId::workflow(&req.target.service, key),
            (Some(key), _) => InvocationId::idempotent(
                &req.target.service,
                req.target.key.as_deref(),
                &req.target.handler,
                key,
            ),
            (None, key) => InvocationId::fresh(
                match key {
                    Some(key) => partition_key_of(&req.target.service, key),
                    // On a shared store, of a partition it runs (if it runs any): it is
                    // created here, not forwarded.
                    None if self.shared_store => self.owned().random_key(),
                    None => rand::random(),
                },
                now,
            ),
        }
    }

    /// Whether `req` is a duplicate (of an idempotency key or a workflow's run) that a drain
    /// can answer without running anything: a send of one that exists, a call of one that
    /// finished. A call of an unfinished one would wait for attempts the drain holds back.
    pub(crate) async fn answerable_while_draining(
        &self,
        req: &InvokeRequest,
        send: bool,
    ) -> Result<bool, EngineError> {
        let (_, handler) = self.resolve(&req.target)?;
        let workflow_run = handler.kind == HandlerKind::Workflow;
        if req.idempotency_key.is_none() && !workflow_run {
            return Ok(false);
        }
        // In memory (`None`): not finished, or not yet durably so.
        Ok(match self.look(self.id_for(req, workflow_run, 0)).await? {
            None => send,
            Some(Looked { record, .. }) => {
                record.is_some_and(|r| send || matches!(r.status, Status::Completed { .. }))
            }
        })
    }

    /// The id and record of a new invocation of `req` (nothing submitted yet).
    fn prepare(
        &self,
        req: InvokeRequest,
        caller: Option<(InvocationId, u32)>,
    ) -> Result<Prepared, EngineError> {
        let (_, handler) = self.resolve(&req.target)?;
        let now = self.now_ms();
        let execution_time_ms = req
            .delay
            .map(|d| now.saturating_add(crate::clock::millis(d)));
        // A workflow's run has one invocation per key, found like an idempotent one.
        let workflow_run = handler.kind == HandlerKind::Workflow;
        check_idempotency_key(workflow_run, req.idempotency_key.as_deref())?;
        let id = self.id_for(&req, workflow_run, now);
        let relayed = req.relayed.is_some();
        let mut headers = req.headers;
        crate::telemetry::trace_new(&req.target, &mut headers);
        let record = InvocationRecord {
            target: req.target,
            input: req.input.to_vec(),
            headers,
            idempotency_key: req.idempotency_key,
            status: match execution_time_ms {
                Some(at_ms) => Status::Scheduled { at_ms },
                None => Status::Runnable,
            },
            attempts: 0,
            last_error: None,
            created_at_ms: now,
            modified_at_ms: now,
            caller,
            // Numbered when it is put in memory (`submit_claimed`, an inbox's adoption): a
            // duplicate or a forwarded request never is, and a read may come between.
            seq: 0,
            cancel_requested: false,
            cancel_delivered: false,
            version: Some(self.config.app_version.clone()),
            retry: None,
            interrupted: None,
        };
        Ok(Prepared {
            id,
            record,
            execution_time_ms,
            workflow_run,
            relayed,
        })
    }

    /// An invocation in memory, with its finish channel and whether it holds its key.
    pub(crate) fn new_inflight(
        &self,
        id: InvocationId,
        record: InvocationRecord,
        persisted: bool,
        journal: Journal,
    ) -> Arc<Inflight> {
        let exclusive = self.is_exclusive(&record.target);
        Inflight::new(id, record, persisted, journal, self.finisher(id), exclusive)
    }

    /// Refuses a new invocation from outside whose input would take the bytes held by the
    /// invocations in memory over the bound: under a sustained overload, accepted work that
    /// runs behind would otherwise grow memory without limit.
    fn admit_input(&self, bytes: usize) -> Result<(), EngineError> {
        let held = self.held_input.load(Ordering::Relaxed);
        let max = self.config.max_invocation_bytes;
        if held > 0 && held + bytes > max {
            return Err(EngineError::Overloaded(format!(
                "too much work in progress: invocations in memory hold {held} bytes of input, \
                 the bound is {max} (RESTATE_MAX_INVOCATION_BYTES); retry after the time in \
                 Retry-After"
            )));
        }
        Ok(())
    }

    /// Refuses a new invocation from outside while the store's writer is behind (an
    /// overload: 429, like [`Self::admit_input`]) or its disk is nearly full (503); with the
    /// reason its refusal is counted under.
    fn admit_storage(&self) -> Result<(), (&'static str, EngineError)> {
        // A full disk first: it lasts, so a client told to retry in a second (a busy writer's
        // 429) would only be refused again.
        self.storage
            .admit_new_work()
            .map_err(|e| ("storage", e.into()))?;
        self.storage
            .writer_busy()
            .map_err(|busy| ("writer_queue", EngineError::Overloaded(busy.to_string())))
    }

    /// The writes that forget a finished invocation: its record, journal and idempotency key,
    /// and, for a workflow's `run`, the workflow's state and promises.
    pub(crate) fn forget_ops(&self, id: InvocationId, target: &Target) -> Vec<WriteOp> {
        let mut ops = Vec::with_capacity(3);
        if let Some(scope) = self.workflow_scope_of(target) {
            ops.push(WriteOp::ClearAllState {
                scope: scope.clone(),
            });
            ops.push(WriteOp::ClearPromises { scope });
        }
        ops.push(WriteOp::DeleteInvocation { id });
        ops
    }

    /// Runs a newly submitted invocation now, or arms its timer and lets it wait on disk.
    pub(crate) fn launch(&self, inflight: Arc<Inflight>, execution_time_ms: Option<u64>) {
        match execution_time_ms {
            Some(at) => self.launch_delayed(inflight, at),
            None => self.spawn(inflight),
        }
    }

    /// HMAC-SHA256 of `parts` under the store's secret.
    pub(crate) fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        crate::mac::hmac_sha256(&self.secret, parts)
    }

    /// A sequence number above every one handed out before, also across restarts.
    fn next_seq(&self) -> u64 {
        let floor = now_ms() * 1000;
        let prev = self
            .seq
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some(s.max(floor) + 1)
            })
            .expect("always updates");
        prev.max(floor) + 1
    }

    /// Takes `req` in here, or hands it back (`Err`) for the inbox of the process that runs
    /// its partition (also when that partition left while it was being taken in).
    async fn submit_or_route(
        &self,
        mut req: InvokeRequest,
        one_way: bool,
    ) -> Result<Result<Submitted, InvokeRequest>, EngineError> {
        restart::refuse_reserved_key(&req)?;
        loop {
            if self.request_behind_inbox(&req).await? {
                return Ok(Err(req));
            }
            let again = self.shared_store.then(|| req.clone());
            match self.submit_from_outside(req, one_way).await {
                Err(e) if ownership::is_moved(&e) => {
                    req = again.expect("only a shared store's partitions move");
                }
                submitted => return submitted.map(Ok),
            }
        }
    }

    /// Request-response: submit, run, and wait for the result.
    pub(crate) async fn call(
        &self,
        req: InvokeRequest,
    ) -> Result<(InvocationId, Arc<Completed>, bool), EngineError> {
        self.call_with(req, || {}).await
    }

    /// [`Self::call`], calling `idle` once the wait holds nothing that runs in this process:
    /// the invocation runs in another one (forwarded, or its partition moved), is stored
    /// already, or suspended or paused meanwhile (a request's slot under the in-flight cap is
    /// given back then, as an attach's).
    pub(crate) async fn call_with(
        &self,
        req: InvokeRequest,
        idle: impl FnOnce() + Send,
    ) -> Result<(InvocationId, Arc<Completed>, bool), EngineError> {
        // A relayed call without an idempotency key that finds its invocation made already
        // found its own relay's: no replay of another request.
        let own = req.relayed.is_some() && req.idempotency_key.is_none();
        let (id, done, replayed) = self.call_submitted(req, idle).await?;
        Ok((id, done, replayed && !own))
    }

    /// [`Self::call_with`], answering whether the invocation existed already.
    async fn call_submitted(
        &self,
        req: InvokeRequest,
        idle: impl FnOnce() + Send,
    ) -> Result<(InvocationId, Arc<Completed>, bool), EngineError> {
        // Over a failed store a call would wait for an attempt that never comes (a process
        // ends; a test runtime's crashed engine starts nothing): refused, as a send is by
        // its first write.
        if let Some(reason) = self.failed() {
            return Err(EngineError::Storage(StorageError::Poisoned(reason)));
        }
        let submitted = match self.submit_or_route(req, false).await? {
            Ok(submitted) => submitted,
            Err(req) => return self.call_forwarded(req, idle).await,
        };
        // As Restate: a workflow runs once per key; calling `run` again is a conflict (sends
        // answer PreviouslyAccepted, attach returns the result).
        if submitted.workflow_run
            && !matches!(submitted.submission, Submission::Running { new: true, .. })
        {
            return Err(EngineError::WorkflowAlreadyInvoked);
        }
        match submitted.submission {
            Submission::Finished(done) => Ok((submitted.id, done, true)),
            Submission::Stored => {
                // Stored, not in memory: nothing of it runs for this wait.
                idle();
                match self.attach(submitted.id).await? {
                    Some(done) => Ok((submitted.id, done, true)),
                    None => Err(EngineError::Lost("the invocation was purged".into())),
                }
            }
            Submission::Running {
                inflight,
                new,
                finish: rx,
            } => {
                let created = new.then(|| inflight.clone());
                if new {
                    self.launch(inflight, submitted.execution_time_ms);
                }
                let done = self.wait_or_follow(submitted.id, rx, true, idle).await?;
                // Another process took the same run in first and forwarded it: this call
                // is the second, whichever of the two ran it.
                if submitted.workflow_run && created.is_some_and(|c| c.accepted_second()) {
                    return Err(EngineError::WorkflowAlreadyInvoked);
                }
                Ok((submitted.id, done, !new))
            }
        }
    }

    /// One-way: answers once the invocation is durable.
    pub(crate) async fn send(
        &self,
        req: InvokeRequest,
    ) -> Result<(InvocationId, SendStatus, Option<u64>), EngineError> {
        let submitted = match self.submit_or_route(req, true).await? {
            Ok(submitted) => submitted,
            Err(req) => return self.send_forwarded(req).await,
        };
        let (status, inflight) = match submitted.submission {
            Submission::Finished(_) | Submission::Stored => {
                return Ok((
                    submitted.id,
                    SendStatus::PreviouslyAccepted,
                    submitted.execution_time_ms,
                ));
            }
            Submission::Running {
                inflight,
                new,
                finish,
            } => {
                // Nobody here waits for the result: a parked delayed invocation keeps no
                // finish channel for this one.
                drop(finish);
                let status = if new {
                    SendStatus::Accepted
                } else {
                    SendStatus::PreviouslyAccepted
                };
                (status, inflight)
            }
        };
        let durable = if status == SendStatus::Accepted && submitted.execution_time_ms.is_none() {
            // Let a quick handler run first: if it finishes before this task resumes, its
            // completion carries the record, and the 202 waits for one commit instead of two.
            self.spawn(inflight.clone());
            self.tasks().yield_now().await;
            inflight.make_durable(self.storage.as_ref())
        } else {
            let durable = inflight.make_durable(self.storage.as_ref());
            if status == SendStatus::Accepted {
                self.launch(inflight.clone(), submitted.execution_time_ms);
            }
            durable
        };
        durable.await?;
        // Another process took the same request in first and forwarded it.
        let status = match inflight.accepted_second() {
            true => SendStatus::PreviouslyAccepted,
            false => status,
        };
        if submitted.execution_time_ms.is_some() {
            // Parked already, maybe: its finish channel goes unless someone attached.
            drop(inflight);
            self.drop_finisher_if_idle(&submitted.id);
        }
        Ok((submitted.id, status, submitted.execution_time_ms))
    }

    /// Waits for an invocation's result; `None` when it is unknown.
    pub(crate) async fn attach(
        &self,
        id: InvocationId,
    ) -> Result<Option<Arc<Completed>>, EngineError> {
        // As a call: nothing would finish what it waits for.
        if let Some(reason) = self.failed() {
            return Err(EngineError::Storage(StorageError::Poisoned(reason)));
        }
        if self.shared_store && !self.runs(&id) {
            return self.wait_stored(id).await;
        }
        self.attach_local(id, true).await
    }

    /// Waits on an invocation this process runs. When its partition leaves meanwhile and
    /// `follow`, the wait follows it: once what this process wrote before the leave is
    /// decided, an invocation found stored is finished by the process that runs the partition
    /// now, and its result is read from the shared store (a call that took effect is not
    /// answered as lost). One not found stored left with its partition: the wait is lost.
    async fn wait_or_follow(
        &self,
        id: InvocationId,
        rx: watch::Receiver<Finish>,
        follow: bool,
        idle: impl FnOnce(),
    ) -> Result<Arc<Completed>, EngineError> {
        let mut idle = Some(idle);
        let waits = || idle.take().into_iter().for_each(|idle| idle());
        match wait_finished_or_idle(rx, waits).await {
            Ok(done) => Ok(done),
            Err(WaitEnd::Interrupted(reason)) => Err(EngineError::Unfinished { id, reason }),
            Err(WaitEnd::Moved) if follow && self.shared_store => {
                // Its new owner runs it: nothing of it runs here.
                idle.take().into_iter().for_each(|idle| idle());
                self.storage.submit(Vec::new()).await?;
                Box::pin(self.attach(id))
                    .await?
                    .ok_or_else(ownership::moved)
            }
            Err(end) => Err(end.into()),
        }
    }

    /// [`Self::attach`] in this process, which runs invocations, for a handler's attach or
    /// call: a leave of the partition ends the wait as lost here (the durable result waiter
    /// brings the result to the handler instead).
    pub(crate) async fn attach_here(
        &self,
        id: InvocationId,
    ) -> Result<Option<Arc<Completed>>, EngineError> {
        self.attach_local(id, false).await
    }

    /// [`Self::attach_here`], following the invocation when its partition leaves if `follow`.
    async fn attach_local(
        &self,
        id: InvocationId,
        follow: bool,
    ) -> Result<Option<Arc<Completed>>, EngineError> {
        // Subscribed under the map lock, so a suspension cannot drop the channel in between.
        let in_memory = self
            .inflight
            .lock()
            .expect("inflight map")
            .get(&id)
            .map(|f| f.subscribe());
        if let Some(rx) = in_memory {
            return self.wait_or_follow(id, rx, follow, || {}).await.map(Some);
        }
        // Not in memory: finished, suspended, or unknown. Subscribe before reading the store, so
        // a completion between the two is not missed (completion is durable before it is sent).
        let rx = self.finisher(id).subscribe();
        let outcome = match self.storage.invocation_async(&id).await? {
            Some(InvocationRecord {
                status:
                    Status::Completed {
                        outcome,
                        expires_at_ms,
                        ..
                    },
                ..
            }) => Some(Arc::new(Completed {
                outcome,
                expires_at_ms,
            })),
            // Its partition left between the check of `attach` and this finisher (a leave
            // signals only the finishers it finds): nobody would signal this one.
            Some(_) if self.shared_store && !self.runs(&id) => {
                drop(rx);
                self.drop_finisher_if_idle(&id);
                return match follow {
                    true => self.wait_stored(id).await,
                    false => Err(ownership::moved()),
                };
            }
            // `abandon` signals only the finishers it finds; this one came after it. Stored
            // and not finished, it goes on after a restart.
            Some(_) if self.abandoned.load(Ordering::SeqCst) => {
                drop(rx);
                self.drop_finisher_if_idle(&id);
                return Err(EngineError::Unfinished {
                    id,
                    reason: "the runtime has shut down".into(),
                });
            }
            Some(_) => return self.wait_or_follow(id, rx, follow, || {}).await.map(Some),
            None => None,
        };
        // Nothing to wait for: the channel made for this look goes with its receiver.
        drop(rx);
        self.drop_finisher_if_idle(&id);
        if outcome.is_none() && self.shared_store {
            // Accepted by another process and not applied yet, or applied since the read
            // above (its message leaves the inbox only after its record is stored): the
            // inbox, then the store again, say which, or that neither knows it.
            return self.wait_stored(id).await;
        }
        Ok(outcome)
    }

    /// The target of invocation `id` if it is in memory here and no cancel or kill is on its
    /// way to it (one that is will end without waiting for anything).
    pub(crate) fn target_in_memory(&self, id: &InvocationId) -> Option<Target> {
        let map = self.inflight.lock().expect("inflight map");
        let inflight = map.get(id)?;
        if inflight.kill_requested.load(Ordering::SeqCst) {
            return None;
        }
        let state = inflight.state();
        (!state.record.cancel_requested).then(|| state.record.target.clone())
    }

    /// Like [`output`](Self::output), for a handler's journal: also sees a result whose
    /// commit is still in flight (the handler's entry is queued after that commit, so it
    /// cannot become durable without it). `None` on a shared store for an invocation not in
    /// memory here: the store's answer may still change by this process's own writes in
    /// flight (its creation forwarded to another partition's inbox, or its result committing
    /// for a partition that has just left), so it is read with
    /// [`output_after_own_writes`](Self::output_after_own_writes).
    pub(crate) fn output_for_handler(
        &self,
        id: InvocationId,
    ) -> Result<Option<OutputState>, EngineError> {
        if !self.handed_over() {
            // Read under the map lock, which a completion holds from setting its status until
            // its commit is queued (the same lock order: map, then state), and a leave holds
            // as it takes the invocation out of memory.
            let map = self.inflight.lock().expect("inflight map");
            // One of a partition being recovered is the store's to say (memory may be behind).
            if let Some(f) = map.get(&id)
                && (!self.shared_store || self.runs(&id))
            {
                return Ok(Some(match &f.state().record.status {
                    Status::Completed {
                        outcome,
                        expires_at_ms,
                        ..
                    } => OutputState::Done(Arc::new(Completed {
                        outcome: outcome.clone(),
                        expires_at_ms: *expires_at_ms,
                    })),
                    _ => OutputState::NotReady,
                }));
            }
        }
        if self.shared_store {
            return Ok(None);
        }
        self.output(id).map(Some)
    }

    /// What the store says of `id`'s result once every write this process submitted before
    /// is decided, so that it includes them (and nothing in memory here, which may be stale).
    pub(crate) async fn output_after_own_writes(
        &self,
        id: InvocationId,
    ) -> Result<OutputState, EngineError> {
        self.storage.submit(Vec::new()).await?;
        self.stored_output(&id)
    }

    /// The result now, without waiting.
    pub(crate) fn output(&self, id: InvocationId) -> Result<OutputState, EngineError> {
        if let Some(f) = self.inflight(&id) {
            return Ok(match &*f.subscribe().borrow() {
                Finish::Done(done) => OutputState::Done(done.clone()),
                _ => OutputState::NotReady,
            });
        }
        self.stored_output(&id)
    }

    /// What the store says of `id`'s result.
    fn stored_output(&self, id: &InvocationId) -> Result<OutputState, EngineError> {
        let of = |record: InvocationRecord| {
            completion(record).map_or(OutputState::NotReady, OutputState::Done)
        };
        if let Some(record) = self.storage.invocation(id)? {
            return Ok(of(record));
        }
        if !self.shared_store {
            return Ok(OutputState::NotFound);
        }
        if self.waits_in_inbox(id)? {
            return Ok(OutputState::NotReady);
        }
        // Applied between the two reads? Its owner stores the record before it deletes the
        // message that created it.
        Ok(self
            .storage
            .invocation(id)?
            .map_or(OutputState::NotFound, of))
    }

    /// Whether `id` is not stored yet, but a message that creates it waits in its partition's
    /// inbox (another process accepted it; the one that runs the partition has not applied it).
    pub(crate) fn waits_in_inbox(&self, id: &InvocationId) -> Result<bool, EngineError> {
        Ok(self.shared_store && self.storage.inbox_pending(id)?.starts)
    }

    /// The record and journal of an invocation, in memory or stored.
    pub(crate) fn inspect(&self, id: &InvocationId) -> Result<Option<Inspection>, EngineError> {
        if let Some(f) = self.inflight(id) {
            let state = f.state();
            let journal = state.journal.iter().map(|(i, e)| (*i, e.clone())).collect();
            return Ok(Some((state.record.clone(), journal)));
        }
        match self.storage.invocation(id)? {
            Some(record) => Ok(Some((record, self.storage.journal(id)?))),
            None => Ok(None),
        }
    }

    /// The status an invocation is shown with ([`crate::filter::shown_status`]; an unfinished
    /// one's journal is read for it), or `backing-off` between its attempts.
    pub(crate) fn shown_status(
        &self,
        id: &InvocationId,
        record: &InvocationRecord,
    ) -> &'static str {
        if let Status::Scheduled { at_ms } = record.status
            && at_ms <= self.now_ms()
            && self.queued_on_key(id, record)
        {
            // Due, and waiting on disk for its key.
            return "pending";
        }
        if !matches!(record.status, Status::Suspended { .. } | Status::Runnable) {
            return record.status.name();
        }
        match self.inflight(id) {
            Some(f) => {
                let state = f.state();
                match state.retry_at_ms {
                    Some(_) => crate::filter::BACKING_OFF,
                    None => crate::filter::shown_status(record, state.journal.entries()),
                }
            }
            // Stored between attempts (after a restart, before it is loaded; or by another
            // process on a shared database).
            None if stored_retry_at_ms(record, self.now_ms()).is_some() => {
                crate::filter::BACKING_OFF
            }
            None => match self.storage.journal(id) {
                Ok(journal) => crate::filter::shown_status(record, &journal),
                Err(_) => record.status.name(),
            },
        }
    }

    /// Whether `id` waits on disk in its key's queue.
    fn queued_on_key(&self, id: &InvocationId, record: &InvocationRecord) -> bool {
        let Some(scope) = self.exclusive_scope_of(&record.target) else {
            return false;
        };
        let lanes = self.lanes.lock().expect("lanes");
        lanes.get(&scope).is_some_and(|lane| lane.queued_stored(id))
    }

    /// When the next attempt of an invocation between attempts starts (ms since the epoch).
    pub(crate) fn next_retry_at_ms(
        &self,
        id: &InvocationId,
        record: &InvocationRecord,
    ) -> Option<u64> {
        match self.inflight(id) {
            Some(inflight) => inflight.state().retry_at_ms,
            None => stored_retry_at_ms(record, self.now_ms()),
        }
    }

    /// A page of invocations matching `filter`, in id order after `after`; the second value is
    /// the cursor for the next page, given only while more match. In-memory state wins over
    /// the stored record, and those only in memory (a request-response invocation before its
    /// first durable effect, law 1) are listed in their place in the order.
    pub(crate) fn list(
        &self,
        filter: impl Fn(&InvocationId, &InvocationRecord) -> bool,
        after: Option<InvocationId>,
        limit: usize,
    ) -> Result<(Vec<Listed>, Option<InvocationId>), EngineError> {
        const CHUNK: usize = 512;
        debug_assert!(limit > 0, "an empty page would end the listing");
        let mut unstored = self.unstored_after(after).into_iter().peekable();
        let mut out = Vec::new();
        // One more match than a page holds tells that there are more (found from outside: a
        // page filled exactly gave a cursor to an empty one): the page ends before it.
        let take = |id: InvocationId, record: InvocationRecord, out: &mut Vec<Listed>| {
            if filter(&id, &record) {
                out.push((id, record));
            }
            (out.len() > limit).then(|| {
                out.pop();
                out.last().map(|(id, _)| *id)
            })
        };
        let mut stored_after = after;
        loop {
            let chunk = self.storage.invocations(stored_after, CHUNK)?;
            let exhausted = chunk.len() < CHUNK;
            for (id, stored) in chunk {
                stored_after = Some(id);
                while let Some(first) = unstored.next_if(|f| f.id < id) {
                    let record = first.state().record.clone();
                    if let Some(cursor) = take(first.id, record, &mut out) {
                        return Ok((out, cursor));
                    }
                }
                // Stored meanwhile: listed once, from here.
                unstored.next_if(|f| f.id == id);
                let record = match self.inflight(&id) {
                    Some(f) => f.state().record.clone(),
                    None => stored,
                };
                if let Some(cursor) = take(id, record, &mut out) {
                    return Ok((out, cursor));
                }
            }
            if exhausted {
                for f in unstored {
                    let record = f.state().record.clone();
                    if let Some(cursor) = take(f.id, record, &mut out) {
                        return Ok((out, cursor));
                    }
                }
                return Ok((out, None));
            }
        }
    }

    /// The invocations only in memory with an id after `after`, in id order (their records
    /// are copied only as a page takes them).
    fn unstored_after(&self, after: Option<InvocationId>) -> Vec<Arc<Inflight>> {
        if self.handed_over() {
            return Vec::new();
        }
        // Copied out first: a record is read under its own lock, never under the map's.
        let mut candidates: Vec<Arc<Inflight>> = self
            .inflight
            .lock()
            .expect("inflight map")
            .values()
            .filter(|f| after.is_none_or(|after| f.id > after))
            .cloned()
            .collect();
        candidates.retain(|f| !f.state().persisted);
        candidates.sort_unstable_by_key(|f| f.id);
        candidates
    }

    /// Current values for `/metrics`.
    pub(crate) fn metrics_snapshot(&self) -> crate::metrics::Snapshot {
        let mut by_status: HashMap<&'static str, i64> = HashMap::new();
        for f in self.inflight.lock().expect("inflight map").values() {
            *by_status.entry(f.state().record.status.name()).or_default() += 1;
        }
        let (queued, key_lanes, top_keys) = {
            let lanes = self.lanes.lock().expect("lanes");
            let mut queued = 0;
            let mut deepest: Vec<(i64, &StateScope)> = Vec::new();
            for (scope, lane) in lanes.iter() {
                let depth = lane.depth() as i64;
                queued += depth;
                if depth > 0 {
                    deepest.push((depth, scope));
                }
            }
            // The deepest queues only (a series per key would grow without bound), and only
            // they are copied while the lanes are locked.
            let order = |a: &(i64, &StateScope), b: &(i64, &StateScope)| {
                b.0.cmp(&a.0).then_with(|| a.1.key.cmp(&b.1.key))
            };
            if deepest.len() > crate::metrics::TOP_KEYS {
                deepest.select_nth_unstable_by(crate::metrics::TOP_KEYS, order);
                deepest.truncate(crate::metrics::TOP_KEYS);
            }
            deepest.sort_by(order);
            let top: Vec<(String, String, i64)> = deepest
                .into_iter()
                .map(|(depth, scope)| (scope.service.clone(), scope.key.clone(), depth))
                .collect();
            (queued, lanes.len() as i64, top)
        };
        let stats = self.storage.writer_stats();
        crate::metrics::Snapshot {
            app_version: self.config.app_version.clone(),
            drain: self.drain.status(),
            in_memory: by_status.into_iter().collect(),
            timers_pending: self.timers.len() as i64,
            timers_waiting_for_slot: self.timers.waiting_for_slot() as i64,
            timers_stored: self.storage.due_len().map_or(-1, |n| n as i64),
            queued_on_keys: queued,
            top_key_queues: top_keys,
            key_lanes,
            commits: stats.commits,
            commit_batches: stats.batches,
            commit_seconds: stats.commit_micros as f64 / 1e6,
            checkpoints: stats.checkpoints,
            checkpoint_seconds: stats.checkpoint_micros as f64 / 1e6,
            checkpoint_max_seconds: stats.checkpoint_max_micros as f64 / 1e6,
            checkpoint_wait_seconds: stats.checkpoint_wait_micros as f64 / 1e6,
            commit_bytes: stats.bytes,
            commit_latency: stats.commit_latency,
            queued_bytes: stats.queued_bytes as i64,
            held_input_bytes: self.held_input.load(Ordering::Relaxed) as i64,
            unfinished_stored: None,
            limiters: Vec::new(),
        }
    }

    pub(crate) fn inflight(&self, id: &InvocationId) -> Option<Arc<Inflight>> {
        // Handed over, what is left in memory is stale: the new owner's store says.
        if self.handed_over() {
            return None;
        }
        self.inflight.lock().expect("inflight map").get(id).cloned()
    }

    /// Drops `inflight` from the map, unless another copy took its place (one loaded from the
    /// store after this one left).
    fn forget(&self, inflight: &Arc<Inflight>) {
        let mut map = self.inflight.lock().expect("inflight map");
        if map
            .get(&inflight.id)
            .is_some_and(|f| Arc::ptr_eq(f, inflight))
        {
            map.remove(&inflight.id);
        }
    }

    /// [`Self::complete`] for one no task runs, claimed by marking it running (a kill, a
    /// cancel of one not started): the claim is given back once it ended (found from
    /// outside: one whose partition left while its end committed stayed "running" among the
    /// departed, whose tasks a partition's release waits for, so this process never released
    /// nor took a partition again).
    pub(crate) async fn complete_claimed(&self, inflight: &Arc<Inflight>, outcome: Outcome) {
        self.complete(inflight, outcome).await;
        inflight.running.store(false, Ordering::SeqCst);
    }

    /// Ends an invocation: result, caller's journal entry and expiry commit together.
    pub(crate) async fn complete(&self, inflight: &Arc<Inflight>, outcome: Outcome) {
        // One whose partition left is completed by its new owner; whoever marked it running
        // to complete it (a kill, a cancel of one not started) is done with it.
        if inflight.left.load(Ordering::SeqCst) {
            inflight.running.store(false, Ordering::SeqCst);
            return;
        }
        if inflight.finished.swap(true, Ordering::SeqCst) {
            return;
        }
        let result = match outcome {
            Outcome::Success(_) => "success",
            Outcome::Superseded { .. } => "superseded",
            _ => "failure",
        };
        self.metrics
            .completed
            .get_or_create(&crate::metrics::ResultLabel { result })
            .inc();
        let retention = {
            let state = inflight.state();
            let target = &state.record.target;
            // One lookup for the handler's metrics and its retention.
            let resolved = self.resolve(target).ok();
            if let Some((service, handler)) = resolved {
                let (service, handler) = (service.definition.name, handler.name);
                let seconds = self.now_ms().saturating_sub(state.record.created_at_ms) as f64 / 1e3;
                let label = crate::metrics::HandlerLabel { service, handler };
                self.metrics
                    .handler_duration
                    .get_or_create(&label)
                    .observe(seconds);
                let label = crate::metrics::HandlerResultLabel {
                    service,
                    handler,
                    result,
                };
                self.metrics.handler_completed.get_or_create(&label).inc();
                if result == "failure" {
                    let label = crate::metrics::HandlerLabel { service, handler };
                    self.metrics.handler_failed.get_or_create(&label).inc();
                }
            }
            let retention = resolved
                .and_then(|(_, h)| h.options.retention)
                .unwrap_or(self.config.default_retention);
            let floor = self
                .config
                .min_retention
                .get(&target.service)
                .and_then(|handlers| handlers.get(&target.handler));
            let retention = match floor {
                Some(floor) => retention.max(*floor),
                None => retention,
            };
            match inflight.relayed.load(Ordering::Relaxed) {
                true => retention.max(forward::RELAYED_RETENTION),
                false => retention,
            }
        };
        let now = self.now_ms();
        let expires_at_ms = now.saturating_add(crate::clock::millis(retention));
        // Attachers and duplicate callers recorded durably: completed in the same batch.
        let has_waiters = self
            .result_sources
            .lock()
            .expect("result sources")
            .remove(&inflight.id);
        let result_waiters = match has_waiters {
            false => Vec::new(),
            true => self
                .storage
                .result_waiters(Some(&inflight.id))
                .unwrap_or_else(|e| {
                    tracing::error!(invocation = %inflight.id, error = %e, "cannot read result waiters");
                    Vec::new()
                }),
        };
        // What its end sends on its behalf commits with it, however it ended; without them the
        // end is not recorded, and recovery ends it again.
        let (end_ops, end_sends, end_claims) = match self.end_sends(inflight) {
            Ok(sends) => sends,
            Err(reason) => return self.lose(inflight, reason),
        };
        let (callee_ops, callees) = match control::is_killed(&outcome) {
            true => self.kill_with(inflight),
            false => (Vec::new(), Vec::new()),
        };
        let pending = {
            let map = self.inflight.lock().expect("inflight map");
            let mut state = inflight.state();
            // Timers armed for its sleeps (a cancelled or killed sleeper) or its delayed start
            // have nothing to wake.
            let sleeps = state.journal.iter().filter_map(|(_, e)| match e {
                JournalEntry::Sleep { wake_at_ms, .. } => Some(*wake_at_ms),
                _ => None,
            });
            let start = scheduled_at(&state.record.status);
            self.timers.disarm(inflight.id, sleeps.chain(start));
            let completed = Status::Completed {
                outcome: outcome.clone(),
                completed_at_ms: now,
                expires_at_ms,
            };
            state.record.end_attempt(completed, now);
            let put = if state.persisted {
                WriteOp::put_invocation
            } else {
                WriteOp::put_new_invocation
            };
            let ops = vec![put(inflight.id, &state.record)];
            // The caller's entry and its wake-up commit with the result (laws 4 and 9).
            let caller = state.record.caller.map(|(caller_id, index)| Completion {
                id: caller_id,
                index,
                entry: JournalEntry::Call {
                    target: state.record.target.clone(),
                    invocation_id: inflight.id,
                    outcome: Some(outcome.clone()),
                },
                wakes: true,
            });
            state.persisted = true;
            let mut completions: Vec<Completion> = caller.into_iter().collect();
            let mut ops = ops;
            ops.extend(end_ops);
            ops.extend(callee_ops);
            if !result_waiters.is_empty() {
                ops.push(WriteOp::ClearResultWaiters {
                    source: inflight.id,
                });
                completions.extend(
                    result_waiters
                        .into_iter()
                        .map(|w| wake::result_completion(w, &state.record.target, &outcome)),
                );
            }
            drop(state);
            self.submit_completions_locked(&map, ops, completions, None)
        };
        // What the end sends is queued with it: a kill or duplicate of one may find it now.
        drop(end_claims);
        // The next invocation on the key may start now, on this one's state (law 5): whatever
        // it acknowledges commits after this completion, in order.
        self.release(inflight);
        for send in end_sends {
            // Runs once the batch that records it (this completion) is durable: fenced on its
            // own partition, which a refused completion (its record never stored) took out of
            // this process's hands, so that it leaves with it instead of being lost here.
            send.set_gate(self.storage.barrier(send.id.partition_key()));
            self.launch(send, None);
        }
        let result = pending.finish().await;
        if result.is_ok() && !callees.is_empty() {
            self.kill_callees(callees);
        }
        match result {
            Ok(()) => inflight.finish(Finish::Done(Arc::new(Completed {
                outcome,
                expires_at_ms,
            }))),
            // Refused after its partition left: the next owner completes it.
            Err(_) if inflight.left.load(Ordering::SeqCst) => inflight.finish(Finish::Moved),
            Err(e) => inflight.finish(Finish::Lost(e.to_string())),
        }
        self.forget(inflight);
        self.finishers
            .lock()
            .expect("finishers")
            .remove(&inflight.id);
    }

    /// What a killed invocation's end commits for the calls it still waits on, as Restate
    /// kills an invocation's children with it: a kill message for a callee another process
    /// runs, and for one here a cancellation request marked on its stored record (not in
    /// memory: the kill that follows the end's commit, [`Self::kill_callees`], ends it, so
    /// nothing of a cancellation runs; a crash before that kill leaves the request, and the
    /// callee is cancelled after the restart). Returns the ops and the callees to kill here.
    fn kill_with(&self, inflight: &Inflight) -> (Vec<WriteOp>, Vec<InvocationId>) {
        let callees: Vec<InvocationId> = (inflight.state().journal.iter())
            .filter_map(|(_, entry)| match entry {
                JournalEntry::Call {
                    invocation_id,
                    outcome: None,
                    ..
                } => Some(*invocation_id),
                _ => None,
            })
            .collect();
        let mut ops = Vec::with_capacity(callees.len());
        let mut here = Vec::with_capacity(callees.len());
        for callee in callees {
            if self.elsewhere(&callee) {
                ops.push(WriteOp::forward(callee, &InboxMessage::Kill));
            } else {
                ops.push(WriteOp::RequestCancel { id: callee });
                here.push(callee);
            }
        }
        (ops, here)
    }

    /// Kills the callees of a killed invocation, once its end is durable ([`Self::kill_with`]).
    fn kill_callees(&self, callees: Vec<InvocationId>) {
        let engine = self.clone();
        self.tasks.spawn(async move {
            if engine.crash_point("kill.propagated") {
                return;
            }
            for callee in callees {
                // One that ended meanwhile stands (a conflict); one that moved is killed where
                // it runs now, by the request its new owner finds.
                if let Err(e) = engine.kill(callee).await {
                    tracing::debug!(%callee, error = %e, "a killed invocation's callee was not killed");
                }
            }
        });
    }

    /// Parks an invocation until it is resumed: its status and last error are made durable.
    pub(crate) async fn pause(&self, inflight: &Arc<Inflight>, reason: String) {
        tracing::error!(invocation = %inflight.id, %reason, "invocation paused");
        self.metrics.paused.inc();
        if let Some(label) = self.handler_label(&inflight.state().record.target) {
            self.metrics.handler_paused.get_or_create(&label).inc();
        }
        let waiter = {
            let mut state = inflight.state();
            state.record.end_attempt(Status::Paused, self.now_ms());
            state.record.last_error = Some(reason);
            state.persisted = true;
            self.storage
                .submit(vec![WriteOp::put_invocation(inflight.id, &state.record)])
        };
        if let Err(e) = waiter.await {
            return Box::pin(self.lose_refused(inflight, e.to_string())).await;
        }
        // Paused: whoever waits on it holds nothing that runs.
        inflight.idle();
        // A kill that arrived while the pause committed waits on this task.
        if inflight.kill_requested.load(Ordering::SeqCst) {
            Box::pin(self.complete(inflight, control::killed())).await;
        }
    }

    /// Records a failed attempt that is retried at `next_at_ms`: its error, the attempts and
    /// where its retries stand go into its record, written if it is stored, else with the
    /// record when it is (its first durable effect, or a send's acknowledgement that raced
    /// the attempt). A suspension, pause or end writes the record without them: a resume
    /// counts afresh.
    pub(crate) fn record_failure(
        &self,
        inflight: &Inflight,
        error: String,
        failures: u32,
        next_at_ms: u64,
    ) -> Option<crate::storage::CommitWaiter> {
        let mut state = inflight.state();
        state.record.last_error = Some(error);
        state.record.retry = Some(crate::storage::Retry {
            failures,
            next_at_ms,
        });
        state.record.interrupted = None;
        state.record.modified_at_ms = self.now_ms();
        state.persisted.then(|| {
            self.storage
                .submit(vec![WriteOp::put_invocation(inflight.id, &state.record)])
        })
    }

    /// Forgets an invocation created for a caller's journal entry that was never written (the
    /// caller's attempt had stopped): it was never stored, so a later request with its
    /// idempotency or workflow key must start it anew, not find it. Whoever found it meanwhile
    /// is told it was lost.
    pub(crate) fn discard_unrecorded(&self, inflight: &Arc<Inflight>) {
        let reason = "the calling handler stopped before recording the call";
        self.drop_lost(inflight, reason.to_owned());
    }

    /// A send that its sender's commit put into the inbox, behind its key's messages
    /// ([`Inflight::moved_to_inbox`]): this copy leaves memory without running and lets its
    /// key go; the copy taken in from the inbox runs, and whoever waits on this one follows
    /// it there.
    pub(crate) fn leave_for_inbox(&self, inflight: &Arc<Inflight>) {
        self.retire_moved(&mut self.inflight.lock().expect("inflight map"), inflight);
        self.release(inflight);
    }

    /// Takes a send's copy that its sender's commit moved into the inbox out of memory, if
    /// it is still the copy there (under the in-flight lock, `map`): its waiters hear that it
    /// moved and look again, and its finish channel goes, so that the copy taken in from the
    /// inbox, which has its id, gets a fresh one. Once that copy is there, nothing is told.
    pub(crate) fn retire_moved(
        &self,
        map: &mut FastMap<InvocationId, Arc<Inflight>>,
        inflight: &Arc<Inflight>,
    ) {
        if !map
            .get(&inflight.id)
            .is_some_and(|f| Arc::ptr_eq(f, inflight))
        {
            return;
        }
        map.remove(&inflight.id);
        let finisher = self
            .finishers
            .lock()
            .expect("finishers")
            .remove(&inflight.id);
        if let Some(finisher) = finisher {
            finisher.send_replace(Finish::Moved);
        }
    }

    /// Whether `id` is in memory as a send being placed, or moved into the inbox.
    pub(crate) fn placing(&self, id: &InvocationId) -> bool {
        let map = self.inflight.lock().expect("inflight map");
        map.get(id).is_some_and(|f| f.placing())
    }

    /// Gives up on an invocation that cannot be recorded: its waiters get an error.
    pub(crate) fn lose(&self, inflight: &Arc<Inflight>, reason: String) {
        // Its partition left: it is gone from memory already, its waiters told.
        if inflight.left.load(Ordering::SeqCst) {
            return;
        }
        tracing::error!(invocation = %inflight.id, %reason, "invocation lost");
        self.drop_lost(inflight, reason);
        self.release(inflight);
    }

    /// A stop of this engine for good (a runtime's shutdown, a test runtime's crash or drop):
    /// it stops, and whoever waits on one of its invocations (a call, an attach, through a
    /// handle that outlives the runtime) hears that it is lost, as a client whose connection
    /// dropped; the next engine on the store recovers the invocation.
    pub(crate) fn abandon(&self, reason: &str) {
        self.shutdown();
        self.lose_in_memory(reason);
    }

    /// Forgets every invocation in memory, telling whoever waits on one (a call, an attach)
    /// that it is lost here, unless they were told already ([`Self::interrupt_waiters`]).
    fn lose_in_memory(&self, reason: &str) {
        let inflight: Vec<_> = {
            let mut map = self.inflight.lock().expect("inflight map");
            self.abandoned.store(true, Ordering::SeqCst);
            map.drain().map(|(_, inflight)| inflight).collect()
        };
        // One completing now is answered by its completion (its result, durable after a
        // shutdown's close, or its loss): told "lost" first, a caller would miss a result.
        let mut completing = std::collections::HashSet::new();
        for inflight in inflight {
            if inflight.finished.load(Ordering::SeqCst) {
                completing.insert(inflight.id);
            } else {
                inflight.end_wait(Finish::Lost(reason.to_owned()));
            }
        }
        let finishers = std::mem::take(&mut *self.finishers.lock().expect("finishers"));
        for (id, finisher) in finishers {
            if !completing.contains(&id) {
                end_wait(&finisher, Finish::Lost(reason.to_owned()));
            }
        }
    }

    /// As serving stops (handlers stopped): tells whoever waits on an invocation here (a
    /// call, an attach) that it did not finish, so that the answers go out while the
    /// listeners still finish open requests, not once they gave up waiting (a connection
    /// closed unanswered tells the client nothing). One in memory whose record is durable
    /// (a barrier on its partition: a write of it that a shared database refused fails that
    /// too) goes on after a restart: "unfinished, attach". One never stored is lost (a retry
    /// is safe), once no `ctx.run` closure of it executes (one ending now may store it, and
    /// is then told it is unfinished). One not in memory (suspended, paused, parked until
    /// its time) left memory stored.
    pub(crate) async fn interrupt_waiters(&self, reason: &str) {
        let unfinished: Vec<_> = (self.inflight.lock().expect("inflight map").values())
            .filter(|f| !f.finished.load(Ordering::SeqCst))
            .cloned()
            .collect();
        let told = unfinished.iter().map(|inflight| async move {
            if !inflight.state().persisted {
                // Bounded: the listeners wait this long for open requests at most.
                let idle = inflight.closures_idle();
                let _ = tokio::time::timeout(Duration::from_secs(4), idle).await;
            }
            let stored = inflight.state().persisted;
            let durable = match stored {
                true => inflight.make_durable(self.storage.as_ref()).await.is_ok(),
                false => false,
            };
            if inflight.finished.load(Ordering::SeqCst) {
                return;
            }
            match (stored, durable) {
                (true, true) => inflight.end_wait(Finish::Interrupted(reason.to_owned())),
                (false, _) if !inflight.closures_running() => {
                    inflight.end_wait(Finish::Lost(reason.to_owned()));
                }
                // Its write failed, or a closure still runs: the engine's abandonment tells.
                _ => {}
            }
        });
        futures::future::join_all(told).await;
        let in_memory: std::collections::HashSet<InvocationId> =
            (self.inflight.lock().expect("inflight map").keys())
                .copied()
                .collect();
        let finishers = self.finishers.lock().expect("finishers");
        for (id, finisher) in finishers.iter() {
            if !in_memory.contains(id) {
                end_wait(finisher, Finish::Interrupted(reason.to_owned()));
            }
        }
    }

    /// Tells an invocation's waiters it is lost and forgets it in memory.
    fn drop_lost(&self, inflight: &Arc<Inflight>, reason: String) {
        inflight.finish(Finish::Lost(reason));
        self.forget(inflight);
        self.finishers
            .lock()
            .expect("finishers")
            .remove(&inflight.id);
    }

    /// A delayed invocation is due.
    /// A timer set for `at_ms` is due. A delayed start fires only for its own time: an
    /// entry read from the store just before its invocation finished, whose id a new one then
    /// took (a workflow, an idempotency key), must not start the new one early.
    fn fire(&self, id: InvocationId, at_ms: u64) {
        let due = {
            let map = self.inflight.lock().expect("inflight map");
            let Some(inflight) = map.get(&id) else {
                drop(map);
                self.wake_from_disk(id, at_ms);
                return;
            };
            let mut state = inflight.state();
            if let Status::Scheduled { at_ms: start } = state.record.status {
                if start != at_ms {
                    return;
                }
                // A cancel or kill claimed it (marked running) and ends it.
                if inflight.running.load(Ordering::SeqCst) {
                    return;
                }
                // A handler's `ctx.cancel` marked it; its delivery has not claimed it yet.
                if state.record.cancel_requested && state.journal.is_empty() {
                    inflight.running.store(true, Ordering::SeqCst);
                    drop(state);
                    self.tasks
                        .spawn(wake::end_cancelled(self.clone(), inflight.clone()));
                    return;
                }
                state.record.status = Status::Runnable;
                Some(inflight.clone())
            } else {
                drop(state);
                // A sleep is due. Bumped under the map lock: a suspension committing now sees
                // it and runs on instead of leaving memory.
                inflight.bump();
                None
            }
        };
        if let Some(inflight) = due {
            self.spawn(inflight);
        }
    }
}

/// A finished invocation's result, from its record.
fn completion(record: InvocationRecord) -> Option<Arc<Completed>> {
    match record.status {
        Status::Completed {
            outcome,
            expires_at_ms,
            ..
        } => Some(Arc::new(Completed {
            outcome,
            expires_at_ms,
        })),
        _ => None,
    }
}

fn scheduled_at(status: &Status) -> Option<u64> {
    match status {
        Status::Scheduled { at_ms } => Some(*at_ms),
        _ => None,
    }
}

/// When the next attempt of a stored invocation between attempts is due, if it still waits
/// for it at `now_ms`.
pub(super) fn stored_retry_at_ms(record: &InvocationRecord, now_ms: u64) -> Option<u64> {
    match (&record.status, record.retry) {
        (Status::Runnable, Some(retry)) if retry.next_at_ms > now_ms => Some(retry.next_at_ms),
        _ => None,
    }
}

/// Deletes finished invocations whose retention ended, idempotency keys with them.
async fn purge_loop(engine: Engine) {
    let mut shutdown = engine.shutdown_signal();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(engine.config.purge_interval) => {}
            _ = shutdown.changed() => return,
        }
        if engine.handed_over() {
            return;
        }
        purge_expired(&engine, engine.now_ms(), &shutdown).await;
    }
}

impl Engine {
    /// Forgets at once what the clock says has expired (a test runtime after moving time).
    pub(crate) async fn purge_due(&self) {
        purge_expired(self, self.now_ms(), &self.shutdown_signal()).await;
    }
}

/// Forgets everything whose retention ended before `now`, a slice at a time (one slice per
/// interval fell behind any load above a hundred invocations a second, and the store grew
/// without end).
async fn purge_expired(engine: &Engine, now: u64, shutdown: &watch::Receiver<bool>) {
    while purge_slice(engine, now).await == PURGE_SLICE {
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Invocations forgotten per purge commit.
const PURGE_SLICE: usize = 1024;

/// Forgets up to [`PURGE_SLICE`] invocations whose retention ended before `now`; how many.
async fn purge_slice(engine: &Engine, now: u64) -> usize {
    // Taken before the scan: an id of a slot created in since may have been purged by hand
    // meanwhile and replaced by a new invocation of its key, which must not be deleted.
    let counts = engine.claims.counts();
    let expired = match engine.storage.expired(now, PURGE_SLICE) {
        // A partition that left since the store read it is its new owner's to purge.
        Ok(mut expired) => {
            expired.retain(|(id, _)| engine.runs(id));
            expired
        }
        Err(e) => {
            tracing::warn!(error = %e, "purge scan failed");
            return 0;
        }
    };
    if expired.is_empty() {
        return 0;
    }
    let (count, committed) = {
        // No creation between the check and the queued delete; a skipped id is purged by a
        // later slice if it is still expired.
        let _claims = engine.claims.all();
        let ops: Vec<_> = expired
            .iter()
            .filter(|(id, _)| !engine.claims.created_since(&counts, id))
            .flat_map(|(id, target)| match target {
                Some(target) => engine.forget_ops(*id, target),
                None => vec![WriteOp::DeleteInvocation { id: *id }],
            })
            .collect();
        (expired.len(), engine.storage.submit(ops))
    };
    match committed.await {
        Ok(()) => {
            tracing::debug!(count, "purged expired invocations");
            count
        }
        Err(e) => {
            tracing::warn!(error = %e, "purge failed");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Partitions, RedbOptions, RedbStorage};

    fn engine(dir: &std::path::Path) -> Engine {
        let storage = Arc::new(RedbStorage::open(dir, &RedbOptions::default()).unwrap());
        let registry = Registry::assemble(Vec::new(), Default::default()).unwrap();
        Engine::start(storage, registry, test_config()).unwrap()
    }

    /// An engine's configuration for tests: an hour's retention and purge interval, ten
    /// seconds before a wait suspends, the system clock; a storage failure panics.
    pub(super) fn test_config() -> EngineConfig {
        EngineConfig {
            default_retention: Duration::from_secs(3600),
            purge_interval: Duration::from_secs(3600),
            suspend_after: Duration::from_secs(10),
            min_retention: HashMap::new(),
            release_heap: || {},
            on_storage_failure: |reason| panic!("storage failed: {reason}"),
            recovery_concurrency: 4,
            max_interrupted_attempts: DEFAULT_MAX_INTERRUPTED_ATTEMPTS,
            max_invocation_bytes: usize::MAX,
            timer_window: DEFAULT_TIMER_WINDOW,
            app_version: "test".into(),
            replay_check: false,
            rate_limits: HashMap::new(),
            concurrency_limits: Arc::default(),
            clock: Clock::System,
            activity: None,
            injected: None,
        }
    }

    /// A completed invocation of a service the registry does not have, kept until
    /// `expires_at_ms`.
    fn completed(expires_at_ms: u64) -> InvocationRecord {
        let status = Status::Completed {
            outcome: Outcome::Success(b"1".to_vec()),
            completed_at_ms: 1,
            expires_at_ms,
        };
        InvocationRecord::for_test("Gone", None, status)
    }

    /// A request with an idempotency key, so its id is derived from the key.
    fn keyed_request() -> InvokeRequest {
        InvokeRequest {
            target: Target {
                service: crate::rate::RATE_LIMITER.into(),
                handler: "reserve".into(),
                key: Some("k".into()),
            },
            input: Bytes::from_static(b"{}"),
            headers: Vec::new(),
            idempotency_key: Some("once".into()),
            delay: None,
            relayed: None,
        }
    }

    /// A handler's call or send creates its callee before the journal entry that records it
    /// is queued, and that entry may be refused (the attempt had stopped). A duplicate of the
    /// callee's key arriving from outside in between waits: it must neither be told
    /// "accepted" before the record is queued, nor join an invocation that is then dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // The claim is held across the head start on purpose: that is the window under test.
    #[allow(clippy::await_holding_lock)]
    async fn a_duplicate_waits_until_a_handlers_new_invocation_is_recorded_or_dropped() {
        for recorded in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let engine = engine(dir.path());
            let Unrecorded {
                inflight,
                claim,
                record,
            } = created_unrecorded(&engine);
            let duplicate = tokio::spawn({
                let engine = engine.clone();
                async move { engine.send(keyed_request()).await }
            });
            // As `ctx.journal` queues the callee's record with the caller's entry, or as a
            // stopped caller drops it.
            let settled = || {
                match recorded {
                    true => drop(engine.storage.submit(vec![record])),
                    false => engine.discard_unrecorded(&inflight),
                }
                drop(claim);
            };
            // Joining before would answer before anything is queued.
            let not_yet = "a duplicate was answered while its invocation was not recorded";
            let (id, status, _) = waits_until(duplicate, settled, not_yet).await.unwrap();
            assert_eq!(id, inflight.id);
            let expected = match recorded {
                true => SendStatus::PreviouslyAccepted,
                false => SendStatus::Accepted,
            };
            assert_eq!(status, expected, "recorded: {recorded}");
            assert!(
                engine.storage.invocation(&id).unwrap().is_some(),
                "answered before its invocation was stored"
            );
        }
    }

    /// Gives `task` a head start in which it must not end (`not_yet` says why), then lets go
    /// of what it waits for (`release`) and returns what it gives.
    async fn waits_until<T>(
        task: tokio::task::JoinHandle<T>,
        release: impl FnOnce(),
        not_yet: &str,
    ) -> T {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!task.is_finished(), "{not_yet}");
        release();
        task.await.unwrap()
    }

    /// A handler's new callee of a derived id as `call.rs` holds it before the entry that
    /// records it is queued: its id, its claim, and its record as that entry will queue it.
    struct Unrecorded<'a> {
        inflight: Arc<Inflight>,
        claim: Claim<'a>,
        record: WriteOp,
    }

    impl Unrecorded<'_> {
        /// As `ctx.journal` queues the callee's record with the caller's entry, then lets the
        /// claim go.
        fn record(self, engine: &Engine) {
            drop(engine.storage.submit(vec![self.record]));
            drop(self.claim);
        }
    }

    fn created_unrecorded(engine: &Engine) -> Unrecorded<'_> {
        let Ok(Created::Here(created, claim)) = engine.submit_recorded(keyed_request(), None)
        else {
            panic!("a store of one process creates every invocation here");
        };
        let claim = claim.expect("a new invocation of a derived id comes claimed");
        let Submission::Running {
            inflight,
            new: true,
            ..
        } = created.submission
        else {
            panic!("a first request creates its invocation");
        };
        let record = {
            let mut state = inflight.state();
            state.persisted = true;
            WriteOp::put_invocation(created.id, &state.record)
        };
        Unrecorded {
            inflight,
            claim,
            record,
        }
    }

    /// A kill of `id` waits until `release` (`not_yet` says why it must), and then stands.
    async fn a_kill_waits_until(
        engine: &Engine,
        id: InvocationId,
        release: impl FnOnce(),
        not_yet: &str,
    ) {
        let kill = tokio::spawn({
            let engine = engine.clone();
            async move { engine.kill(id).await }
        });
        waits_until(kill, release, not_yet).await.unwrap();
        let stored = engine.storage.invocation(&id).unwrap().unwrap();
        assert!(
            matches!(stored.status, Status::Completed { .. }),
            "the kill was undone: {:?}",
            stored.status
        );
    }

    /// A kill of a handler's new callee, found before the entry that records it is queued,
    /// would commit before the callee's record, which would then undo it. It waits instead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // The claim is held across the head start on purpose: that is the window under test.
    #[allow(clippy::await_holding_lock)]
    async fn a_kill_waits_until_a_handlers_new_invocation_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let created = created_unrecorded(&engine);
        let id = created.inflight.id;
        let not_yet = "a kill ended an invocation that was not recorded yet";
        a_kill_waits_until(&engine, id, || created.record(&engine), not_yet).await;
    }

    /// A handler's `ctx.cancel` of another handler's new callee, found before the entry that
    /// records the callee is queued, would mark the request on a record that the callee's
    /// record, queued then, undoes. It waits instead, and the request stands.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // The claim is held across the head start on purpose: that is the window under test.
    #[allow(clippy::await_holding_lock)]
    async fn a_handlers_cancel_waits_until_a_handlers_new_invocation_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let created = created_unrecorded(&engine);
        let id = created.inflight.id;
        // The cancelling handler's side, as `ctx.cancel` takes it (it waits on a thread).
        let cancel = tokio::task::spawn_blocking({
            let engine = engine.clone();
            move || engine.storage.submit(engine.cancel_request_ops(id))
        });
        let not_yet = "a cancel request was marked on an invocation that was not recorded yet";
        waits_until(cancel, || created.record(&engine), not_yet)
            .await
            .await
            .unwrap();
        let stored = engine.storage.invocation(&id).unwrap().unwrap();
        assert!(stored.cancel_requested, "the cancel request was undone");
    }

    /// What an invocation's end sends (here the release of a concurrency permit it holds) is
    /// created before it is queued with the end. A kill of it found meanwhile would commit
    /// first and be undone by its record; it waits until the end is queued instead.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    // The claims are held across the head start on purpose: that is the window under test.
    #[allow(clippy::await_holding_lock)]
    async fn a_kill_waits_until_what_an_end_sends_is_queued_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        let holder = InvocationId::random(4);
        let mut journal = Journal::default();
        let acquire = Target {
            service: crate::concurrency::LIMITER.into(),
            handler: "acquire".into(),
            key: Some("bucket".into()),
        };
        journal.insert(
            0,
            JournalEntry::Call {
                target: acquire,
                invocation_id: holder,
                outcome: None,
            },
        );
        let record = InvocationRecord::for_test("Gone", None, Status::Runnable);
        let ending = engine.new_inflight(holder, record, true, journal);
        let (ops, launches, claims) = engine.end_sends(&ending).unwrap();
        assert_eq!(launches.len(), 1, "one permit to give back");
        assert!(!claims.is_empty(), "the release's id is claimed");
        let queued = || {
            drop(engine.storage.submit(ops));
            drop(claims);
        };
        let not_yet = "a kill ended what an end sends before it was queued";
        a_kill_waits_until(&engine, launches[0].id, queued, not_yet).await;
    }

    #[tokio::test]
    async fn attaching_to_unknown_or_finished_invocations_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        for _ in 0..1000 {
            let unknown = InvocationId::random(rand::random());
            assert!(engine.attach(unknown).await.unwrap().is_none());
        }
        let done = InvocationId::random(7);
        let record = completed(now_ms() + 60_000);
        engine
            .storage
            .submit(vec![WriteOp::put_invocation(done, &record)])
            .await
            .unwrap();
        for _ in 0..10 {
            let found = engine.attach(done).await.unwrap().unwrap();
            assert_eq!(found.outcome, Outcome::Success(b"1".to_vec()));
        }
        assert!(engine.finishers.lock().unwrap().is_empty());
        engine.shutdown();
    }

    /// An engine on `dir` with one invocation restored but never replayed (its service is
    /// gone from this build), which journaled nothing yet.
    async fn restored_of_a_gone_service(dir: &std::path::Path) -> (Engine, InvocationId) {
        let engine = engine(dir);
        let waiting = store_of_a_gone_service(&engine).await;
        (engine, waiting)
    }

    /// Stores an invocation of a service gone from this build, runnable, in partition key 9.
    async fn store_of_a_gone_service(engine: &Engine) -> InvocationId {
        let waiting = InvocationId::random(9);
        let record = InvocationRecord::for_test("Gone", None, Status::Runnable);
        engine
            .storage
            .submit(vec![WriteOp::put_new_invocation(waiting, &record)])
            .await
            .unwrap();
        waiting
    }

    /// What the replay of `waiting` journals: its awakeable 0, open.
    async fn journal_open_awakeable(engine: &Engine, waiting: InvocationId) {
        let open = JournalEntry::Awakeable { outcome: None };
        engine
            .storage
            .submit(vec![WriteOp::put_journal(waiting, 0, &open)])
            .await
            .unwrap();
    }

    /// A resolving handler's own `CompleteAwakeable` entry, at index 3 of `resolver`.
    fn own_completion(
        resolver: InvocationId,
        awakeable: crate::ids::AwakeableId,
    ) -> wake::Completion {
        wake::Completion {
            id: resolver,
            index: 3,
            entry: JournalEntry::CompleteAwakeable {
                id: awakeable.to_string(),
            },
            wakes: false,
        }
    }

    /// From a handler, the same completion writes nothing either: not the handler's own
    /// entry, which would record as done a completion that was dropped (the handler's
    /// attempt retries instead, and completes it once the entry is there).
    #[tokio::test]
    async fn a_handler_completing_an_awakeable_not_journaled_yet_records_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, waiting) = restored_of_a_gone_service(dir.path()).await;
        let awakeable = engine.awakeable_id(waiting, 0);
        let resolver = InvocationId::random(11);
        let own = || own_completion(resolver, awakeable);
        let value = Outcome::Success(b"\"early\"".to_vec());
        let refused = engine
            .submit_awakeable(awakeable, value.clone(), Some(own()))
            .unwrap();
        assert!(refused.unjournaled && refused.known);
        refused.finish().await.unwrap();
        assert!(engine.storage.journal(&resolver).unwrap().is_empty());
        assert!(engine.storage.journal(&waiting).unwrap().is_empty());
        // Once the replay journals it, the handler's retry completes it, with its own entry.
        journal_open_awakeable(&engine, waiting).await;
        let done = engine
            .submit_awakeable(awakeable, value.clone(), Some(own()))
            .unwrap();
        assert!(!done.unjournaled);
        done.finish().await.unwrap();
        assert_eq!(
            engine.storage.journal(&resolver).unwrap(),
            [(3, own().entry)]
        );
        let resolved = JournalEntry::Awakeable {
            outcome: Some(value),
        };
        assert_eq!(engine.storage.journal(&waiting).unwrap(), [(0, resolved)]);
        engine.shutdown();
    }

    /// A completion whose submitter stops waiting before its batch is decided (a handler whose
    /// partition left, a client that hung up) still finishes: the awakeable is released, so a
    /// later completion is accepted as the second one, not recorded as done while it waits
    /// for one that is no longer coming.
    #[tokio::test]
    async fn an_awakeable_completion_nobody_waits_for_still_finishes_and_releases_it() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, waiting) = restored_of_a_gone_service(dir.path()).await;
        journal_open_awakeable(&engine, waiting).await;
        let awakeable = engine.awakeable_id(waiting, 0);
        let first = Outcome::Success(b"1".to_vec());
        let submission = engine
            .submit_awakeable(awakeable, first.clone(), None)
            .unwrap();
        drop(submission.finish());
        let released = || !engine.awakeables.contains(&awakeable);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !released() {
            assert!(std::time::Instant::now() < deadline, "never released");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A handler's completion after it: its own entry, the first value kept.
        let resolver = InvocationId::random(11);
        let own = || own_completion(resolver, awakeable);
        let second = Outcome::Success(b"2".to_vec());
        let later = engine
            .submit_awakeable(awakeable, second, Some(own()))
            .unwrap();
        later.finish().await.unwrap();
        let resolved = JournalEntry::Awakeable {
            outcome: Some(first),
        };
        assert_eq!(engine.storage.journal(&waiting).unwrap(), [(0, resolved)]);
        assert_eq!(
            engine.storage.journal(&resolver).unwrap(),
            [(3, own().entry)]
        );
        engine.shutdown();
    }

    /// On a shared store, a completion of an awakeable refused for its partition (another
    /// process took it over unannounced) leaves the awakeable "being completed" here until
    /// the refusal is heard. A handler that resolves it meanwhile is answered as that
    /// completion is: refused too. Its own entry, which would say it completed the
    /// awakeable, is refused with it (its attempt retries) rather than journaled over an
    /// awakeable that stays open.
    #[tokio::test]
    async fn a_resolver_behind_a_refused_awakeable_completion_journals_nothing() {
        let storage = Arc::new(crate::storage::MemoryStore::default().open_shared(4));
        let all = Partitions::all(4);
        storage.set_owned(all.clone());
        storage.fence();
        let registry = Registry::assemble(Vec::new(), Default::default()).unwrap();
        let engine = Engine::start(storage.clone(), registry, test_config()).unwrap();
        let waiting = store_of_a_gone_service(&engine).await;
        journal_open_awakeable(&engine, waiting).await;
        let awakeable = engine.awakeable_id(waiting, 0);
        let taken = all.partition_of(waiting.partition_key()).unwrap();
        storage.take_away(&Partitions::of(4, [taken]));
        let first = engine
            .submit_awakeable(awakeable, Outcome::Success(b"1".to_vec()), None)
            .unwrap();
        let resolver = InvocationId::random(11);
        assert_ne!(all.partition_of(resolver.partition_key()), Some(taken));
        let later = engine
            .submit_awakeable(
                awakeable,
                Outcome::Success(b"2".to_vec()),
                Some(own_completion(resolver, awakeable)),
            )
            .unwrap();
        assert!(later.finish().await.is_err(), "the resolver was answered");
        assert!(first.finish().await.is_err());
        assert!(
            engine.storage.journal(&resolver).unwrap().is_empty(),
            "the resolver journaled a completion that was refused"
        );
        let open = JournalEntry::Awakeable { outcome: None };
        assert_eq!(engine.storage.journal(&waiting).unwrap(), [(0, open)]);
        engine.shutdown();
    }

    /// On a shared store, two handlers here resolve one awakeable of an invocation another
    /// process runs, the second while the first is still being completed: the second is
    /// answered as the first is, and is not fenced on the awakeable's partition, which is
    /// not this process's (such a write would be refused, and take the resolver's own
    /// partition away with it).
    #[tokio::test]
    async fn resolvers_of_an_awakeable_run_elsewhere_keep_their_own_partitions() {
        let store = crate::storage::MemoryStore::default();
        let (here, there) = (store.open_shared(4), store.open_shared(4));
        let waiting = InvocationId::random(9);
        let all = Partitions::all(4);
        let theirs = Partitions::of(4, [all.partition_of(waiting.partition_key()).unwrap()]);
        there.set_owned(theirs.clone());
        there.fence();
        let record = InvocationRecord::for_test("Gone", None, Status::Runnable);
        let open = JournalEntry::Awakeable { outcome: None };
        there
            .submit(vec![
                WriteOp::put_new_invocation(waiting, &record),
                WriteOp::put_journal(waiting, 0, &open),
            ])
            .await
            .unwrap();
        let ours = all.without(&theirs);
        here.set_owned(ours.clone());
        here.fence();
        let registry = Registry::assemble(Vec::new(), Default::default()).unwrap();
        let here = Arc::new(here);
        let engine = Engine::start(here.clone(), registry, test_config()).unwrap();
        let awakeable = engine.awakeable_id(waiting, 0);
        let resolvers = [InvocationId::random(10), InvocationId::random(11)];
        assert!(resolvers.iter().all(|r| ours.holds(r)));
        let submissions: Vec<_> = [b"1", b"2"]
            .into_iter()
            .zip(resolvers)
            .map(|(value, resolver)| {
                let own = own_completion(resolver, awakeable);
                let value = Outcome::Success(value.to_vec());
                engine
                    .submit_awakeable(awakeable, value, Some(own))
                    .unwrap()
            })
            .collect();
        for submission in submissions {
            submission.finish().await.unwrap();
        }
        assert_eq!(
            *here.owned().borrow(),
            ours,
            "a resolver's partition was dropped"
        );
        for resolver in resolvers {
            let own = own_completion(resolver, awakeable);
            assert_eq!(engine.storage.journal(&resolver).unwrap(), [(3, own.entry)]);
        }
        engine.shutdown();
    }

    /// A kill can take an awakeable's entry after its id was handed out; restored, the
    /// invocation waits on disk (here: its service is gone from this build, so it never
    /// replays) while a completion arrives. It is refused as not journaled yet (retryable),
    /// not answered and dropped; once the replay journals the entry, the retry completes it.
    #[tokio::test]
    async fn an_awakeable_completed_before_its_entry_is_journaled_is_refused_until_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, waiting) = restored_of_a_gone_service(dir.path()).await;
        let awakeable = engine.awakeable_id(waiting, 0).to_string();
        let value = Outcome::Success(b"\"early\"".to_vec());
        let refused = engine.complete_awakeable(&awakeable, value.clone()).await;
        assert!(
            matches!(
                refused,
                Err(awakeables::AwakeableCompletionError::NotJournaled(_))
            ),
            "{refused:?}"
        );
        assert!(engine.storage.journal(&waiting).unwrap().is_empty());
        // The replay journals it again: the retry completes it, with its wake-up.
        journal_open_awakeable(&engine, waiting).await;
        engine
            .complete_awakeable(&awakeable, value.clone())
            .await
            .unwrap();
        let resolved = JournalEntry::Awakeable {
            outcome: Some(value),
        };
        assert_eq!(engine.storage.journal(&waiting).unwrap(), [(0, resolved)]);
        assert_eq!(engine.storage.woken().unwrap(), [waiting]);
        // A completed invocation's awakeables are closed: accepted, nothing written.
        let done = InvocationId::random(10);
        engine
            .storage
            .submit(vec![WriteOp::put_invocation(done, &completed(u64::MAX))])
            .await
            .unwrap();
        let late = engine.awakeable_id(done, 0).to_string();
        engine
            .complete_awakeable(&late, Outcome::Success(b"1".to_vec()))
            .await
            .unwrap();
        assert!(engine.storage.journal(&done).unwrap().is_empty());
        engine.shutdown();
    }

    #[tokio::test]
    async fn an_invocation_of_a_handler_no_longer_served_is_paused_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let id = InvocationId::random(3);
        {
            let storage = RedbStorage::open(dir.path(), &RedbOptions::default()).unwrap();
            let record = InvocationRecord::for_test("Gone", None, Status::Runnable);
            storage
                .submit(vec![WriteOp::put_invocation(id, &record)])
                .await
                .unwrap();
            storage.close();
        }
        let engine = engine(dir.path());
        let start = std::time::Instant::now();
        let record = loop {
            let (record, _) = engine.inspect(&id).unwrap().unwrap();
            if record.status == Status::Paused || start.elapsed() > Duration::from_secs(30) {
                break record;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(record.status, Status::Paused);
        let error = record.last_error.unwrap();
        assert!(
            error.starts_with("not served by this binary") && error.contains("'Gone' not found"),
            "{error}"
        );
    }

    /// An engine over the data folder `dir`, which holds `records` first, serving `service`
    /// alone.
    async fn engine_over<S: crate::registry::Service>(
        dir: &std::path::Path,
        service: S,
        records: &[(InvocationId, &InvocationRecord)],
    ) -> Engine {
        {
            let storage = RedbStorage::open(dir, &RedbOptions::default()).unwrap();
            let ops = records
                .iter()
                .map(|(id, record)| WriteOp::put_invocation(*id, record))
                .collect();
            storage.submit(ops).await.unwrap();
            storage.close();
        }
        let storage = Arc::new(RedbStorage::open(dir, &RedbOptions::default()).unwrap());
        let registry = Registry::assemble(
            vec![(S::definition(), Arc::new(service) as _)],
            Default::default(),
        )
        .unwrap();
        Engine::start(storage, registry, test_config()).unwrap()
    }

    /// `id`'s record once `done` holds of it (or after 30 s: the caller's assertion fails).
    async fn record_once(
        engine: &Engine,
        id: InvocationId,
        done: impl Fn(&Status) -> bool,
    ) -> InvocationRecord {
        let start = std::time::Instant::now();
        loop {
            let (record, _) = engine.inspect(&id).unwrap().unwrap();
            if done(&record.status) || start.elapsed() > Duration::from_secs(30) {
                return record;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A stored invocation between attempts goes on where its record says its retries stand:
    /// shown backing off until the stored time (also when read from the store alone, as
    /// another process on a shared database reads it), and paused once its policy's count is
    /// reached, counting the failures before the restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restart_goes_on_with_the_retries_its_record_stored() {
        use crate::registry::Service;
        struct Failing;
        impl Service for Failing {
            fn definition() -> crate::registry::ServiceDefinition {
                let mut handler = crate::registry::internal_handler(
                    "h",
                    crate::registry::HandlerKind::Stateless,
                    None,
                    "()",
                );
                handler.options.retry_policy = crate::RetryPolicy {
                    max_attempts: Some(3),
                    initial_interval: Duration::from_secs(3600),
                    max_interval: Duration::from_secs(3600),
                    ..crate::RetryPolicy::default()
                };
                crate::registry::ServiceDefinition {
                    name: "Failing",
                    kind: crate::registry::ServiceKind::Service,
                    handlers: vec![handler],
                }
            }

            fn invoke<'a>(
                &'a self,
                _handler: &'a str,
                _ctx: &'a crate::context::InvocationContext,
                _input: bytes::Bytes,
            ) -> futures::future::BoxFuture<'a, Result<bytes::Bytes, crate::error::HandlerError>>
            {
                Box::pin(async { Err("the bank is down".into()) })
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let (waiting, due, far) = (
            InvocationId::random(1),
            InvocationId::random(2),
            InvocationId::random(4),
        );
        let later = now_ms() + 1_800_000;
        let failed = |failures, next_at_ms| {
            let mut record = InvocationRecord::for_test("Failing", None, Status::Runnable);
            record.attempts = failures;
            record.retry = Some(crate::storage::Retry {
                failures,
                next_at_ms,
            });
            record
        };
        let (waiting_record, due_record) = (failed(1, later), failed(2, 1));
        // Stored by a clock ten days ahead, or a policy a deploy since shortened.
        let far_record = failed(1, now_ms() + 10 * 24 * 3_600_000);
        let records = [
            (waiting, &waiting_record),
            (due, &due_record),
            (far, &far_record),
        ];
        let engine = engine_over(dir.path(), Failing, &records).await;
        // Its third attempt, the last its policy allows, fails: paused.
        let record = record_once(&engine, due, |s| *s == Status::Paused).await;
        assert_eq!(record.status, Status::Paused);
        assert_eq!(record.attempts, 3);
        let error = record.last_error.unwrap();
        assert!(error.contains("after 3 attempts"), "{error}");
        // The other waits for its time; from memory and from its record alone alike.
        let (record, _) = engine.inspect(&waiting).unwrap().unwrap();
        assert_eq!(record.attempts, 1);
        assert_eq!(engine.shown_status(&waiting, &record), "backing-off");
        assert_eq!(engine.next_retry_at_ms(&waiting, &record), Some(later));
        let elsewhere = InvocationId::random(3);
        assert_eq!(
            engine.shown_status(&elsewhere, &waiting_record),
            "backing-off"
        );
        let stored = engine.next_retry_at_ms(&elsewhere, &waiting_record);
        assert_eq!(stored, Some(later));
        // The wait is capped by the policy's delay, an hour (shown once its task waits).
        let start = std::time::Instant::now();
        let capped = loop {
            let (record, _) = engine.inspect(&far).unwrap().unwrap();
            match engine.next_retry_at_ms(&far, &record) {
                Some(at) => break at,
                None if start.elapsed() < Duration::from_secs(30) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                None => panic!("not backing off"),
            }
        };
        assert!(capped <= now_ms() + 3_600_000, "{capped}");
        // Once the time passed, a record read alone is shown as what it is.
        assert_eq!(engine.shown_status(&elsewhere, &due_record), "running");
        assert_eq!(engine.next_retry_at_ms(&elsewhere, &due_record), None);
    }

    /// An object served before a deploy with an exclusive handler the deploy renamed: the
    /// paused invocation of that handler keeps the key it held across the restart, and what
    /// was queued behind it waits (found from outside: it ran ahead, and the paused one,
    /// resumed by a binary that serves it again, then wrote over its update). A kill lets
    /// what waits run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_paused_invocation_of_a_handler_renamed_by_a_deploy_keeps_its_key() {
        use crate::registry::Service;
        struct Renamed;
        impl Service for Renamed {
            fn definition() -> crate::registry::ServiceDefinition {
                let exclusive = |name| {
                    crate::registry::internal_handler(
                        name,
                        crate::registry::HandlerKind::Exclusive,
                        None,
                        "()",
                    )
                };
                crate::registry::ServiceDefinition {
                    name: "Acct",
                    kind: crate::registry::ServiceKind::VirtualObject,
                    handlers: vec![exclusive("new_h"), exclusive("bump")],
                }
            }

            fn invoke<'a>(
                &'a self,
                _handler: &'a str,
                _ctx: &'a crate::context::InvocationContext,
                _input: bytes::Bytes,
            ) -> futures::future::BoxFuture<'a, Result<bytes::Bytes, crate::error::HandlerError>>
            {
                Box::pin(async {
                    crate::__private::output(Ok::<_, crate::error::HandlerError>(()))
                })
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let key = crate::ids::partition_key_of("Acct", "k");
        let (held, behind) = (InvocationId::random(key), InvocationId::random(key));
        let mut paused = InvocationRecord::for_test("Acct", Some("k"), Status::Paused);
        paused.target.handler = "old_h".into();
        paused.last_error = Some("not served by this binary: old_h".into());
        let mut queued = InvocationRecord::for_test("Acct", Some("k"), Status::Runnable);
        queued.target.handler = "bump".into();
        (queued.attempts, queued.seq) = (0, 2);
        let records = [(held, &paused), (behind, &queued)];
        let engine = engine_over(dir.path(), Renamed, &records).await;
        // Recovered: the key is the paused one's, and the one behind it has not started.
        let scope = StateScope::of(&paused.target);
        let holder = engine
            .lanes
            .lock()
            .unwrap()
            .get(&scope)
            .and_then(|lane| lane.running);
        assert_eq!(holder, Some(held));
        let (record, _) = engine.inspect(&behind).unwrap().unwrap();
        assert_eq!((record.status, record.attempts), (Status::Runnable, 0));
        engine.kill(held).await.unwrap();
        let completed = |status: &Status| matches!(status, Status::Completed { .. });
        let status = record_once(&engine, behind, completed).await.status;
        assert!(completed(&status), "{status:?}");
        engine.shutdown();
    }

    /// An input that the handler's type no longer reads (a deploy changed the type; found from
    /// outside: it ended with a terminal 400 that no fix could resume) pauses its invocation
    /// as a bad deploy's are, whether the version it records changed or not (the default one
    /// does not when only a field's type does).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_input_a_deploy_made_unreadable_pauses_its_invocation() {
        use crate::registry::Service;
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Typed {
            #[allow(dead_code)]
            a: String,
        }
        struct Reader;
        impl Service for Reader {
            fn definition() -> crate::registry::ServiceDefinition {
                crate::registry::ServiceDefinition {
                    name: "Reader",
                    kind: crate::registry::ServiceKind::Service,
                    handlers: vec![crate::registry::internal_handler(
                        "h",
                        crate::registry::HandlerKind::Stateless,
                        Some("Typed"),
                        "()",
                    )],
                }
            }

            fn invoke<'a>(
                &'a self,
                _handler: &'a str,
                ctx: &'a crate::context::InvocationContext,
                input: bytes::Bytes,
            ) -> futures::future::BoxFuture<'a, Result<bytes::Bytes, crate::error::HandlerError>>
            {
                Box::pin(async move {
                    let _typed: Typed = crate::__private::input().decode(&input, ctx)?;
                    crate::__private::output(Ok::<_, crate::error::HandlerError>(()))
                })
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let (old, same) = (InvocationId::random(1), InvocationId::random(2));
        let accepted = |version: &str, seq| {
            let mut record = InvocationRecord::for_test("Reader", None, Status::Runnable);
            (record.input, record.attempts, record.seq) = (br#"{"a":5}"#.to_vec(), 0, seq);
            record.version = Some(version.into());
            record
        };
        let (before, now) = (
            accepted("before-the-deploy", 1),
            accepted(&test_config().app_version, 2),
        );
        let engine = engine_over(dir.path(), Reader, &[(old, &before), (same, &now)]).await;
        let paused = |status: &Status| *status == Status::Paused;
        for id in [old, same] {
            let record = record_once(&engine, id, paused).await;
            assert_eq!(
                crate::filter::PauseReason::of(&record),
                Some("non_determinism"),
                "{:?}",
                record.status
            );
        }
        engine.shutdown();
    }

    #[tokio::test]
    async fn one_purge_round_forgets_every_expired_invocation() {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine(dir.path());
        // Three and a half slices expired, and one kept for later.
        let expired = PURGE_SLICE * 7 / 2;
        let ops = (0..expired)
            .map(|i| WriteOp::put_invocation(InvocationId::random(i as u64), &completed(100)))
            .collect();
        engine.storage.submit(ops).await.unwrap();
        let kept = InvocationId::random(u64::MAX);
        let later = WriteOp::put_invocation(kept, &completed(10_000));
        engine.storage.submit(vec![later]).await.unwrap();
        assert_eq!(
            engine.storage.expired(5_000, usize::MAX).unwrap().len(),
            expired
        );

        purge_expired(&engine, 5_000, &engine.shutdown_signal()).await;
        assert!(
            engine
                .storage
                .expired(5_000, usize::MAX)
                .unwrap()
                .is_empty()
        );
        assert!(engine.storage.invocation(&kept).unwrap().is_some());
        engine.shutdown();
    }
}
