//! `/rate-limits`: rate limits by name (and key): the limit, the tokens a caller finds now,
//! when the next one is there and when the bucket is full again.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::limiters::KeyQuery;
use super::params::{Params, PathParams};
use crate::clock::rfc3339;
use crate::engine::Engine;
use crate::ingress::ApiError;

/// One bucket's view; the limit is the one configured at run time, else the one its latest
/// reservation used (a bucket never reserved from has its whole burst).
fn bucket_view(engine: &Engine, name: &str, key: Option<&str>) -> Result<Value, ApiError> {
    let stored = crate::rate::stored(engine, &crate::rate::bucket(name, key))
        .map_err(|e| ApiError::ingress(503, e.to_string()))?;
    let configured = engine.config().rate_limits.get(name).copied();
    let limit = configured.or(stored.and_then(|b| b.limit()));
    let mut view = json!({ "name": name, "key": key, "limit": limit.map(|l| l.to_string()) });
    if let Some(limit) = limit {
        let now = engine.now_ms();
        let (tokens, next) = stored.map_or((limit.max_burst(), now), |b| b.tokens(limit, now));
        view["tokens"] = json!(tokens);
        view["next_token_at"] = json!(rfc3339(next));
        view["full_at"] = json!(rfc3339(stored.map_or(now, |b| b.full_at_ms().max(now))));
    }
    Ok(view)
}

/// `GET /rate-limits`: the limits configured at run time, each with its (unkeyed) bucket.
pub(super) async fn list(State(engine): State<Engine>) -> Response {
    let mut names: Vec<&String> = engine.config().rate_limits.keys().collect();
    names.sort();
    let mut limits = Vec::new();
    for name in names {
        match bucket_view(&engine, name, None) {
            Ok(view) => limits.push(view),
            Err(e) => return e.into_response(),
        }
    }
    axum::Json(json!({ "rate_limits": limits })).into_response()
}

/// `GET /rate-limits/{name}[?key=<key>]`: one bucket (a handler's own is named
/// `<service>/<handler>`, URL-encoded).
pub(super) async fn get(
    State(engine): State<Engine>,
    PathParams(name): PathParams<String>,
    Params(query): Params<KeyQuery>,
) -> Response {
    match bucket_view(&engine, &name, query.key.as_deref()) {
        Ok(view) => axum::Json(view).into_response(),
        Err(e) => e.into_response(),
    }
}
