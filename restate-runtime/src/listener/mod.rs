//! The HTTP listeners (ingress, public webhooks, admin): an accept loop with the limits that
//! bound what slow, flooding or hostile clients can make the process hold. A connection over
//! the cap and a request over the in-flight cap are still answered (`429`, `Retry-After`,
//! `Connection: close`, after their body is read and dropped), never reset or left hanging;
//! request heads must arrive within the header timeout (an idle keep-alive connection is
//! closed after it too), bodies within the body timeout, read whole before their requests
//! take a slot in flight.

mod admission;
mod incoming;
mod outgoing;

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::engine::Engine;
use crate::metrics::ListenerLabel;

pub(crate) use admission::HeldSlot;
pub(crate) use incoming::{BodyError, read_body_within};
pub(crate) use outgoing::Rereadable;

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections served at once; more are answered `429` and closed.
    pub max_connections: usize,
    /// Requests served at once; more are answered `429`.
    pub max_in_flight: usize,
    /// Time for a request head to arrive (and for an idle keep-alive connection to send one).
    pub header_timeout: Duration,
    /// Time for a request body to arrive.
    pub body_timeout: Duration,
    /// Largest body read, also when one is only read to be dropped.
    pub max_body_bytes: usize,
    /// Whether HTTP/2 is spoken (not on the public listener: webhook senders use HTTP/1.1).
    pub http2: bool,
    /// The token the router requires: a request without it is passed to the router with its
    /// body unread, which refuses it (or, on the admin UI, takes its session cookie: a signed-in
    /// operator's UI requests are not read ahead), but for the [`Guard::open`] routes.
    pub token: Option<Guard>,
    /// Whether the router answers CORS (the ingress): preflights are then answered however
    /// busy the listener is, and a refusal over the in-flight or the connection cap carries
    /// the CORS headers, so that a browser sees the `429`.
    pub cors: bool,
    /// Bytes of response bodies held until their clients take them (see `outgoing`).
    pub unsent_response_bytes: usize,
}

/// The token a listener's router requires, and the routes that read bodies without it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Guard {
    /// The token's digest (`bearer::digest`).
    pub digest: [u8; 32],
    /// Routes, as `route_path` gives them, whose bodies are read without the token (the
    /// UI's sign-in form).
    pub open: &'static [&'static str],
}

impl Guard {
    /// The guard of `token`, if there is one, with its `open` routes.
    pub(crate) fn of(token: Option<&str>, open: &'static [&'static str]) -> Option<Self> {
        token.map(|token| Self {
            digest: crate::bearer::digest(token),
            open,
        })
    }
}

/// Largest read buffer per connection: with many connections open, hyper's default (about
/// 400 KB each) would be most of the memory.
const READ_BUFFER: usize = 16 * 1024;
/// HTTP/2 flow-control windows: what a client may send before the server reads it.
const H2_WINDOW: u32 = 64 * 1024;
/// How long accepting waits for a refusal to be free before it closes a connection over the
/// cap unanswered.
const REFUSAL_WAIT: Duration = Duration::from_secs(1);
/// How long open requests may take to finish once serving stops.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` under `limits` until `stop` turns true, then stops accepting,
/// lets open requests finish (for at most [`DRAIN`]) and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    name: &'static str,
    limits: Limits,
    engine: Engine,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    let label = ListenerLabel { listener: name };
    let gate = admission::Gate::new(name, limits, engine.clone());
    let service = admission::Admitted::new(router, gate);
    let builder = Arc::new(connection_builder(limits));
    let refusal = Arc::new(admission::Refusal::new(limits));
    let open = Arc::new(AtomicUsize::new(0));
    // The last wait for a refusal ran out: the next over-cap connections do not wait.
    let mut refusals_stuck = false;
    // Every connection task holds a sender; all dropped means all connections closed.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let metrics = &engine.metrics();
        if open.load(Ordering::Relaxed) >= limits.max_connections {
            // Accepting pauses until a refusal is free: the connections behind wait in the
            // kernel's backlog to be answered in turn, not closed unanswered. Once a pause
            // ran out (every refusal held by a client that sends nothing), connections are
            // closed at once until a refusal is free again, so such clients cost one pause,
            // not one per connection.
            let slot = match refusal.try_slot() {
                Some(slot) => Some(slot),
                None if refusals_stuck => None,
                None => tokio::select! {
                    slot = tokio::time::timeout(REFUSAL_WAIT, refusal.slot()) => slot.ok(),
                    () = stopped(&mut stop) => break,
                },
            };
            refusals_stuck = slot.is_none();
            if open.load(Ordering::Relaxed) >= limits.max_connections {
                metrics.connections_refused.get_or_create(&label).inc();
                match slot {
                    Some(slot) => refusal.answer(stream, slot),
                    None => drop(stream),
                }
                continue;
            }
        }
        let counted = Counted::new(
            open.clone(),
            metrics.connections_open.get_or_create(&label).clone(),
        );
        let timeouts = metrics.header_timeouts.get_or_create(&label).clone();
        let (service, builder, stop, open_tx) = (
            service.clone(),
            builder.clone(),
            stop.clone(),
            open_tx.clone(),
        );
        tokio::spawn(async move {
            let timed_out = match request_started(&stream, limits.header_timeout).await {
                Start::Http1 => {
                    let (service, sending, _) = service.of_connection(false);
                    let idle = std::future::pending();
                    let stalled = outgoing::stalled(&sending, limits.body_timeout);
                    serve_connection(&builder, stream, service, stop, idle, stalled).await
                }
                Start::Http2 => {
                    let (service, sending, activity) = service.of_connection(true);
                    let activity = activity.expect("watched");
                    let idle = idle(&activity, limits.header_timeout);
                    let stalled = outgoing::stalled(&sending, limits.body_timeout);
                    serve_connection(&builder, stream, service, stop, idle, stalled).await
                }
                Start::Closed => false,
                Start::TimedOut => true,
            };
            if timed_out {
                timeouts.inc();
            }
            drop(counted);
            drop(open_tx);
        });
    }
    drop(listener);
    drop(open_tx);
    let _ = tokio::time::timeout(DRAIN, open_rx.recv()).await;
    Ok(())
}

/// One open connection, counted for the cap and the gauge until dropped (also by a panic).
struct Counted {
    open: Arc<AtomicUsize>,
    gauge: Gauge,
}

impl Counted {
    fn new(open: Arc<AtomicUsize>, gauge: Gauge) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        gauge.inc();
        Self { open, gauge }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        self.gauge.dec();
    }
}

/// How a connection's first request began.
enum Start {
    /// A request line (hyper's header timeout ends an idle connection).
    Http1,
    /// The HTTP/2 preface ([`idle`] ends an idle connection).
    Http2,
    Closed,
    TimedOut,
}

/// What an HTTP/2 client sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits until the client has sent the start of a request (a line, or the 24-byte HTTP/2
/// preface): hyper reads that much to tell the protocols apart, with no timeout of its own,
/// so a client sending nothing would hold its connection forever.
async fn request_started(stream: &TcpStream, timeout: Duration) -> Start {
    let start = async {
        let mut head = [0u8; 24];
        loop {
            match stream.peek(&mut head).await {
                Ok(0) | Err(_) => return Start::Closed,
                Ok(n) if n == head.len() && head == *H2_PREFACE => return Start::Http2,
                Ok(n) if n == head.len() || head[..n].contains(&b'\n') => return Start::Http1,
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    };
    tokio::time::timeout(timeout, start)
        .await
        .unwrap_or(Start::TimedOut)
}

/// HTTP/1 (and HTTP/2 where allowed) with the header timeout, a bounded read buffer and small
/// HTTP/2 windows.
fn connection_builder(limits: Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(READ_BUFFER);
    builder
        .http2()
        .timer(TokioTimer::new())
        .initial_stream_window_size(H2_WINDOW)
        .initial_connection_window_size(H2_WINDOW)
        .max_send_buf_size(READ_BUFFER)
        .keep_alive_interval(limits.header_timeout)
        .keep_alive_timeout(limits.header_timeout)
        .max_concurrent_streams(u32::try_from(limits.max_in_flight).unwrap_or(u32::MAX));
    if limits.http2 {
        builder
    } else {
        builder.http1_only()
    }
}

/// Resolves once an HTTP/2 connection has had no request open or started for a whole
/// `period`: HTTP/2 has no header timeout, so a client that opened a connection, answered
/// pings and never sent a request would hold it forever.
async fn idle(activity: &admission::Activity, period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        if activity.idle() {
            return;
        }
    }
}

/// Serves one connection until it ends, serving stops or `idle` resolves (then it finishes
/// the requests in progress), or until `stalled` does (then it is closed at once); `true` if
/// it ended by the header timeout.
async fn serve_connection<S>(
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    service: S,
    mut stop: watch::Receiver<bool>,
    idle: impl Future<Output = ()>,
    stalled: impl Future<Output = ()>,
) -> bool
where
    S: hyper::service::Service<
            http::Request<Incoming>,
            Response = axum::response::Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let served = async {
        tokio::select! {
            ended = connection.as_mut() => return ended.is_err_and(|e| is_header_timeout(&*e)),
            () = stopped(&mut stop) => {}
            () = idle => {}
        }
        // Stopping, or idle: finish the request in progress, accept no new one.
        connection.as_mut().graceful_shutdown();
        let _ = connection.as_mut().await;
        false
    };
    tokio::select! {
        timed_out = served => timed_out,
        () = stalled => false,
    }
}

/// Whether a connection ended because a request head (or the next one, on an idle keep-alive
/// connection) did not arrive in time.
fn is_header_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<hyper::Error>()
        .is_some_and(hyper::Error::is_timeout)
}

/// Resolves once `stop` turns true (the guard `wait_for` returns is not held across awaits).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// An accept error: a connection that died before it was accepted is nothing; running out of
/// file descriptors is waited out (the kernel keeps new connections in its backlog meanwhile).
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::*;
    if !matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused
    ) {
        tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Binds a listener whose accept queue holds a burst as large as the connection cap (the
/// kernel caps it at `net.core.somaxconn`): with tokio's default of 1,024, a burst of new
/// connections overflows the queue, and the kernel falls back to SYN cookies and drops, which
/// clients see as stalls and resets.
pub(crate) fn bind(addr: std::net::SocketAddr, backlog: usize) -> io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(u32::try_from(backlog).unwrap_or(u32::MAX))
}

/// Raises this process's open-file limit to its hard limit, so the connection caps (kept
/// below it) are what limits connections, and returns the limit now in force.
pub(crate) fn raise_open_file_limit() -> Option<libc::rlim_t> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for getrlimit to fill and setrlimit to read.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}
