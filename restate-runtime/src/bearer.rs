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

/// The digest a token is compared by.
pub(crate) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `given` is the token of `expected` (its digest), in constant time; an empty one
/// never is.
pub(crate) fn matches(expected: &[u8; 32], given: &str) -> bool {
    !given.is_empty() && bool::from(digest(given).ct_eq(expected))
}

async fn check(State(expected): State<Arc<Expected>>, req: Request, next: Next) -> Response {
    if req.uri().path() == expected.exempt {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if matches(&expected.digest, given) {
        next.run(req).await
    } else {
        ApiError::ingress(
            401,
            format!(
                "missing or wrong {} token: send `Authorization: Bearer <token>`",
                expected.listener
            ),
        )
        .into_response()
    }
}
