//! Building the UI's HTML: escaping, the page frame (style, navigation, live refresh) and
//! payloads shown pretty-printed and truncated.

use std::fmt::Write as _;

use serde_json::Value;

/// Characters of a payload shown before it is cut.
const PAYLOAD_SHOWN: usize = 2_000;

/// Text made safe inside HTML elements and quoted attributes.
pub(super) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON value as text: strings bare, anything else pretty-printed; cut after
/// [`PAYLOAD_SHOWN`] characters, saying how much was left out.
pub(super) fn payload(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    };
    let total = text.chars().count();
    if total <= PAYLOAD_SHOWN {
        return text;
    }
    let mut cut: String = text.chars().take(PAYLOAD_SHOWN).collect();
    let _ = write!(cut, "\n… {} more characters", total - PAYLOAD_SHOWN);
    cut
}

/// A field of a JSON object as text ("" when absent or null).
pub(super) fn field(value: &Value, name: &str) -> String {
    match value.get(name) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Which part of the UI a page belongs to, for the navigation.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Section {
    Invocations,
    Services,
    None,
}

/// A whole page: `body` inside the frame. A `live` page refreshes its main part every few
/// seconds while visible and while nobody is typing in it.
pub(super) fn page(base: &str, title: &str, section: Section, live: bool, body: &str) -> String {
    let nav = |s: Section, href: &str, label: &str| {
        let current = if s == section {
            " aria-current=\"page\""
        } else {
            ""
        };
        format!("<a href=\"{href}\"{current}>{label}</a>")
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · restate</title><style>{STYLE}</style></head><body>\
         <header><strong>restate</strong><nav>{}{}</nav></header>\
         <main id=\"main\"{}>{body}</main><script>{LIVE}</script></body></html>",
        nav(Section::Invocations, base, "Invocations"),
        nav(Section::Services, &format!("{base}/services"), "Services"),
        if live { " data-live=\"3000\"" } else { "" },
        title = esc(title),
    )
}

const STYLE: &str = include_str!("style.css");
const LIVE: &str = include_str!("live.js");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

    #[test]
    fn long_payloads_are_cut_and_say_by_how_much() {
        let long = Value::String("a".repeat(PAYLOAD_SHOWN + 5));
        let shown = payload(&long);
        assert!(shown.ends_with("… 5 more characters"), "{shown}");
        assert_eq!(payload(&serde_json::json!({"a": 1})), "{\n  \"a\": 1\n}");
    }
}
