//! Per-handler options: retry policy, retention, visibility.

use std::time::Duration;

/// Exponential backoff for failed invocations (and for `ctx.run` steps that set one).
///
/// Defaults match Restate's: 500 ms initial, factor 2, 60 s cap, 70 attempts, then the
/// invocation is paused.
///
/// ```
/// use restate_runtime::RetryPolicy;
/// use std::time::Duration;
/// let p = RetryPolicy::default();
/// assert_eq!(p.delay_for(1), Duration::from_millis(500));
/// assert_eq!(p.delay_for(2), Duration::from_secs(1));
/// assert_eq!(p.delay_for(30), Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub initial_interval: Duration,
    /// Multiplier between consecutive delays.
    pub factor: f64,
    /// Cap on a single delay.
    pub max_interval: Duration,
    /// Attempts in all (the first execution counts); `None` retries forever.
    pub max_attempts: Option<u32>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_interval: Duration::from_millis(500),
            factor: 2.0,
            max_interval: Duration::from_secs(60),
            max_attempts: Some(70),
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff: `initial` before the first retry, each next delay `factor` times
    /// the previous one (at least 1.0), capped at 60 s, 70 attempts in all (as the default).
    ///
    /// ```
    /// use restate_runtime::RetryPolicy;
    /// use std::time::Duration;
    /// let p = RetryPolicy::exponential(Duration::from_millis(100), 3.0)
    ///     .max_interval(Duration::from_secs(5))
    ///     .max_attempts(10);
    /// assert_eq!(p.delay_for(2), Duration::from_millis(300));
    /// assert_eq!(p.delay_for(9), Duration::from_secs(5));
    /// assert!(!p.allows_another(10));
    /// ```
    pub fn exponential(initial: Duration, factor: f64) -> Self {
        Self {
            initial_interval: initial,
            factor: factor.max(1.0),
            ..Self::default()
        }
    }

    /// The same delay before every retry (70 attempts in all, as the default).
    ///
    /// ```
    /// use restate_runtime::RetryPolicy;
    /// use std::time::Duration;
    /// let p = RetryPolicy::fixed(Duration::from_secs(2)).max_attempts(4);
    /// assert_eq!(p.delay_for(1), p.delay_for(3));
    /// ```
    pub fn fixed(delay: Duration) -> Self {
        Self {
            initial_interval: delay,
            factor: 1.0,
            max_interval: delay,
            ..Self::default()
        }
    }

    /// No retry: the first failure is the last.
    ///
    /// ```
    /// assert!(!restate_runtime::RetryPolicy::none().allows_another(1));
    /// ```
    pub fn none() -> Self {
        Self::default().max_attempts(1)
    }

    /// Caps a single delay.
    ///
    /// ```
    /// use restate_runtime::RetryPolicy;
    /// use std::time::Duration;
    /// let p = RetryPolicy::default().max_interval(Duration::from_secs(1));
    /// assert_eq!(p.delay_for(10), Duration::from_secs(1));
    /// ```
    pub fn max_interval(mut self, cap: Duration) -> Self {
        self.max_interval = cap;
        self
    }

    /// Attempts in all, the first execution included (at least 1).
    ///
    /// ```
    /// let p = restate_runtime::RetryPolicy::default().max_attempts(3);
    /// assert!(p.allows_another(2) && !p.allows_another(3));
    /// ```
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// Retries without a limit on attempts.
    ///
    /// ```
    /// let p = restate_runtime::RetryPolicy::default().forever();
    /// assert!(p.allows_another(1_000_000));
    /// ```
    pub fn forever(mut self) -> Self {
        self.max_attempts = None;
        self
    }

    /// The delay after the `failures`-th failure (1-based).
    ///
    /// ```
    /// use restate_runtime::RetryPolicy;
    /// use std::time::Duration;
    /// let p = RetryPolicy {
    ///     initial_interval: Duration::from_secs(1),
    ///     factor: 3.0,
    ///     ..RetryPolicy::default()
    /// };
    /// assert_eq!(p.delay_for(1), Duration::from_secs(1));
    /// assert_eq!(p.delay_for(3), Duration::from_secs(9));
    /// assert_eq!(p.delay_for(10), p.max_interval); // capped
    /// ```
    pub fn delay_for(&self, failures: u32) -> Duration {
        let exp = self.factor.powi(failures.saturating_sub(1).min(64) as i32);
        let secs = (self.initial_interval.as_secs_f64() * exp).min(self.max_interval.as_secs_f64());
        Duration::from_secs_f64(secs)
    }

    /// Whether another attempt is allowed after `attempts` attempts.
    ///
    /// ```
    /// use restate_runtime::RetryPolicy;
    /// let three = RetryPolicy { max_attempts: Some(3), ..RetryPolicy::default() };
    /// assert!(three.allows_another(2));
    /// assert!(!three.allows_another(3));
    /// let forever = RetryPolicy { max_attempts: None, ..three };
    /// assert!(forever.allows_another(1_000_000));
    /// ```
    pub fn allows_another(&self, attempts: u32) -> bool {
        self.max_attempts.is_none_or(|max| attempts < max)
    }
}

/// "1 attempt", "3 attempts": how errors say how many attempts were made.
pub(crate) fn attempts_made(attempts: u32) -> String {
    match attempts {
        1 => "1 attempt".to_owned(),
        n => format!("{n} attempts"),
    }
}

/// Options of one handler (service-level values are the defaults).
///
/// ```
/// use restate_runtime::prelude::*;
/// use restate_runtime::Service;
/// use std::time::Duration;
/// #[derive(Default)]
/// pub struct Payments;
/// #[service(retention = "7d")]
/// impl Payments {
///     #[handler(ingress_private, retry(max_attempts = 5))]
///     async fn settle(&self, _ctx: Context<'_>) -> HandlerResult<()> { Ok(()) }
/// }
/// let options = Payments::definition().handler("settle").unwrap().options.clone();
/// assert!(options.ingress_private);
/// assert_eq!(options.retry_policy.max_attempts, Some(5));
/// assert_eq!(options.retention, Some(Duration::from_secs(7 * 24 * 3600))); // from the service
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HandlerOptions {
    /// Reachable only from other handlers, not from the ingress.
    pub ingress_private: bool,
    /// Retry policy for the whole invocation.
    pub retry_policy: RetryPolicy,
    /// How long a finished invocation keeps its result and journal (idempotency, attach);
    /// `None` uses the runtime default (24 h).
    pub retention: Option<Duration>,
    /// What happens when the retry policy's attempts are used up.
    pub on_max_attempts: OnMaxAttempts,
    /// The schedule `#[handler(cron = ..)]` declares, if any.
    pub cron: Option<crate::schedules::CronOptions>,
}

/// What happens to an invocation whose retries are exhausted, as in Restate's retry policy.
///
/// ```
/// use restate_runtime::prelude::*;
/// use restate_runtime::{OnMaxAttempts, Service};
/// #[derive(Default)]
/// pub struct Sync;
/// #[service]
/// impl Sync {
///     #[handler(retry(max_attempts = 3, on_max_attempts = "kill"))]
///     async fn push(&self, _ctx: Context<'_>) -> HandlerResult<()> { Ok(()) }
/// }
/// let options = Sync::definition().handler("push").unwrap().options.clone();
/// assert_eq!(options.on_max_attempts, OnMaxAttempts::Kill);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnMaxAttempts {
    /// Park it, visible in the admin API, until resumed (the default).
    #[default]
    Pause,
    /// End it with a terminal error (409 "killed …") that its callers see.
    Kill,
}
