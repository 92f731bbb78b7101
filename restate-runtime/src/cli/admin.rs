//! The commands' client of a running process's admin API: its address and token from the
//! same variables the process reads, one request per command, JSON answers.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub(super) use crate::percent::component;

/// How long a command waits for the admin API.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The admin API's address when nothing says otherwise.
const DEFAULT_ADDR: &str = "127.0.0.1:9070";

/// Why a command got no answer it could show.
#[derive(Debug, thiserror::Error)]
pub(super) enum AdminError {
    /// The admin API answered with an error (a wrong token, an unknown id, a refused action).
    #[error("{status}: {message}")]
    Refused { status: u16, message: String },
    /// Nothing answered at the address, or the answer was not the admin API's.
    #[error("the admin API at {base} cannot be reached: {reason}")]
    Unreachable { base: String, reason: String },
}

pub(super) struct AdminClient {
    base: String,
    token: Option<String>,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    /// The admin API at `addr` (`host:port`), else `RESTATE_ADMIN_ADDR`, else the default;
    /// the token of `RESTATE_ADMIN_TOKEN`. A listener on every interface (`0.0.0.0`) is
    /// reached on loopback.
    pub(super) fn from_env(addr: Option<&str>) -> Self {
        let addr = addr
            .map(str::to_owned)
            .or_else(|| std::env::var("RESTATE_ADMIN_ADDR").ok())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
        let addr = match addr.strip_prefix("0.0.0.0:") {
            Some(port) => format!("127.0.0.1:{port}"),
            None => addr,
        };
        let addr = addr.trim_end_matches('/');
        let base = match addr.contains("://") {
            true => addr.to_owned(),
            false => format!("http://{addr}"),
        };
        Self {
            base,
            token: std::env::var("RESTATE_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    pub(super) async fn get(&self, path: &str) -> Result<Value, AdminError> {
        self.request(Method::GET, path).await
    }

    pub(super) async fn patch(&self, path: &str) -> Result<Value, AdminError> {
        self.request(Method::PATCH, path).await
    }

    async fn request(&self, method: Method, path: &str) -> Result<Value, AdminError> {
        let unreachable = |reason: String| AdminError::Unreachable {
            base: self.base.clone(),
            reason,
        };
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| unreachable(e.to_string()))?;
        let answered = tokio::time::timeout(TIMEOUT, async {
            let response = self.http.request(request).await?;
            let status = response.status();
            // Bounded as `HttpIngress` bounds its answers: nothing is buffered without end.
            let body =
                http_body_util::Limited::new(response.into_body(), crate::remote::MAX_ANSWER_BYTES)
                    .collect()
                    .await?
                    .to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((status, body))
        })
        .await
        .map_err(|_| unreachable(format!("no answer within {}s", TIMEOUT.as_secs())))?
        .map_err(|e| unreachable(e.to_string()))?;
        let (status, body) = answered;
        if !status.is_success() {
            // The API's error document, or whatever text a proxy in between answered.
            let refused = crate::remote::error_body(status, &body);
            return Err(AdminError::Refused {
                status: status.as_u16(),
                message: refused.message().to_owned(),
            });
        }
        match body.is_empty() {
            true => Ok(Value::Object(Default::default())),
            false => serde_json::from_slice(&body)
                .map_err(|e| unreachable(format!("the answer is not JSON ({e})"))),
        }
    }
}

/// A query string of the given parameters that have a value (`?a=1&b=x`, or empty).
pub(super) fn query(params: &[(&str, Option<&str>)]) -> String {
    let given: Vec<String> = params
        .iter()
        .filter_map(|(name, value)| value.map(|v| format!("{name}={}", component(v))))
        .collect();
    match given.is_empty() {
        true => String::new(),
        false => format!("?{}", given.join("&")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_keep_only_given_values_encoded() {
        assert_eq!(query(&[("a", None)]), "");
        assert_eq!(
            query(&[("key", Some("a b&c")), ("x", None), ("limit", Some("5"))]),
            "?key=a%20b%26c&limit=5"
        );
    }
}
