//! Relaying a request-response call to the process that runs its partition (shared stores).
//!
//! Any process serves any request: a call for a partition another process runs would go
//! through that partition's inbox (a row written and removed, a notification, the result read
//! back from the store), about three times the work of a call run where it arrives. Instead the
//! receiving process relays it to the owner's ingress (`POST /restate/relay`), which runs it as
//! its own and answers; the answer goes back to the client as it is.
//!
//! The relay gives the call its invocation id, so that it can always fall back to the inbox
//! under the same id: when the owner cannot be reached, refuses the relay (it is not the
//! process named, is draining, or lost the invocation), or does not answer within the lease's
//! length (paused, or taken over). Whichever of the relay and the inbox comes first creates
//! the invocation; the other finds it (law 3: one invocation per accepted call).
//!
//! A relay is authenticated by an HMAC under the deployment's secret (in the database), over
//! the whole message, which names the process it is meant for: nothing from outside can choose
//! an id, and a relay that reached the wrong process (a stale route) is refused, not run.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use super::{ApiError, IngressState, response};
use crate::engine::{EngineError, InvokeRequest};
use crate::ids::InvocationId;
use crate::storage::{Peer, Target};

/// The path of the relay endpoint on every ingress.
pub(crate) const RELAY_PATH: &str = "/restate/relay";
/// The MAC of a relayed call (hex).
const MAC_HEADER: &str = "x-restate-relay-mac";
/// Set on an answer of the invocation: anything else (a refusal, a listener's 429, another
/// server) makes the relaying process go through the inbox.
const ANSWERED_HEADER: &str = "x-restate-relay-answered";
/// Relayed calls larger than this are refused (the ingress's body limit applied before).
const MAX_RELAY_BYTES: usize = 64 << 20;

/// A call as one process relays it to another.
#[derive(Serialize, Deserialize)]
struct RelayedCall {
    /// The process it is meant for.
    to: i64,
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
    /// How long an answer is waited for before the call goes through the inbox too.
    patience: Duration,
}

impl Relay {
    pub(crate) fn new(token: Option<&str>, patience: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let authorization = token.and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok());
        Self {
            client,
            authorization,
            patience,
        }
    }
}

/// Relays `req` as invocation `id` to `peer`: its answer, or `None` when the call is to go
/// through the inbox instead (under the same id).
pub(crate) async fn call(
    state: &IngressState,
    peer: &Peer,
    id: InvocationId,
    req: &InvokeRequest,
) -> Option<Response> {
    let relay = &state.relay;
    let call = RelayedCall {
        to: peer.process,
        id,
        target: req.target.clone(),
        input: req.input.to_vec(),
        headers: req.headers.clone(),
        idempotency_key: req.idempotency_key.clone(),
    };
    let body = postcard::to_stdvec(&call).ok()?;
    let mac = hex::encode(state.engine.mac(&[b"relay", &body]));
    let mut request = http::Request::post(format!("{}{RELAY_PATH}", peer.url))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(MAC_HEADER, mac)
        .body(Full::new(Bytes::from(body)))
        .ok()?;
    if let Some(authorization) = &relay.authorization {
        request
            .headers_mut()
            .insert(header::AUTHORIZATION, authorization.clone());
    }
    let answer = async {
        let answer = relay.client.request(request).await.ok()?;
        if !answer.headers().contains_key(ANSWERED_HEADER) {
            return None;
        }
        let (mut parts, body) = answer.into_parts();
        let body = body.collect().await.ok()?.to_bytes();
        parts.headers.remove(ANSWERED_HEADER);
        Some(Response::from_parts(parts, Body::from(body)))
    };
    let answer = match tokio::time::timeout(relay.patience, answer).await {
        Ok(Some(answer)) => Some(answer),
        Ok(None) => {
            tracing::debug!(%id, peer = %peer.url, "relay refused or failed: through the inbox");
            None
        }
        Err(_) => {
            tracing::debug!(%id, peer = %peer.url, "relay unanswered: through the inbox");
            None
        }
    };
    let outcome = match answer {
        Some(_) => "answered",
        None => "inbox",
    };
    let label = crate::metrics::RelayLabel { outcome };
    state.engine.metrics().relays.get_or_create(&label).inc();
    answer
}

/// The owner's side: `POST /restate/relay`. A MAC that does not verify is a 401; a relay
/// meant for another process (a stale route) a 421; neither runs anything.
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
            use subtle::ConstantTimeEq as _;
            body.len() <= MAX_RELAY_BYTES
                && bool::from(given.ct_eq(&engine.mac(&[b"relay", &body])[..]))
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
    if engine.drain.is_draining() {
        return ApiError::ingress(503, "this process is draining").into_response();
    }
    let request = InvokeRequest {
        target: call.target,
        input: call.input.into(),
        headers: call.headers,
        idempotency_key: call.idempotency_key,
        delay: None,
        relayed: Some(call.id),
    };
    let mut answer = match engine.call_with(request, idle).await {
        Ok((id, done, replayed)) => response::completed(id, &done, replayed),
        // Not known to have taken effect here: the relaying process tries the inbox.
        Err(e @ (EngineError::Lost(_) | EngineError::Storage(_))) => {
            return ApiError::from(e).into_response();
        }
        Err(e) => ApiError::from(e).into_response(),
    };
    answer
        .headers_mut()
        .insert(ANSWERED_HEADER, HeaderValue::from_static("1"));
    answer
}
