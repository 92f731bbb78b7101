//! Admission: the in-flight cap in front of a listener's router, and the answer to what is over
//! a cap. A refused request's body is read and dropped (up to the body limit, within the body
//! timeout) before the `429`, so the client sees the answer instead of a reset.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};

use super::{Limits, READ_BUFFER};
use crate::engine::Engine;
use crate::ingress::ApiError;
use crate::metrics::ListenerLabel;

/// How long a request over the in-flight cap waits for a slot before it is answered `429`.
const ADMISSION_WAIT: Duration = Duration::from_secs(1);

/// The in-flight cap of one listener. Its gauge is the count itself: one atomic per request
/// for the cap and the metric, and waiters are woken only when some wait.
pub(super) struct Gate {
    in_flight: Gauge,
    freed: Notify,
    limits: Limits,
    refused: Counter,
}

impl Gate {
    pub(super) fn new(name: &'static str, limits: Limits, engine: Engine) -> Arc<Self> {
        let label = ListenerLabel { listener: name };
        let metrics = &engine.metrics();
        Arc::new(Self {
            in_flight: metrics.requests_in_flight.get_or_create(&label).clone(),
            freed: Notify::new(),
            limits,
            refused: metrics.requests_refused.get_or_create(&label).clone(),
        })
    }

    /// Takes a slot if one is free.
    fn try_take(self: &Arc<Self>) -> Option<Slot> {
        if self.in_flight.inc() < self.limits.max_in_flight as i64 {
            return Some(Slot(self.clone()));
        }
        self.in_flight.dec();
        None
    }

    /// A slot within [`ADMISSION_WAIT`]: a burst waits a moment (its body still unread, so
    /// it costs no memory) before it is refused.
    async fn wait(self: &Arc<Self>) -> Option<Slot> {
        let deadline = tokio::time::Instant::now() + ADMISSION_WAIT;
        loop {
            let freed = self.freed.notified();
            if let Some(slot) = self.try_take() {
                return Some(slot);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return self.try_take();
            }
        }
    }
}

/// One admitted request, counted until dropped (also when hyper drops the request).
struct Slot(Arc<Gate>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.dec();
        self.0.freed.notify_one();
    }
}

/// A listener's router behind its gate, as the service of each connection: admission is a
/// synchronous check on the way in, with no middleware layer per request.
#[derive(Clone)]
pub(super) struct Admitted {
    router: Router,
    gate: Arc<Gate>,
}

impl Admitted {
    pub(super) fn new(router: Router, gate: Arc<Gate>) -> Self {
        Self { router, gate }
    }
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for Admitted {
    type Response = Response;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response, Infallible>>;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        use tower_service::Service as _;
        let req = req.map(Body::new);
        let mut router = self.router.clone();
        // Probes are answered however busy the listener is.
        if HEALTH_PATHS.contains(&req.uri().path()) {
            return Box::pin(router.call(req));
        }
        if let Some(slot) = self.gate.try_take() {
            let response = router.call(req);
            return Box::pin(async move {
                let response = response.await;
                drop(slot);
                response
            });
        }
        let gate = self.gate.clone();
        Box::pin(async move {
            let Some(slot) = gate.wait().await else {
                gate.refused.inc();
                drain(req.into_body(), &gate.limits).await;
                return Ok(too_busy("requests in flight"));
            };
            let response = router.call(req).await;
            drop(slot);
            response
        })
    }
}

/// The health routes of the ingress and the admin API.
const HEALTH_PATHS: [&str; 2] = ["/restate/health", "/health"];

/// Answers connections over the cap: each gets `429` for its first request and is closed.
/// At most [`Refusal::at_once`] are answered at a time, each within [`REFUSAL_DEADLINE`];
/// beyond that a connection is closed unanswered, the only bounded choice left.
pub(super) struct Refusal {
    builder: auto::Builder<TokioExecutor>,
    limits: Limits,
    at_once: Arc<Semaphore>,
}

/// How long an over-cap connection may take to send its request.
const REFUSAL_DEADLINE: Duration = Duration::from_secs(2);

impl Refusal {
    pub(super) fn new(limits: Limits) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(REFUSAL_DEADLINE)
            .keep_alive(false)
            .max_buf_size(READ_BUFFER);
        let limits = Limits {
            body_timeout: REFUSAL_DEADLINE,
            ..limits
        };
        Self {
            builder: builder.http1_only(),
            limits,
            at_once: Arc::new(Semaphore::new((limits.max_connections / 8).max(16))),
        }
    }

    /// Reads one request (head, then the body to drop), answers `429` and closes.
    pub(super) fn answer(self: &Arc<Self>, stream: TcpStream) {
        let Ok(permit) = self.at_once.clone().try_acquire_owned() else {
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let limits = this.limits;
            let service = hyper::service::service_fn(
                move |req: http::Request<hyper::body::Incoming>| async move {
                    drain(Body::new(req.into_body()), &limits).await;
                    Ok::<_, Infallible>(too_busy("connections"))
                },
            );
            let connection = this.builder.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(REFUSAL_DEADLINE * 2, connection).await;
            drop(permit);
        });
    }
}

/// Reads and drops a body, up to the body limit and within the body timeout.
async fn drain(mut body: Body, limits: &Limits) {
    let deadline = tokio::time::Instant::now() + limits.body_timeout;
    let mut read = 0usize;
    while read <= limits.max_body_bytes {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => read += frame.data_ref().map_or(0, |d| d.len()),
            _ => return,
        }
    }
}

/// `429` in Restate's error form, with `Retry-After` and `Connection: close`.
fn too_busy(what: &str) -> Response {
    let mut response = ApiError::ingress(
        429,
        format!("too many {what} at once: retry after the time in Retry-After"),
    )
    .into_response();
    let headers = response.headers_mut();
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A body read whole within `timeout` and up to `limit` bytes.
pub(crate) async fn read_body_within(
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<bytes::Bytes, BodyError> {
    use futures::FutureExt as _;
    let read = axum::body::to_bytes(body, limit);
    tokio::pin!(read);
    // A small body usually arrived with its head and is read at once: no timer to arm.
    let read = match read.as_mut().now_or_never() {
        Some(read) => read,
        None => tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| BodyError::TimedOut)?,
    };
    read.map_err(|e| {
        let inner = e.into_inner();
        if inner.is::<http_body_util::LengthLimitError>() {
            BodyError::TooLarge
        } else {
            BodyError::Unreadable(inner.to_string())
        }
    })
}

/// Why a body could not be read.
#[derive(Debug)]
pub(crate) enum BodyError {
    TimedOut,
    TooLarge,
    Unreadable(String),
}
