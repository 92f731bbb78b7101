//! `/debouncers/{name}`: a debounced handler's open burst (per key): the arrival that will run,
//! how many wait unchosen, when the burst began and when it closes; and the burst after it,
//! while arrivals stamped after its close wait for it to close.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::limiters::KeyQuery;
use super::params::{Params, PathParams};
use crate::clock::rfc3339;
use crate::debounce::Open;
use crate::engine::Engine;
use crate::ingress::ApiError;

/// `GET /debouncers/{name}[?key=<key>]` (a handler's debouncer is named `<service>/<handler>`,
/// URL-encoded): `{"open": false}` when no burst is open.
pub(super) async fn get(
    State(engine): State<Engine>,
    PathParams(name): PathParams<String>,
    Params(query): Params<KeyQuery>,
) -> Response {
    let key = query.key.as_deref();
    match crate::debounce::stored(&engine, &crate::rate::bucket(&name, key)) {
        Ok(bursts) => {
            let burst = |open: &Open| {
                json!({
                    "leader": open.leader.invocation.to_string(),
                    "superseded": open.superseded,
                    "first_arrival": rfc3339(open.first_ms),
                    "closes_at": rfc3339(open.due_ms),
                })
            };
            let mut view = json!({
                "name": name,
                "key": key,
                "open": bursts.open.is_some(),
                // Closed, their chosen arrival told to run and not started yet.
                "closing": bursts.closing.len(),
            });
            if let Some(open) = &bursts.open {
                view["burst"] = burst(open);
            }
            // Arrivals stamped after the open burst's close, which has not closed yet.
            if let Some(next) = &bursts.next {
                view["next"] = burst(next);
            }
            axum::Json(view).into_response()
        }
        Err(e) => ApiError::ingress(503, e.to_string()).into_response(),
    }
}
