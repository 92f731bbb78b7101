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

#[cfg(test)]
mod tests {
    #[test]
    fn only_unreserved_characters_stay() {
        assert_eq!(super::component("inv_1-a.b~c"), "inv_1-a.b~c");
        assert_eq!(super::component("a b&c/d?é"), "a%20b%26c%2Fd%3F%C3%A9");
        assert_eq!(super::component("a b/c?d%"), "a%20b%2Fc%3Fd%25");
    }
}
