//! Percent-encoding of URL components: the paths [`HttpIngress`](crate::HttpIngress) calls,
//! the links the web UI writes and the requests the command line sends.

/// Everything but RFC 3986's unreserved characters.
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `text` as one path segment or query value.
pub(crate) fn component(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, COMPONENT).to_string()
}

/// The byte that the escape `%XY` starting at `at` in `text` stands for: exactly two hex digits
/// (`u8::from_str_radix` alone would also take a sign, `%+1`).
pub(crate) fn escaped_byte(text: &str, at: usize) -> Option<u8> {
    let hex = text.get(at + 1..at + 3)?;
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_escape_is_two_hex_digits() {
        assert_eq!(super::escaped_byte("a%2Fb", 1), Some(b'/'));
        assert_eq!(super::escaped_byte("%e9", 0), Some(0xe9));
        for bad in ["%+1", "%-1", "%G1", "%1", "%", "%\u{e9}"] {
            assert_eq!(super::escaped_byte(bad, 0), None, "{bad}");
        }
    }

    #[test]
    fn only_unreserved_characters_stay() {
        assert_eq!(super::component("inv_1-a.b~c"), "inv_1-a.b~c");
        assert_eq!(super::component("a b&c/d?é"), "a%20b%26c%2Fd%3F%C3%A9");
        assert_eq!(super::component("a b/c?d%"), "a%20b%2Fc%3Fd%25");
    }
}
