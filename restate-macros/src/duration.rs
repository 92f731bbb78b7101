//! Duration literals in options (`"30s"`, `"1 day"`, `"PT10S"`), validated at expansion time so
//! a typo is a compile error on the literal.

/// Milliseconds of a friendly or ISO-8601 duration, days counted as 24 hours.
pub(crate) fn parse_millis(input: &str) -> Result<u64, String> {
    let span: jiff::Span = input
        .trim()
        .parse()
        .map_err(|_: jiff::Error| "not a friendly or ISO-8601 duration".to_string())?;
    if span.is_negative() {
        return Err("a duration must not be negative".into());
    }
    let relative = jiff::SpanRelativeTo::days_are_24_hours();
    let ms = span
        .total((jiff::Unit::Millisecond, relative))
        .map_err(|_| "use units of days or smaller (no months or years)".to_string())?;
    Ok(ms as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_millis;

    #[test]
    fn parses_friendly_and_iso() {
        assert_eq!(parse_millis("1 day").unwrap(), 86_400_000);
        assert_eq!(parse_millis("PT10S").unwrap(), 10_000);
        assert_eq!(parse_millis("1h 30m").unwrap(), 5_400_000);
        assert!(parse_millis("2 months").is_err());
        assert!(parse_millis("soon").is_err());
    }
}
