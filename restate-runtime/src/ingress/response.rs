//! Success-side responses: a finished invocation's result, and the `/send` acknowledgement.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::engine::{Completed, SendStatus};
use crate::ids::InvocationId;
use crate::storage::Outcome;

/// The response of a finished invocation: 200 with its output, or its terminal error.
/// `replayed` adds `idempotency-expires`, as Restate does for results served from storage.
/// A superseded (debounced) invocation answers with what the one that ran in its place
/// ended with, and names it in `x-restate-superseded-by`.
pub(crate) fn completed(id: InvocationId, done: &Completed, replayed: bool) -> Response {
    let mut response = match done.outcome.ran() {
        Outcome::Success(body) => {
            let mut r = Response::new(axum::body::Body::from(body.clone()));
            // An empty output (a `()` result) has no content-type, as Restate's clients expect.
            if !body.is_empty() {
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
            r
        }
        failure => {
            let e = failure.clone().into_result().expect_err("not a success");
            ApiError::from_terminal(e).into_response()
        }
    };
    let headers = response.headers_mut();
    headers.insert("x-restate-id", header_value(&id.to_string()));
    if let Some(by) = done.outcome.superseded_by() {
        headers.insert(SUPERSEDED_BY, header_value(&by.to_string()));
    }
    if replayed {
        headers.insert(
            "idempotency-expires",
            header_value(&expires_header(done.expires_at_ms)),
        );
    }
    response
}

/// `executionTime` as Restate writes it: no fraction on a whole second, else nine digits.
fn execution_time(ms: u64) -> String {
    let Ok(t) = jiff::Timestamp::from_millisecond(ms as i64) else {
        return String::new();
    };
    match ms % 1000 {
        0 => format!("{t:.0}"),
        _ => format!("{t:.9}"),
    }
}

/// `idempotency-expires` as Restate writes it: milliseconds and a `+00:00` offset.
fn expires_header(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3f+00:00").to_string())
        .unwrap_or_default()
}

/// A send's answer, its fields in Restate's order (a client comparing the text sees the same).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct SendBody {
    invocation_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    execution_time: Option<String>,
    status: &'static str,
}

/// `202 {"invocationId", "executionTime"?, "status"}` with `x-restate-id`.
pub(crate) fn accepted(
    id: InvocationId,
    status: SendStatus,
    execution_time_ms: Option<u64>,
) -> Response {
    let status = match status {
        SendStatus::Accepted => "Accepted",
        SendStatus::PreviouslyAccepted => "PreviouslyAccepted",
    };
    let body = SendBody {
        invocation_id: id.to_string(),
        execution_time: execution_time_ms.map(execution_time),
        status,
    };
    let mut response = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert("x-restate-id", header_value(&id.to_string()));
    response
}

/// The header naming the invocation that ran in a superseded one's place.
pub(crate) const SUPERSEDED_BY: &str = "x-restate-superseded-by";

pub(crate) fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_as_restate_writes_them() {
        // 2026-11-29T03:57:08.666Z and the whole second before it.
        let ms = 1_795_924_628_666;
        assert_eq!(execution_time(ms), "2026-11-29T03:57:08.666000000Z");
        assert_eq!(execution_time(ms - 666), "2026-11-29T03:57:08Z");
        assert_eq!(expires_header(ms), "2026-11-29T03:57:08.666+00:00");
        assert_eq!(expires_header(ms - 666), "2026-11-29T03:57:08.000+00:00");
    }

    #[test]
    fn a_send_answers_its_fields_in_restates_order() {
        let id = InvocationId::random(7);
        let body = |at| async move {
            let response = accepted(id, SendStatus::Accepted, at);
            let bytes = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .unwrap();
            String::from_utf8(bytes.to_vec()).unwrap()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(
            rt.block_on(body(Some(1_795_924_628_666))),
            format!(
                r#"{{"invocationId":"{id}","executionTime":"2026-11-29T03:57:08.666000000Z","status":"Accepted"}}"#
            )
        );
        assert_eq!(
            rt.block_on(body(None)),
            format!(r#"{{"invocationId":"{id}","status":"Accepted"}}"#)
        );
    }
}
