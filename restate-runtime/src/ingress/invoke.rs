//! `POST /{Service}/{handler}[/send]` and keyed forms: validate everything, then hand over to
//! the engine. Nothing is created before the request is known to be valid.

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use tracing::Instrument;

use super::{ApiError, IngressState, read_body, response};
use crate::engine::{self, InvokeRequest};
use crate::registry::{HandlerDefinition, HandlerKind, InputShape};
use crate::storage::Target;
use crate::telemetry;

/// Headers not forwarded to the handler.
const DROPPED_HEADERS: [&str; 4] = [
    "connection",
    "host",
    "idempotency-key",
    "idempotency-expires",
];
/// Longest accepted idempotency key.
const MAX_IDEMPOTENCY_KEY: usize = 512;

pub(crate) async fn invoke(
    state: &IngressState,
    req: Request,
    service: String,
    key: Option<String>,
    handler: String,
    send: bool,
) -> Result<Response, ApiError> {
    let engine = &state.engine;
    let target = Target {
        service,
        handler,
        key,
    };
    let (_, definition) = engine.resolve(&target)?;
    if definition.options.ingress_private {
        return Err(ApiError::ingress(400, "the invoked service is not public"));
    }
    let delay = parse_delay(req.uri().query())?;
    let slot = crate::listener::HeldSlot::of(req.extensions());
    if delay.is_some() && !send {
        return Err(ApiError::ingress(
            400,
            "cannot use the delay query parameter with calls. The delay is supported only with sends",
        ));
    }
    let (mut headers, client_key) = parse_headers(req.headers())?;
    // As Restate: the handler sees the path and query it was invoked by (not a client's claim).
    headers.retain(|(name, _)| name != INGRESS_PATH);
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    headers.push((INGRESS_PATH.to_owned(), path.to_owned()));
    // Most ingresses have no webhooks: no key to build then.
    let webhook = match state.webhooks.is_empty() {
        true => None,
        false => state
            .webhooks
            .get(&(target.service.clone(), target.handler.clone())),
    };
    // A verified endpoint ignores the header: its key comes from what the signature covers.
    let mut idempotency_key = match webhook.is_some_and(|hook| hook.is_verified()) {
        true => None,
        false => client_key.map(checked_idempotency_key).transpose()?,
    };
    // Refused before the body is read; the engine refuses it for every other caller.
    let workflow_run = definition.kind == HandlerKind::Workflow;
    engine::check_idempotency_key(workflow_run, idempotency_key.as_deref())?;
    let content_type = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = read_body(state, req.into_body()).await?;
    if let Some(hook) = webhook {
        // Before anything is created: a forged request leaves no trace and claims no event id.
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        hook.verify(header, &body, engine.now_ms())
            .map_err(|e| ApiError::ingress(401, format!("invalid webhook signature: {e}")))?;
        // A workflow's run is deduplicated by its key, which comes from the path.
        if !workflow_run {
            idempotency_key = hook.idempotency_key(header, &body, idempotency_key);
        }
    }
    check_input(definition, content_type.as_deref(), &body)?;
    // Credentials and signatures are checked above and never stored: handlers see the same
    // headers on every attempt, and a journal read leaks no secret.
    let headers: Vec<_> = headers
        .into_iter()
        .filter(|(name, _)| {
            !state
                .bodies
                .secret_headers
                .iter()
                .any(|s| s.eq_ignore_ascii_case(name))
        })
        .collect();
    let mut request = InvokeRequest {
        target,
        input: body,
        headers,
        idempotency_key,
        delay,
        relayed: None,
    };
    // Before a deploy: clients and webhook senders retry, and reach the next process. A
    // duplicate that runs nothing gets its original's answer.
    if engine.drain.is_draining() && !engine.answerable_while_draining(&request, send).await? {
        return Err(ApiError::ingress(
            503,
            "this process is draining and starts no new invocation: retry after Retry-After",
        ));
    }
    // The client's trace context is this span's parent, and the span the invocation's.
    let span = telemetry::ingress_span(&request.target, &mut request.headers);
    async move {
        if send {
            let (id, status, at) = engine.send(request).await?;
            Ok(response::accepted(id, status, at))
        } else {
            // The request's slot under the in-flight cap is given back once nothing of the
            // call runs here (suspended, or run by another process), as an attach's.
            let idle = move || {
                if let Some(slot) = slot {
                    slot.release();
                }
            };
            // A verified webhook's signature is not kept, so its owner could not check it.
            let relay = webhook.is_none().then(|| engine.relay_target(&request));
            if let Some(to) = relay.flatten() {
                // Run by the owner: nothing of it runs here, as for a call through the inbox.
                idle();
                if let Some(answer) = super::relay::call(state, &to, &request).await {
                    return Ok(answer);
                }
                request.relayed = Some(to.id);
                let (id, done, replayed) = engine.call_with(request, || {}).await?;
                return Ok(response::completed(id, &done, replayed));
            }
            let (id, done, replayed) = engine.call_with(request, idle).await?;
            Ok(response::completed(id, &done, replayed))
        }
    }
    .instrument(span)
    .await
}

fn parse_delay(query: Option<&str>) -> Result<Option<std::time::Duration>, ApiError> {
    let Some(query) = query else { return Ok(None) };
    let Some(value) = query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        name.eq_ignore_ascii_case("delay").then_some(value)
    }) else {
        return Ok(None);
    };
    let decoded = form_decode(value);
    let delay = crate::duration::parse(&decoded).map_err(|e| {
        ApiError::ingress(
            400,
            format!("bad delay query parameter, must be a ISO8601 duration or a duration like '10s': {e}"),
        )
    })?;
    // The execution time is answered as a timestamp, which ends with the year 9999.
    let at = crate::clock::now_ms().saturating_add(crate::clock::millis(delay));
    let representable =
        i64::try_from(at).is_ok_and(|at| jiff::Timestamp::from_millisecond(at).is_ok());
    if !representable {
        return Err(ApiError::ingress(
            400,
            format!("bad delay query parameter: '{decoded}' ends after the year 9999"),
        ));
    }
    Ok(Some(delay))
}

/// Form-url-decoding of a query value (`+` is a space).
fn form_decode(value: &str) -> String {
    let replaced = value.replace('+', " ");
    let bytes = replaced.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], crate::percent::escaped_byte(&replaced, i)) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

type Headers = Vec<(String, String)>;

/// The header Restate adds to every invocation: the path and query it came in by.
const INGRESS_PATH: &str = "x-restate-ingress-path";

/// The headers a handler sees, and the first `idempotency-key` header's value (as Restate
/// reads it), unchecked ([`checked_idempotency_key`]).
fn parse_headers(map: &HeaderMap) -> Result<(Headers, Option<String>), ApiError> {
    let mut headers = Vec::with_capacity(map.len());
    let mut idempotency_key = None;
    for (name, value) in map {
        let value = value
            .to_str()
            .map_err(|e| ApiError::ingress(400, format!("bad header {name}: {e}")))?;
        if name.as_str() == "idempotency-key" && idempotency_key.is_none() {
            idempotency_key = Some(value.to_owned());
        }
        if !DROPPED_HEADERS.contains(&name.as_str()) {
            headers.push((name.as_str().to_owned(), value.to_owned()));
        }
    }
    Ok((headers, idempotency_key))
}

/// A client's idempotency key, refused when it is empty or too long (one in the restarts'
/// namespace the engine refuses, from every caller).
fn checked_idempotency_key(key: String) -> Result<String, ApiError> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return Err(ApiError::ingress(
            400,
            format!(
                "bad idempotency-key header: must be 1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters"
            ),
        ));
    }
    Ok(key)
}

pub(super) fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence.to_ascii_lowercase().ends_with("+json")
}

fn check_input(
    definition: &HandlerDefinition,
    content_type: Option<&str>,
    body: &Bytes,
) -> Result<(), ApiError> {
    let blank = body.iter().all(u8::is_ascii_whitespace);
    match definition.input {
        InputShape::Raw => Ok(()),
        InputShape::None if blank => Ok(()),
        InputShape::None => Err(ApiError::ingress(
            400,
            format!(
                "input validation error: handler '{}' takes no input, but the request has a body",
                definition.name
            ),
        )),
        InputShape::Json => {
            if let Some(ct) = content_type.filter(|ct| !blank && !is_json(ct)) {
                return Err(ApiError::ingress(
                    400,
                    format!(
                        "input validation error: Content-type '{ct}' does not match 'application/json'"
                    ),
                ));
            }
            (definition.check_input)(body).map_err(|e| {
                // An empty body reads as `null`: "invalid type: null" would not say what is wrong.
                let message = match blank {
                    true => format!(
                        "input validation error: handler '{}' expects a JSON body, but the request has none",
                        definition.name
                    ),
                    false => format!("input validation error: cannot decode the body: {e}"),
                };
                ApiError::ingress(400, message)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_parse_like_restate() {
        assert_eq!(
            parse_delay(Some("delay=10s")).unwrap(),
            Some(std::time::Duration::from_secs(10))
        );
        assert_eq!(
            parse_delay(Some("DELAY=PT1S")).unwrap(),
            Some(std::time::Duration::from_secs(1))
        );
        assert_eq!(
            parse_delay(Some("delay=1h+30m")).unwrap(),
            Some(std::time::Duration::from_secs(5400))
        );
        assert_eq!(parse_delay(Some("x=1")).unwrap(), None);
        assert!(parse_delay(Some("delay=1000")).is_err());
        assert!(parse_delay(Some("delay=1month")).is_err());
        assert!(parse_delay(Some("delay=-5s")).is_err());
        let far = parse_delay(Some("delay=300000000000000ms")).unwrap_err();
        assert_eq!(far.code, 400);
        assert!(
            parse_delay(Some("delay=3000000h")).is_ok(),
            "about 342 years"
        );
    }

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/cloudevents+json"));
        assert!(!is_json("text/plain"));
    }
}
