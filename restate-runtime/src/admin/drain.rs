//! `PATCH /drain`, `GET /drain`, `PATCH /undrain`: stop starting invocations before a
//! deploy, see when nothing runs any more, and start again.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::engine::{DrainStatus, Engine, UndrainError};
use crate::ingress::ApiError;

/// `ready`: stopping the process now interrupts no attempt, and on a shared database its lease
/// is free for another process (`lease`: `none`, `held`, `releasing`, `released`,
/// `handed over`).
fn report(engine: &Engine, status: DrainStatus) -> Response {
    let lease = engine.lease();
    axum::Json(json!({
        "draining": status.draining,
        "running_attempts": status.running_attempts,
        "lease": lease.as_str(),
        "ready": status.ready() && lease.settled(),
    }))
    .into_response()
}

pub(super) async fn start(State(engine): State<Engine>) -> Response {
    report(&engine, engine.start_drain())
}

/// Answers once the drain ended: on a shared database, once the lease is held again. The
/// undrain runs to its end in a task of its own, whether or not the client waits for it.
pub(super) async fn stop(State(engine): State<Engine>) -> Response {
    let (done, answer) = tokio::sync::oneshot::channel();
    let undrain = engine.clone();
    engine.tasks().spawn(async move {
        let _ = done.send(undrain.undrain().await);
    });
    let Ok(result) = answer.await else {
        return ApiError::ingress(503, "the process is shutting down").into_response();
    };
    match result {
        Ok(status) => report(&engine, status),
        Err(e @ UndrainError::HandedOver) => ApiError::ingress(409, e.to_string()).into_response(),
        Err(e @ UndrainError::Hold(_)) => ApiError::ingress(503, e.to_string()).into_response(),
    }
}

pub(super) async fn status(State(engine): State<Engine>) -> Response {
    report(&engine, engine.drain.status())
}
