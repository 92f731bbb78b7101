//! The admin API (default 127.0.0.1:9070): health, registered services, invocations with their
//! journals and their control, and metrics. With a token configured, every route but `/health`
//! requires `Authorization: Bearer <token>`.

mod invocations;
mod services;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::engine::Engine;
use crate::ingress::ApiError;

pub(crate) fn router(engine: Engine, token: Option<String>) -> Router {
    let protected = Router::new()
        .route("/services", get(services::services))
        .route("/services/{name}", get(services::service))
        .route("/invocations", get(invocations::list))
        .route("/invocations/{id}", get(invocations::invocation))
        .route("/invocations/{id}/{action}", patch(invocations::control))
        .route("/metrics", get(metrics))
        .with_state(engine)
        .layer(middleware::from_fn_with_state(
            Arc::new(token),
            require_token,
        ));
    Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .merge(protected)
}

async fn require_token(
    State(token): State<Arc<Option<String>>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(expected) = token.as_deref() else {
        return next.run(req).await;
    };
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        next.run(req).await
    } else {
        ApiError::ingress(
            401,
            "missing or wrong admin token: send `Authorization: Bearer <token>`",
        )
        .into_response()
    }
}

async fn metrics(State(engine): State<Engine>) -> Response {
    let body = engine.metrics.render(&engine.metrics_snapshot());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}
