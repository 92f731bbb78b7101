//! [`HttpIngress`]: the generated typed clients as callers of another process, over its ingress
//! (Restate's HTTP API): calls, sends, attach and output by invocation id. Requests that carry
//! an idempotency key, and reads, are retried when no answer came or the ingress itself asked
//! for a retry; others are not (a retried call without a key could run twice).

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use crate::client::{
    Caller, HasObjectClient, HasServiceClient, HasWorkflowClient, IntoObjectClient,
    IntoServiceClient, IntoWorkflowClient, RequestParts,
};
use crate::codec::decode_json;
use crate::error::TerminalError;
use crate::handle::{HandleCaller, InvocationHandle};
use crate::ids::InvocationId;
use crate::percent::component;

/// Attempts of a retried request, and the first pause between two (doubled each time).
const DEFAULT_ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const KEEPALIVE: Duration = Duration::from_secs(30);
/// The largest answer read: a remote that sends more is refused, not buffered.
pub(crate) const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// Another process's services, called through its ingress with the same generated clients
/// as in-process: `HttpIngress::new(url).client::<Greeter>()`. A second Rust program can call
/// typed services it does not host (it links their crate, or a crate that declares the same
/// services, but does not run them).
///
/// ```no_run
/// use restate_runtime::{HttpIngress, prelude::*};
/// # #[derive(Default)]
/// # pub struct Greeter;
/// # #[service]
/// # impl Greeter {
/// #     #[handler]
/// #     async fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> { Ok(format!("Hello {name}")) }
/// # }
/// # async fn demo() -> anyhow::Result<()> {
/// let remote = HttpIngress::new("http://127.0.0.1:8080").bearer_token("s3cret");
/// let greeting = remote.client::<Greeter>().greet("Ada".into()).call().await?;
/// // A key makes the request safe to retry: it is retried on connection failures and on
/// // the ingress's own 429/503 answers, and runs once.
/// let sent = remote
///     .client::<Greeter>()
///     .greet("Bob".into())
///     .idempotency_key("greet-bob")
///     .send()
///     .await?;
/// assert_eq!(sent.attach().await?, "Hello Bob");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpIngress {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    token: Option<String>,
    attempts: u32,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl HttpIngress {
    /// The ingress at `url` (`http://host:port`, with or without a trailing slash; a path
    /// prefix is kept). Nothing is connected until the first request.
    ///
    /// ```
    /// let remote = restate_runtime::HttpIngress::new("http://127.0.0.1:8080/");
    /// ```
    pub fn new(url: impl Into<String>) -> Self {
        let mut base: String = url.into();
        while base.ends_with('/') {
            base.pop();
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        // A call may wait long for its handler; keepalive probes find a peer that is gone.
        connector.set_keepalive(Some(KEEPALIVE));
        Self {
            inner: Arc::new(Inner {
                base,
                token: None,
                attempts: DEFAULT_ATTEMPTS,
                client: Client::builder(TokioExecutor::new()).build(connector),
            }),
        }
    }

    /// Sends `Authorization: Bearer {token}` with every request (the ingress's
    /// `RESTATE_INGRESS_TOKEN`).
    ///
    /// ```
    /// let remote = restate_runtime::HttpIngress::new("http://127.0.0.1:8080").bearer_token("s3cret");
    /// ```
    pub fn bearer_token(self, token: impl Into<String>) -> Self {
        self.with(|inner| inner.token = Some(token.into()))
    }

    /// How often a retryable request is tried in all (default 5; 1 turns retries off).
    ///
    /// ```
    /// let remote = restate_runtime::HttpIngress::new("http://127.0.0.1:8080").max_attempts(10);
    /// ```
    pub fn max_attempts(self, attempts: u32) -> Self {
        self.with(|inner| inner.attempts = attempts.max(1))
    }

    fn with(self, change: impl FnOnce(&mut Inner)) -> Self {
        let mut inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            base: shared.base.clone(),
            token: shared.token.clone(),
            attempts: shared.attempts,
            client: shared.client.clone(),
        });
        change(&mut inner);
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The typed client of a remote `#[service]`.
    ///
    /// ```no_run
    /// # use restate_runtime::{HttpIngress, prelude::*};
    /// # #[derive(Default)]
    /// # pub struct Greeter;
    /// # #[service]
    /// # impl Greeter {
    /// #     #[handler]
    /// #     async fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> { Ok(format!("Hello {name}")) }
    /// # }
    /// # async fn demo() -> anyhow::Result<()> {
    /// let remote = HttpIngress::new("http://127.0.0.1:8080");
    /// assert_eq!(remote.client::<Greeter>().greet("Ada".into()).call().await?, "Hello Ada");
    /// # Ok(()) }
    /// ```
    pub fn client<S: HasServiceClient>(&self) -> S::Client<'static, HttpIngress> {
        <S::Client<'static, HttpIngress> as IntoServiceClient<_>>::create(self.clone())
    }

    /// The typed client of one key of a remote `#[object]`.
    ///
    /// ```no_run
    /// # use restate_runtime::{HttpIngress, prelude::*};
    /// # #[derive(Default)]
    /// # pub struct Counter;
    /// # #[object]
    /// # impl Counter {
    /// #     #[handler]
    /// #     async fn add(&self, _ctx: ObjectContext<'_>, n: u64) -> HandlerResult<u64> { Ok(n) }
    /// # }
    /// # async fn demo() -> anyhow::Result<()> {
    /// let remote = HttpIngress::new("http://127.0.0.1:8080");
    /// let count = remote.object::<Counter>("visits").add(1).call().await?;
    /// # Ok(()) }
    /// ```
    pub fn object<O: HasObjectClient>(
        &self,
        key: impl Into<String>,
    ) -> O::Client<'static, HttpIngress> {
        <O::Client<'static, HttpIngress> as IntoObjectClient<_>>::create(self.clone(), key.into())
    }

    /// The typed client of one remote `#[workflow]`.
    ///
    /// ```no_run
    /// # use restate_runtime::{HttpIngress, prelude::*};
    /// # #[derive(Default)]
    /// # pub struct Signup;
    /// # #[workflow]
    /// # impl Signup {
    /// #     #[handler]
    /// #     async fn run(&self, _ctx: WorkflowContext<'_>, email: String) -> HandlerResult<String> { Ok(email) }
    /// # }
    /// # async fn demo() -> anyhow::Result<()> {
    /// let remote = HttpIngress::new("http://127.0.0.1:8080");
    /// let run = remote.workflow::<Signup>("ada").run("ada@example.com".into()).send().await?;
    /// # Ok(()) }
    /// ```
    pub fn workflow<W: HasWorkflowClient>(
        &self,
        key: impl Into<String>,
    ) -> W::Client<'static, HttpIngress> {
        <W::Client<'static, HttpIngress> as IntoWorkflowClient<_>>::create(self.clone(), key.into())
    }

    /// A handle on a remote invocation by its id, to attach to it or look at its output.
    ///
    /// ```no_run
    /// # async fn demo(id: restate_runtime::InvocationId) -> anyhow::Result<()> {
    /// let remote = restate_runtime::HttpIngress::new("http://127.0.0.1:8080");
    /// let report: String = remote.invocation(id).typed::<String>().attach().await?;
    /// # Ok(()) }
    /// ```
    pub fn invocation(&self, id: InvocationId) -> InvocationHandle<serde_json::Value, HttpIngress> {
        InvocationHandle::new(id, self.clone())
    }

    /// Sends one request, retrying it while that is safe (`retryable`) and useful.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        headers: &[(String, String)],
        body: Bytes,
        retryable: bool,
    ) -> Result<(StatusCode, Bytes), IngressError> {
        let attempts = if retryable { self.inner.attempts } else { 1 };
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let outcome = self.once(method.clone(), path, headers, body.clone()).await;
            let again = match &outcome {
                Err(e) => e.is_retryable(),
                Ok(_) => false,
            };
            if !again || attempt >= attempts {
                return outcome;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            attempt += 1;
        }
    }

    async fn once(
        &self,
        method: Method,
        path: &str,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), IngressError> {
        let uri = format!("{}{path}", self.inner.base);
        if !uri.starts_with("http://") {
            return Err(IngressError::Request(format!(
                "{uri}: only `http://` URLs are supported (put a TLS-terminating proxy in front, \
                 or reach the ingress on a private network)"
            )));
        }
        let mut request = Request::builder().method(method).uri(&uri);
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(token) = &self.inner.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if !body.is_empty() {
            request = request.header(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| IngressError::Request(format!("{uri}: {e}")))?;
        let response = self
            .inner
            .client
            .request(request)
            .await
            .map_err(|e| IngressError::Transport(format!("{uri}: {e}")))?;
        let status = response.status();
        // Only an answer that says it comes from the handler is its terminal error; the
        // ingress's own refusals, and a proxy's (without the header), are refusals.
        let from_handler = response
            .headers()
            .get("x-restate-error-source")
            .is_some_and(|v| v == "invocation");
        let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    IngressError::Protocol(format!(
                        "{uri}: the answer is larger than {MAX_ANSWER_BYTES} bytes"
                    ))
                } else {
                    IngressError::Transport(format!("{uri}: reading the answer: {e}"))
                }
            })?
            .to_bytes();
        if status.is_success() {
            return Ok((status, body));
        }
        let error = error_body(status, &body);
        Err(if from_handler {
            IngressError::Terminal(error)
        } else {
            IngressError::Refused {
                status: status.as_u16(),
                message: error.message().to_owned(),
            }
        })
    }
}

/// The error an answer carries (Restate's `{"code","message"}` body, with `"metadata"` when
/// the handler's terminal error had some).
pub(crate) fn error_body(status: StatusCode, body: &[u8]) -> TerminalError {
    #[derive(serde::Deserialize)]
    struct ErrorBody {
        code: Option<u16>,
        message: Option<String>,
        #[serde(default)]
        metadata: std::collections::BTreeMap<String, String>,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody {
            code,
            message,
            metadata,
        }) => TerminalError::from_parts(
            code.unwrap_or(status.as_u16()),
            message.unwrap_or_else(|| status.to_string()),
            metadata,
        ),
        Err(_) => TerminalError::new_with_code(
            status.as_u16(),
            String::from_utf8_lossy(body).trim().to_owned(),
        ),
    }
}

impl Caller for HttpIngress {
    type Request<I, O> = HttpRequest<O>;
    fn request<I, O>(&self, parts: RequestParts) -> HttpRequest<O> {
        HttpRequest {
            ingress: self.clone(),
            parts,
            _out: PhantomData,
        }
    }
}

impl HandleCaller for HttpIngress {
    type Kept = HttpIngress;
}

/// Why a request over HTTP failed.
///
/// ```no_run
/// use restate_runtime::{HttpIngress, IngressError, prelude::*};
/// # #[derive(Default)]
/// # pub struct Greeter;
/// # #[service]
/// # impl Greeter {
/// #     #[handler]
/// #     async fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> { Ok(format!("Hello {name}")) }
/// # }
/// # async fn demo() {
/// let remote = HttpIngress::new("http://127.0.0.1:8080");
/// match remote.client::<Greeter>().greet("Ada".into()).call().await {
///     Ok(greeting) => println!("{greeting}"),
///     Err(IngressError::Terminal(e)) => eprintln!("the handler refused ({}): {}", e.code(), e.message()),
///     Err(e) if e.is_retryable() => eprintln!("try again later: {e}"),
///     Err(e) => eprintln!("failed: {e}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum IngressError {
    /// The handler ended with a terminal error (its code and message).
    #[error("{0}")]
    Terminal(TerminalError),
    /// The ingress itself refused the request (`x-restate-error-source: ingress`, or an answer
    /// without that header, from a proxy say): a bad input, an unknown service, a missing
    /// token, or overload (429, 503).
    #[error("the ingress answered {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// What the ingress said.
        message: String,
    },
    /// No answer: the connection failed or broke.
    #[error("no answer: {0}")]
    Transport(String),
    /// The request could not be built (a malformed URL or header, a URL that is not `http://`).
    #[error("bad request: {0}")]
    Request(String),
    /// An answer that does not fit the protocol (a body that does not decode).
    #[error("unexpected answer: {0}")]
    Protocol(String),
}

impl IngressError {
    /// Whether trying again may help: no answer came, or the ingress asked for a retry
    /// (overload, storage unavailable, a timeout).
    ///
    /// ```
    /// use restate_runtime::IngressError;
    /// let busy = IngressError::Refused { status: 503, message: "writer busy".into() };
    /// assert!(busy.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Refused { status, .. } => matches!(status, 408 | 429 | 502 | 503 | 504),
            Self::Terminal(_) | Self::Request(_) | Self::Protocol(_) => false,
        }
    }
}

impl From<TerminalError> for IngressError {
    fn from(e: TerminalError) -> Self {
        Self::Terminal(e)
    }
}

/// A request to a remote handler, built by a generated client on an [`HttpIngress`]: finish
/// it with [`call`](Self::call), [`send`](Self::send) or [`send_after`](Self::send_after).
#[must_use = "a request does nothing until called or sent"]
pub struct HttpRequest<O> {
    ingress: HttpIngress,
    parts: RequestParts,
    _out: PhantomData<fn() -> O>,
}

impl<O: DeserializeOwned + Send + 'static> HttpRequest<O> {
    crate::client::builder_options! {
        idempotency_key:
        /// Sent as the `idempotency-key` header; it also makes the request safe to retry, so
        /// a failure without an answer is retried (see [`HttpIngress::max_attempts`]).
        ///
        /// ```no_run
        /// # use restate_runtime::{HttpIngress, prelude::*};
        /// # #[derive(Default)]
        /// # pub struct Payments;
        /// # #[service]
        /// # impl Payments {
        /// #     #[handler]
        /// #     async fn charge(&self, _ctx: Context<'_>, cents: u64) -> HandlerResult<u64> { Ok(cents) }
        /// # }
        /// # async fn demo() -> anyhow::Result<()> {
        /// let remote = HttpIngress::new("http://127.0.0.1:8080");
        /// let charged = remote.client::<Payments>().charge(500).idempotency_key("order-17").call().await?;
        /// # Ok(()) }
        /// ```
        header:
        ///
        /// ```no_run
        /// # use restate_runtime::{HttpIngress, prelude::*};
        /// # #[derive(Default)]
        /// # pub struct Greeter;
        /// # #[service]
        /// # impl Greeter {
        /// #     #[handler]
        /// #     async fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> { Ok(format!("Hello {name}")) }
        /// # }
        /// # async fn demo() -> anyhow::Result<()> {
        /// let remote = HttpIngress::new("http://127.0.0.1:8080");
        /// let greeting = remote.client::<Greeter>().greet("Ada".into()).header("x-tenant", "acme").call().await?;
        /// # Ok(()) }
        /// ```
    }

    /// Calls and waits for the result (`POST /{service}/{handler}`).
    ///
    /// ```no_run
    /// # use restate_runtime::{HttpIngress, prelude::*};
    /// # #[derive(Default)]
    /// # pub struct Greeter;
    /// # #[service]
    /// # impl Greeter {
    /// #     #[handler]
    /// #     async fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> { Ok(format!("Hello {name}")) }
    /// # }
    /// # async fn demo() -> anyhow::Result<()> {
    /// let remote = HttpIngress::new("http://127.0.0.1:8080");
    /// let greeting: String = remote.client::<Greeter>().greet("Ada".into()).call().await?;
    /// # Ok(()) }
    /// ```
    pub async fn call(self) -> Result<O, IngressError> {
        let (path, headers, body, retryable) = self.prepare(None)?;
        let (_, answer) = self
            .ingress
            .exchange(Method::POST, &path, &headers, body, retryable)
            .await?;
        decode_json(&answer).map_err(|e| IngressError::Protocol(e.to_string()))
    }

    /// Sends one-way (`POST …/send`); returns once the remote process has made the invocation
    /// durable, with a handle to attach to it.
    ///
    /// ```no_run
    /// # use restate_runtime::{HttpIngress, prelude::*};
    /// # #[derive(Default)]
    /// # pub struct Greeter;
    /// # #[service]
    /// # impl Greeter {
    /// #     #[handler]
    /// #     async fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> { Ok(format!("Hello {name}")) }
    /// # }
    /// # async fn demo() -> anyhow::Result<()> {
    /// let remote = HttpIngress::new("http://127.0.0.1:8080");
    /// let sent = remote.client::<Greeter>().greet("Ada".into()).send().await?;
    /// assert_eq!(sent.attach().await?, "Hello Ada");
    /// # Ok(()) }
    /// ```
    pub async fn send(self) -> Result<InvocationHandle<O, HttpIngress>, IngressError> {
        self.send_inner(None).await
    }

    /// Sends one-way, to run after `delay` (`POST …/send?delay=…`).
    ///
    /// ```no_run
    /// # use restate_runtime::{HttpIngress, prelude::*};
    /// # use std::time::Duration;
    /// # #[derive(Default)]
    /// # pub struct Greeter;
    /// # #[service]
    /// # impl Greeter {
    /// #     #[handler]
    /// #     async fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> { Ok(format!("Hello {name}")) }
    /// # }
    /// # async fn demo() -> anyhow::Result<()> {
    /// let remote = HttpIngress::new("http://127.0.0.1:8080");
    /// let later = remote.client::<Greeter>().greet("Ada".into()).send_after(Duration::from_secs(60)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_after(
        self,
        delay: Duration,
    ) -> Result<InvocationHandle<O, HttpIngress>, IngressError> {
        self.send_inner(Some(delay)).await
    }

    async fn send_inner(
        self,
        delay: Option<Duration>,
    ) -> Result<InvocationHandle<O, HttpIngress>, IngressError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Accepted {
            invocation_id: String,
        }
        let (path, headers, body, retryable) = self.prepare(Some(delay))?;
        let (_, answer) = self
            .ingress
            .exchange(Method::POST, &path, &headers, body, retryable)
            .await?;
        let accepted: Accepted = serde_json::from_slice(&answer)
            .map_err(|e| IngressError::Protocol(format!("send answer: {e}")))?;
        let id = accepted
            .invocation_id
            .parse()
            .map_err(|e| IngressError::Protocol(format!("invocation id: {e}")))?;
        Ok(InvocationHandle::new(id, self.ingress))
    }

    /// The path (with `/send` and the delay for a send), headers, body, and whether a retry
    /// is safe (only with an idempotency key).
    #[allow(clippy::type_complexity)]
    fn prepare(
        &self,
        send: Option<Option<Duration>>,
    ) -> Result<(String, Vec<(String, String)>, Bytes, bool), IngressError> {
        let target = &self.parts.target;
        let mut path = format!("/{}", component(&target.service));
        if let Some(key) = &target.key {
            path.push('/');
            path.push_str(&component(key));
        }
        path.push('/');
        path.push_str(&component(&target.handler));
        match send {
            None => {}
            Some(None) => path.push_str("/send"),
            Some(Some(delay)) => path.push_str(&format!("/send?delay={}ms", delay.as_millis())),
        }
        let body = self
            .parts
            .input()
            .map_err(|e| IngressError::Request(e.to_string()))?;
        let mut headers = self.parts.headers.clone();
        let retryable = match &self.parts.idempotency_key {
            Some(key) => {
                headers.push(("idempotency-key".into(), key.clone()));
                true
            }
            None => false,
        };
        Ok((path, headers, body, retryable))
    }
}

/// Over HTTP: attach and output through the remote ingress (reads, so always retried).
impl<T: DeserializeOwned> InvocationHandle<T, HttpIngress> {
    /// Waits for the invocation's result (`GET /restate/invocation/{id}/attach`).
    ///
    /// ```no_run
    /// # async fn demo(id: restate_runtime::InvocationId) -> anyhow::Result<()> {
    /// let remote = restate_runtime::HttpIngress::new("http://127.0.0.1:8080");
    /// let value: u64 = remote.invocation(id).typed::<u64>().attach().await?;
    /// # Ok(()) }
    /// ```
    pub async fn attach(&self) -> Result<T, IngressError> {
        let path = format!("/restate/invocation/{}/attach", self.invocation_id());
        let (_, body) = self
            .caller()
            .exchange(Method::GET, &path, &[], Bytes::new(), true)
            .await?;
        decode_json(&body).map_err(|e| IngressError::Protocol(e.to_string()))
    }

    /// The invocation's result if it has finished, `None` while it runs
    /// (`GET /restate/invocation/{id}/output`).
    ///
    /// ```no_run
    /// # async fn demo(id: restate_runtime::InvocationId) -> anyhow::Result<()> {
    /// let remote = restate_runtime::HttpIngress::new("http://127.0.0.1:8080");
    /// if let Some(value) = remote.invocation(id).typed::<u64>().output().await? {
    ///     println!("{value}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn output(&self) -> Result<Option<T>, IngressError> {
        let path = format!("/restate/invocation/{}/output", self.invocation_id());
        let answer = self
            .caller()
            .exchange(Method::GET, &path, &[], Bytes::new(), true)
            .await;
        match answer {
            // The ingress's "not ready" (a handler's own 470 is a terminal error instead).
            Err(IngressError::Refused { status: 470, .. }) => Ok(None),
            Err(e) => Err(e),
            Ok((_, body)) => decode_json(&body)
                .map(Some)
                .map_err(|e| IngressError::Protocol(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_give_code_message_and_metadata() {
        let body = br#"{"code":409,"message":"cancelled","source":"invocation"}"#;
        assert_eq!(
            error_body(StatusCode::CONFLICT, body),
            TerminalError::new_with_code(409, "cancelled")
        );
        let body = br#"{"code":402,"message":"declined","metadata":{"reason":"funds"}}"#;
        assert_eq!(
            error_body(StatusCode::PAYMENT_REQUIRED, body),
            TerminalError::new_with_code(402, "declined").with_metadata("reason", "funds")
        );
        assert_eq!(
            error_body(StatusCode::BAD_GATEWAY, b" upstream down \n"),
            TerminalError::new_with_code(502, "upstream down")
        );
    }

    #[tokio::test]
    async fn a_url_that_is_not_http_is_refused_at_once() {
        let remote = HttpIngress::new("https://ingress.example.invalid").max_attempts(50);
        let err = remote
            .exchange(Method::GET, "/restate/health", &[], Bytes::new(), true)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, IngressError::Request(m) if m.contains("only `http://`")),
            "{err}"
        );
        assert!(!err.is_retryable());
    }

    #[test]
    fn only_answers_that_ask_for_it_are_retried() {
        let refused = |status| IngressError::Refused {
            status,
            message: String::new(),
        };
        assert!(IngressError::Transport("reset".into()).is_retryable());
        for status in [408, 429, 502, 503, 504] {
            assert!(refused(status).is_retryable(), "{status}");
        }
        for status in [400, 401, 404, 413, 500] {
            assert!(!refused(status).is_retryable(), "{status}");
        }
        assert!(!IngressError::Terminal(TerminalError::new("no")).is_retryable());
    }
}
