//! Rate limits: a token bucket per name (and optional key), on handlers
//! (`#[handler(rate(limit = 25, per = "1s"))]`) and on `ctx.run` steps
//! (`ctx.run(..).rate_limit("email")`). A token is reserved by a call to an internal object
//! (`object.rs`: one key per bucket, so the bucket is durable and has one writer), and the wait
//! for it is a durable sleep: a long wait suspends the invocation, a crash keeps the reservation.
//! Sleepers that wake together (a restart after their due times) are spaced again by the
//! process's pacer (`pacer.rs`) before they pass.

mod gate;
mod object;
mod pacer;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) use gate::{Guarded, rate_gate};
pub(crate) use object::{RATE_LIMITER, RateLimiterObject, stored};
pub(crate) use pacer::Pacers;

/// A token bucket: `limit` tokens per `per`, holding at most `burst` (1 unless set; a bucket
/// starts full). Each invocation or step takes one token, waiting (durably) for it when the
/// bucket is empty, so runs are spaced `per / limit` apart once the burst is spent.
///
/// ```
/// use std::time::Duration;
/// use restate_runtime::RateLimit;
/// let stripe = RateLimit::new(25, Duration::from_secs(1)).burst(5);
/// assert_eq!(stripe.interval(), Duration::from_millis(40));
/// assert_eq!("25/1s,burst=5".parse::<RateLimit>(), Ok(stripe));
/// assert_eq!("25/1s, burst = 5".parse::<RateLimit>(), Ok(stripe));
/// assert_eq!("100/m".parse::<RateLimit>(), Ok(RateLimit::new(100, Duration::from_secs(60))));
/// assert!("fast".parse::<RateLimit>().is_err());
/// assert_eq!(stripe.to_string(), "25/1s,burst=5");
/// // Whatever it says, it reads back the same.
/// for text in ["3/1500ms", "10/1h", "1/1d,burst=2"] {
///     let limit: RateLimit = text.parse().unwrap();
///     assert_eq!(limit.to_string().parse::<RateLimit>(), Ok(limit));
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RateLimit {
    limit: u32,
    per_ms: u64,
    burst: u32,
}

/// The most milliseconds a period takes (so that its microseconds fit in 64 bits).
const MAX_PER_MS: u64 = u64::MAX / 1_000_000;

impl RateLimit {
    /// `limit` tokens per `per` (each at least 1; `per` rounded up to whole milliseconds),
    /// burst 1.
    pub const fn new(limit: u32, per: Duration) -> Self {
        // Rounded up: a limit never runs faster than asked.
        let per_ms = per.as_micros().div_ceil(1000);
        let per_ms = if per_ms > MAX_PER_MS as u128 {
            MAX_PER_MS
        } else if per_ms == 0 {
            1
        } else {
            per_ms as u64
        };
        Self {
            limit: if limit == 0 { 1 } else { limit },
            per_ms,
            burst: 1,
        }
    }

    /// `limit` tokens a second.
    ///
    /// ```
    /// use restate_runtime::RateLimit;
    /// assert_eq!(RateLimit::per_second(4).interval(), std::time::Duration::from_millis(250));
    /// ```
    pub const fn per_second(limit: u32) -> Self {
        Self::new(limit, Duration::from_secs(1))
    }

    /// At most `tokens` at once (at least 1): that many can go without waiting after a quiet
    /// spell.
    #[must_use]
    pub const fn burst(mut self, tokens: u32) -> Self {
        self.burst = if tokens == 0 { 1 } else { tokens };
        self
    }

    /// Tokens per period.
    pub fn limit(&self) -> u32 {
        self.limit.max(1)
    }

    /// The period.
    pub fn per(&self) -> Duration {
        Duration::from_millis(self.per_ms.max(1))
    }

    /// The most tokens held at once.
    pub fn max_burst(&self) -> u32 {
        self.burst.max(1)
    }

    /// The time one token takes to come back (rounded up).
    pub fn interval(&self) -> Duration {
        Duration::from_micros(self.interval_us())
    }

    /// Rounded up, so that tokens never come faster than the limit; a value read from storage
    /// is not trusted to hold no zero.
    pub(crate) fn interval_us(&self) -> u64 {
        self.per_ms
            .clamp(1, MAX_PER_MS)
            .saturating_mul(1000)
            .div_ceil(u64::from(self.limit()))
            .max(1)
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = jiff::SignedDuration::from_millis(self.per_ms as i64);
        write!(f, "{}/{per:#}", self.limit())?;
        if self.max_burst() > 1 {
            write!(f, ",burst={}", self.max_burst())?;
        }
        Ok(())
    }
}

/// A rate limit that does not parse, with the form it should take.
///
/// ```
/// let e = "fast".parse::<restate_runtime::RateLimit>().unwrap_err();
/// assert!(e.to_string().contains("25/1s"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rate limit `{0}`: write <limit>/<period>[,burst=<tokens>], e.g. 25/1s or 100/1m,burst=10")]
pub struct RateLimitError(String);

impl FromStr for RateLimit {
    type Err = RateLimitError;

    /// `<limit>/<period>[,burst=<tokens>]`: `25/1s`, `25/s`, `100/1m, burst = 10`.
    fn from_str(text: &str) -> Result<Self, RateLimitError> {
        let wrong = || RateLimitError(text.to_owned());
        let (rate, burst) = match text.trim().split_once(',') {
            Some((rate, burst)) => {
                let tokens = burst
                    .trim()
                    .strip_prefix("burst")
                    .map(str::trim_start)
                    .and_then(|rest| rest.strip_prefix('='))
                    .and_then(|n| n.trim().parse::<u32>().ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(wrong)?;
                (rate, tokens)
            }
            None => (text.trim(), 1),
        };
        let (limit, per) = rate.split_once('/').ok_or_else(wrong)?;
        let limit = limit
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(wrong)?;
        let per = per.trim();
        // A bare unit is one of it: `25/s`.
        let per = if per.starts_with(|c: char| c.is_ascii_digit()) {
            crate::duration::parse(per)
        } else {
            crate::duration::parse(&format!("1{per}"))
        }
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(wrong)?;
        Ok(Self::new(limit, per).burst(burst))
    }
}

/// What a gate sends to reserve a token: the limit as configured now, and the caller's time.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Reserve {
    limit: RateLimit,
    now_ms: u64,
}

/// The bucket of `name` for `key`: the name alone, or both as a JSON pair (no name and key
/// can spell another's).
pub(crate) fn bucket(name: &str, key: Option<&str>) -> String {
    match key {
        Some(key) => serde_json::to_string(&(name, key)).unwrap_or_default(),
        None => name.to_owned(),
    }
}
