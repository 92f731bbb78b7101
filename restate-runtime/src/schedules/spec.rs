//! What a schedule is made of: its target and input, its expression and time zone, and what
//! happens to missed and overlapping ticks.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::ScheduleError;

/// What happens to ticks that fell due while nothing ran (the process was down): `skip`
/// them, fire the latest `one` (the default), or fire `all` of them (the latest 1,000 at
/// most), each with its own time. A tick is missed when a later one fell due too, or when it
/// is handled more than 15 seconds late. Under `all` the missed ticks run one after another
/// (each waits for the run before it, unless `overlap = "allow"`), and so does the tick on
/// time after them; under `one` the latest meets the [`Overlap`] policy like any other tick.
/// Ticks that fall due while a schedule is paused are dropped.
/// Time advanced on a running [`TestRuntime`](crate::testing::TestRuntime) is not downtime:
/// every tick fires at its time.
///
/// ```
/// use restate_runtime::CatchUp;
/// assert_eq!("all".parse::<CatchUp>(), Ok(CatchUp::All));
/// assert_eq!(CatchUp::default(), CatchUp::One);
/// assert!("most".parse::<CatchUp>().unwrap_err().contains("skip, one or all"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CatchUp {
    /// Fire none of the missed ticks; wait for the next one.
    Skip,
    /// Fire the latest missed tick once.
    #[default]
    One,
    /// Fire every missed tick, oldest first.
    All,
}

/// What happens to a tick while the schedule's previous run has not finished: `skip` it (the
/// default), `queue` it to start when the run before it ends (1,000 waiting at most; more are
/// skipped), or `allow` runs to overlap.
///
/// ```
/// use restate_runtime::Overlap;
/// assert_eq!("queue".parse::<Overlap>(), Ok(Overlap::Queue));
/// assert_eq!(Overlap::default(), Overlap::Skip);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Overlap {
    /// Drop the tick; it counts as skipped.
    #[default]
    Skip,
    /// Start it when the runs before it have ended, in tick order.
    Queue,
    /// Start it now, beside the run still going.
    Allow,
}

macro_rules! parse_policy {
    ($ty:ident, $what:literal, $($name:literal => $variant:ident),*) => {
        impl FromStr for $ty {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($name => Ok(Self::$variant),)*
                    other => Err(format!(concat!("unknown ", $what, " policy `{}`: use ", "{}"), other, policy_names(&[$($name),*]))),
                }
            }
        }

        impl $ty {
            /// The policy's name, as the attribute and the admin API write it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }
    };
}

fn policy_names(names: &[&str]) -> String {
    match names {
        [a, b, c] => format!("{a}, {b} or {c}"),
        _ => names.join(", "),
    }
}

parse_policy!(CatchUp, "catch-up", "skip" => Skip, "one" => One, "all" => All);
parse_policy!(Overlap, "overlap", "skip" => Skip, "queue" => Queue, "allow" => Allow);

/// The time a tick was scheduled for: the input of a `#[handler(cron = ..)]` handler that
/// takes one (JSON: an RFC 3339 string). A late or caught-up run sees its tick's time, not the
/// time it started.
///
/// ```
/// use restate_runtime::prelude::*;
/// use restate_runtime::ScheduledTime;
/// #[derive(Default)]
/// pub struct Reports;
/// #[service]
/// impl Reports {
///     #[handler(cron = "0 2 * * *", timezone = "Europe/Paris")]
///     async fn nightly(&self, _ctx: Context<'_>, tick: ScheduledTime) -> HandlerResult<String> {
///         Ok(format!("the report of {tick}"))
///     }
/// }
/// let tick: ScheduledTime = serde_json::from_str("\"2026-03-29T01:00:00Z\"").unwrap();
/// assert_eq!(tick.to_string(), "2026-03-29T01:00:00Z");
/// assert_eq!(tick.unix_millis(), 1_774_746_000_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScheduledTime(u64);

impl ScheduledTime {
    pub(crate) fn from_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// The time `ms` milliseconds after the Unix epoch (to build a tick in a test).
    ///
    /// ```
    /// use restate_runtime::ScheduledTime;
    /// assert_eq!(ScheduledTime::from_unix_millis(86_400_000).to_string(), "1970-01-02T00:00:00Z");
    /// ```
    pub fn from_unix_millis(ms: u64) -> Self {
        Self(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(self) -> u64 {
        self.0
    }

    /// As a [`SystemTime`].
    pub fn time(self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.0)
    }
}

impl fmt::Display for ScheduledTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::clock::rfc3339(self.0))
    }
}

impl Serialize for ScheduledTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ScheduledTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let at: jiff::Timestamp = text.parse().map_err(serde::de::Error::custom)?;
        u64::try_from(at.as_millisecond())
            .map(Self)
            .map_err(|_| serde::de::Error::custom("a scheduled time is after 1970"))
    }
}

/// What a schedule passes its target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub(crate) enum ScheduleInput {
    /// Nothing (a handler without input).
    None,
    /// The same JSON value every tick.
    Json(serde_json::Value),
    /// The tick's [`ScheduledTime`].
    Tick,
}

/// A schedule to create (or replace) with [`Schedules::create`](super::Schedules::create): an
/// id, a cron expression, a target handler and its input, a time zone (UTC by default) and
/// the [`CatchUp`] and [`Overlap`] policies.
///
/// ```
/// use restate_runtime::{CatchUp, Overlap, ScheduleSpec};
/// let spec = ScheduleSpec::new("invoice-42-reminder", "0 9 * * MON-FRI")
///     .object("PaymentTracker", "in_42", "remind")
///     .timezone("Europe/Paris")
///     .catch_up(CatchUp::Skip)
///     .overlap(Overlap::Queue);
/// assert_eq!(spec.id(), "invoice-42-reminder");
/// let with_input = ScheduleSpec::new("digest", "@daily")
///     .service("Digest", "send")
///     .input(&serde_json::json!({ "to": "ops@example.com" }))
///     .unwrap();
/// assert_eq!(with_input.target().to_string(), "Digest/send");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    pub(crate) id: String,
    pub(crate) cron: String,
    pub(crate) timezone: String,
    pub(crate) service: String,
    pub(crate) key: Option<String>,
    pub(crate) handler: String,
    pub(crate) input: ScheduleInput,
    pub(crate) catch_up: CatchUp,
    pub(crate) overlap: Overlap,
}

impl ScheduleSpec {
    /// A schedule named `id` (unique in the deployment; creating one with an id that exists
    /// replaces it) firing at the times of `cron`: five fields (`minute hour day-of-month
    /// month day-of-week`), optionally with seconds first, or `@hourly`, `@daily`, `@weekly`,
    /// `@monthly`, `@yearly`. Set its target with [`service`](Self::service) or
    /// [`object`](Self::object).
    pub fn new(id: impl Into<String>, cron: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            cron: cron.into(),
            timezone: "UTC".into(),
            service: String::new(),
            key: None,
            handler: String::new(),
            input: ScheduleInput::None,
            catch_up: CatchUp::default(),
            overlap: Overlap::default(),
        }
    }

    /// Targets a handler of a `#[service]`.
    pub fn service(mut self, service: impl Into<String>, handler: impl Into<String>) -> Self {
        self.service = service.into();
        self.key = None;
        self.handler = handler.into();
        self
    }

    /// Targets a handler of a `#[object]` (or a shared handler of a `#[workflow]`) on `key`.
    pub fn object(
        mut self,
        object: impl Into<String>,
        key: impl Into<String>,
        handler: impl Into<String>,
    ) -> Self {
        self.service = object.into();
        self.key = Some(key.into());
        self.handler = handler.into();
        self
    }

    /// The input every run gets (the target's input type, as JSON).
    pub fn input<T: Serialize>(mut self, value: &T) -> Result<Self, ScheduleError> {
        let value = serde_json::to_value(value)
            .map_err(|e| ScheduleError::Invalid(format!("the input does not encode: {e}")))?;
        self.input = ScheduleInput::Json(value);
        Ok(self)
    }

    /// Each run gets its tick's [`ScheduledTime`] as input.
    pub fn scheduled_time_input(mut self) -> Self {
        self.input = ScheduleInput::Tick;
        self
    }

    /// The IANA time zone the expression is read in (`"Europe/Paris"`); `"UTC"` by default.
    pub fn timezone(mut self, timezone: impl Into<String>) -> Self {
        self.timezone = timezone.into();
        self
    }

    /// What happens to ticks missed while no process ran.
    pub fn catch_up(mut self, policy: CatchUp) -> Self {
        self.catch_up = policy;
        self
    }

    /// What happens to a tick while the previous run goes on.
    pub fn overlap(mut self, policy: Overlap) -> Self {
        self.overlap = policy;
        self
    }

    /// The schedule's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The handler it invokes.
    pub fn target(&self) -> crate::storage::Target {
        crate::storage::Target {
            service: self.service.clone(),
            handler: self.handler.clone(),
            key: self.key.clone(),
        }
    }
}

/// `#[handler(cron = "..", timezone = "..", catch_up = "..", overlap = "..")]`, as the macro
/// records it on the handler's options: the runtime keeps a schedule named
/// `<service>:<handler>` in step with it at every start.
///
/// ```
/// use restate_runtime::prelude::*;
/// use restate_runtime::{CatchUp, Service};
/// #[derive(Default)]
/// pub struct Cleanup;
/// #[service]
/// impl Cleanup {
///     #[handler(cron = "*/15 * * * *", catch_up = "skip")]
///     async fn sweep(&self, _ctx: Context<'_>) -> HandlerResult<()> { Ok(()) }
/// }
/// let cron = Cleanup::definition().handler("sweep").unwrap().options.cron.unwrap();
/// assert_eq!((cron.expression, cron.timezone, cron.catch_up), ("*/15 * * * *", "UTC", CatchUp::Skip));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CronOptions {
    /// The cron expression.
    pub expression: &'static str,
    /// The time zone (`"UTC"` unless given).
    pub timezone: &'static str,
    /// Missed ticks.
    pub catch_up: CatchUp,
    /// Overlapping ticks.
    pub overlap: Overlap,
    /// Whether the handler takes the tick's [`ScheduledTime`] as input.
    pub scheduled_time_input: bool,
}
