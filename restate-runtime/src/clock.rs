//! Wall-clock time in milliseconds since the Unix epoch, the unit every stored time uses.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in ms since the epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An RFC 3339 rendering of a ms timestamp, as Restate's responses show times.
pub(crate) fn rfc3339(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}
