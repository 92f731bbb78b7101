//! The ingress: Restate's HTTP ingress API as an axum router, a thin adapter over the engine.

mod error;
mod invoke;
mod lookup;
mod path;
mod response;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

pub(crate) use error::{ApiError, parse_invocation_id};

use crate::engine::Engine;
use crate::storage::Outcome;
use crate::webhook::Webhook;
use path::Route;

pub(crate) struct IngressState {
    pub engine: Engine,
    pub max_body_bytes: usize,
    /// Webhook endpoints by (service, handler).
    pub webhooks: Webhooks,
}

/// Webhook settings per (service, handler).
pub(crate) type Webhooks = HashMap<(String, String), Webhook>;

/// Builds the ingress router.
pub(crate) fn router(engine: Engine, max_body_bytes: usize, webhooks: Webhooks) -> Router {
    let state = Arc::new(IngressState {
        engine,
        max_body_bytes,
        webhooks,
    });
    Router::new().fallback(dispatch).with_state(state)
}

async fn dispatch(State(state): State<Arc<IngressState>>, req: Request) -> Response {
    match route(&state, req).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn route(state: &IngressState, req: Request) -> Result<Response, ApiError> {
    let route = path::parse(req.uri().path(), &state.engine.registry)
        .map_err(|e| ApiError::ingress(e.status, e.message))?;
    let method = req.method().clone();
    let require = |allowed: &[Method]| {
        if allowed.contains(&method) {
            Ok(())
        } else {
            Err(ApiError::ingress(405, "method not allowed"))
        }
    };
    match route {
        Route::Health => {
            require(&[Method::GET])?;
            let names: Vec<&str> = state
                .engine
                .registry
                .definitions()
                .iter()
                .map(|d| d.name)
                .collect();
            Ok(axum::Json(serde_json::json!({ "services": names })).into_response())
        }
        Route::Invoke {
            service,
            key,
            handler,
            send,
        } => {
            require(&[Method::GET, Method::POST])?;
            invoke::invoke(state, req, service, key, handler, send).await
        }
        Route::Lookup { target, verb } => {
            require(&[Method::GET])?;
            lookup::lookup(state, target, verb).await
        }
        Route::LookupByBody(verb) => {
            require(&[Method::POST])?;
            let body = read_body(state, req.into_body()).await?;
            lookup::lookup_by_body(state, &body, verb).await
        }
        Route::Awakeable { id, resolve } => {
            require(&[Method::POST])?;
            let parsed: crate::ids::AwakeableId = id
                .parse()
                .map_err(|e| ApiError::ingress(400, format!("bad awakeable id '{id}': {e}")))?;
            let body = read_body(state, req.into_body()).await?;
            let outcome = if resolve {
                Outcome::Success(body.to_vec())
            } else {
                Outcome::Failure {
                    code: 500,
                    message: String::from_utf8_lossy(&body).into_owned(),
                }
            };
            // As Restate: completing an already completed awakeable is accepted and changes nothing.
            if state.engine.complete_awakeable(parsed, outcome).await? {
                Ok(StatusCode::ACCEPTED.into_response())
            } else {
                Err(ApiError::ingress(
                    404,
                    format!("awakeable '{id}' not found"),
                ))
            }
        }
    }
}

/// Reads the whole body, refusing more than the configured limit with a 413.
pub(crate) async fn read_body(state: &IngressState, body: Body) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, state.max_body_bytes)
        .await
        .map_err(|e| {
            let inner = e.into_inner();
            if inner.is::<http_body_util::LengthLimitError>() {
                ApiError::ingress(
                    413,
                    format!(
                        "request body exceeds the limit of {} bytes",
                        state.max_body_bytes
                    ),
                )
            } else {
                ApiError::ingress(400, format!("cannot read request body: {inner}"))
            }
        })
}
