//! Which invocations a listing shows: the filters of the admin API and the test runtime.

use crate::storage::{InvocationRecord, JournalEntry, Status};

/// The statuses an invocation is shown with (`pending`: a call or message to an object or
/// workflow key that waits for its key, stored as running, or as scheduled once due; `queued`: waiting for a concurrency
/// limit's permit, stored as running or suspended; `backing-off`: between attempts after a
/// failed one, stored as running).
pub(crate) const STATUSES: [&str; 8] = [
    "scheduled",
    "pending",
    "running",
    "backing-off",
    "suspended",
    "queued",
    "paused",
    "completed",
];

/// Between attempts after a failed one (its record says until when).
pub(crate) const BACKING_OFF: &str = "backing-off";

/// The status an invocation is shown with: its record's, except `pending` for one of an
/// object or workflow key that has not started (it waits for its key, Restate's `pending`) and
/// `queued` for one that waits for a concurrency limit's permit (told by its journal's end).
pub(crate) fn shown_status(
    record: &InvocationRecord,
    journal: &[(u32, JournalEntry)],
) -> &'static str {
    match record.status {
        Status::Runnable
            if record.attempts == 0 && record.target.key.is_some() && journal.is_empty() =>
        {
            "pending"
        }
        Status::Runnable | Status::Suspended { .. }
            if crate::concurrency::waits_for_permit(journal) =>
        {
            "queued"
        }
        _ => record.status.name(),
    }
}

/// What `?version=` names the invocations accepted before versions were recorded by.
const UNKNOWN_VERSION: &str = "unknown";

/// Why an invocation was paused, told by the error it was paused with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PauseReason {
    /// Its journal and its handler's code disagree (a deploy changed the code).
    NonDeterminism,
    /// Its attempts failed as many times as its retry policy allows.
    RetriesExhausted,
    /// This binary does not serve its service or handler.
    UnknownTarget,
    /// Its process ended during as many of its attempts in a row as allowed.
    Interrupted,
}

impl PauseReason {
    const ALL: [Self; 4] = [
        Self::NonDeterminism,
        Self::RetriesExhausted,
        Self::UnknownTarget,
        Self::Interrupted,
    ];

    /// The name the admin API shows and filters by.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::NonDeterminism => "non_determinism",
            Self::RetriesExhausted => "retries_exhausted",
            Self::UnknownTarget => "unknown_target",
            Self::Interrupted => "interrupted",
        }
    }

    /// The words its pause error starts with.
    pub(crate) fn marker(self) -> &'static str {
        match self {
            Self::NonDeterminism => "non-determinism",
            Self::RetriesExhausted => "retries exhausted",
            Self::UnknownTarget => "not served by this binary",
            Self::Interrupted => "interrupted",
        }
    }

    /// Why `record` is paused (`other` for a reason of an older binary); `None` unless paused.
    pub(crate) fn of(record: &InvocationRecord) -> Option<&'static str> {
        if record.status != Status::Paused {
            return None;
        }
        let error = record.last_error.as_deref().unwrap_or_default();
        Some(
            Self::ALL
                .into_iter()
                .find(|r| error.starts_with(r.marker()))
                .map_or("other", Self::name),
        )
    }
}

/// Which invocations a listing shows ([`TestRuntime::invocations`](crate::testing::TestRuntime::invocations),
/// the admin API's `GET /invocations`): all of them when empty.
///
/// ```
/// use restate_runtime::testing::InvocationFilter;
/// let suspended_trackers = InvocationFilter::default()
///     .service("PaymentTracker")
///     .status("suspended");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[must_use]
pub struct InvocationFilter {
    service: Option<String>,
    handler: Option<String>,
    key: Option<String>,
    idempotency_key: Option<String>,
    status: Option<String>,
    version: Option<String>,
    reason: Option<String>,
}

impl InvocationFilter {
    /// The names of its fields as query parameters of the admin API.
    pub(crate) const PARAMS: [&str; 7] = [
        "service",
        "handler",
        "key",
        "idempotency_key",
        "status",
        "version",
        "reason",
    ];

    /// Only invocations of this service, object or workflow.
    ///
    /// ```
    /// let f = restate_runtime::testing::InvocationFilter::default().service("Greeter");
    /// ```
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    /// Only invocations of this handler.
    ///
    /// ```
    /// let f = restate_runtime::testing::InvocationFilter::default().handler("greet");
    /// ```
    pub fn handler(mut self, handler: impl Into<String>) -> Self {
        self.handler = Some(handler.into());
        self
    }

    /// Only invocations on this object or workflow key.
    ///
    /// ```
    /// let f = restate_runtime::testing::InvocationFilter::default().key("invoice-1");
    /// ```
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Only the invocation sent with this idempotency key: a webhook event's invocation by its
    /// event id (the key of a verified or event-id webhook).
    ///
    /// ```
    /// let f = restate_runtime::testing::InvocationFilter::default().idempotency_key("evt_1");
    /// ```
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Only invocations in this status (see [`InvocationView::status`](crate::testing::InvocationView::status)).
    ///
    /// ```
    /// let f = restate_runtime::testing::InvocationFilter::default().status("completed");
    /// ```
    pub fn status(mut self, status: impl Into<String>) -> Self {
        self.status = Some(status.into());
        self
    }

    /// Only invocations accepted under this application version (see
    /// [`RuntimeBuilder::app_version`](crate::RuntimeBuilder::app_version)); `unknown` for
    /// those accepted by a binary that did not record versions.
    ///
    /// ```
    /// let f = restate_runtime::testing::InvocationFilter::default().version("1.4.0+9c1e07a2");
    /// ```
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Only paused invocations paused for this reason: `non_determinism` (the code no longer
    /// replays their journal, as after a bad deploy), `retries_exhausted`, `unknown_target`
    /// (the binary does not serve their handler).
    ///
    /// ```
    /// let f = restate_runtime::testing::InvocationFilter::default().reason("non_determinism");
    /// ```
    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Refuses a status or pause reason no invocation can have (a typo would list nothing).
    pub(crate) fn check(&self) -> Result<(), String> {
        if let Some(status) = self.status.as_deref().filter(|s| !STATUSES.contains(s)) {
            return Err(format!(
                "unknown status '{status}': use one of {}",
                STATUSES.join(", ")
            ));
        }
        let reasons: Vec<&str> = PauseReason::ALL
            .iter()
            .map(|r| r.name())
            .chain(["other"])
            .collect();
        if let Some(reason) = self.reason.as_deref().filter(|r| !reasons.contains(r)) {
            return Err(format!(
                "unknown reason '{reason}': use one of {}",
                reasons.join(", ")
            ));
        }
        Ok(())
    }

    /// The service it names, if any.
    pub(crate) fn service_named(&self) -> Option<&str> {
        self.service.as_deref()
    }

    /// The handler it names, if any.
    pub(crate) fn handler_named(&self) -> Option<&str> {
        self.handler.as_deref()
    }

    /// Whether it filters on nothing (a listing of every invocation).
    pub(crate) fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether `record` is listed; `shown` gives the status it is shown with
    /// ([`shown_status`]), read only when the status filter needs it.
    pub(crate) fn matches(
        &self,
        record: &InvocationRecord,
        shown: impl FnOnce() -> &'static str,
    ) -> bool {
        let target = &record.target;
        // The runtime's own invocations (schedules' ticks and runs) only when asked for.
        self.service.as_ref().map_or_else(
            || !crate::registry::is_internal(&target.service),
            |s| *s == target.service,
        ) && self.handler.as_ref().is_none_or(|h| *h == target.handler)
            && self
                .key
                .as_ref()
                .is_none_or(|k| target.key.as_ref() == Some(k))
            && self
                .idempotency_key
                .as_ref()
                .is_none_or(|k| record.idempotency_key.as_ref() == Some(k))
            && self.status.as_deref().is_none_or(|s| {
                let stored = record.status.name();
                // Running and suspended ones may be shown as pending, queued or backing off,
                // and a scheduled one that fell due behind a busy key as pending.
                let shown_otherwise = match stored {
                    "running" | "suspended" => matches!(
                        s,
                        "running" | "suspended" | "pending" | "queued" | BACKING_OFF
                    ),
                    "scheduled" => matches!(s, "scheduled" | "pending"),
                    _ => false,
                };
                if shown_otherwise {
                    s == shown()
                } else {
                    s == stored
                }
            })
            && self.version.as_ref().is_none_or(|v| match &record.version {
                Some(version) => version == v,
                // Accepted by a binary that did not record versions.
                None => v == UNKNOWN_VERSION,
            })
            && self
                .reason
                .as_ref()
                .is_none_or(|r| PauseReason::of(record) == Some(r.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each name the admin API lets through is a field the filter reads.
    #[test]
    fn every_listed_parameter_is_a_filter_field() {
        for name in InvocationFilter::PARAMS {
            let filter: InvocationFilter =
                serde_json::from_value(serde_json::json!({ name: "x" })).unwrap();
            assert_ne!(filter, InvocationFilter::default(), "{name}");
        }
    }
}
