//! Attach, output and lookup of invocations: by id, by idempotency key, by workflow key.

use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::path::{LookupTarget, Verb};
use super::{ApiError, IngressState, parse_invocation_id, response};
use crate::engine::OutputState;
use crate::ids::InvocationId;

pub(crate) async fn lookup(
    state: &IngressState,
    target: LookupTarget,
    verb: Verb,
) -> Result<Response, ApiError> {
    let id = resolve(state, target)?;
    match verb {
        Verb::Lookup => {
            Ok(axum::Json(serde_json::json!({ "invocationId": id.to_string() })).into_response())
        }
        Verb::Attach => match state.engine.attach(id).await? {
            Some(done) => Ok(response::completed(id, &done, true)),
            None => {
                let mut r = ApiError::invocation(404, "not found").into_response();
                if let Ok(v) = id.to_string().parse() {
                    r.headers_mut().insert("x-restate-id", v);
                }
                Ok(r)
            }
        },
        Verb::Output => match state.engine.output(id)? {
            OutputState::Done(done) => Ok(response::completed(id, &done, true)),
            OutputState::NotReady => Err(ApiError::ingress(
                470,
                "the invocation exists but has not completed yet",
            )),
            OutputState::NotFound => Err(ApiError::ingress(404, "invocation not found")),
        },
    }
}

fn resolve(state: &IngressState, target: LookupTarget) -> Result<InvocationId, ApiError> {
    Ok(match target {
        LookupTarget::Id(text) => parse_invocation_id(&text)?,
        LookupTarget::Idempotent {
            service,
            key,
            handler,
            idempotency_key,
        } => {
            let Some(registered) = state.engine.registry().get(&service) else {
                return Err(ApiError::ingress(
                    404,
                    format!(
                        "service '{service}' not found, make sure to register the service before calling it."
                    ),
                ));
            };
            crate::engine::key_fits(registered, key.is_some())?;
            // The handler is not looked up: the results of one a deploy has removed are kept
            // for their retention, and found by their key.
            InvocationId::idempotent(&service, key.as_deref(), &handler, &idempotency_key)
        }
        LookupTarget::Workflow { name, key } => InvocationId::workflow(&name, &key),
    })
}

/// The JSON body of `POST /restate/attach|output|lookup`.
#[derive(Deserialize)]
#[serde(
    tag = "target",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
enum BodyTarget {
    Invocation {
        invocation_id: String,
    },
    Workflow {
        workflow_name: String,
        workflow_key: String,
        /// Refused: this runtime has no scopes (read so that it is not ignored).
        scope: Option<String>,
    },
    IdempotentInvocation {
        service: String,
        key: Option<String>,
        handler: String,
        idempotency_key: String,
        /// As for a workflow.
        scope: Option<String>,
    },
}

pub(crate) async fn lookup_by_body(
    state: &IngressState,
    body: &[u8],
    verb: Verb,
) -> Result<Response, ApiError> {
    let target: BodyTarget = serde_json::from_slice(body)
        .map_err(|e| ApiError::ingress(400, format!("bad request body: {e}")))?;
    if let BodyTarget::Workflow { scope: Some(_), .. }
    | BodyTarget::IdempotentInvocation { scope: Some(_), .. } = &target
    {
        return Err(ApiError::ingress(400, super::path::NO_SCOPES));
    }
    let target = match target {
        BodyTarget::Invocation { invocation_id } => LookupTarget::Id(invocation_id),
        BodyTarget::Workflow {
            workflow_name,
            workflow_key,
            ..
        } => LookupTarget::Workflow {
            name: workflow_name,
            key: workflow_key,
        },
        BodyTarget::IdempotentInvocation {
            service,
            key,
            handler,
            idempotency_key,
            ..
        } => LookupTarget::Idempotent {
            service,
            key,
            handler,
            idempotency_key,
        },
    };
    lookup(state, target, verb).await
}
