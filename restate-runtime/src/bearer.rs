//! Bearer tokens on the ingress and the admin API: `Authorization: Bearer <token>` checked in
//! constant time (digests of equal length are compared, so not even the token's length
//! shows), with one health route exempt so that probes need no secret.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ingress::ApiError;
use crate::ingress::path::route_path;

/// What one listener expects.
struct Expected {
    digest: [u8; 32],
    /// Named in the 401's message (`admin`, `ingress`).
    listener: &'static str,
    /// The path that needs no token.
    exempt: &'static str,
}

/// `router` with every route but `exempt` requiring `token`; unchanged without a token.
pub(crate) fn require(
    router: Router,
    token: Option<String>,
    listener: &'static str,
    exempt: &'static str,
) -> Router {
    let Some(token) = token else {
        return router;
    };
    let expected = Arc::new(Expected {
        digest: digest(&token),
        listener,
        exempt,
    });
    router.layer(middleware::from_fn_with_state(expected, check))
}

/// Put on a request by its listener's gate once it found there the token of this digest: the
/// router's check then does not hash the token again. Extensions are set by the server alone,
/// never by a client.
#[derive(Clone, Copy)]
pub(crate) struct Verified(pub [u8; 32]);

/// The digest a token is compared by.
pub(crate) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `given` is the token of `expected` (its digest), in constant time; an empty one
/// never is.
pub(crate) fn matches(expected: &[u8; 32], given: &str) -> bool {
    !given.is_empty() && bool::from(digest(given).ct_eq(expected))
}

/// Whether `headers` carry the token whose digest is `expected` in an `Authorization: Bearer`
/// header.
pub(crate) fn carries(headers: &axum::http::HeaderMap, expected: &[u8; 32]) -> bool {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
        .is_some_and(|given| matches(expected, given))
}

/// The token of an `Authorization` value of the Bearer scheme, whose name is case-insensitive
/// (RFC 9110).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

async fn check(State(expected): State<Arc<Expected>>, req: Request, next: Next) -> Response {
    if route_path(req.uri().path()) == route_path(expected.exempt) {
        return next.run(req).await;
    }
    let verified = req
        .extensions()
        .get::<Verified>()
        .is_some_and(|v| v.0 == expected.digest);
    if verified || carries(req.headers(), &expected.digest) {
        next.run(req).await
    } else {
        let mut refusal = ApiError::ingress(
            401,
            format!(
                "missing or wrong {} token: send `Authorization: Bearer <token>`",
                expected.listener
            ),
        )
        .into_response();
        // RFC 9110: a 401 names the scheme it takes.
        refusal.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        refusal
    }
}
