//! Invocations: inspect one (status and journal), list with filters and paging, and control
//! (cancel, kill, purge, resume).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::params::{Params, PathParams};
use crate::clock::rfc3339;
use crate::engine::{Acted, ControlError, Engine};
use crate::filter::{InvocationFilter, PauseReason};
use crate::ids::InvocationId;
use crate::ingress::{ApiError, parse_invocation_id};
use crate::storage::{InvocationRecord, JournalEntry, Outcome, Status};

/// A payload as JSON where it is JSON, else as a lossy string.
pub(super) fn payload_json(bytes: &[u8]) -> Value {
    serde_json::from_slice::<Value>(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

fn outcome_json(outcome: &Outcome) -> Value {
    match outcome {
        Outcome::Success(bytes) => json!({ "success": payload_json(bytes) }),
        Outcome::Superseded { by, outcome } => {
            json!({ "supersededBy": by.to_string(), "result": outcome_json(outcome) })
        }
        failure => {
            let e = failure.clone().into_result().expect_err("not a success");
            let mut v = json!({ "code": e.code(), "message": e.message() });
            if !e.metadata().is_empty() {
                v["metadata"] = json!(e.metadata());
            }
            json!({ "failure": v })
        }
    }
}

fn entry_json(index: u32, entry: &JournalEntry) -> Value {
    let mut v = match entry {
        JournalEntry::Run { name, outcome } => {
            json!({ "name": name, "result": outcome_json(outcome) })
        }
        JournalEntry::Send {
            target,
            invocation_id,
        } => {
            json!({ "target": target.to_string(), "invocationId": invocation_id.to_string() })
        }
        JournalEntry::Call {
            target,
            invocation_id,
            outcome,
        } => json!({
            "target": target.to_string(),
            "invocationId": invocation_id.to_string(),
            "result": outcome.as_ref().map(outcome_json),
        }),
        JournalEntry::GetState { name, value } => {
            json!({ "name": name, "value": value.as_deref().map(payload_json) })
        }
        JournalEntry::SetState { name, value } => {
            json!({ "name": name, "value": payload_json(value) })
        }
        JournalEntry::ClearState { name } => json!({ "name": name }),
        JournalEntry::StateKeys { keys } => json!({ "keys": keys }),
        JournalEntry::ClearAllState => json!({}),
        JournalEntry::Sleep {
            wake_at_ms,
            cancelled,
        } => json!({ "wakeAt": rfc3339(*wake_at_ms), "cancelled": cancelled }),
        JournalEntry::Awakeable { outcome } => {
            json!({ "result": outcome.as_ref().map(outcome_json) })
        }
        JournalEntry::CompleteAwakeable { id } => json!({ "awakeableId": id }),
        JournalEntry::Select { winner } => json!({ "winner": winner }),
        JournalEntry::GetPromise { name, outcome }
        | JournalEntry::PeekPromise { name, outcome } => {
            json!({ "name": name, "result": outcome.as_ref().map(outcome_json) })
        }
        JournalEntry::CompletePromise { name, accepted } => {
            json!({ "name": name, "accepted": accepted })
        }
        JournalEntry::Patch { change } => json!({ "change": change }),
        JournalEntry::CancelInvocation { invocation_id } => {
            json!({ "invocationId": invocation_id.to_string() })
        }
        JournalEntry::Attach {
            invocation_id,
            outcome,
        }
        | JournalEntry::GetOutput {
            invocation_id,
            outcome,
        } => json!({
            "invocationId": invocation_id.to_string(),
            "result": outcome.as_ref().map(outcome_json),
        }),
    };
    v["index"] = index.into();
    v["kind"] = entry.kind().into();
    v
}

pub(super) async fn invocation(
    State(engine): State<Engine>,
    PathParams(id): PathParams<String>,
) -> Response {
    let parsed = match parse_invocation_id(&id) {
        Ok(id) => id,
        Err(e) => return e.into_response(),
    };
    match view_of(&engine, parsed) {
        Ok(Some(view)) => axum::Json(view).into_response(),
        Ok(None) => ApiError::ingress(404, format!("invocation '{id}' not found")).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// One invocation's view (`GET /invocations/{id}`) by its id as given; why not, as a status
/// and a message.
pub(super) fn view(engine: &Engine, id: &str) -> Result<Value, (StatusCode, String)> {
    let parsed = parse_invocation_id(id).map_err(|e| (status_of(e.code), e.message))?;
    match view_of(engine, parsed) {
        Ok(Some(view)) => Ok(view),
        Ok(None) => Err((
            StatusCode::NOT_FOUND,
            format!("invocation '{id}' not found"),
        )),
        Err(e) => {
            let e = ApiError::from(e);
            Err((status_of(e.code), e.message))
        }
    }
}

fn status_of(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn view_of(
    engine: &Engine,
    parsed: InvocationId,
) -> Result<Option<Value>, crate::engine::EngineError> {
    Ok(match engine.inspect(&parsed)? {
        Some((record, journal)) => {
            let (completed_at, result) = match &record.status {
                Status::Completed {
                    outcome,
                    completed_at_ms,
                    ..
                } => (Some(rfc3339(*completed_at_ms)), Some(outcome_json(outcome))),
                _ => (None, None),
            };
            let status = engine.shown_status(&parsed, &record);
            let mut view = summary(
                parsed,
                &record,
                status,
                engine.next_retry_at_ms(&parsed, &record),
            );
            view["idempotency_key"] = json!(record.idempotency_key);
            view["completed_at"] = json!(completed_at);
            view["result"] = json!(result);
            view["journal"] = journal.iter().map(|(i, e)| entry_json(*i, e)).collect();
            Some(view)
        }
        // Accepted, still in its partition's inbox: its record is not written yet (found from
        // outside: one acknowledged 202 was 404 here while its owner was paused).
        None if engine.waits_in_inbox(&parsed)? => Some(json!({
            "id": parsed.to_string(),
            "status": "pending",
            "inbox": true,
            "journal": [],
        })),
        None => None,
    })
}

/// An invocation in a listing, shown with `status` (see [`Engine::shown_status`]).
/// One invocation's row; `next_retry_at` is given while it is backing off.
pub(super) fn summary(
    id: InvocationId,
    record: &InvocationRecord,
    status: &str,
    next_retry_at_ms: Option<u64>,
) -> Value {
    json!({
        "id": id.to_string(),
        "target": record.target.to_string(),
        "service": record.target.service,
        "handler": record.target.handler,
        "key": record.target.key,
        "status": status,
        "attempts": record.attempts,
        "last_error": record.last_error,
        "next_retry_at": next_retry_at_ms.map(rfc3339),
        "created_at": rfc3339(record.created_at_ms),
        "modified_at": rfc3339(record.modified_at_ms),
        "version": record.version,
        "paused_reason": PauseReason::of(record),
        "superseded_by": match &record.status {
            Status::Completed { outcome, .. } => outcome.superseded_by().map(|id| id.to_string()),
            _ => None,
        },
    })
}

/// Paging of `GET /invocations` (its filters are an [`InvocationFilter`]).
#[derive(serde::Deserialize)]
pub(super) struct Page {
    limit: Option<usize>,
    /// The `next` cursor of the previous page.
    after: Option<String>,
}

impl Page {
    /// Its parameters' names.
    const PARAMS: [&str; 2] = ["limit", "after"];
}

/// Refuses a query naming a parameter that is neither a filter nor one of `own`.
fn only_filters_and(uri: &axum::http::Uri, own: &[&str]) -> Result<(), ApiError> {
    let known: Vec<&str> = (own.iter().copied())
        .chain(InvocationFilter::PARAMS)
        .collect();
    super::params::only_known(uri, &known)
}

/// `limit=0`, refused rather than read as one.
fn zero_limit() -> Response {
    ApiError::ingress(400, "limit must be at least 1 (at most 1000)").into_response()
}

pub(super) async fn list(
    State(engine): State<Engine>,
    uri: axum::http::Uri,
    Params(page): Params<Page>,
    Params(filter): Params<InvocationFilter>,
) -> Response {
    // A misspelt filter would list everything instead of what was meant.
    if let Err(refused) = only_filters_and(&uri, &Page::PARAMS) {
        return refused.into_response();
    }
    let after = match page.after.as_deref().map(parse_invocation_id).transpose() {
        Ok(after) => after,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = filter.check() {
        return ApiError::ingress(400, e).into_response();
    }
    if page.limit == Some(0) {
        return zero_limit();
    }
    let limit = page.limit.unwrap_or(100).min(1000);
    // The status filtered on is the one shown (read once); kept for the page's rows only.
    let shown = std::cell::RefCell::new(std::collections::HashMap::new());
    let matches = |id: &InvocationId, r: &InvocationRecord| {
        let read = std::cell::Cell::new(None);
        let matched = filter.matches(r, || {
            let status = engine.shown_status(id, r);
            read.set(Some(status));
            status
        });
        if let (true, Some(status)) = (matched, read.get()) {
            shown.borrow_mut().insert(*id, status);
        }
        matched
    };
    let status_of = |id: &InvocationId, r: &InvocationRecord| {
        let known = shown.borrow().get(id).copied();
        known.unwrap_or_else(|| engine.shown_status(id, r))
    };
    match engine.list(matches, after, limit) {
        Ok((page, next)) => axum::Json(json!({
            "invocations": page
                .iter()
                .map(|(id, r)| summary(*id, r, status_of(id, r), engine.next_retry_at_ms(id, r)))
                .collect::<Vec<_>>(),
            "next": next.map(|id| id.to_string()),
        }))
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

fn control_error(e: ControlError) -> Response {
    control_api_error(e).into_response()
}

fn control_api_error(e: ControlError) -> ApiError {
    match e {
        ControlError::NotFound(id) => ApiError::ingress(404, format!("invocation {id} not found")),
        ControlError::Conflict(message) => ApiError::ingress(409, message),
        ControlError::Engine(e) => ApiError::from(e),
    }
}

/// Why an action was not done, as a status and a message.
pub(super) fn control_failure(e: ControlError) -> (StatusCode, String) {
    let e = control_api_error(e);
    (status_of(e.code), e.message)
}

/// What an action did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Applied {
    /// Carried out here.
    Done,
    /// Handed to the process that runs the invocation, which decides: accepted (`202`), not
    /// done (found from outside: a kill handed over answered `200`, and the invocation then
    /// completed its own way).
    HandedOver,
    /// Restarted as this new invocation.
    Restarted(InvocationId),
}

/// What `PATCH /invocations/{id}/{action}` and the bulk form do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Cancel,
    Kill,
    Purge,
    Resume,
    /// Restart as new, from the start or after the first `from` journal entries.
    Restart {
        from: Option<u32>,
    },
}

impl Action {
    pub(super) fn parse(action: &str, from: Option<u32>) -> Result<Self, ApiError> {
        if from.is_some() && action != "restart" {
            return Err(ApiError::ingress(
                400,
                format!("`from` is a restart's journal prefix; '{action}' takes none"),
            ));
        }
        Ok(match action {
            "cancel" => Self::Cancel,
            "kill" => Self::Kill,
            "purge" => Self::Purge,
            "resume" => Self::Resume,
            "restart" => Self::Restart { from },
            other => {
                return Err(ApiError::ingress(
                    404,
                    format!("unknown action '{other}': use cancel, kill, purge, resume or restart"),
                ));
            }
        })
    }

    /// Applies it to `id`: the new invocation's id for a restart.
    pub(super) async fn apply(
        self,
        engine: &Engine,
        id: InvocationId,
    ) -> Result<Applied, ControlError> {
        // The runtime's own (schedule ticks, limiter steps) keep counts that a kill or a
        // restart from outside would break: schedules and limits have their own endpoints.
        if let Some((record, _)) = engine.inspect(&id)?
            && crate::registry::is_internal(&record.target.service)
        {
            return Err(ControlError::Conflict(format!(
                "{id} is one of the runtime's own invocations ({}); use /schedules or /limiters",
                record.target
            )));
        }
        let acted = match self {
            Self::Cancel => engine.cancel(id).await?,
            Self::Kill => engine.kill(id).await?,
            Self::Purge => engine.purge(id).await?,
            Self::Resume => engine.resume_invocation(id).await?,
            Self::Restart { from } => {
                let new = engine.restart_as_new(id, from).await?;
                return Ok(Applied::Restarted(new));
            }
        };
        Ok(match acted {
            Acted::Here => Applied::Done,
            Acted::HandedOver => Applied::HandedOver,
        })
    }
}

/// The query of a control request: where a restart starts (`?from=<journal entries kept>`).
#[derive(serde::Deserialize)]
pub(super) struct ControlQuery {
    from: Option<u32>,
}

/// `PATCH /invocations/{id}/cancel|kill|purge|resume|restart[?from=<n>]`. A misspelt parameter
/// is refused, as in the bulk form: a restart that took `?frm=1` for no `from` would start over.
pub(super) async fn control(
    State(engine): State<Engine>,
    PathParams((id, action)): PathParams<(String, String)>,
    uri: axum::http::Uri,
    Params(query): Params<ControlQuery>,
) -> Response {
    if let Err(refused) = super::params::only_known(&uri, &["from"]) {
        return refused.into_response();
    }
    let (id, action) = match parse_invocation_id(&id)
        .and_then(|id| Ok((id, Action::parse(&action, query.from)?)))
    {
        Ok(parsed) => parsed,
        Err(e) => return e.into_response(),
    };
    match action.apply(&engine, id).await {
        Ok(Applied::Restarted(new)) => {
            axum::Json(json!({ "invocationId": new.to_string() })).into_response()
        }
        // Cancellation is delivered at the handler's next await point: accepted, not done.
        Ok(Applied::HandedOver) | Ok(Applied::Done) if action == Action::Cancel => {
            (StatusCode::ACCEPTED, axum::Json(json!({}))).into_response()
        }
        Ok(Applied::HandedOver) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "handedOver": true })),
        )
            .into_response(),
        Ok(Applied::Done) => axum::Json(json!({})).into_response(),
        Err(e) => control_error(e),
    }
}

/// The query of a bulk control request: the action, and for a restart where it starts.
#[derive(serde::Deserialize)]
pub(super) struct BulkQuery {
    action: String,
    from: Option<u32>,
    /// The `next` cursor of the previous round.
    after: Option<String>,
    /// Acts on at most this many in this round (at most [`BULK_ROUND`]).
    limit: Option<usize>,
}

impl BulkQuery {
    /// Its parameters' names.
    const PARAMS: [&str; 4] = ["action", "from", "after", "limit"];
}

/// Invocations one bulk request acts on at most: the answer's `next` continues.
const BULK_ROUND: usize = 1000;

/// `PATCH /invocations?action=cancel|kill|purge|resume|restart&<filters>[&limit=<n>]`
/// `[&after=<next>]`: the action on the invocations the filters of `GET /invocations` match (at
/// least one filter), up to `limit` (at most [`BULK_ROUND`]) per request in arrival order; what
/// each did, and the `next` cursor while more match.
pub(super) async fn bulk(
    State(engine): State<Engine>,
    uri: axum::http::Uri,
    Params(query): Params<BulkQuery>,
    Params(filter): Params<InvocationFilter>,
) -> Response {
    if let Err(refused) = only_filters_and(&uri, &BulkQuery::PARAMS) {
        return refused.into_response();
    }
    let action = match Action::parse(&query.action, query.from) {
        Ok(action) => action,
        // Not a missing resource, as in the path form: a bad parameter.
        Err(e) => return ApiError::ingress(400, e.message).into_response(),
    };
    if let Err(e) = filter.check() {
        return ApiError::ingress(400, e).into_response();
    }
    if filter.is_empty() {
        return ApiError::ingress(
            400,
            "a bulk action needs at least one filter (status, reason, version, service, \
             handler, key or idempotency_key): one over every invocation is refused",
        )
        .into_response();
    }
    let (after, started_ms) = match query.after.as_deref().map(BulkCursor::parse).transpose() {
        Ok(Some(cursor)) => (Some(cursor.after), cursor.started_ms),
        Ok(None) => (None, Some(engine.now_ms())),
        Err(e) => return e.into_response(),
    };
    // Only what existed when the bulk began: the copies a restart makes (and anything newer)
    // match the filters too, and may sort after the cursor.
    let existed = |r: &crate::storage::InvocationRecord| {
        started_ms.is_none_or(|started| r.created_at_ms < started)
    };
    let listed = |id: &InvocationId, r: &crate::storage::InvocationRecord| {
        existed(r) && filter.matches(r, || engine.shown_status(id, r))
    };
    // Zero would act on nothing while looking like a round: refused, as a typo would be.
    if query.limit == Some(0) {
        return zero_limit();
    }
    let round = query.limit.unwrap_or(BULK_ROUND).min(BULK_ROUND);
    let (page, next) = match engine.list(listed, after, round) {
        Ok(listed) => listed,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let mut ids: Vec<_> = page.into_iter().map(|(id, r)| (r.seq, id)).collect();
    // In arrival order: restarted copies of one key queue in the order the originals did.
    ids.sort_unstable();
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for (_, id) in ids {
        match action.apply(&engine, id).await {
            Ok(applied) => done.push(json!({
                "id": id.to_string(),
                "invocationId": match applied {
                    Applied::Restarted(new) => Some(new.to_string()),
                    Applied::Done | Applied::HandedOver => None,
                },
                "handedOver": applied == Applied::HandedOver,
            })),
            Err(e) => failed.push(json!({ "id": id.to_string(), "error": e.to_string() })),
        }
    }
    axum::Json(json!({
        "done": done,
        "failed": failed,
        "next": next.map(|after| BulkCursor { after, started_ms }.to_string()),
    }))
    .into_response()
}

/// Where a bulk action goes on: after an id, among the invocations created before the bulk's
/// first round (`<id>.<ms>`; a bare id, from before the bound was kept, has none).
struct BulkCursor {
    after: InvocationId,
    started_ms: Option<u64>,
}

impl BulkCursor {
    fn parse(text: &str) -> Result<Self, ApiError> {
        let (id, started) = match text.split_once('.') {
            Some((id, ms)) => (id, Some(ms)),
            None => (text, None),
        };
        let started_ms = started
            .map(|ms| {
                ms.parse()
                    .map_err(|_| ApiError::ingress(400, format!("bad bulk cursor '{text}'")))
            })
            .transpose()?;
        Ok(Self {
            after: parse_invocation_id(id)?,
            started_ms,
        })
    }
}

impl std::fmt::Display for BulkCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.started_ms {
            Some(ms) => write!(f, "{}.{ms}", self.after),
            None => write!(f, "{}", self.after),
        }
    }
}
