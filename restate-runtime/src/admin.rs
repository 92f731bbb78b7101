//! The admin API (port 9070): health, the registered services, and invocations with their journals.

use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::clock::rfc3339;
use crate::engine::Engine;
use crate::ids::InvocationId;
use crate::ingress::ApiError;
use crate::registry::{HandlerKind, ServiceDefinition};
use crate::storage::{JournalEntry, Outcome, Status};

pub(crate) fn router(engine: Engine) -> Router {
    Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/services", get(services))
        .route("/services/{name}", get(service))
        .route("/invocations/{id}", get(invocation))
        .with_state(engine)
}

fn describe(def: &ServiceDefinition) -> Value {
    let handlers: Vec<Value> = def
        .handlers
        .iter()
        .map(|h| {
            json!({
                "name": h.name,
                "ty": match h.kind {
                    HandlerKind::Shared => Some("Shared"),
                    HandlerKind::Workflow => Some("Workflow"),
                    HandlerKind::Exclusive => Some("Exclusive"),
                    HandlerKind::Stateless => None,
                },
                "input_type": h.input_type,
                "output_type": h.output_type,
                "public": !h.options.ingress_private,
                "retention_ms": h.options.retention.map(|d| d.as_millis() as u64),
            })
        })
        .collect();
    json!({ "name": def.name, "ty": def.kind.as_str(), "handlers": handlers })
}

async fn services(State(engine): State<Engine>) -> Response {
    let services: Vec<Value> = engine
        .registry
        .definitions()
        .iter()
        .map(|d| describe(d))
        .collect();
    axum::Json(json!({ "services": services })).into_response()
}

async fn service(State(engine): State<Engine>, Path(name): Path<String>) -> Response {
    match engine.registry.get(&name) {
        Some(s) => axum::Json(describe(&s.definition)).into_response(),
        None => ApiError::ingress(404, format!("service '{name}' not found")).into_response(),
    }
}

/// A payload as JSON where it is JSON, else as a lossy string.
fn payload_json(bytes: &[u8]) -> Value {
    serde_json::from_slice::<Value>(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

fn outcome_json(outcome: &Outcome) -> Value {
    match outcome {
        Outcome::Success(bytes) => json!({ "success": payload_json(bytes) }),
        Outcome::Failure { code, message } => {
            json!({ "failure": { "code": code, "message": message } })
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
        JournalEntry::Sleep { wake_at_ms } => json!({ "wakeAt": rfc3339(*wake_at_ms) }),
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
        JournalEntry::Attach {
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

async fn invocation(State(engine): State<Engine>, Path(id): Path<String>) -> Response {
    let parsed: InvocationId = match id.parse() {
        Ok(id) => id,
        Err(e) => {
            return ApiError::ingress(400, format!("bad invocation id '{id}': {e}"))
                .into_response();
        }
    };
    match engine.inspect(&parsed) {
        Ok(Some((record, journal))) => {
            let (completed_at, result) = match &record.status {
                Status::Completed {
                    outcome,
                    completed_at_ms,
                    ..
                } => (Some(rfc3339(*completed_at_ms)), Some(outcome_json(outcome))),
                _ => (None, None),
            };
            axum::Json(json!({
                "id": id,
                "target": record.target.to_string(),
                "service": record.target.service,
                "handler": record.target.handler,
                "key": record.target.key,
                "status": record.status.name(),
                "attempts": record.attempts,
                "last_error": record.last_error,
                "idempotency_key": record.idempotency_key,
                "created_at": rfc3339(record.created_at_ms),
                "modified_at": rfc3339(record.modified_at_ms),
                "completed_at": completed_at,
                "result": result,
                "journal": journal.iter().map(|(i, e)| entry_json(*i, e)).collect::<Vec<_>>(),
            }))
            .into_response()
        }
        Ok(None) => ApiError::ingress(404, format!("invocation '{id}' not found")).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}
