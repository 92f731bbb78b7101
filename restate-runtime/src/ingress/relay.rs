//! Relaying a request-response call to the process that runs its partition (shared stores).
//!
//! Any process serves any request: a call for a partition another process runs would go
//! through that partition's inbox (a row written and removed, a notification, the result read
//! back from the store), about three times the work of a call run where it arrives. Instead the
//! receiving process relays it to the owner's ingress (`POST /restate/relay`), which runs it as
//! its own and answers; the answer goes back to the client.
//!
//! The relay gives the call its invocation id, so that it can always fall back to the inbox
//! under the same id: when the owner cannot be reached, refuses the relay (it is not the
//! process named, is draining, or lost the invocation), or its partition moves to another
//! process while the call waits (a paused or cut-off owner, taken over). Whichever of the relay
//! and the inbox comes first creates the invocation; the other finds it (law 3: one invocation
//! per accepted call). A slow handler is waited for as long as it takes, as a local one is.
//!
//! A relay is authenticated by an HMAC under the deployment's secret (in the database), over
//! the whole message, which names the process it is meant for and when it was sent: nothing
//! from outside can choose an id, a relay that reached the wrong process (a stale route, a
//! loopback address advertised on another host) is refused, not run, and an old one is refused
//! ([`RELAYED_RETENTION`]: a relayed invocation's result is kept at least that long).

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::{ApiError, IngressState, response};
use crate::engine::{EngineError, InvokeRequest, RELAYED_RETENTION, RelayTo};
use crate::ids::InvocationId;
use crate::storage::Target;

/// The path of the relay endpoint on every ingress.
pub(crate) const RELAY_PATH: &str = "/restate/relay";
/// The MAC of a relayed call (hex).
const MAC_HEADER: &str = "x-restate-relay-mac";
/// Set on an answer of the invocation: anything else (a refusal, a listener's 429, another
/// server) makes the relaying process go through the inbox.
const ANSWERED_HEADER: &str = "x-restate-relay-answered";
/// Relayed calls and their answers larger than this are refused (the ingress's body limit
/// applies before).
const MAX_RELAY_BYTES: usize = 64 << 20;
/// Idle connections kept open to one peer.
const MAX_IDLE_PER_PEER: usize = 256;
/// Headers of the owner's answer that are its own connection's or its own CORS layer's: the
/// relaying ingress sets its own.
const NOT_RELAYED: [&str; 5] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "vary",
];

/// A call as one process relays it to another.
#[derive(Serialize, Deserialize)]
struct RelayedCall {
    /// The process it is meant for.
    to: i64,
    /// When it was sent (ms since the epoch, by the sender's clock).
    sent_ms: u64,
    id: InvocationId,
    target: Target,
    #[serde(with = "serde_bytes")]
    input: Vec<u8>,
    headers: Vec<(String, String)>,
    idempotency_key: Option<String>,
}

/// The client side: a pool of connections to the other processes' ingresses.
pub(crate) struct Relay {
    client: Client<HttpConnector, Full<Bytes>>,
    /// `Authorization` for the peers' ingresses (the deployment's ingress token).
    authorization: Option<HeaderValue>,
}

impl Relay {
    pub(crate) fn new(token: Option<&str>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        // Connections in use are as many as relays waiting, which this process's listeners
        // bound (connections times streams); idle ones are kept up to a bound per peer.
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(MAX_IDLE_PER_PEER)
            .build(connector);
        let authorization = token.and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok());
        Self {
            client,
            authorization,
        }
    }
}

/// What became of a relay.
enum Relayed {
    Answered(Response),
    /// The process that answered is not the one named: its URL leads elsewhere.
    Misrouted,
    /// Refused, not reached, cut off, or its partition moved: the inbox takes it.
    Failed,
}

/// Relays `req` as invocation `to.id` to `to.peer`: its answer, or `None` when the call is to
/// go through the inbox instead (under the same id).
pub(crate) async fn call(
    state: &IngressState,
    to: &RelayTo,
    req: &InvokeRequest,
) -> Option<Response> {
    let RelayTo { id, peer, peers } = to;
    // Subscribed before the relay is sent: a move read after it is seen.
    let mut changes = peers.changes();
    let moved = async {
        loop {
            if changes.changed().await.is_err() {
                return std::future::pending::<()>().await;
            }
            if peers.route(id.partition_key()).as_ref() != Some(peer) {
                return;
            }
        }
    };
    let relayed = tokio::select! {
        relayed = send(state, to, req) => relayed,
        () = moved => Relayed::Failed,
    };
    let (outcome, answer) = match relayed {
        Relayed::Answered(answer) => ("answered", Some(answer)),
        Relayed::Misrouted => {
            if peers.misrouted(peer) {
                tracing::warn!(
                    peer = %peer.url,
                    "a relay to the process that advertised this URL reached another process: \
                     calls for its partitions go through their inboxes (set \
                     RESTATE_ADVERTISED_INGRESS_URL to an address the other processes reach)"
                );
            }
            ("inbox", None)
        }
        Relayed::Failed => ("inbox", None),
    };
    if answer.is_none() {
        tracing::debug!(%id, peer = %peer.url, "relay not answered: through the inbox");
    }
    let label = crate::metrics::RelayLabel { outcome };
    state.engine.metrics().relays.get_or_create(&label).inc();
    answer
}

/// One relay, sent and answered.
async fn send(state: &IngressState, to: &RelayTo, req: &InvokeRequest) -> Relayed {
    let call = RelayedCall {
        to: to.peer.process,
        sent_ms: state.engine.now_ms(),
        id: to.id,
        target: req.target.clone(),
        input: req.input.to_vec(),
        headers: req.headers.clone(),
        idempotency_key: req.idempotency_key.clone(),
    };
    let Ok(body) = postcard::to_stdvec(&call) else {
        return Relayed::Failed;
    };
    let mac = hex::encode(state.engine.mac(&[b"relay", &body]));
    let request = http::Request::post(format!("{}{RELAY_PATH}", to.peer.url))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(MAC_HEADER, mac)
        .body(Full::new(Bytes::from(body)));
    let Ok(mut request) = request else {
        return Relayed::Failed;
    };
    if let Some(authorization) = &state.relay.authorization {
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, authorization.clone());
    }
    let Ok(answer) = state.relay.client.request(request).await else {
        return Relayed::Failed;
    };
    // The owner's listener over its cap (429) answers for the owner: the client backs off, as
    // from a process of its own, rather than the call going around the cap through the inbox.
    let overloaded = answer.status() == http::StatusCode::TOO_MANY_REQUESTS;
    if !answer.headers().contains_key(ANSWERED_HEADER) && !overloaded {
        return match answer.status().as_u16() {
            421 => Relayed::Misrouted,
            _ => Relayed::Failed,
        };
    }
    let (mut parts, body) = answer.into_parts();
    let Ok(body) = Limited::new(body, MAX_RELAY_BYTES).collect().await else {
        return Relayed::Failed;
    };
    parts.headers.remove(ANSWERED_HEADER);
    for name in NOT_RELAYED {
        parts.headers.remove(name);
    }
    let cors: Vec<_> = (parts.headers.keys())
        .filter(|name| name.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in cors {
        parts.headers.remove(name);
    }
    Relayed::Answered(Response::from_parts(parts, Body::from(body.to_bytes())))
}

/// The owner's side: `POST /restate/relay`. A MAC that does not verify is a 401; a relay
/// meant for another process (a stale route) a 421; an old one a 400; none of them runs
/// anything.
pub(crate) async fn serve(
    state: &IngressState,
    headers: &HeaderMap,
    body: Bytes,
    idle: impl FnOnce() + Send,
) -> Response {
    let engine = &state.engine;
    let verified = headers
        .get(MAC_HEADER)
        .and_then(|v| hex::decode(v.as_bytes()).ok())
        .is_some_and(|given| {
            body.len() <= MAX_RELAY_BYTES
                && crate::mac::same_mac(&given, &engine.mac(&[b"relay", &body]))
        });
    if !verified {
        return ApiError::ingress(401, "a relayed call needs its deployment's MAC").into_response();
    }
    let Ok(call) = postcard::from_bytes::<RelayedCall>(&body) else {
        return ApiError::ingress(400, "a relayed call this binary cannot read").into_response();
    };
    let me = engine.storage().peers().and_then(|p| p.me());
    if me != Some(call.to) {
        return ApiError::ingress(421, "this relay is meant for another process").into_response();
    }
    // Either way, clocks apart by minutes refuse: the sender then uses the inbox.
    if engine.now_ms().abs_diff(call.sent_ms) > crate::clock::millis(RELAYED_RETENTION) {
        return ApiError::ingress(400, "this relay is too old").into_response();
    }
    if engine.drain.is_draining() {
        return ApiError::ingress(503, "this process is draining").into_response();
    }
    // Checked where it arrived too; a binary of a rolling deploy may see it otherwise.
    let private = engine.resolve(&call.target).ok();
    let answer = match private.is_some_and(|(_, handler)| handler.options.ingress_private) {
        true => Ok(ApiError::ingress(400, "the invoked service is not public").into_response()),
        false => run(engine, call, idle).await,
    };
    match answer {
        Ok(mut answer) => {
            answer
                .headers_mut()
                .insert(ANSWERED_HEADER, HeaderValue::from_static("1"));
            answer
        }
        Err(unmarked) => unmarked,
    }
}

/// Runs a verified relay here: its answer, or (`Err`) a refusal that means it took no effect
/// here, left unmarked so that the relaying process tries the inbox.
async fn run(
    engine: &crate::engine::Engine,
    call: RelayedCall,
    idle: impl FnOnce() + Send,
) -> Result<Response, Response> {
    let request = InvokeRequest {
        target: call.target,
        input: call.input.into(),
        headers: call.headers,
        idempotency_key: call.idempotency_key,
        delay: None,
        relayed: Some(call.id),
    };
    match engine.call_with(request, idle).await {
        Ok((id, done, replayed)) => Ok(response::completed(id, &done, replayed)),
        Err(
            e @ (EngineError::Lost(_) | EngineError::Unfinished { .. } | EngineError::Storage(_)),
        ) => Err(ApiError::from(e).into_response()),
        Err(e) => Ok(ApiError::from(e).into_response()),
    }
}
