//! Errors a handler returns: terminal (ends the invocation) versus retryable (retried with backoff).

use std::collections::BTreeMap;
use std::fmt;

/// An error that ends an invocation: it is not retried, and the caller sees its code and message.
///
/// The code doubles as the HTTP status the ingress answers with when it is a valid status
/// (100–999); otherwise the ingress answers 500 and keeps the code in the body.
///
/// ```
/// use restate_runtime::TerminalError;
/// let err = TerminalError::new_with_code(404, "no such invoice");
/// assert_eq!(err.code(), 404);
/// assert_eq!(err.message(), "no such invoice");
/// ```
///
/// It may carry metadata, string pairs a caller reads without parsing the message (a decline
/// reason, a retry-at time); they travel with the error through calls, awakeables, promises,
/// the journal and the ingress's error body (`"metadata": {..}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TerminalError {
    code: u16,
    message: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    metadata: BTreeMap<String, String>,
}

impl TerminalError {
    /// Code used when none is given, as in Restate.
    pub const DEFAULT_CODE: u16 = 500;

    /// A terminal error with code 500.
    ///
    /// ```
    /// let err = restate_runtime::TerminalError::new("card declined");
    /// assert_eq!(err.code(), 500);
    /// ```
    pub fn new(message: impl Into<String>) -> Self {
        Self::new_with_code(Self::DEFAULT_CODE, message)
    }

    /// A terminal error with an explicit code. Over HTTP the code is the response's status
    /// when it is an error status (4xx, 5xx); any other code answers 500, with the code in the
    /// body, so that a failure never reads as a success.
    ///
    /// ```
    /// let err = restate_runtime::TerminalError::new_with_code(409, "already paid");
    /// assert_eq!(err.to_string(), "[409] already paid");
    /// ```
    pub fn new_with_code(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            metadata: BTreeMap::new(),
        }
    }

    /// An error from its stored or received parts.
    pub(crate) fn from_parts(
        code: u16,
        message: impl Into<String>,
        metadata: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        Self {
            metadata: metadata.into_iter().collect(),
            ..Self::new_with_code(code, message)
        }
    }

    /// The same error with one more metadata pair (a later value for the same key wins).
    ///
    /// ```
    /// use restate_runtime::TerminalError;
    /// let err = TerminalError::new_with_code(402, "card declined")
    ///     .with_metadata("decline_code", "insufficient_funds");
    /// assert_eq!(err.metadata()["decline_code"], "insufficient_funds");
    /// ```
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The metadata pairs, by key (empty unless set with [`Self::with_metadata`]).
    ///
    /// ```
    /// assert!(restate_runtime::TerminalError::new("x").metadata().is_empty());
    /// ```
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The error code (an HTTP status where it is a valid one).
    ///
    /// ```
    /// assert_eq!(restate_runtime::TerminalError::new("x").code(), 500);
    /// ```
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The message the caller sees.
    ///
    /// ```
    /// assert_eq!(restate_runtime::TerminalError::new("x").message(), "x");
    /// ```
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A message alone is a terminal error with code 500, so completions that take an error
/// (`ctx.awakeable_handle(id).reject("denied")`) take a message or a full [`TerminalError`].
///
/// ```
/// use restate_runtime::TerminalError;
/// let err: TerminalError = "card declined".into();
/// assert_eq!((err.code(), err.message()), (500, "card declined"));
/// ```
impl From<&str> for TerminalError {
    fn from(message: &str) -> Self {
        Self::new(message)
    }
}

/// See the conversion from `&str`.
impl From<String> for TerminalError {
    fn from(message: String) -> Self {
        Self::new(message)
    }
}

/// See the conversion from `&str` (a `&String` argument keeps compiling where a `&str` was
/// taken before).
impl From<&String> for TerminalError {
    fn from(message: &String) -> Self {
        Self::new(message.as_str())
    }
}

impl fmt::Display for TerminalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.code, self.message)
    }
}

/// An error like any other, so it passes through a `Box<dyn Error>` or an `anyhow::Error`
/// and stays terminal: a handler returning `anyhow::Result<T>` may `?` it.
///
/// ```
/// use restate_runtime::{HandlerError, TerminalError};
/// type Boxed = Box<dyn std::error::Error + Send + Sync>;
/// fn charge() -> Result<(), Boxed> {
///     Err(TerminalError::new_with_code(402, "card declined"))?
/// }
/// let e = HandlerError::from(charge().unwrap_err());
/// assert!(e.is_terminal());
/// assert_eq!(e.into_terminal().unwrap().code(), 402);
/// ```
impl std::error::Error for TerminalError {}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a caught panic said (its `&str` or `String` payload).
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

/// What a handler returns on failure: retryable by default, terminal when built from a
/// [`TerminalError`].
///
/// Any `std::error::Error` (and `anyhow::Error`, strings) converts into a *retryable* error with
/// `?`; the invocation is then retried with exponential backoff. A [`TerminalError`] converts into
/// a terminal one.
///
/// ```
/// use restate_runtime::{HandlerError, TerminalError};
/// let retry: HandlerError = std::io::Error::other("db down").into();
/// assert!(!retry.is_terminal());
/// let stop: HandlerError = TerminalError::new("bad card").into();
/// assert!(stop.is_terminal());
/// ```
#[derive(Debug)]
pub struct HandlerError(HandlerErrorKind);

#[derive(Debug)]
enum HandlerErrorKind {
    Retryable(BoxError),
    Terminal(TerminalError),
}

impl HandlerError {
    /// True when the error ends the invocation instead of being retried.
    ///
    /// ```
    /// let e: restate_runtime::HandlerError = "flaky".into();
    /// assert!(!e.is_terminal());
    /// ```
    pub fn is_terminal(&self) -> bool {
        matches!(self.0, HandlerErrorKind::Terminal(_))
    }

    /// An `anyhow::Error` as a handler error: terminal when a [`TerminalError`] is in its
    /// chain (passed on with `?`, with context added or not), else retryable. `?` alone cannot
    /// see inside an `anyhow::Error`.
    ///
    /// ```
    /// use restate_runtime::{HandlerError, HandlerResult, TerminalError};
    /// fn charge() -> anyhow::Result<()> {
    ///     Err(TerminalError::new_with_code(402, "card declined"))?
    /// }
    /// fn handle() -> HandlerResult<()> {
    ///     charge().map_err(HandlerError::from_anyhow)
    /// }
    /// assert!(handle().unwrap_err().is_terminal());
    /// ```
    pub fn from_anyhow(error: anyhow::Error) -> Self {
        let terminal = error
            .chain()
            .find_map(|e| e.downcast_ref::<TerminalError>())
            .cloned();
        match terminal {
            Some(terminal) => Self(HandlerErrorKind::Terminal(terminal)),
            None => error.into(),
        }
    }

    /// The terminal error inside, if it is one.
    ///
    /// ```
    /// let e: restate_runtime::HandlerError = restate_runtime::TerminalError::new("x").into();
    /// assert_eq!(e.into_terminal().unwrap().message(), "x");
    /// ```
    pub fn into_terminal(self) -> Result<TerminalError, Self> {
        match self.0 {
            HandlerErrorKind::Terminal(t) => Ok(t),
            other => Err(Self(other)),
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            HandlerErrorKind::Retryable(e) => write!(f, "{e}"),
            HandlerErrorKind::Terminal(t) => write!(f, "terminal error {t}"),
        }
    }
}

/// A [`TerminalError`], also one in a box, stays terminal; anything else is retryable. An
/// `anyhow::Error` hides what it holds from this conversion: use
/// [`HandlerError::from_anyhow`] for one that may hold a terminal error (a handler returning
/// `anyhow::Result<T>` gets that for its result).
impl<E: Into<BoxError>> From<E> for HandlerError {
    fn from(value: E) -> Self {
        match value.into().downcast::<TerminalError>() {
            Ok(terminal) => Self(HandlerErrorKind::Terminal(*terminal)),
            Err(other) => Self(HandlerErrorKind::Retryable(other)),
        }
    }
}

/// For the runtime's own handlers (schedules, rate limits), whose failure must never be the
/// end: even a terminal error (a state that does not decode) is retried, visibly, until fixed.
pub(crate) fn always_retried<T>(result: Result<T, HandlerError>) -> Result<T, HandlerError> {
    result.map_err(|e| match e.into_terminal() {
        Ok(terminal) => HandlerError::from(format!("the runtime's own step failed: {terminal}")),
        Err(retryable) => retryable,
    })
}

/// The result type of a handler: `Ok(output)` or a [`HandlerError`].
///
/// ```
/// fn check(n: u32) -> restate_runtime::HandlerResult<u32> { Ok(n) }
/// assert_eq!(check(3).unwrap(), 3);
/// ```
pub type HandlerResult<T> = Result<T, HandlerError>;

/// Turns any error into a [`TerminalError`] in one call.
///
/// ```
/// use restate_runtime::TerminalErrorExt;
/// let parsed: Result<u32, _> = "x".parse::<u32>();
/// let err = parsed.terminal_with_code(400).unwrap_err();
/// assert_eq!(err.code(), 400);
/// ```
pub trait TerminalErrorExt<T> {
    /// Map the error into a terminal error with code 500.
    fn terminal(self) -> Result<T, TerminalError>;
    /// Map the error into a terminal error with the given code.
    fn terminal_with_code(self, code: u16) -> Result<T, TerminalError>;
}

impl<T, E: fmt::Display> TerminalErrorExt<T> for Result<T, E> {
    fn terminal(self) -> Result<T, TerminalError> {
        self.terminal_with_code(TerminalError::DEFAULT_CODE)
    }
    fn terminal_with_code(self, code: u16) -> Result<T, TerminalError> {
        self.map_err(|e| TerminalError::new_with_code(code, e.to_string()))
    }
}
