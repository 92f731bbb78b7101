//! The HTTP listeners (ingress, public webhooks, admin): an accept loop with the limits that
//! bound what slow, flooding or hostile clients can make the process hold. A connection over
//! the cap and a request over the in-flight cap are still answered (`429`, `Retry-After`,
//! `Connection: close`, after their body is read and dropped), never reset or left hanging;
//! request heads must arrive within the header timeout (an idle keep-alive connection is
//! closed after it too), bodies within the body timeout.

mod admission;

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::engine::Engine;
use crate::metrics::ListenerLabel;

pub(crate) use admission::{BodyError, read_body_within};

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
}

/// Largest read buffer per connection: with many connections open, hyper's default (about
/// 400 KB each) would be most of the memory.
const READ_BUFFER: usize = 16 * 1024;

/// Serves `router` on `listener` under `limits` until `stop` turns true, then stops accepting,
/// lets open requests finish and returns once every connection is closed.
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
    let service = TowerToHyperService::new(admission::wrap(router, gate));
    let builder = Arc::new(connection_builder(limits));
    let refusal = Arc::new(admission::Refusal::new(limits));
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
        let open = engine
            .metrics
            .connections_open
            .get_or_create(&label)
            .clone();
        if open.get() >= limits.max_connections as i64 {
            engine
                .metrics
                .connections_refused
                .get_or_create(&label)
                .inc();
            let refusal = refusal.clone();
            tokio::spawn(async move { refusal.answer(stream).await });
            continue;
        }
        open.inc();
        let (builder, service, stop, open_tx) = (
            builder.clone(),
            service.clone(),
            stop.clone(),
            open_tx.clone(),
        );
        tokio::spawn(async move {
            serve_connection(&builder, stream, service, stop).await;
            open.dec();
            drop(open_tx);
        });
    }
    drop(open_tx);
    let _ = open_rx.recv().await;
    Ok(())
}

/// HTTP/1 and HTTP/2 with the header timeout and a bounded read buffer.
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
        .max_concurrent_streams(u32::try_from(limits.max_in_flight).unwrap_or(u32::MAX));
    builder
}

async fn serve_connection<S>(
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    service: S,
    mut stop: watch::Receiver<bool>,
) where
    S: hyper::service::Service<
            http::Request<Incoming>,
            Response = axum::response::Response,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        () = stopped(&mut stop) => {}
    }
    // Stopping: finish the request in progress, accept no new one.
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
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
