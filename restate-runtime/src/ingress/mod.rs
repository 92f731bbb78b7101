//! The ingress: Restate's HTTP ingress API as an axum router, a thin adapter over the engine.

pub(crate) mod cors;
mod error;
mod invoke;
mod lookup;
pub(crate) mod path;
mod relay;
mod response;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub(crate) use error::{ApiError, parse_invocation_id};

use crate::engine::Engine;
use crate::storage::Outcome;
use crate::webhook::WebhookEndpoint;
use path::Route;

pub(crate) struct IngressState {
    pub engine: Engine,
    /// Body limit and timeout, and the headers never kept.
    pub bodies: BodyLimits,
    /// Webhook endpoints by (service, handler).
    pub webhooks: Webhooks,
    /// Calls for partitions other processes run go to them.
    pub relay: relay::Relay,
}

/// How the ingress reads requests: how large a body may be, how long it may take to arrive,
/// and which headers are never kept.
#[derive(Debug, Clone)]
pub(crate) struct BodyLimits {
    pub max_bytes: usize,
    pub timeout: std::time::Duration,
    pub secret_headers: Arc<[String]>,
}

/// Webhook settings per (service, handler).
pub(crate) type Webhooks = HashMap<(String, String), WebhookEndpoint>;

/// Builds the ingress router; with a token, every route but `/restate/health` needs it.
pub(crate) fn router(
    engine: Engine,
    bodies: BodyLimits,
    webhooks: Webhooks,
    token: Option<String>,
) -> Router {
    let state = Arc::new(IngressState {
        engine,
        bodies,
        webhooks,
        relay: relay::Relay::new(token.as_deref()),
    });
    let router = Router::new().fallback(dispatch).with_state(state);
    crate::bearer::require(router, token, "ingress", "/restate/health")
}

/// The ingress as the runtime serves it: CORS answered as Restate's ingress answers it (any
/// origin, a preflight before the token check), so browser clients work; the token is what
/// keeps a page out.
pub(crate) fn with_cors(router: Router) -> Router {
    router.layer(cors::PermissiveCors::new())
}

/// Builds the public webhook router: `POST` to a verified webhook's handler path, and for
/// everything else the same bare 404, which tells a prober nothing about what exists.
pub(crate) fn webhook_router(engine: Engine, bodies: BodyLimits, webhooks: &Webhooks) -> Router {
    let verified = webhooks
        .iter()
        .filter(|(_, endpoint)| endpoint.is_verified())
        .map(|(target, endpoint)| (target.clone(), endpoint.clone()))
        .collect();
    let state = Arc::new(IngressState {
        engine,
        bodies,
        webhooks: verified,
        // Verified webhooks are never relayed (their signatures are not kept to check again).
        relay: relay::Relay::new(None),
    });
    Router::new().fallback(dispatch_webhook).with_state(state)
}

async fn dispatch(State(state): State<Arc<IngressState>>, req: Request) -> Response {
    match route(&state, req).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn dispatch_webhook(State(state): State<Arc<IngressState>>, req: Request) -> Response {
    // Exactly `/{Service}/{handler}` of a verified webhook (they are on services only), no
    // query, no other form: everything else is the same bare 404.
    let target = match req
        .uri()
        .path()
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
    {
        Some((service, handler))
            if req.method() == Method::POST
                && req.uri().query().is_none()
                && state
                    .webhooks
                    .contains_key(&(service.to_owned(), handler.to_owned())) =>
        {
            Some((service.to_owned(), handler.to_owned()))
        }
        _ => None,
    };
    let Some((service, handler)) = target else {
        return ApiError::ingress(404, "not found").into_response();
    };
    match invoke::invoke(&state, req, service, None, handler, false).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

async fn route(state: &IngressState, req: Request) -> Result<Response, ApiError> {
    let route = path::parse(req.uri().path(), state.engine.registry())
        .map_err(|e| ApiError::ingress(e.status, e.message))?;
    let methods = route.methods();
    if !methods.contains(req.method()) {
        let names: Vec<&str> = methods.iter().map(Method::as_str).collect();
        let mut refused = ApiError::ingress(
            405,
            format!("method not allowed: use {}", names.join(" or ")),
        )
        .into_response();
        let allow = HeaderValue::from_str(&names.join(", ")).expect("method names are ASCII");
        refused.headers_mut().insert(header::ALLOW, allow);
        return Ok(refused);
    }
    match route {
        Route::Health => {
            let names: Vec<&str> = state
                .engine
                .registry()
                .definitions()
                .iter()
                .map(|d| d.name)
                .collect();
            let body = axum::Json(serde_json::json!({ "services": names }));
            // Not ready while draining, so that a load balancer sends requests elsewhere.
            Ok(match state.engine.drain.is_draining() {
                false => body.into_response(),
                true => (StatusCode::SERVICE_UNAVAILABLE, body).into_response(),
            })
        }
        Route::Invoke {
            service,
            key,
            handler,
            send,
        } => invoke::invoke(state, req, service, key, handler, send).await,
        Route::Lookup { target, verb } => {
            release_to_attach(&req, verb);
            lookup::lookup(state, target, verb).await.map(rereadable)
        }
        Route::LookupByBody(verb) => {
            let slot = crate::listener::HeldSlot::of(req.extensions());
            let body = read_body(state, req.into_body()).await?;
            if let (Some(slot), path::Verb::Attach) = (slot, verb) {
                slot.release();
            }
            lookup::lookup_by_body(state, &body, verb)
                .await
                .map(rereadable)
        }
        Route::Relay => {
            let slot = crate::listener::HeldSlot::of(req.extensions());
            let headers = req.headers().clone();
            let body = read_body(state, req.into_body()).await?;
            let idle = move || {
                if let Some(slot) = slot {
                    slot.release();
                }
            };
            Ok(relay::serve(state, &headers, body, idle).await)
        }
        Route::Awakeable { id, resolve } => {
            let json = (req.headers().get(axum::http::header::CONTENT_TYPE))
                .and_then(|ct| ct.to_str().ok())
                .is_some_and(invoke::is_json);
            let body = read_body(state, req.into_body()).await?;
            // A value said to be JSON that is not completes nothing: the handler would only
            // fail to decode it, for good (found from outside: a typo ended the invocation).
            let blank = body.iter().all(u8::is_ascii_whitespace);
            if resolve
                && json
                && !blank
                && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body)
            {
                let message = format!("cannot decode the body as JSON: {e}");
                return Err(ApiError::ingress(400, message));
            }
            let outcome = if resolve {
                Outcome::Success(body.to_vec())
            } else {
                Outcome::Failure {
                    code: 500,
                    message: String::from_utf8_lossy(&body).into_owned(),
                }
            };
            // As Restate: completing an already completed awakeable is accepted and changes nothing.
            match state.engine.complete_awakeable(&id, outcome).await {
                Ok(()) => Ok(StatusCode::ACCEPTED.into_response()),
                Err(refused) => Err(match refused.refusal() {
                    Ok((status, message)) => ApiError::ingress(status, message),
                    Err(e) => e.into(),
                }),
            }
        }
    }
}

/// A lookup's answer (an attach, an output) can be asked for again at no cost: over the
/// listener's budget of unsent bytes it is refused rather than held.
fn rereadable(mut response: Response) -> Response {
    response
        .extensions_mut()
        .insert(crate::listener::Rereadable);
    response
}

/// An attach waits for its invocation without a slot of the in-flight cap (see `HeldSlot`).
fn release_to_attach(req: &Request, verb: path::Verb) {
    if let (Some(slot), path::Verb::Attach) =
        (crate::listener::HeldSlot::of(req.extensions()), verb)
    {
        slot.release();
    }
}

/// Reads the whole body: more than the configured limit is a 413, a body slower than the body
/// timeout a 408.
pub(crate) async fn read_body(state: &IngressState, body: Body) -> Result<bytes::Bytes, ApiError> {
    use crate::listener::BodyError;
    let read =
        crate::listener::read_body_within(body, state.bodies.max_bytes, state.bodies.timeout).await;
    read.map_err(|e: BodyError| {
        let label = crate::metrics::ReasonLabel { reason: e.reason() };
        state.engine.metrics().rejected.get_or_create(&label).inc();
        e.api_error(state.bodies.max_bytes, state.bodies.timeout)
    })
}
