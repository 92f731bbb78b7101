//! Human durations as Restate reads them: `500ms`, `10s`, `1h 30m`, `1d`, ISO-8601 `PT10S`.

use std::time::Duration;

/// Parses a friendly or ISO-8601 duration. A bare number, months or years, and negative spans
/// are refused: the unit must be explicit and fixed-length.
///
/// ```
/// use std::time::Duration;
/// use restate_runtime::parse_duration;
/// assert_eq!(parse_duration("1h 30m").unwrap(), Duration::from_secs(5400));
/// assert_eq!(parse_duration("PT10S").unwrap(), Duration::from_secs(10));
/// assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
/// assert!(parse_duration("1000").is_err());
/// ```
pub fn parse(input: &str) -> Result<Duration, String> {
    let input = input.trim();
    if input == "0" {
        return Ok(Duration::ZERO);
    }
    let span: jiff::Span = input.parse().map_err(|e: jiff::Error| e.to_string())?;
    if span.get_years() != 0 || span.get_months() != 0 {
        return Err("please use units of days or smaller".into());
    }
    if span.is_negative() {
        return Err("the duration must not be negative".into());
    }
    let days = i64::from(span.get_weeks()) * 7 + i64::from(span.get_days());
    let rest = span.weeks(0).days(0);
    let rest = jiff::SignedDuration::try_from(rest).map_err(|e| e.to_string())?;
    let total = rest
        .checked_add(jiff::SignedDuration::from_hours(days * 24))
        .ok_or("duration too large")?;
    Duration::try_from(total).map_err(|e| e.to_string())
}
