//! `PATCH /drain`, `GET /drain`, `PATCH /undrain`: stop starting invocations before a
//! deploy, see when nothing runs any more, and start again.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::engine::{DrainStatus, Engine};

fn report(status: DrainStatus) -> Response {
    axum::Json(json!({
        "draining": status.draining,
        "running_attempts": status.running_attempts,
        "ready": status.ready(),
    }))
    .into_response()
}

pub(super) async fn start(State(engine): State<Engine>) -> Response {
    report(engine.drain.set(true))
}

pub(super) async fn stop(State(engine): State<Engine>) -> Response {
    report(engine.drain.set(false))
}

pub(super) async fn status(State(engine): State<Engine>) -> Response {
    report(engine.drain.status())
}
