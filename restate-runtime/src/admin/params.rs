//! Query strings and JSON bodies of the admin API: a malformed one is a 400 (a body over the
//! limit a 413) in the API's error form, not the plain text axum answers by itself.

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::Uri;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::ingress::ApiError;

/// A query string read as `T`.
pub(super) struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Self(value)),
            Err(e) => Err(ApiError::ingress(400, e.body_text()).into_response()),
        }
    }
}

/// Path parameters read as `T`: one that does not decode (a percent escape that is no UTF-8)
/// is a 400 in the API's error form, not the plain text axum answers by itself.
pub(super) struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParams<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(Self(value)),
            Err(e) => Err(ApiError::ingress(e.status().as_u16(), e.body_text()).into_response()),
        }
    }
}

/// Refuses a query string that names a parameter outside `known`, naming it: a misspelt
/// filter of an action on many invocations would otherwise widen what it acts on.
pub(super) fn only_known(uri: &Uri, known: &[&str]) -> Result<(), ApiError> {
    let pairs = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map_err(|e| ApiError::ingress(400, e.body_text()))?;
    match pairs
        .0
        .iter()
        .find(|(name, _)| !known.contains(&name.as_str()))
    {
        None => Ok(()),
        Some((name, _)) => Err(ApiError::ingress(
            400,
            format!(
                "unknown query parameter `{name}`: this takes {}",
                known.join(", ")
            ),
        )),
    }
}

/// The answer to a JSON body that could not be read: `413` for one over the body limit, `415`
/// for one not declared as JSON, `400` for the rest, with an example of what is expected.
pub(super) fn body_refused(e: &axum::extract::rejection::JsonRejection, example: &str) -> ApiError {
    let code = match e.status() {
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => 413,
        // Not declared as JSON (`content-type: application/json`).
        axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE => 415,
        _ => 400,
    };
    ApiError::ingress(code, format!("expected a body like {example}: {e}"))
}
