//! CORS on the ingress, as Restate's ingress answers it (`tower_http`'s very permissive policy:
//! any origin mirrored, credentials allowed, the requested methods and headers allowed). A
//! preflight is answered by that policy itself; every other answer gets the headers the policy
//! adds to it, set here directly. The policy's own middleware builds them anew for each request
//! (a copy of the whole policy, a header map, a joined `Vary`): about 6,500 instructions, 7% of
//! a durable echo's (`BENCHMARKS.md`, stop 61).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::Response;
use tower_http::cors::CorsLayer;
use tower_layer::Layer;
use tower_service::Service;

/// The permissive policy as a layer of the ingress router.
#[derive(Clone)]
pub(crate) struct PermissiveCors {
    /// The policy that answers preflights.
    preflight: Arc<CorsLayer>,
}

impl PermissiveCors {
    pub(crate) fn new() -> Self {
        Self {
            preflight: Arc::new(CorsLayer::very_permissive()),
        }
    }
}

impl<S> Layer<S> for PermissiveCors {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Cors<S> {
        Cors {
            inner,
            preflight: self.preflight.clone(),
        }
    }
}

/// A service answered under the permissive policy.
#[derive(Clone)]
pub(crate) struct Cors<S> {
    inner: S,
    preflight: Arc<CorsLayer>,
}

impl<S> Service<Request> for Cors<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Answer<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if is_preflight(&req) {
            // The service made ready answers; a clone stays for the next call.
            let clone = self.inner.clone();
            let ready = std::mem::replace(&mut self.inner, clone);
            return Answer::Preflight {
                future: self.preflight.layer(ready).call(req),
            };
        }
        let origin = req.headers().get(header::ORIGIN).cloned();
        Answer::Plain {
            future: self.inner.call(req),
            origin,
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer to one request.
    #[project = AnswerProjection]
    pub(crate) enum Answer<F> {
        /// A preflight, answered by the policy.
        Preflight { #[pin] future: tower_http::cors::ResponseFuture<F> },
        /// Any other request: the inner service's answer, with the policy's headers.
        Plain { #[pin] future: F, origin: Option<HeaderValue> },
    }
}

impl<F> Future for Answer<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AnswerProjection::Preflight { future } => future.poll(cx),
            AnswerProjection::Plain { future, origin } => {
                let mut response = ready!(future.poll(cx))?;
                add_headers(response.headers_mut(), origin.take());
                Poll::Ready(Ok(response))
            }
        }
    }
}

/// The policy's headers on an answer that is not a preflight's, to the request whose
/// `Origin` is `origin`.
pub(crate) fn add_headers(headers: &mut HeaderMap, origin: Option<HeaderValue>) {
    // As the policy does: `Vary` is added to what the response has, the others replace it.
    headers.append(
        header::VARY,
        HeaderValue::from_static(
            "origin, access-control-request-method, access-control-request-headers",
        ),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        HeaderValue::from_static("true"),
    );
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    }
}

/// Whether the policy answers `request` itself, as a preflight, without the routes: every
/// `OPTIONS`, as `tower_http`'s policy takes it (the listener lets these past its cap too).
pub(crate) fn is_preflight<B>(request: &axum::http::Request<B>) -> bool {
    request.method() == Method::OPTIONS
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::any;
    use tower_service::Service;

    use super::*;

    /// Answers with a status and a `Vary` of its own on `/varied`, a plain 200 elsewhere.
    fn app() -> Router {
        Router::new()
            .route(
                "/varied",
                any(|| async { ([(header::VARY, "accept-encoding")], "varied") }),
            )
            .fallback(|| async { (StatusCode::ACCEPTED, "plain").into_response() })
    }

    async fn headers_of(mut service: Router, request: impl Fn() -> Request) -> HeaderMap {
        let response = service.call(request()).await.unwrap();
        let mut headers = response.headers().clone();
        headers.remove(header::CONTENT_LENGTH);
        headers
    }

    /// Every kind of request gets the headers, in the order and with the values, that
    /// `tower_http`'s very permissive policy gives it.
    #[tokio::test]
    async fn answers_carry_what_the_permissive_policy_gives() {
        let ours = app().layer(PermissiveCors::new());
        let policy = app().layer(CorsLayer::very_permissive());
        let origin = "https://app.example";
        type Build = fn(&str, &str, &str) -> Request;
        let plain: Build = |method, path, _| {
            Request::builder()
                .method(method)
                .uri(path)
                .body(Body::empty())
                .unwrap()
        };
        let from_origin: Build = |method, path, origin| {
            Request::builder()
                .method(method)
                .uri(path)
                .header(header::ORIGIN, origin)
                .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "x-custom")
                .body(Body::empty())
                .unwrap()
        };
        let preflight: Build = |_, path, origin| {
            Request::builder()
                .method(Method::OPTIONS)
                .uri(path)
                .header(header::ORIGIN, origin)
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
                .header(
                    header::ACCESS_CONTROL_REQUEST_HEADERS,
                    "content-type, authorization",
                )
                .body(Body::empty())
                .unwrap()
        };
        let mut compared = 0;
        for build in [plain, from_origin, preflight] {
            for method in ["GET", "POST", "DELETE"] {
                for path in ["/varied", "/Greeter/greet"] {
                    let request = || build(method, path, origin);
                    let expected = headers_of(policy.clone(), request).await;
                    let got = headers_of(ours.clone(), request).await;
                    assert_eq!(
                        got.iter().collect::<Vec<_>>(),
                        expected.iter().collect::<Vec<_>>(),
                        "{method} {path}"
                    );
                    assert!(expected.contains_key(header::VARY));
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, 18);
        let preflighted = headers_of(ours.clone(), || preflight("", "/varied", origin)).await;
        assert_eq!(preflighted[header::ACCESS_CONTROL_ALLOW_ORIGIN], origin);
        let varied = headers_of(ours, || plain("GET", "/varied", "")).await;
        let vary: Vec<_> = varied.get_all(header::VARY).iter().collect();
        assert_eq!(vary.len(), 2, "the response's own Vary is kept: {vary:?}");
    }
}
