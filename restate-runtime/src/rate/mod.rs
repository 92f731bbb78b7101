//! Rate limits: a token bucket per name (and optional key), on handlers
//! (`#[handler(rate(limit = 25, per = "1s"))]`) and on `ctx.run` steps
//! (`ctx.run(..).rate_limit("email")`). A token is reserved by a call to an internal object
//! (`object.rs`: one key per bucket, so the bucket is durable and has one writer), and the wait
//! for it is a durable sleep: a long wait suspends the invocation, a crash keeps the reservation.

mod gate;
mod object;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) use gate::rate_gate;
pub(crate) use object::{RATE_LIMITER, RateLimiterObject};

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
/// assert_eq!("100/m".parse::<RateLimit>(), Ok(RateLimit::new(100, Duration::from_secs(60))));
/// assert!("fast".parse::<RateLimit>().unwrap_err().contains("25/1s"));
/// assert_eq!(stripe.to_string(), "25/1s,burst=5");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RateLimit {
    limit: u32,
    per_ms: u64,
    burst: u32,
}

impl RateLimit {
    /// `limit` tokens per `per` (each at least 1; `per` in whole milliseconds), burst 1.
    pub const fn new(limit: u32, per: Duration) -> Self {
        let per_ms = per.as_millis() as u64;
        Self {
            limit: if limit == 0 { 1 } else { limit },
            per_ms: if per_ms == 0 { 1 } else { per_ms },
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
    pub const fn burst(mut self, tokens: u32) -> Self {
        self.burst = if tokens == 0 { 1 } else { tokens };
        self
    }

    /// The time one token takes to come back.
    pub fn interval(&self) -> Duration {
        Duration::from_micros(self.interval_us())
    }

    pub(crate) fn interval_us(&self) -> u64 {
        (self.per_ms * 1000 / u64::from(self.limit)).max(1)
    }

    pub(crate) fn burst_tokens(&self) -> u32 {
        self.burst
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per = jiff::SignedDuration::from_millis(self.per_ms as i64);
        write!(f, "{}/{per:#}", self.limit)?;
        if self.burst > 1 {
            write!(f, ",burst={}", self.burst)?;
        }
        Ok(())
    }
}

impl FromStr for RateLimit {
    type Err = String;

    /// `<limit>/<period>[,burst=<tokens>]`: `25/1s`, `25/s`, `100/1m,burst=10`.
    fn from_str(text: &str) -> Result<Self, String> {
        let wrong = || {
            format!(
                "rate limit `{text}`: write <limit>/<period>[,burst=<tokens>], e.g. 25/1s or \
                 100/1m,burst=10"
            )
        };
        let (rate, burst) = match text.trim().split_once(',') {
            Some((rate, burst)) => {
                let tokens = burst
                    .trim()
                    .strip_prefix("burst=")
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
        .filter(|d| d.as_millis() > 0)
        .ok_or_else(wrong)?;
        Ok(Self::new(limit, per).burst(burst))
    }
}

/// The bucket of `name` for `key`.
fn bucket(name: &str, key: Option<&str>) -> String {
    match key {
        Some(key) => format!("{name}/{key}"),
        None => name.to_owned(),
    }
}
