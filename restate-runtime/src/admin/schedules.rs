//! `/schedules`: list, create (or replace), read, pause, resume, trigger and delete cron
//! schedules, as [`Schedules`](crate::Schedules) does in process.

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::params::PathParams;
use crate::engine::Engine;
use crate::ingress::ApiError;
use crate::runtime::RuntimeHandle;
use crate::schedules::{CatchUp, Overlap, ScheduleError, ScheduleSpec, Schedules};

/// The body of `POST /schedules`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateRequest {
    id: String,
    cron: String,
    #[serde(default)]
    timezone: Option<String>,
    service: String,
    #[serde(default)]
    key: Option<String>,
    handler: String,
    /// The JSON input of every run.
    #[serde(default)]
    input: Option<serde_json::Value>,
    /// Each run gets its tick's time instead.
    #[serde(default)]
    scheduled_time_input: bool,
    #[serde(default)]
    catch_up: Option<CatchUp>,
    #[serde(default)]
    overlap: Option<Overlap>,
}

const EXAMPLE: &str = r#"{"id": "nightly", "cron": "0 2 * * *", "timezone": "Europe/Paris", "service": "Reports", "handler": "build", "input": {"kind": "daily"}, "catch_up": "one", "overlap": "skip"}"#;

fn schedules(engine: Engine) -> Schedules {
    RuntimeHandle::from_engine(engine).schedules()
}

fn error(e: ScheduleError) -> Response {
    ApiError::ingress(e.status(), e.to_string()).into_response()
}

pub(super) async fn list(State(engine): State<Engine>) -> Response {
    match schedules(engine).list().await {
        Ok(all) => axum::Json(json!({ "schedules": all })).into_response(),
        Err(e) => error(e),
    }
}

pub(super) async fn create(
    State(engine): State<Engine>,
    request: Result<axum::Json<CreateRequest>, JsonRejection>,
) -> Response {
    let request = match request {
        Ok(axum::Json(request)) => request,
        Err(e) => return super::params::body_refused(&e, EXAMPLE).into_response(),
    };
    let mut spec = ScheduleSpec::new(request.id, request.cron)
        .timezone(request.timezone.unwrap_or_else(|| "UTC".into()))
        .catch_up(request.catch_up.unwrap_or_default())
        .overlap(request.overlap.unwrap_or_default());
    spec = match request.key {
        Some(key) => spec.object(request.service, key, request.handler),
        None => spec.service(request.service, request.handler),
    };
    spec = match (request.input, request.scheduled_time_input) {
        (Some(_), true) => {
            return ApiError::ingress(400, "give `input` or `scheduled_time_input`, not both")
                .into_response();
        }
        (Some(input), false) => match spec.input(&input) {
            Ok(spec) => spec,
            Err(e) => return error(e),
        },
        (None, true) => spec.scheduled_time_input(),
        (None, false) => spec,
    };
    match schedules(engine).create(spec).await {
        Ok(view) => axum::Json(view).into_response(),
        Err(e) => error(e),
    }
}

pub(super) async fn get(
    State(engine): State<Engine>,
    PathParams(id): PathParams<String>,
) -> Response {
    match schedules(engine).get(&id).await {
        Ok(Some(view)) => axum::Json(view).into_response(),
        Ok(None) => error(ScheduleError::NotFound(id)),
        Err(e) => error(e),
    }
}

pub(super) async fn delete(
    State(engine): State<Engine>,
    PathParams(id): PathParams<String>,
) -> Response {
    match schedules(engine).delete(&id).await {
        Ok(true) => axum::Json(json!({ "deleted": id })).into_response(),
        Ok(false) => error(ScheduleError::NotFound(id)),
        Err(e) => error(e),
    }
}

pub(super) async fn control(
    State(engine): State<Engine>,
    PathParams((id, action)): PathParams<(String, String)>,
) -> Response {
    let schedules = schedules(engine);
    let result = match action.as_str() {
        "pause" => schedules.pause(&id).await.map(|v| json!(v)),
        "resume" => schedules.resume(&id).await.map(|v| json!(v)),
        "trigger" => schedules
            .trigger(&id)
            .await
            .map(|outcome| json!({ "outcome": outcome })),
        other => {
            let message =
                format!("unknown schedule action `{other}`: use pause, resume or trigger");
            return ApiError::ingress(404, message).into_response();
        }
    };
    match result {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => error(e),
    }
}
