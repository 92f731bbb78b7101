//! Prometheus metrics: counters the engine bumps as invocations move, and gauges read from the
//! engine's state when `/metrics` is scraped.

use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::storage::CommitLatency;

/// Keys whose queue depth is shown each (the deepest).
pub(crate) const TOP_KEYS: usize = 10;

/// An object or workflow key.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabel {
    service: LabelValue,
    key: LabelValue,
}

/// The journal writer's commit durations, as a histogram it counted itself.
#[derive(Debug)]
struct CommitHistogram(CommitLatency);

impl EncodeMetric for CommitHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // The encoder's +Inf bound is f64::MAX.
        let buckets: Vec<(f64, u64)> = self
            .0
            .buckets()
            .map(|(bound, n)| (if bound.is_finite() { bound } else { f64::MAX }, n))
            .collect();
        encoder.encode_histogram::<NoLabelSet>(self.0.sum_seconds(), self.0.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StatusLabel {
    pub status: &'static str,
}

/// A label value that comes from outside the code (object keys, schedule ids, versions),
/// escaped as the text format requires: prometheus-client writes values as they are, and a
/// quote or a line break in a key would otherwise break the scrape or forge lines.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct LabelValue(String);

impl From<&str> for LabelValue {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl From<String> for LabelValue {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl EncodeLabelValue for LabelValue {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write as _;
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

/// The application version invocations were accepted under.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct VersionLabel {
    pub version: LabelValue,
}

/// A registered handler, by the names it is served under.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HandlerLabel {
    pub service: &'static str,
    pub handler: &'static str,
}

/// A registered handler and how an invocation of it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HandlerResultLabel {
    pub service: &'static str,
    pub handler: &'static str,
    pub result: &'static str,
}

/// A schedule, by id.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ScheduleLabel {
    pub schedule: LabelValue,
}

impl ScheduleLabel {
    pub(crate) fn of(id: &str) -> Self {
        Self {
            schedule: id.into(),
        }
    }
}

/// A schedule and what became of a tick or a run.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ScheduleOutcomeLabel {
    pub schedule: LabelValue,
    pub outcome: &'static str,
}

/// A rate limit, by name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LimiterLabel {
    pub limiter: LabelValue,
}

/// A debounced handler and what became of an arrival: `run` or `superseded`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DebounceLabel {
    pub debouncer: LabelValue,
    pub verdict: &'static str,
}

/// Latency buckets from 1 ms to about 9 hours (doubling), for invocations that answer at
/// once and those that wait on a timer.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 25))
}

/// Which HTTP listener a connection or request came to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ListenerLabel {
    pub listener: &'static str,
}

/// Why a request was refused before anything of it was created.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub reason: &'static str,
}

/// What became of a call relayed to the process that runs its partition.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RelayLabel {
    pub outcome: &'static str,
}

/// Counters bumped by the engine and the listeners.
pub(crate) struct Metrics {
    /// Open connections, by listener.
    pub connections_open: Family<ListenerLabel, Gauge>,
    /// Connections over the cap, answered `429` and closed, by listener.
    pub connections_refused: Family<ListenerLabel, Counter>,
    /// Requests being served, by listener.
    pub requests_in_flight: Family<ListenerLabel, Gauge>,
    /// Request bodies still arriving, read before their requests take a slot, by listener.
    pub bodies_arriving: Family<ListenerLabel, Gauge>,
    /// Requests over the in-flight cap, answered `429`, by listener.
    pub requests_refused: Family<ListenerLabel, Counter>,
    /// Connections closed because no request head arrived within the header timeout.
    pub header_timeouts: Family<ListenerLabel, Counter>,
    /// Requests refused past the listeners' caps, by reason.
    pub rejected: Family<ReasonLabel, Counter>,
    /// Calls relayed to the process that runs their partition, by outcome.
    pub relays: Family<RelayLabel, Counter>,
    pub started: Counter,
    /// New invocations accepted here (each records this process's application version).
    pub accepted: Counter,
    pub completed: Family<ResultLabel, Counter>,
    pub retries: Counter,
    pub suspensions: Counter,
    pub paused: Counter,
    /// Unfinished invocations found at start that wait on disk to be restored.
    pub recovery_pending: Gauge,
    /// Partitions this process runs (all of them on a store of one process).
    pub partitions_running: Gauge,
    /// Per handler: invocations started, invocations completed by result, failed, retries,
    /// pauses.
    pub handler_started: Family<HandlerLabel, Counter>,
    pub handler_completed: Family<HandlerResultLabel, Counter>,
    pub handler_failed: Family<HandlerLabel, Counter>,
    pub handler_retries: Family<HandlerLabel, Counter>,
    pub handler_paused: Family<HandlerLabel, Counter>,
    /// Per handler: seconds from an invocation's acceptance to its completion.
    pub handler_duration: Family<HandlerLabel, Histogram, fn() -> Histogram>,
    /// Per schedule: ticks by fate (fired, queued, skipped), runs by outcome, next tick.
    pub schedule_ticks: Family<ScheduleOutcomeLabel, Counter>,
    pub schedule_runs: Family<ScheduleOutcomeLabel, Counter>,
    pub schedule_next_fire: Family<ScheduleLabel, Gauge>,
    /// Per rate limit: tokens reserved, and the seconds their takers waited in all.
    pub rate_waits: Family<LimiterLabel, Counter>,
    pub rate_waited: Family<LimiterLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
    /// Per debounced handler: arrivals by their verdict.
    pub debounced: Family<DebounceLabel, Counter>,
}

impl Metrics {
    /// Every per-handler series at zero for `handler` of `service`, so that a scrape lists each
    /// registered handler from the start, before anything has failed, retried or paused.
    pub(crate) fn declare_handler(&self, service: &'static str, handler: &'static str) {
        let label = HandlerLabel { service, handler };
        let _ = self.handler_started.get_or_create(&label);
        let _ = self.handler_failed.get_or_create(&label);
        let _ = self.handler_retries.get_or_create(&label);
        let _ = self.handler_paused.get_or_create(&label);
        for result in ["success", "failure"] {
            let label = HandlerResultLabel {
                service,
                handler,
                result,
            };
            let _ = self.handler_completed.get_or_create(&label);
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            connections_open: Family::default(),
            connections_refused: Family::default(),
            requests_in_flight: Family::default(),
            bodies_arriving: Family::default(),
            requests_refused: Family::default(),
            header_timeouts: Family::default(),
            rejected: Family::default(),
            relays: Family::default(),
            started: Counter::default(),
            accepted: Counter::default(),
            completed: Family::default(),
            retries: Counter::default(),
            suspensions: Counter::default(),
            paused: Counter::default(),
            recovery_pending: Gauge::default(),
            partitions_running: Gauge::default(),
            handler_started: Family::default(),
            handler_completed: Family::default(),
            handler_failed: Family::default(),
            handler_retries: Family::default(),
            handler_paused: Family::default(),
            handler_duration: Family::new_with_constructor(latency_histogram),
            schedule_ticks: Family::default(),
            schedule_runs: Family::default(),
            schedule_next_fire: Family::default(),
            rate_waits: Family::default(),
            rate_waited: Family::default(),
            debounced: Family::default(),
        }
    }
}

impl Metrics {
    /// Drops every series of a deleted schedule.
    pub(crate) fn forget_schedule(&self, id: &str) {
        self.schedule_next_fire.remove(&ScheduleLabel::of(id));
        for outcome in ["fired", "queued", "skipped"] {
            self.schedule_ticks.remove(&ScheduleOutcomeLabel {
                schedule: id.into(),
                outcome,
            });
        }
        for outcome in ["succeeded", "failed"] {
            self.schedule_runs.remove(&ScheduleOutcomeLabel {
                schedule: id.into(),
                outcome,
            });
        }
    }
}

/// Values read at scrape time.
pub(crate) struct Snapshot {
    /// The application version this process records on what it accepts.
    pub app_version: String,
    /// Whether the process drains, and the attempts running.
    pub drain: crate::engine::DrainStatus,
    /// Invocations in memory, by status.
    pub in_memory: Vec<(&'static str, i64)>,
    pub timers_pending: i64,
    pub timers_stored: i64,
    pub timers_waiting_for_slot: i64,
    pub queued_on_keys: i64,
    /// The deepest key queues: (service, key, invocations queued).
    pub top_key_queues: Vec<(String, String, i64)>,
    pub key_lanes: i64,
    pub commits: u64,
    pub commit_batches: u64,
    pub commit_seconds: f64,
    pub checkpoints: u64,
    pub checkpoint_seconds: f64,
    pub checkpoint_max_seconds: f64,
    pub checkpoint_wait_seconds: f64,
    pub commit_bytes: u64,
    pub commit_latency: CommitLatency,
    pub queued_bytes: i64,
    pub held_input_bytes: i64,
    /// Unfinished invocations in the store, by state (`None`: not counted).
    pub unfinished_stored: Option<crate::engine::Unfinished>,
    /// The concurrency limits' unkeyed buckets.
    pub limiters: Vec<crate::engine::LimiterDepth>,
}

impl Metrics {
    /// Renders the Prometheus text format.
    pub(crate) fn render(&self, snapshot: &Snapshot) -> String {
        let mut registry = Registry::with_prefix("restate");
        registry.register(
            "invocations_started",
            "Invocations started",
            self.started.clone(),
        );
        let accepted = Family::<VersionLabel, Counter>::default();
        accepted
            .get_or_create(&VersionLabel {
                version: snapshot.app_version.as_str().into(),
            })
            .inc_by(self.accepted.get());
        registry.register(
            "invocations_accepted",
            "New invocations accepted by this process, by the application version recorded on \
             them (RESTATE_APP_VERSION)",
            accepted,
        );
        registry.register(
            "invocations_completed",
            "Invocations completed, by result",
            self.completed.clone(),
        );
        registry.register(
            "handler_invocations_started",
            "Invocations started (or queued on their key), by service and handler",
            self.handler_started.clone(),
        );
        registry.register(
            "handler_invocations_completed",
            "Invocations completed, by service, handler and result (success or failure)",
            self.handler_completed.clone(),
        );
        registry.register(
            "handler_invocations_failed",
            "Invocations that ended with a terminal error (cancelled and killed ones included), \
             by service and handler: the failures of handler_invocations_completed",
            self.handler_failed.clone(),
        );
        registry.register(
            "handler_retries",
            "Failed attempts retried, by service and handler",
            self.handler_retries.clone(),
        );
        registry.register(
            "handler_invocations_paused",
            "Invocations paused (retries exhausted, non-determinism, handler not served), by \
             service and handler",
            self.handler_paused.clone(),
        );
        registry.register(
            "handler_invocation_duration_seconds",
            "Seconds from an invocation's acceptance to its completion, by service and handler",
            self.handler_duration.clone(),
        );
        registry.register(
            "schedule_ticks",
            "Schedule ticks handled in this process, by schedule and fate (fired, queued, \
             skipped)",
            self.schedule_ticks.clone(),
        );
        registry.register(
            "schedule_runs",
            "Schedule runs ended, by schedule and outcome (succeeded, failed)",
            self.schedule_runs.clone(),
        );
        registry.register(
            "schedule_next_fire_timestamp_seconds",
            "When each schedule fires next (Unix seconds; 0 when paused or never)",
            self.schedule_next_fire.clone(),
        );
        registry.register(
            "rate_limit_tokens",
            "Tokens reserved from each rate limit (one per gated invocation or step)",
            self.rate_waits.clone(),
        );
        registry.register(
            "rate_limit_wait_seconds",
            "Seconds the takers of each rate limit's tokens were told to wait, in all",
            self.rate_waited.clone(),
        );
        registry.register(
            "debounce_arrivals",
            "Arrivals at each debounced handler by verdict: run (the last of its burst) or superseded",
            self.debounced.clone(),
        );
        registry.register(
            "invocation_retries",
            "Failed attempts retried",
            self.retries.clone(),
        );
        registry.register(
            "invocation_suspensions",
            "Invocations suspended",
            self.suspensions.clone(),
        );
        registry.register(
            "invocations_paused",
            "Invocations paused",
            self.paused.clone(),
        );
        registry.register(
            "connections_open",
            "Open HTTP connections, by listener (capped by RESTATE_MAX_CONNECTIONS)",
            self.connections_open.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections over RESTATE_MAX_CONNECTIONS, answered 429 and closed, by listener",
            self.connections_refused.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Requests being served, by listener (capped by RESTATE_MAX_IN_FLIGHT)",
            self.requests_in_flight.clone(),
        );
        registry.register(
            "request_bodies_arriving",
            "Request bodies still arriving, read before their requests take a slot in flight, \
             by listener (each holds a connection until it is read or RESTATE_BODY_TIMEOUT)",
            self.bodies_arriving.clone(),
        );
        registry.register(
            "requests_refused",
            "Requests over RESTATE_MAX_IN_FLIGHT, answered 429, by listener",
            self.requests_refused.clone(),
        );
        registry.register(
            "recovery_pending",
            "Invocations found unfinished at start still waiting to be restored (at most \
             RESTATE_RECOVERY_CONCURRENCY are in memory at once)",
            self.recovery_pending.clone(),
        );
        registry.register(
            "partitions_running",
            "Partitions whose invocations this process runs (on PostgreSQL its share, as it \
             takes and gives back leases)",
            self.partitions_running.clone(),
        );
        registry.register(
            "header_timeouts",
            "Connections closed because a request head did not arrive within \
             RESTATE_HEADER_TIMEOUT (idle keep-alive connections included), by listener",
            self.header_timeouts.clone(),
        );
        registry.register(
            "requests_rejected",
            "Requests refused with nothing created, by reason: body_timeout (408, \
             RESTATE_BODY_TIMEOUT), body_too_large (413, RESTATE_MAX_BODY_BYTES), body_unreadable \
             (400), input_bytes \
             (429, RESTATE_MAX_INVOCATION_BYTES), writer_queue (429, RESTATE_WRITER_QUEUE_BYTES), \
             storage (503: disk full)",
            self.rejected.clone(),
        );
        registry.register(
            "ingress_relays",
            "Request-response calls for a partition another process runs, relayed to that \
             process's ingress, by outcome: answered there, or inbox (the owner could not be \
             reached, refused the relay, or lost the partition while the call waited: the call \
             went through the partition's inbox under the same invocation id)",
            self.relays.clone(),
        );
        let in_memory = Family::<StatusLabel, Gauge>::default();
        for (status, n) in &snapshot.in_memory {
            in_memory.get_or_create(&StatusLabel { status }).set(*n);
        }
        registry.register(
            "invocations_in_memory",
            "Unfinished invocations held in memory, by status (suspended ones are not)",
            in_memory,
        );
        let gauge = |v: i64| {
            let g = Gauge::<i64>::default();
            g.set(v);
            g
        };
        registry.register(
            "attempts_running",
            "Invocation attempts running now (handlers executing, or their ending committing)",
            gauge(snapshot.drain.running_attempts as i64),
        );
        registry.register(
            "draining",
            "1 while the process drains (PATCH /drain): no attempt starts, new invocations get 503",
            gauge(i64::from(snapshot.drain.draining)),
        );
        registry.register(
            "timers_pending",
            "Timers armed in memory: delayed starts and suspended sleeps due within the timer \
             window (RESTATE_TIMER_WINDOW)",
            gauge(snapshot.timers_pending),
        );
        registry.register(
            "timers_waiting_for_slot",
            "Timers fired for invocations on disk that wait for one of the slots bounding how \
             many such invocations are in memory at once (RESTATE_RECOVERY_CONCURRENCY)",
            gauge(snapshot.timers_waiting_for_slot),
        );
        registry.register(
            "timers_stored",
            "Timers in the store's due-time index: every delayed start and suspended sleep, \
             however far ahead",
            gauge(snapshot.timers_stored),
        );
        registry.register(
            "invocation_input_bytes",
            "Input bytes held by the invocations in memory (new invocations from outside get 429 \
             above RESTATE_MAX_INVOCATION_BYTES)",
            gauge(snapshot.held_input_bytes),
        );
        if let Some(stored) = &snapshot.unfinished_stored {
            let unfinished = Family::<StatusLabel, Gauge>::default();
            for (status, n) in [
                ("suspended", stored.suspended),
                ("scheduled", stored.scheduled),
                ("other", stored.other),
            ] {
                unfinished.get_or_create(&StatusLabel { status }).set(n);
            }
            registry.register(
                "invocations_unfinished",
                "Unfinished invocations in the store, by status: suspended, scheduled (a delayed \
                 start not due yet), other (running, runnable, queued on a key, paused); counted \
                 at most every 10 s",
                unfinished,
            );
        }
        let (running, queued) = (
            Family::<LimiterLabel, Gauge>::default(),
            Family::<LimiterLabel, Gauge>::default(),
        );
        for depth in &snapshot.limiters {
            let label = LimiterLabel {
                limiter: depth.name.as_str().into(),
            };
            running.get_or_create(&label).set(depth.running);
            queued.get_or_create(&label).set(depth.queued);
        }
        registry.register(
            "limiter_running",
            "Permits held in each concurrency limit's unkeyed bucket (configured limits, and \
             those this process's handlers and steps used)",
            running,
        );
        registry.register(
            "limiter_queued",
            "Invocations and steps waiting, in arrival order, for a permit of each concurrency \
             limit's unkeyed bucket",
            queued,
        );
        registry.register(
            "key_queue_depth",
            "Invocations queued behind another on their key",
            gauge(snapshot.queued_on_keys),
        );
        let top_keys = Family::<KeyLabel, Gauge>::default();
        for (service, key, depth) in &snapshot.top_key_queues {
            top_keys
                .get_or_create(&KeyLabel {
                    service: service.as_str().into(),
                    key: key.as_str().into(),
                })
                .set(*depth);
        }
        registry.register(
            "key_queue_depth_top",
            "Invocations queued on each of the keys with the deepest queues (at most ten keys)",
            top_keys,
        );
        registry.register(
            "key_lanes",
            "Object and workflow keys held in memory: an exclusive invocation running or queued, \
             or writes not yet durable",
            gauge(snapshot.key_lanes),
        );
        let counter = |v: u64| {
            let c = Counter::<u64>::default();
            c.inc_by(v);
            c
        };
        registry.register(
            "journal_commits",
            "Durable journal transactions",
            counter(snapshot.commits),
        );
        registry.register(
            "journal_commit_latency_seconds",
            "How long journal commits took (the writer's append, sync and apply of one group)",
            CommitHistogram(snapshot.commit_latency),
        );
        registry.register(
            "journal_commit_batches",
            "Write batches committed (batches / commits = mean group size)",
            counter(snapshot.commit_batches),
        );
        let seconds = |v: f64| {
            let c = Counter::<f64, std::sync::atomic::AtomicU64>::default();
            c.inc_by(v);
            c
        };
        registry.register(
            "journal_commit_bytes",
            "Bytes of the write batches committed",
            counter(snapshot.commit_bytes),
        );
        registry.register(
            "journal_queued_bytes",
            "Bytes submitted to the journal writer and not yet committed (new invocations from \
             outside are refused above RESTATE_WRITER_QUEUE_BYTES)",
            gauge(snapshot.queued_bytes),
        );
        registry.register(
            "journal_commit_seconds",
            "Time spent in journal commits (seconds / commits = mean latency)",
            seconds(snapshot.commit_seconds),
        );
        registry.register(
            "journal_checkpoints",
            "Durable commits of the whole store, after which the write-ahead log starts over",
            counter(snapshot.checkpoints),
        );
        registry.register(
            "journal_checkpoint_seconds",
            "Time spent in checkpoints (on their own thread; commits go on meanwhile)",
            seconds(snapshot.checkpoint_seconds),
        );
        registry.register(
            "journal_checkpoint_wait_seconds",
            "Time commits waited for a checkpoint (a log segment filled before the previous \
             checkpoint ended, a group larger than a segment, or an idle store's checkpoint)",
            seconds(snapshot.checkpoint_wait_seconds),
        );
        let longest = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        longest.set(snapshot.checkpoint_max_seconds);
        registry.register(
            "journal_checkpoint_max_seconds",
            "The longest checkpoint since the process started",
            longest,
        );
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod label_tests {
    use super::*;

    #[test]
    fn label_values_from_outside_are_escaped() {
        let mut registry = Registry::default();
        let family = Family::<KeyLabel, Gauge>::default();
        family
            .get_or_create(&KeyLabel {
                service: "S".into(),
                key: "a\"}\nb\\".into(),
            })
            .set(1);
        registry.register("q", "q", family);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"q{service="S",key="a\"}\nb\\"} 1"#),
            "{text}"
        );
    }
}
