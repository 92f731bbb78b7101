//! Error responses in Restate's form: `{"code","message","source"}` (and a terminal error's
//! `"metadata"` when it has some) plus the
//! `x-restate-error-source` header that its clients read to decide whether to retry.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use std::collections::BTreeMap;

use crate::engine::EngineError;
use crate::error::TerminalError;
use crate::storage::StorageError;

/// Who produced an error: the ingress itself, or the invoked handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Ingress,
    Invocation,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Invocation => "invocation",
        }
    }
}

/// An error response.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub code: u16,
    pub message: String,
    pub source: Source,
    pub metadata: BTreeMap<String, String>,
    /// The invocation the error is about, when the client may attach to it (`x-restate-id`).
    pub invocation: Option<crate::ids::InvocationId>,
}

impl ApiError {
    pub fn ingress(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            source: Source::Ingress,
            metadata: BTreeMap::new(),
            invocation: None,
        }
    }

    pub fn invocation(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            source: Source::Invocation,
            metadata: BTreeMap::new(),
            invocation: None,
        }
    }

    /// A handler's terminal error, with its metadata.
    pub fn from_terminal(error: TerminalError) -> Self {
        Self {
            metadata: error.metadata().clone(),
            ..Self::invocation(error.code(), error.message())
        }
    }
}

/// Parses an invocation id from a path, or a 400 that says why it is not one.
pub(crate) fn parse_invocation_id(text: &str) -> Result<crate::ids::InvocationId, ApiError> {
    text.parse()
        .map_err(|e| ApiError::ingress(400, format!("bad invocation id '{text}': {e}")))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The code is the status when it is an error status (4xx, 5xx); otherwise 500 with the
        // code in the body: a failure must not read as a success, a redirect or an upgrade.
        let status = StatusCode::from_u16(self.code)
            .ok()
            .filter(|s| s.is_client_error() || s.is_server_error())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut body = serde_json::json!({
            "code": self.code,
            "message": self.message,
            "source": self.source.as_str(),
        });
        if !self.metadata.is_empty() {
            body["metadata"] = serde_json::json!(self.metadata);
        }
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            "x-restate-error-source",
            HeaderValue::from_static(self.source.as_str()),
        );
        if let Some(id) = self.invocation {
            headers.insert(
                "x-restate-id",
                super::response::header_value(&id.to_string()),
            );
        }
        // The ingress is unavailable or overloaded for now (disk full, storage failing, too
        // much work in progress): ask for a retry. Not when the request was accepted: the
        // client attaches to its invocation instead.
        if matches!(self.code, 429 | 503)
            && self.source == Source::Ingress
            && self.invocation.is_none()
        {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // Over a limit: the client goes away for now, as over the listeners' caps.
        if self.code == 429 && self.source == Source::Ingress {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        if let EngineError::WorkflowAlreadyInvoked = e {
            return Self::invocation(409, e.to_string());
        }
        if let EngineError::Unfinished { id, .. } = e {
            return Self {
                invocation: Some(id),
                ..Self::ingress(503, e.to_string())
            };
        }
        let code = match &e {
            EngineError::UnknownService(_) | EngineError::UnknownHandler { .. } => 404,
            EngineError::BadTarget(_) => 400,
            // Not acknowledged: a client with an idempotency key may retry safely.
            EngineError::Storage(_) | EngineError::Lost(_) | EngineError::Unfinished { .. } => 503,
            EngineError::WorkflowAlreadyInvoked => 409,
            EngineError::Overloaded(_) => 429,
        };
        Self::ingress(code, e.to_string())
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        EngineError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_code_that_is_no_error_status_answers_500_and_keeps_the_code_in_the_body() {
        for (code, status) in [(100, 500), (101, 500), (200, 500), (204, 500), (304, 500)]
            .into_iter()
            .chain([(418, 418), (409, 409), (503, 503), (600, 500), (0, 500)])
        {
            let response = ApiError::invocation(code, "declined").into_response();
            assert_eq!(response.status().as_u16(), status, "code {code}");
            let source = response.headers()["x-restate-error-source"].clone();
            assert_eq!(source, "invocation", "code {code}");
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["code"], code, "code {code}");
        }
    }
}
