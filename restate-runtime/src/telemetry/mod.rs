//! Traces: one span per invocation attempt, with child spans for its steps (runs, calls,
//! sends, sleeps, waits), all in the trace of the request that started the invocation. The
//! W3C trace context travels as the invocation's `traceparent` header, stored with it: an
//! attempt after a suspension, a restart or a failover continues the same trace, and a call
//! or send from a handler gives its callee the caller's step as parent.
//!
//! The spans are `tracing` spans of target [`TARGET`] at `DEBUG` level: without an exporter
//! (the `otel` feature and `OTEL_EXPORTER_OTLP_ENDPOINT`) no layer is interested in them and
//! they cost a disabled span each.

#[cfg(feature = "otel")]
mod export;

#[cfg(feature = "otel")]
pub(crate) use export::{flush, layer};

use tracing::Span;

use crate::ids::InvocationId;
use crate::storage::Target;

/// The target of the runtime's trace spans (its log spans and events have others).
pub(crate) const TARGET: &str = "restate_runtime::trace";

/// The header that carries the W3C trace context.
pub(crate) const TRACEPARENT: &str = "traceparent";

/// The span of one attempt, a child of the context the invocation's headers carry.
pub(crate) fn attempt_span(
    id: &InvocationId,
    target: &Target,
    attempt: u32,
    headers: &[(String, String)],
) -> Span {
    let span = tracing::debug_span!(
        target: TARGET,
        "attempt",
        otel.name = %format_args!("{}/{}", target.service, target.handler),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        restate.invocation.id = %id,
        restate.invocation.target = %target,
        restate.attempt = attempt,
        restate.outcome = tracing::field::Empty,
    );
    // A later attempt's parent has long ended (a suspension, a restart came between): it is
    // also linked, as OpenTelemetry does for work that outlives its cause.
    set_parent(&span, headers, attempt > 1);
    span
}

/// The span of a request at the ingress, a child of the client's trace context if it sent
/// one; the invocation's stored `traceparent` becomes this span's.
pub(crate) fn ingress_span(target: &Target, headers: &mut Vec<(String, String)>) -> Span {
    let span = tracing::debug_span!(
        target: TARGET,
        "ingress",
        otel.name = %format_args!("ingress {}/{}", target.service, target.handler),
        otel.kind = "server",
        restate.invocation.target = %target,
    );
    set_parent(&span, headers, false);
    propagate(&span, headers);
    span
}

/// The span of a step an attempt makes (a run, a call, a send, a sleep, a wait), not of one
/// replayed from the journal: each step appears once in the trace, in the attempt that made it.
pub(crate) fn step_span(kind: &'static str, name: &dyn std::fmt::Display) -> Span {
    tracing::debug_span!(
        target: TARGET,
        "step",
        otel.name = %format_args!("{kind} {name}"),
        otel.status_code = tracing::field::Empty,
        otel.status_description = tracing::field::Empty,
        restate.step = kind,
    )
}

/// Marks a step's span as failed.
pub(crate) fn record_error(span: &Span, error: &str) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", error);
}

/// Ends an attempt's span with what became of it (`success`, `failure`, `retry`, `suspended`,
/// `paused`, `killed`); a failure or a retry marks it as an error.
pub(crate) fn record_outcome(span: &Span, outcome: &str, error: Option<&str>) {
    span.record("restate.outcome", outcome);
    if let Some(error) = error {
        record_error(span, error);
    }
}

/// Gives a new invocation that carries no trace context one (it was started in-process: by
/// a client of the runtime's handle, a schedule, a debounce, a restart): an `invoke` span, a
/// child of the caller's current span, so that all its attempts share one trace.
pub(crate) fn trace_new(target: &Target, headers: &mut Vec<(String, String)>) {
    // Every new invocation passes here: with nothing exported, not even the headers are read.
    if !tracing::enabled!(target: TARGET, tracing::Level::DEBUG) {
        return;
    }
    if headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case(TRACEPARENT))
    {
        return;
    }
    let span = tracing::debug_span!(
        target: TARGET,
        "invoke",
        otel.name = %format_args!("invoke {}/{}", target.service, target.handler),
        restate.invocation.target = %target,
    );
    propagate(&span, headers);
}

/// Replaces the `traceparent` of `headers` (in any case) by `span`'s context, when spans are
/// exported: the invocation these headers create becomes its child.
pub(crate) fn propagate(span: &Span, headers: &mut Vec<(String, String)>) {
    let Some(context) = traceparent(span) else {
        return;
    };
    headers.retain(|(name, _)| !name.eq_ignore_ascii_case(TRACEPARENT));
    headers.push((TRACEPARENT.to_owned(), context));
}

/// The trace context `headers` carry, if any (by name in any case).
#[cfg(feature = "otel")]
fn carried(headers: &[(String, String)]) -> Option<&str> {
    headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(TRACEPARENT))
        .map(|(_, value)| value.as_str())
}

/// Makes `span` a child of the trace context `headers` carry, if any; with `link`, also
/// linked to it.
#[cfg(feature = "otel")]
fn set_parent(span: &Span, headers: &[(String, String)], link: bool) {
    if let Some(parent) = carried(headers).filter(|_| !span.is_disabled()) {
        export::set_parent(span, parent, link);
    }
}

#[cfg(not(feature = "otel"))]
fn set_parent(_span: &Span, _headers: &[(String, String)], _link: bool) {}

#[cfg(feature = "otel")]
fn traceparent(span: &Span) -> Option<String> {
    export::traceparent(span)
}

#[cfg(not(feature = "otel"))]
fn traceparent(_span: &Span) -> Option<String> {
    None
}
