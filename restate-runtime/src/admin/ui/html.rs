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
/// [`PAYLOAD_SHOWN`] characters, saying how much was left out. A value is printed no further
/// than is shown (found from outside: a 10 MiB array nested 127 deep printed as 1.36 GB, with
/// seconds of CPU and gigabytes of memory for each view of its page).
pub(super) fn payload(value: &Value) -> String {
    let printed;
    let (text, whole) = match value {
        Value::String(s) => (s.as_str(), true),
        other => {
            // A character is at most four bytes: room for what is shown, and one more.
            let mut out = Bounded::with_room(4 * (PAYLOAD_SHOWN + 1));
            let whole = serde_json::to_writer_pretty(&mut out, other).is_ok();
            printed = String::from_utf8_lossy(&out.bytes).into_owned();
            (printed.as_str(), whole)
        }
    };
    let mut chars = text.char_indices();
    let Some((end, _)) = chars.nth(PAYLOAD_SHOWN) else {
        return text.to_owned();
    };
    let mut cut = text[..end].to_owned();
    match whole {
        true => {
            let left = 1 + chars.count();
            let _ = write!(cut, "\n… {left} more characters");
        }
        false => cut.push_str("\n… and more, not shown"),
    }
    cut
}

/// Keeps the first `room` bytes written to it, then refuses more.
struct Bounded {
    bytes: Vec<u8>,
    room: usize,
}

impl Bounded {
    fn with_room(room: usize) -> Self {
        Self {
            bytes: Vec::new(),
            room,
        }
    }
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let taken = buf.len().min(self.room - self.bytes.len());
        self.bytes.extend_from_slice(&buf[..taken]);
        if taken < buf.len() {
            return Err(std::io::Error::other("longer than shown"));
        }
        Ok(taken)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
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

/// The UI's one style sheet and one script, inline in every page.
pub(super) const STYLE: &str = include_str!("style.css");
pub(super) const LIVE: &str = include_str!("live.js");

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
        let numbers = Value::from((0..500).collect::<Vec<u32>>());
        let shown = payload(&numbers);
        let printed = serde_json::to_string_pretty(&numbers).unwrap();
        let left = printed.chars().count() - PAYLOAD_SHOWN;
        assert!(
            shown.ends_with(&format!("… {left} more characters")),
            "{shown}"
        );
    }

    /// A value whose pretty-printed form is huge is printed only as far as it is shown: an
    /// array nested 127 deep with a million elements would print as 256 MB.
    #[test]
    fn a_payload_is_printed_no_further_than_it_is_shown() {
        let mut nested = Value::from(vec![0u8; 1_000_000]);
        for _ in 0..126 {
            nested = Value::Array(vec![nested]);
        }
        let shown = payload(&nested);
        assert_eq!(
            shown.chars().count(),
            PAYLOAD_SHOWN + "\n… and more, not shown".chars().count()
        );
        assert!(shown.starts_with("[\n  [\n    ["), "{shown}");
        assert!(shown.ends_with("… and more, not shown"), "{shown}");
    }
}
