//! Cron schedules: declared on a handler (`#[handler(cron = "0 2 * * *")]`) or managed at run
//! time ([`RuntimeHandle::schedules`](crate::RuntimeHandle::schedules), the admin API's
//! `/schedules`). Each schedule is one key of an internal object (`object.rs`): its ticks are
//! delayed sends to itself and each run is a call whose idempotency key holds the tick's
//! time, so a tick fires exactly once across crashes, restarts and processes.

mod cron;
mod declared;
mod object;
mod spec;
mod view;

use crate::engine::Engine;
use crate::registry::{HandlerKind, InputShape};
use crate::runtime::RuntimeHandle;
use crate::storage::StateScope;

pub(crate) use cron::CronTimes;
pub(crate) use declared::sync_declared;
pub(crate) use object::{INDEX, SCHEDULE, ScheduleIndex, ScheduleObject};
pub use spec::{CatchUp, CronOptions, Overlap, ScheduleSpec, ScheduledTime};
pub use view::{LastRun, RunOutcome, ScheduleOrigin, ScheduleView, TriggerOutcome};

use object::{DeleteOutcome, INDEX_KEY, STATE, Stored, Upsert, UpsertOutcome};
use spec::ScheduleInput;

/// Why a schedule could not be created, found or changed.
#[non_exhaustive]
///
/// ```
/// use restate_runtime::ScheduleError;
/// let e = ScheduleError::NotFound("nightly".into());
/// assert_eq!(e.to_string(), "no schedule `nightly`");
/// assert_eq!(e.status(), 404);
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The spec is wrong: expression, time zone, target or input (a `400`).
    #[error("{0}")]
    Invalid(String),
    /// No schedule has this id (a `404`).
    #[error("no schedule `{0}`")]
    NotFound(String),
    /// The runtime could not do it now (storage failure, shutdown, drain; a `503`).
    #[error("schedules are unavailable: {0}")]
    Unavailable(String),
}

impl ScheduleError {
    /// The HTTP status the admin API answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::Invalid(_) => 400,
            Self::NotFound(_) => 404,
            Self::Unavailable(_) => 503,
        }
    }
}

impl From<crate::client::ClientError> for ScheduleError {
    fn from(e: crate::client::ClientError) -> Self {
        match e {
            crate::client::ClientError::Terminal(t) if t.code() == 400 => {
                Self::Invalid(t.message().to_owned())
            }
            other => Self::Unavailable(other.to_string()),
        }
    }
}

/// Creates, lists, pauses, resumes, triggers and deletes schedules; from
/// [`RuntimeHandle::schedules`](crate::RuntimeHandle::schedules). Every change is durable
/// when its call returns.
///
/// ```no_run
/// # use restate_runtime::prelude::*;
/// # #[derive(Default)]
/// # pub struct Digest;
/// # #[service]
/// # impl Digest {
/// #     #[handler]
/// #     async fn send(&self, _ctx: Context<'_>, to: String) -> HandlerResult<()> { Ok(()) }
/// # }
/// use restate_runtime::{Overlap, ScheduleSpec};
/// # async fn demo(handle: RuntimeHandle) -> anyhow::Result<()> {
/// let schedules = handle.schedules();
/// let spec = ScheduleSpec::new("morning-digest", "0 8 * * MON-FRI")
///     .service("Digest", "send")
///     .input(&"ops@example.com")?
///     .timezone("Europe/Paris")
///     .overlap(Overlap::Skip);
/// let created = schedules.create(spec).await?;
/// println!("next digest at {:?}", created.next_fire_at);
/// schedules.pause("morning-digest").await?;
/// schedules.trigger("morning-digest").await?; // runs now, paused or not
/// schedules.resume("morning-digest").await?;
/// assert_eq!(schedules.list().await?.len(), 1);
/// schedules.delete("morning-digest").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Schedules {
    handle: RuntimeHandle,
}

impl Schedules {
    pub(crate) fn new(handle: RuntimeHandle) -> Self {
        Self { handle }
    }

    fn engine(&self) -> Result<Engine, ScheduleError> {
        self.handle
            .engine()
            .map_err(|e| ScheduleError::Unavailable(e.to_string()))
    }

    /// Creates a schedule, or replaces the one with its id (its counters and last run are
    /// kept; a changed expression takes effect from now). Refused with
    /// [`ScheduleError::Invalid`] when the expression, the time zone, the target or the input
    /// is wrong.
    pub async fn create(&self, spec: ScheduleSpec) -> Result<ScheduleView, ScheduleError> {
        self.upsert(spec, ScheduleOrigin::Api).await
    }

    pub(crate) async fn upsert(
        &self,
        spec: ScheduleSpec,
        origin: ScheduleOrigin,
    ) -> Result<ScheduleView, ScheduleError> {
        validate(&self.engine()?, &spec)?;
        let id = spec.id.clone();
        let upsert = crate::client::parts(
            SCHEDULE,
            Some(&id),
            "upsert",
            crate::codec::encode_json(&Upsert { spec, origin }),
        );
        self.request::<UpsertOutcome>(upsert)
            .await?
            .map_err(ScheduleError::Invalid)
    }

    /// One schedule, or `None`.
    pub async fn get(&self, id: &str) -> Result<Option<ScheduleView>, ScheduleError> {
        Ok(self.stored(id)?.map(|s| s.view()))
    }

    /// Every schedule, by id.
    pub async fn list(&self) -> Result<Vec<ScheduleView>, ScheduleError> {
        let mut all = Vec::new();
        for id in self.ids()? {
            if let Some(stored) = self.stored(&id)? {
                all.push(stored.view());
            }
        }
        Ok(all)
    }

    /// Stops ticks until [`resume`](Self::resume); a run going on goes on.
    pub async fn pause(&self, id: &str) -> Result<ScheduleView, ScheduleError> {
        self.act::<Option<ScheduleView>>(id, "pause")
            .await?
            .ok_or_else(|| ScheduleError::NotFound(id.to_owned()))
    }

    /// Ticks again from the next one after now (those due while paused are dropped).
    pub async fn resume(&self, id: &str) -> Result<ScheduleView, ScheduleError> {
        self.act::<Option<ScheduleView>>(id, "resume")
            .await?
            .ok_or_else(|| ScheduleError::NotFound(id.to_owned()))
    }

    /// Runs the target now (paused or not), as a tick at this instant would under the
    /// schedule's overlap policy.
    pub async fn trigger(&self, id: &str) -> Result<TriggerOutcome, ScheduleError> {
        self.act::<Option<TriggerOutcome>>(id, "trigger")
            .await?
            .ok_or_else(|| ScheduleError::NotFound(id.to_owned()))
    }

    /// Catches up an overdue schedule (after a start).
    pub(crate) async fn rearm(&self, id: &str) -> Result<(), ScheduleError> {
        self.act::<()>(id, "rearm").await
    }

    /// Deletes a schedule (runs going on finish); whether it existed. Refused with
    /// [`ScheduleError::Invalid`] for one that a handler declares (`#[handler(cron = ..)]`):
    /// the next start would create it again, so it goes when the declaration goes.
    pub async fn delete(&self, id: &str) -> Result<bool, ScheduleError> {
        match self
            .act::<DeleteOutcome>(id, "delete_unless_declared")
            .await
        {
            Err(ScheduleError::NotFound(_)) => Ok(false),
            other => other?.map_err(ScheduleError::Invalid),
        }
    }

    /// Deletes a schedule whatever its origin: a declared one its handler no longer declares.
    pub(crate) async fn remove(&self, id: &str) -> Result<bool, ScheduleError> {
        match self.act::<bool>(id, "delete").await {
            Err(ScheduleError::NotFound(_)) => Ok(false),
            other => other,
        }
    }

    async fn act<O: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        id: &str,
        handler: &str,
    ) -> Result<O, ScheduleError> {
        // An unknown id costs a read, not an invocation.
        if self.stored(id)?.is_none() {
            return Err(ScheduleError::NotFound(id.to_owned()));
        }
        let parts = crate::client::parts(SCHEDULE, Some(id), handler, Ok(bytes::Bytes::new()));
        self.request(parts).await
    }

    async fn request<O: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        parts: crate::client::RequestParts,
    ) -> Result<O, ScheduleError> {
        // A draining process starts nothing: answer now rather than wait for the undrain.
        if self.engine()?.drain.is_draining() {
            return Err(ScheduleError::Unavailable(
                "the process is draining; try again on another process or after the deploy".into(),
            ));
        }
        Ok(
            crate::client::ExternalRequest::<O>::new(self.handle.clone(), parts)
                .call()
                .await?,
        )
    }

    fn ids(&self) -> Result<Vec<String>, ScheduleError> {
        let scope = StateScope {
            service: INDEX.to_owned(),
            key: INDEX_KEY.to_owned(),
        };
        let mut ids = self
            .engine()?
            .storage()
            .state_keys(&scope)
            .map_err(|e| ScheduleError::Unavailable(e.to_string()))?;
        ids.sort();
        Ok(ids)
    }

    fn stored(&self, id: &str) -> Result<Option<Stored>, ScheduleError> {
        let scope = StateScope {
            service: SCHEDULE.to_owned(),
            key: id.to_owned(),
        };
        self.read(&scope, STATE)
    }

    fn read<T: serde::de::DeserializeOwned>(
        &self,
        scope: &StateScope,
        name: &str,
    ) -> Result<Option<T>, ScheduleError> {
        let bytes = self
            .engine()?
            .storage()
            .state(scope, name)
            .map_err(|e| ScheduleError::Unavailable(e.to_string()))?;
        bytes
            .map(|b| serde_json::from_slice(&b))
            .transpose()
            .map_err(|e| {
                ScheduleError::Unavailable(format!("a stored schedule does not decode: {e}"))
            })
    }
}

/// Checks a spec against this binary's handlers before anything is written.
fn validate(engine: &Engine, spec: &ScheduleSpec) -> Result<(), ScheduleError> {
    let invalid = ScheduleError::Invalid;
    let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':');
    if spec.id.is_empty() || spec.id.len() > 200 || !spec.id.chars().all(fits) {
        return Err(invalid(format!(
            "schedule id `{}`: use 1 to 200 ASCII letters, digits, `_`, `-`, `.` and `:` \
             (it is a URL segment)",
            spec.id
        )));
    }
    let times = CronTimes::parse(&spec.cron, &spec.timezone).map_err(invalid)?;
    if times.next_after(engine.config().clock.now_ms()).is_none() {
        return Err(invalid(format!(
            "the cron expression `{}` never fires: it names no date that comes (such as the \
             30th of February)",
            spec.cron
        )));
    }
    if spec.service.is_empty() {
        return Err(invalid(
            "the schedule has no target: set one with .service(..) or .object(..)".into(),
        ));
    }
    let service = engine
        .registry()
        .public(&spec.service)
        .ok_or_else(|| invalid(format!("no service `{}` in this binary", spec.service)))?;
    let definition = &service.definition;
    let handler = definition.handler(&spec.handler).ok_or_else(|| {
        invalid(format!(
            "`{}` has no handler `{}`",
            spec.service, spec.handler
        ))
    })?;
    match (definition.kind.is_keyed(), &spec.key) {
        (true, None) => {
            return Err(invalid(format!(
                "`{}` is keyed: target it with .object(service, key, handler)",
                spec.service
            )));
        }
        (false, Some(_)) => {
            return Err(invalid(format!(
                "`{}` is a service without keys: target it with .service(service, handler)",
                spec.service
            )));
        }
        _ => {}
    }
    if handler.kind == HandlerKind::Workflow {
        return Err(invalid(format!(
            "`{}/{}` runs once per key: schedule a handler that starts workflows instead",
            spec.service, spec.handler
        )));
    }
    let body = match &spec.input {
        ScheduleInput::None => bytes::Bytes::new(),
        ScheduleInput::Json(value) => serde_json::to_vec(value).unwrap_or_default().into(),
        ScheduleInput::Tick => serde_json::to_vec(&ScheduledTime::from_millis(0))
            .unwrap_or_default()
            .into(),
    };
    match (handler.input, &spec.input) {
        (InputShape::None, ScheduleInput::None) => Ok(()),
        (InputShape::None, _) => Err(invalid(format!(
            "`{}/{}` takes no input",
            spec.service, spec.handler
        ))),
        (_, _) => (handler.check_input)(&body).map_err(|e| {
            invalid(format!(
                "the input does not fit `{}/{}`: {e}",
                spec.service, spec.handler
            ))
        }),
    }
}
