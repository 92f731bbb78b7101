//! What a schedule looks like from outside: its spec, whether it is paused, when it fires
//! next and how its last run went.

use serde::{Deserialize, Serialize};

use super::spec::{CatchUp, Overlap, ScheduledTime};

/// Where a schedule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ScheduleOrigin {
    /// `#[handler(cron = ..)]`: kept in step with the code at every start, deleted when the
    /// attribute goes.
    Code,
    /// Created through [`Schedules::create`](super::Schedules::create) or the admin API.
    Api,
}

/// How a run ended, or that its tick was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunOutcome {
    /// The target answered.
    Succeeded,
    /// The target ended with a terminal error.
    Failed,
    /// The tick did not run: missed while down, or the previous run was still going.
    Skipped,
}

/// The latest tick's fate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LastRun {
    /// The tick's time.
    pub tick_at: ScheduledTime,
    /// Whether it was a [`Schedules::trigger`](super::Schedules::trigger) rather than a tick.
    pub manual: bool,
    /// How it went.
    pub outcome: RunOutcome,
    /// The terminal error's message, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A schedule as [`Schedules::get`](super::Schedules::get), [`Schedules::list`](super::Schedules::list)
/// and the admin API (`GET /schedules`) show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ScheduleView {
    /// Its id (`<service>:<handler>` for one declared with `#[handler(cron = ..)]`).
    pub id: String,
    /// The target's service, object or workflow.
    pub service: String,
    /// The target's key, for an object or workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The target's handler.
    pub handler: String,
    /// The cron expression.
    pub cron: String,
    /// The time zone it is read in.
    pub timezone: String,
    /// Missed ticks.
    pub catch_up: CatchUp,
    /// Overlapping ticks.
    pub overlap: Overlap,
    /// Code or API.
    pub origin: ScheduleOrigin,
    /// Paused: no tick fires until resumed.
    pub paused: bool,
    /// When the next tick fires (none while paused, or for an expression with no future time).
    pub next_fire_at: Option<ScheduledTime>,
    /// The latest tick that started a run.
    pub last_fire_at: Option<ScheduledTime>,
    /// The latest tick's fate.
    pub last_run: Option<LastRun>,
    /// Runs started and not yet ended.
    pub running: u32,
    /// Ticks waiting for the run before them (overlap `queue`).
    pub queued: u32,
    /// Runs started, in all.
    pub fired: u64,
    /// Ticks skipped, in all.
    pub skipped: u64,
}

/// What [`Schedules::trigger`](super::Schedules::trigger) did, by the schedule's overlap policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TriggerOutcome {
    /// A run started now.
    Started,
    /// The run waits for the one going on (`queue`).
    Queued,
    /// Nothing ran: the previous run is still going (`skip`).
    Skipped,
}
