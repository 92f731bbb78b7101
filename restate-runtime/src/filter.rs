//! Which invocations a listing shows: the filters of the admin API and the test runtime.

use crate::storage::InvocationRecord;

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
    status: Option<String>,
    version: Option<String>,
}

impl InvocationFilter {
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

    /// Only invocations in this status (see [`InvocationView::status`]).
    ///
    /// ```
    /// let f = restate_runtime::testing::InvocationFilter::default().status("completed");
    /// ```
    pub fn status(mut self, status: impl Into<String>) -> Self {
        self.status = Some(status.into());
        self
    }

    /// Only invocations accepted under this application version (see
    /// [`RuntimeBuilder::app_version`](crate::RuntimeBuilder::app_version)).
    ///
    /// ```
    /// let f = restate_runtime::testing::InvocationFilter::default().version("1.4.0+9c1e07a2");
    /// ```
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    pub(crate) fn matches(&self, record: &InvocationRecord) -> bool {
        let target = &record.target;
        self.service.as_ref().is_none_or(|s| *s == target.service)
            && self.handler.as_ref().is_none_or(|h| *h == target.handler)
            && self
                .key
                .as_ref()
                .is_none_or(|k| target.key.as_ref() == Some(k))
            && self
                .status
                .as_ref()
                .is_none_or(|s| s == record.status.name())
            && self
                .version
                .as_ref()
                .is_none_or(|v| record.version.as_ref() == Some(v))
    }
}
