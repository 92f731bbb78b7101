//! What a test reads back: an invocation's record and decoded journal, invocations listed with
//! the admin API's filters, an object key's state; typed values instead of the admin API's JSON.

use serde::de::DeserializeOwned;

use super::TestRuntime;
use crate::error::TerminalError;
use crate::filter::InvocationFilter;
use crate::ids::InvocationId;
use crate::storage::{InvocationRecord, JournalEntry, StateScope, Status};

/// One invocation as the admin API's `GET /invocations/{id}` shows it: its stored record
/// (target, status with its times, attempts, last error, idempotency key, input and headers)
/// and its journal entries by index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationView {
    /// Its id.
    pub id: InvocationId,
    /// Its record.
    pub record: InvocationRecord,
    /// Its journal, by entry index.
    pub journal: Vec<(u32, JournalEntry)>,
}

impl InvocationView {
    /// The status's name, as the admin API shows it: `scheduled`, `pending` (a call or message
    /// to an object or workflow key, waiting for its key), `running`, `suspended`, `queued`
    /// (waiting for a concurrency limit's permit), `paused` or `completed`. Between attempts
    /// the admin API says `backing-off` (and [`TestRuntime::invocations`] filters on it); this
    /// view, made of the record and journal, says `running` then.
    ///
    /// ```no_run
    /// # async fn demo(t: restate_runtime::testing::TestRuntime, id: restate_runtime::InvocationId) {
    /// assert_eq!(t.invocation(id).unwrap().status(), "suspended");
    /// # }
    /// ```
    pub fn status(&self) -> &'static str {
        crate::filter::shown_status(&self.record, &self.journal)
    }

    /// Its result once completed, decoded: `None` while it has none.
    ///
    /// ```no_run
    /// # async fn demo(t: restate_runtime::testing::TestRuntime, id: restate_runtime::InvocationId) {
    /// let greeting: String = t.invocation(id).unwrap().output().unwrap().unwrap();
    /// # }
    /// ```
    pub fn output<T: DeserializeOwned>(&self) -> Option<Result<T, TerminalError>> {
        match &self.record.status {
            Status::Completed { outcome, .. } => {
                Some(crate::context::run::outcome_to_result(outcome.clone()))
            }
            _ => None,
        }
    }

    /// For a debounced invocation that did not run: the one of its burst that ran in its place
    /// (its [`output`](Self::output) is that one's).
    ///
    /// ```no_run
    /// # async fn demo(t: restate_runtime::testing::TestRuntime, id: restate_runtime::InvocationId) {
    /// if let Some(ran) = t.invocation(id).unwrap().superseded_by() {
    ///     println!("{id} was superseded by {ran}");
    /// }
    /// # }
    /// ```
    pub fn superseded_by(&self) -> Option<InvocationId> {
        match &self.record.status {
            Status::Completed { outcome, .. } => outcome.superseded_by(),
            _ => None,
        }
    }

    /// The names of its `ctx.run` steps, in journal order.
    ///
    /// ```no_run
    /// # async fn demo(t: restate_runtime::testing::TestRuntime, id: restate_runtime::InvocationId) {
    /// assert_eq!(t.invocation(id).unwrap().run_names(), ["charge", "email"]);
    /// # }
    /// ```
    pub fn run_names(&self) -> Vec<&str> {
        self.journal
            .iter()
            .filter_map(|(_, entry)| match entry {
                JournalEntry::Run { name, .. } => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }
}

impl TestRuntime {
    /// One invocation's record and journal, as it is now (in memory if it runs, else as
    /// stored); `None` for an id the store does not know (or no longer: retention).
    ///
    /// ```no_run
    /// # async fn demo(t: restate_runtime::testing::TestRuntime, id: restate_runtime::InvocationId) {
    /// let view = t.invocation(id).expect("known");
    /// println!("{} after {} attempts", view.status(), view.record.attempts);
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// When the store cannot be read (it can fail only after an injected crash).
    pub fn invocation(&self, id: InvocationId) -> Option<InvocationView> {
        let engine = self.engine();
        let inspected = engine
            .inspect(&id)
            .unwrap_or_else(|e| panic!("cannot read invocation {id}: {e}"));
        inspected.map(|(mut record, journal)| {
            // A delayed one that fell due behind a busy key waits for it on disk, still
            // `Scheduled` there: as it would be in memory, it has arrived (shown `pending`).
            if matches!(record.status, Status::Scheduled { .. })
                && engine.shown_status(&id, &record) == "pending"
            {
                record.status = Status::Runnable;
            }
            InvocationView {
                id,
                record,
                journal,
            }
        })
    }

    /// Every invocation `filter` lets through, in id order, with its journal.
    ///
    /// ```no_run
    /// # async fn demo(t: restate_runtime::testing::TestRuntime) {
    /// use restate_runtime::testing::InvocationFilter;
    /// let waiting = t.invocations(InvocationFilter::default().status("suspended"));
    /// assert!(waiting.iter().all(|v| v.status() == "suspended"));
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// When the filter names an unknown status or pause reason, or matches nothing and names
    /// a service or handler that is not bound (a typo would otherwise match nothing, and an
    /// assertion that nothing matches would pass; invocations of a service no longer bound
    /// are still listed), or when the store cannot be read (it can fail only after an
    /// injected crash).
    pub fn invocations(&self, filter: InvocationFilter) -> Vec<InvocationView> {
        if let Err(e) = filter.check() {
            panic!("TestRuntime::invocations: {e}");
        }
        let listed = self.list(&filter);
        if listed.is_empty() {
            match (filter.service_named(), filter.handler_named()) {
                (Some(service), handler) => {
                    self.bound_or_panic("invocations", service, handler, false)
                }
                (None, Some(handler)) => self.handler_bound_or_panic(handler),
                (None, None) => {}
            }
        }
        listed
    }

    fn list(&self, filter: &InvocationFilter) -> Vec<InvocationView> {
        let engine = self.engine();
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let (page, next) = engine
                .list(
                    |id, r| filter.matches(r, || engine.shown_status(id, r)),
                    after,
                    1000,
                )
                .unwrap_or_else(|e| panic!("cannot list invocations: {e}"));
            out.extend(page.into_iter().filter_map(|(id, _)| self.invocation(id)));
            match next {
                Some(next) => after = Some(next),
                None => return out,
            }
        }
    }

    /// One state entry of an object or workflow key, decoded from JSON; `None` when unset.
    /// It reads what is committed: call it when the runtime is idle.
    ///
    /// ```no_run
    /// # async fn demo(t: restate_runtime::testing::TestRuntime) {
    /// let sent: Option<u32> = t.state("Reminder", "invoice-1", "sent");
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// When the store cannot be read, the value is not a `T`, or it is unset and `service`
    /// names no bound object or workflow (a typo would read as "unset").
    pub fn state<T: DeserializeOwned>(&self, service: &str, key: &str, name: &str) -> Option<T> {
        let scope = StateScope {
            service: service.to_owned(),
            key: key.to_owned(),
        };
        let Some(bytes) = self
            .engine()
            .storage()
            .state(&scope, name)
            .unwrap_or_else(|e| panic!("cannot read state {service}/{key}/{name}: {e}"))
        else {
            self.bound_or_panic("state", service, None, true);
            return None;
        };
        Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!("state {service}/{key}/{name} is not the type asked for: {e}")
        }))
    }

    /// The names of an object or workflow key's state entries.
    ///
    /// ```no_run
    /// # async fn demo(t: restate_runtime::testing::TestRuntime) {
    /// assert_eq!(t.state_keys("Reminder", "invoice-1"), ["sent"]);
    /// # }
    /// ```
    ///
    /// # Panics
    ///
    /// When the store cannot be read, or the key has no state and `service` names no bound
    /// object or workflow (a typo would read as "no state").
    pub fn state_keys(&self, service: &str, key: &str) -> Vec<String> {
        let scope = StateScope {
            service: service.to_owned(),
            key: key.to_owned(),
        };
        let names = self
            .engine()
            .storage()
            .state_keys(&scope)
            .unwrap_or_else(|e| panic!("cannot read the state of {service}/{key}: {e}"));
        if names.is_empty() {
            self.bound_or_panic("state_keys", service, None, true);
        }
        names
    }

    /// Panics, naming what is bound, unless `service` (with `handler`, and keyed when `keyed`)
    /// is served by this runtime: called when a read under that name found nothing.
    fn bound_or_panic(&self, method: &str, service: &str, handler: Option<&str>, keyed: bool) {
        let engine = self.engine();
        let registry = engine.registry();
        let Some(bound) = registry.get(service) else {
            let names: Vec<_> = registry.definitions().iter().map(|d| d.name).collect();
            panic!(
                "TestRuntime::{method}: no service named `{service}` is bound (bound: {names:?})"
            );
        };
        let definition = &bound.definition;
        if keyed && definition.kind == crate::ServiceKind::Service {
            panic!("TestRuntime::{method}: `{service}` is a service, which has no keys nor state");
        }
        if let Some(handler) = handler.filter(|h| definition.handler(h).is_none()) {
            let names: Vec<_> = definition.handlers.iter().map(|h| h.name).collect();
            panic!(
                "TestRuntime::{method}: `{service}` has no handler `{handler}` (it has {names:?})"
            );
        }
    }

    /// [`Self::bound_or_panic`] for a handler named without its service.
    fn handler_bound_or_panic(&self, handler: &str) {
        let engine = self.engine();
        let definitions = engine.registry().definitions();
        if !definitions.iter().any(|d| d.handler(handler).is_some()) {
            panic!("TestRuntime::invocations: no bound service has a handler `{handler}`");
        }
    }
}
