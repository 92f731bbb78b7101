//! `/limiters`: concurrency limits, how many hold a permit and how many wait, per name (and
//! key); a limit changed while the process runs.

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::params::{Params, PathParams};
use crate::engine::Engine;
use crate::ingress::ApiError;

/// The view of one bucket: its limit, who holds a permit and who waits, in order.
fn bucket_view(engine: &Engine, name: &str, key: Option<&str>) -> Response {
    let bucket = crate::rate::bucket(name, key);
    match crate::concurrency::stored(engine, &bucket) {
        Ok(stored) => axum::Json(json!({
            "name": name,
            "key": key,
            // Configured at run time, else the latest request's (none while the bucket is idle).
            "limit": engine.concurrency_limits().get(name).or((stored.limit > 0).then_some(stored.limit)),
            "running": stored.holders.len(),
            "queued": stored.waiting.len(),
            "holders": stored.holders.keys().collect::<Vec<_>>(),
            "waiting": stored.waiting.iter().map(|w| w.holder()).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => ApiError::ingress(503, e.to_string()).into_response(),
    }
}

/// `GET /limiters`: the limits configured at run time and the unkeyed ones this process's
/// handlers and steps used (a handler's own `concurrency = n` is `<service>/<handler>`), each
/// with its (unkeyed) bucket.
pub(super) async fn list(State(engine): State<Engine>) -> Response {
    let limits = engine.concurrency_limits();
    let mut limiters = Vec::new();
    for name in limits.known() {
        let bucket = crate::concurrency::stored(&engine, &name).unwrap_or_default();
        let declared = (bucket.limit > 0).then_some(bucket.limit);
        limiters.push(json!({
            "name": name,
            "limit": limits.get(&name).or(declared),
            "running": bucket.holders.len(),
            "queued": bucket.waiting.len(),
        }));
    }
    axum::Json(json!({ "limiters": limiters })).into_response()
}

/// `?key=<key>`; any other parameter (a misspelt `key`, which would show the unkeyed bucket)
/// is refused.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeyQuery {
    pub(super) key: Option<String>,
}

/// `GET /limiters/{name}[?key=<key>]`: one bucket (a handler's own is named
/// `<service>/<handler>`, URL-encoded).
pub(super) async fn get(
    State(engine): State<Engine>,
    PathParams(name): PathParams<String>,
    Params(query): Params<KeyQuery>,
) -> Response {
    bucket_view(&engine, &name, query.key.as_deref())
}

/// `{"limit": n}`; any other field is refused, as the query's are.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetLimit {
    limit: u32,
}

/// `PUT /limiters/{name}[?key=<key>] {"limit": n}`: the limit from now on, in this process
/// (set it in the builder too to keep it across restarts); a raised one hands the permits of
/// the bucket (the unkeyed one, or `key`'s) out at once, other keys' at their next request.
pub(super) async fn set(
    State(engine): State<Engine>,
    PathParams(name): PathParams<String>,
    Params(query): Params<KeyQuery>,
    body: Result<axum::Json<SetLimit>, JsonRejection>,
) -> Response {
    let limit = match body {
        Ok(axum::Json(SetLimit { limit })) if limit > 0 => limit,
        Ok(_) => return ApiError::ingress(400, "`limit` is at least 1").into_response(),
        Err(e) => return super::params::body_refused(&e, r#"{"limit": 4}"#).into_response(),
    };
    engine.concurrency_limits().set(&name, limit);
    let key = query.key.as_deref();
    let resize = crate::client::parts(
        crate::concurrency::LIMITER,
        Some(&crate::rate::bucket(&name, key)),
        "resize",
        crate::codec::encode_json(&limit),
    );
    let handle = crate::runtime::RuntimeHandle::from_engine(engine.clone());
    if let Err(e) = crate::client::ExternalRequest::<()>::new(handle, resize)
        .call()
        .await
    {
        return ApiError::ingress(503, e.to_string()).into_response();
    }
    bucket_view(&engine, &name, key)
}
