//! Registered services, in the shape Restate's admin API lists them.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AdminState;
use super::params::PathParams;
use crate::ingress::ApiError;
use crate::registry::{HandlerKind, ServiceDefinition};

pub(super) fn describe(def: &ServiceDefinition, state: &AdminState) -> Value {
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
                "cron": h.options.cron.as_ref().map(|c| json!({
                    "expression": c.expression,
                    "timezone": c.timezone,
                })),
                // Unsigned endpoints stand out: `"verified": false`.
                "webhook": state.webhooks.get(&(def.name.to_owned(), h.name.to_owned())).map(|scheme| json!({
                    "scheme": scheme,
                    "verified": *scheme != "unverified",
                })),
            })
        })
        .collect();
    // `ty` is Restate's field; `kind` says the same in the word, for readers of either.
    json!({
        "name": def.name,
        "ty": def.kind.as_str(),
        "kind": def.kind.as_str(),
        "handlers": handlers,
    })
}

pub(super) async fn services(State(state): State<AdminState>) -> Response {
    let services: Vec<Value> = state
        .engine
        .registry()
        .definitions()
        .iter()
        .map(|d| describe(d, &state))
        .collect();
    axum::Json(json!({ "services": services })).into_response()
}

pub(super) async fn service(
    State(state): State<AdminState>,
    PathParams(name): PathParams<String>,
) -> Response {
    match state.engine.registry().public(&name) {
        Some(s) => axum::Json(describe(&s.definition, &state)).into_response(),
        None => ApiError::ingress(404, format!("service '{name}' not found")).into_response(),
    }
}
