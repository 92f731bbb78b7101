//! `POST /backup {"path": "<folder>"}`: an online copy of the data folder, answered once the
//! copy is complete.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::engine::Engine;
use crate::ingress::ApiError;
use crate::storage::BackupError;

/// A misspelt field is refused: `{"path": …, "compres": true}` must not back up as if it were
/// not there.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BackupRequest {
    /// An absolute path of a folder on the server's machine: created, or empty.
    path: std::path::PathBuf,
}

pub(super) async fn backup(
    State(engine): State<Engine>,
    request: Result<axum::Json<BackupRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match request {
        Ok(axum::Json(request)) => request,
        Err(e) => {
            return super::params::body_refused(&e, r#"{"path": "/backups/today"}"#)
                .into_response();
        }
    };
    // A relative path would land wherever the server happens to run from.
    if !request.path.is_absolute() {
        let message = format!(
            "the backup path must be absolute (it is a folder on the server's machine): {}",
            request.path.display()
        );
        return ApiError::ingress(400, message).into_response();
    }
    match crate::runtime::backup(engine.storage().clone(), request.path).await {
        Ok(report) => axum::Json(json!({
            "path": report.path,
            "invocations": report.invocations,
            "bytes": report.bytes,
        }))
        .into_response(),
        Err(e) => {
            let code = match &e {
                BackupError::Unsupported(_) => 501,
                BackupError::BadPath(_) => 400,
                BackupError::NotEmpty(_) => 409,
                BackupError::Failed { .. } => 500,
            };
            ApiError::ingress(code, e.to_string()).into_response()
        }
    }
}
