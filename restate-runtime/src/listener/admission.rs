//! Admission: the in-flight cap in front of a listener's router, and the answer to what is over
//! a cap. A refused request's body is read and dropped (up to the body limit, within the body
//! timeout) before the `429`, so the client sees the answer instead of a reset. A body is read
//! before its request takes a slot ([`incoming`](super::incoming)).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::incoming::{Charge, OWN_BYTES, ReadAhead, Refused, Sender};
use super::outgoing::{self, Budget, Sending};
use super::{Limits, READ_BUFFER};
use crate::engine::Engine;
use crate::ingress::ApiError;
use crate::metrics::{ListenerLabel, ReasonLabel};

/// How long a request over the in-flight cap waits for a slot before it is answered `429`.
const ADMISSION_WAIT: Duration = Duration::from_secs(1);

/// The in-flight cap of one listener. Its gauge is the count itself: one atomic per request
/// for the cap and the metric, and waiters are woken only when some wait.
pub(super) struct Gate {
    in_flight: Gauge,
    freed: Notify,
    limits: Limits,
    refused: Counter,
    /// Bodies read before their requests take a slot.
    incoming: ReadAhead,
    /// Bytes of responses not yet sent ([`outgoing`]).
    unsent: Budget,
    rejected: Family<ReasonLabel, Counter>,
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
            incoming: ReadAhead::new(
                limits.max_in_flight,
                limits.max_body_bytes,
                limits.body_timeout,
                metrics.bodies_arriving.get_or_create(&label).clone(),
            ),
            unsent: Budget::new(limits.unsent_response_bytes),
            rejected: metrics.rejected.clone(),
        })
    }

    /// `body` from `whom` read ahead, charged to `own` (its connection's allowance) and the
    /// budget, or the answer that refuses it.
    async fn read_ahead(
        &self,
        body: Body,
        own: &Arc<Semaphore>,
        whom: Sender,
    ) -> Result<(Body, Charge), Response> {
        match self.incoming.read(body, own, whom).await {
            Ok(read) => Ok(read),
            Err(Refused::Body(e)) => {
                let reason = ReasonLabel { reason: e.reason() };
                self.rejected.get_or_create(&reason).inc();
                let (limit, timeout) = (self.incoming.limit(whom), self.limits.body_timeout);
                Err(e.api_error(limit, timeout).into_response())
            }
            Err(Refused::Budget(rest, deadline)) => {
                self.refused.inc();
                // Read to its end, so that the client sees the answer, not a reset.
                drain_until(rest, self.limits.max_body_bytes, deadline).await;
                Err(too_busy("request bytes"))
            }
        }
    }

    /// Who sends a request's body, if it is read ahead: not where the router refuses it at
    /// once for want of the listener's token (a stranger's body is not worth reading, nor
    /// waiting for), unless its route reads bodies without one. A request found to carry the
    /// token is marked so ([`crate::bearer::Verified`]): the router does not check it again.
    fn reads_ahead<B>(&self, req: &mut http::Request<B>) -> Option<Sender> {
        let Some(guard) = &self.limits.token else {
            return Some(Sender::Known);
        };
        if crate::bearer::carries(req.headers(), &guard.digest) {
            req.extensions_mut()
                .insert(crate::bearer::Verified(guard.digest));
            Some(Sender::Known)
        } else {
            let route = crate::ingress::path::route_path(req.uri().path());
            guard.open.contains(&route).then_some(Sender::Stranger)
        }
    }

    /// Takes a slot if one is free.
    fn try_take(self: &Arc<Self>) -> Option<Slot> {
        if self.in_flight.inc() < self.limits.max_in_flight as i64 {
            return Some(Slot {
                gate: self.clone(),
                _charge: Charge::default(),
            });
        }
        self.in_flight.dec();
        None
    }

    /// A slot within [`ADMISSION_WAIT`]: a burst waits a moment (its bodies' bytes counted in
    /// the budget) before it is refused.
    async fn wait(self: &Arc<Self>) -> Option<Slot> {
        if let Some(slot) = self.try_take() {
            return Some(slot);
        }
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

/// The `429` to a request over a cap of `what`, from `origin` (see [`with_cors`]).
fn refusal(what: &str, limits: &Limits, origin: Option<HeaderValue>) -> Response {
    with_cors(too_busy(what), limits, origin)
}

/// `response` to a request from `origin`, with the CORS headers where the router answers
/// CORS: the gate answers some requests before the router sees them, and a browser must see
/// those answers too.
fn with_cors(mut response: Response, limits: &Limits, origin: Option<HeaderValue>) -> Response {
    if limits.cors {
        crate::ingress::cors::add_headers(response.headers_mut(), origin);
    }
    response
}

/// One admitted request, counted until dropped (also when hyper drops the request), holding
/// the bytes its body was charged.
struct Slot {
    gate: Arc<Gate>,
    _charge: Charge,
}

/// A request's slot under the in-flight cap, in its extensions: an attach, which only waits,
/// gives it back first ([`HeldSlot::release`]), so that attaches never keep out the requests
/// that would end their waits. A call keeps its slot while the handler it started may run in
/// this process (the cap bounds how many requests start handlers at once), and gives it back
/// once it only waits: its invocation suspended (a workflow awaiting an approval) or paused
/// (until an operator acts), is stored already, or runs in another process. A woken or
/// resumed invocation runs without a slot, as one started by `/send` does: neither is bounded
/// by the cap.
#[derive(Clone)]
pub(crate) struct HeldSlot(Arc<std::sync::Mutex<Option<Slot>>>);

impl HeldSlot {
    fn new(slot: Slot) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(slot))))
    }

    /// The slot of the request whose extensions these are (none in a router nested in
    /// another server).
    pub(crate) fn of(extensions: &http::Extensions) -> Option<Self> {
        extensions.get::<Self>().cloned()
    }

    /// Whether it still holds its slot.
    pub(super) fn holds(&self) -> bool {
        self.0.lock().expect("held slot").is_some()
    }

    /// Gives the slot back (once; later calls do nothing).
    pub(crate) fn release(&self) {
        drop(self.0.lock().expect("held slot").take());
    }
}

/// `req` with its slot in its extensions, and the slot (dropped with the response).
fn holding(mut req: http::Request<Body>, slot: Slot) -> (http::Request<Body>, HeldSlot) {
    let held = HeldSlot::new(slot);
    req.extensions_mut().insert(held.clone());
    (req, held)
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.in_flight.dec();
        self.gate.freed.notify_one();
    }
}

/// What one connection is doing: the requests it has open, and whether one started since
/// the last look ([`Activity::idle`]).
#[derive(Default)]
pub(super) struct Activity {
    open: AtomicUsize,
    started: AtomicBool,
}

impl Activity {
    fn enter(self: &Arc<Self>) -> Busy {
        self.open.fetch_add(1, Ordering::Relaxed);
        self.started.store(true, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Whether no request was open, nor started, since the last call.
    pub(super) fn idle(&self) -> bool {
        self.open.load(Ordering::Relaxed) == 0 && !self.started.swap(false, Ordering::Relaxed)
    }
}

/// One request of a connection, open until dropped.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A listener's router behind its gate, as the service of each connection: admission is a
/// synchronous check on the way in, with no middleware layer per request.
#[derive(Clone)]
pub(super) struct Admitted {
    router: Router,
    gate: Arc<Gate>,
    /// What its connection is doing, on an HTTP/2 connection only: HTTP/1's own header
    /// timeout ends an idle one, so its requests are not counted.
    activity: Option<Arc<Activity>>,
    /// The response bodies its connection is sending.
    sending: Arc<Sending>,
    /// Its connection's allowance of body bytes read ahead ([`OWN_BYTES`]).
    own: Arc<Semaphore>,
}

impl Admitted {
    pub(super) fn new(router: Router, gate: Arc<Gate>) -> Self {
        Self {
            router,
            gate,
            activity: None,
            sending: Arc::default(),
            own: Arc::new(Semaphore::new(OWN_BYTES)),
        }
    }

    /// The service of one connection, and the response bodies it sends; on an HTTP/2
    /// connection (`watched`), also what that connection is doing.
    pub(super) fn of_connection(
        &self,
        watched: bool,
    ) -> (Self, Arc<Sending>, Option<Arc<Activity>>) {
        let activity = watched.then(Arc::<Activity>::default);
        let sending = Arc::<Sending>::default();
        let service = Self {
            activity: activity.clone(),
            sending: sending.clone(),
            own: Arc::new(Semaphore::new(OWN_BYTES)),
            ..self.clone()
        };
        (service, sending, activity)
    }
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for Admitted {
    type Response = Response;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response, Infallible>>;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        use tower_service::Service as _;
        let mut req = req.map(Body::new);
        let mut router = self.router.clone();
        let busy = self.activity.as_ref().map(Activity::enter);
        // Probes are answered however busy the listener is, and so are preflights where the
        // router answers them itself (no handler runs for one).
        if HEALTH_PATHS.contains(&crate::ingress::path::route_path(req.uri().path()))
            || (self.gate.limits.cors && crate::ingress::cors::is_preflight(&req))
        {
            let response = router.call(req);
            return Box::pin(async move {
                let response = response.await;
                drop(busy);
                response
            });
        }
        let origin = (self.gate.limits.cors)
            .then(|| req.headers().get(header::ORIGIN).cloned())
            .flatten();
        let sending = self.sending.clone();
        let gate = self.gate.clone();
        // A request the router's token check refuses is answered at once, its body unread.
        let read_ahead = gate
            .reads_ahead(&mut req)
            .map(|whom| (self.own.clone(), whom));
        Box::pin(async move {
            let (req, charge) = match read_ahead {
                Some((own, whom)) => {
                    let (parts, body) = req.into_parts();
                    match gate.read_ahead(body, &own, whom).await {
                        Ok((body, charge)) => (http::Request::from_parts(parts, body), charge),
                        Err(refused) => return Ok(with_cors(refused, &gate.limits, origin)),
                    }
                }
                None => (req, Charge::default()),
            };
            let Some(mut slot) = gate.wait().await else {
                gate.refused.inc();
                drain(req.into_body(), &gate.limits).await;
                return Ok(refusal("requests in flight", &gate.limits, origin));
            };
            slot._charge = charge;
            let (req, slot) = holding(req, slot);
            let response = router.call(req).await?;
            let response = answered(&gate, &sending, response, slot, origin);
            drop(busy);
            Ok(response)
        })
    }
}

/// `response`, its body metered ([`outgoing`]), or the `429` to a rereadable one over the
/// budget (with the CORS headers for `origin` where the router answers CORS).
fn answered(
    gate: &Gate,
    sending: &Arc<Sending>,
    response: Response,
    slot: HeldSlot,
    origin: Option<HeaderValue>,
) -> Response {
    match outgoing::metered(response, Some(slot), &gate.unsent, sending) {
        Some(response) => response,
        None => {
            gate.refused.inc();
            refusal(
                "response bytes waiting for their clients",
                &gate.limits,
                origin,
            )
        }
    }
}

/// The health routes of the ingress and the admin API, as `route_path` gives them.
const HEALTH_PATHS: [&str; 2] = ["restate/health", "health"];

/// Answers connections over the cap: each gets `429` for its first request and is closed.
/// At most [`Refusal::at_once`] are answered at a time, each within [`REFUSAL_DEADLINE`];
/// while all are busy the listener stops accepting for up to a second, so the next
/// connections wait in the kernel's backlog to be answered in turn; only when every refusal
/// stays held by a client that sends nothing for that second are connections closed
/// unanswered, at once, until a refusal is free again.
pub(super) struct Refusal {
    builder: auto::Builder<TokioExecutor>,
    limits: Limits,
    at_once: Arc<Semaphore>,
}

/// Refusals answered at once at least (each holds a connection and a small buffer).
const REFUSALS: usize = 256;
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
            at_once: Arc::new(Semaphore::new((limits.max_connections / 8).max(REFUSALS))),
        }
    }

    /// One of the refusals that may run at once, if one is free now.
    pub(super) fn try_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.at_once.clone().try_acquire_owned().ok()
    }

    /// One of the refusals that may run at once, when one is free.
    pub(super) async fn slot(&self) -> OwnedSemaphorePermit {
        self.at_once
            .clone()
            .acquire_owned()
            .await
            .expect("the refusals' semaphore is never closed")
    }

    /// Reads one request (head, then the body to drop), answers `429` and closes; `slot` is
    /// held until then.
    pub(super) fn answer(self: &Arc<Self>, stream: TcpStream, slot: OwnedSemaphorePermit) {
        let this = self.clone();
        tokio::spawn(async move {
            let limits = this.limits;
            let service = hyper::service::service_fn(
                move |req: http::Request<hyper::body::Incoming>| async move {
                    let (parts, body) = req.into_parts();
                    drain(Body::new(body), &limits).await;
                    let origin = parts.headers.get(header::ORIGIN).cloned();
                    Ok::<_, Infallible>(refusal("connections", &limits, origin))
                },
            );
            let connection = this.builder.serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(REFUSAL_DEADLINE * 2, connection).await;
            drop(slot);
        });
    }
}

/// Reads and drops a body, up to the body limit and within the body timeout.
async fn drain(body: Body, limits: &Limits) {
    let deadline = tokio::time::Instant::now() + limits.body_timeout;
    drain_until(body, limits.max_body_bytes, deadline).await;
}

/// Reads and drops a body, up to `limit` bytes and until `deadline`.
async fn drain_until(mut body: Body, limit: usize, deadline: tokio::time::Instant) {
    let mut read = 0usize;
    while read <= limit {
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
