//! Registered services, in the shape Restate's admin API lists them.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::engine::Engine;
use crate::ingress::ApiError;
use crate::registry::{HandlerKind, ServiceDefinition};

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

pub(super) async fn services(State(engine): State<Engine>) -> Response {
    let services: Vec<Value> = engine
        .registry
        .definitions()
        .iter()
        .map(|d| describe(d))
        .collect();
    axum::Json(json!({ "services": services })).into_response()
}

pub(super) async fn service(State(engine): State<Engine>, Path(name): Path<String>) -> Response {
    match engine.registry.get(&name) {
        Some(s) => axum::Json(describe(&s.definition)).into_response(),
        None => ApiError::ingress(404, format!("service '{name}' not found")).into_response(),
    }
}
