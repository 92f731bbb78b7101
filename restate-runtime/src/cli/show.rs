//! The commands' answers for people: aligned tables and short summaries of the admin API's
//! JSON (the same JSON `--json` prints as it is).

use std::fmt::Write as _;

use serde_json::Value;

/// A field as text ("" when absent or null; strings without quotes), control characters
/// (a line break in a key, a terminal escape in an error) shown escaped.
fn text(value: &Value, name: &str) -> String {
    let raw = match value.get(name) {
        None | Some(Value::Null) => return String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    raw.chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// Rows under a header, each column as wide as its widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (cell, width) in cells.zip(&widths) {
            let _ = write!(text, "{cell:<width$}  ");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// `GET /invocations`: one line each, and how to get the next page.
pub(super) fn invocations(listed: &Value) -> String {
    let rows: Vec<Vec<String>> = listed["invocations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|inv| {
            ["id", "target", "status", "attempts", "modified_at"]
                .iter()
                .map(|name| text(inv, name))
                .collect()
        })
        .collect();
    let mut out = match rows.is_empty() {
        true => "no invocation matches\n".to_owned(),
        false => table(&["ID", "TARGET", "STATUS", "ATTEMPTS", "MODIFIED"], &rows),
    };
    if let Some(next) = listed["next"].as_str() {
        let _ = writeln!(out, "more: --after {next}");
    }
    out
}

/// `GET /invocations/{id}`: its fields, then its journal entry by entry.
pub(super) fn invocation(view: &Value) -> String {
    let mut out = String::new();
    for (label, name) in [
        ("id", "id"),
        ("target", "target"),
        ("status", "status"),
        ("attempts", "attempts"),
        ("next attempt", "next_retry_at"),
        ("version", "version"),
        ("created", "created_at"),
        ("modified", "modified_at"),
        ("completed", "completed_at"),
        ("idempotency key", "idempotency_key"),
        ("paused because", "paused_reason"),
        ("superseded by", "superseded_by"),
        ("last error", "last_error"),
        ("result", "result"),
    ] {
        let value = text(view, name);
        if !value.is_empty() {
            let _ = writeln!(out, "{label:<16}{value}");
        }
    }
    let entries = view["journal"].as_array().map_or(&[][..], Vec::as_slice);
    let _ = writeln!(out, "journal ({} entries)", entries.len());
    for entry in entries {
        let mut line = format!("  #{} {}", text(entry, "index"), text(entry, "kind"));
        for name in ["name", "target", "invocationId", "wakeAt", "change"] {
            let value = text(entry, name);
            if !value.is_empty() {
                let _ = write!(line, " {value}");
            }
        }
        for name in ["value", "result"] {
            let value = text(entry, name);
            if !value.is_empty() {
                let _ = write!(line, " = {value}");
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// An action's answer: what was done to which invocation.
pub(super) fn action(done: &Value) -> String {
    let (action, id) = (text(done, "action"), text(done, "invocationId"));
    match done["answer"]["invocationId"].as_str() {
        Some(new) => format!("{action}: {id} (new invocation {new})\n"),
        None if done["answer"]["handedOver"] == true => {
            format!("{action}: handed to the process that runs {id}, which carries it out\n")
        }
        None if action == "cancel" => format!("cancel: requested for {id}\n"),
        None => format!("{action}: done for {id}\n"),
    }
}

/// `GET /services`: a line per handler.
pub(super) fn services(listed: &Value) -> String {
    let mut rows = Vec::new();
    for service in listed["services"].as_array().into_iter().flatten() {
        for handler in service["handlers"].as_array().into_iter().flatten() {
            rows.push(vec![
                text(service, "name"),
                text(service, "ty"),
                text(handler, "name"),
                text(handler, "input_type"),
                text(handler, "output_type"),
                match handler["public"].as_bool() {
                    Some(false) => "private".to_owned(),
                    _ => String::new(),
                },
            ]);
        }
    }
    table(
        &["SERVICE", "KIND", "HANDLER", "INPUT", "OUTPUT", ""],
        &rows,
    )
}

/// A replay check's report as one JSON document: how many were checked, and each invocation
/// that would break with what breaks (`kind`, the entry's `index` where there is one, and the
/// sentence the text report prints).
pub(super) fn replay_report(report: &crate::ReplayReport) -> Value {
    use crate::Problem;
    let problems: Vec<Value> = (report.problems.iter())
        .map(|p| {
            let (kind, index) = match &p.problem {
                Problem::Diverges { index, .. } => ("diverges", Some(*index)),
                Problem::EndsEarly { index, .. } => ("ends_early", Some(*index)),
                Problem::DifferentResult { .. } => ("different_result", None),
                Problem::Fails { .. } => ("fails", None),
                Problem::UnknownTarget { .. } => ("unknown_target", None),
                Problem::Stuck { .. } => ("stuck", None),
            };
            serde_json::json!({
                "invocation_id": p.invocation_id.to_string(),
                "target": p.target,
                "status": p.status,
                "version": p.version,
                "kind": kind,
                "index": index,
                "problem": p.problem.to_string(),
            })
        })
        .collect();
    serde_json::json!({ "checked": report.checked, "problems": problems })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_table_aligns_its_columns() {
        let listed = json!({"invocations": [
            {"id": "inv_a", "target": "S/h", "status": "running", "attempts": 1, "modified_at": "t"},
            {"id": "inv_bbbb", "target": "Svc/handler", "status": "completed", "attempts": 12, "modified_at": "t"},
        ], "next": "inv_bbbb"});
        let shown = invocations(&listed);
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(
            lines[0],
            "ID        TARGET       STATUS     ATTEMPTS  MODIFIED"
        );
        assert_eq!(lines[1], "inv_a     S/h          running    1         t");
        assert_eq!(lines[3], "more: --after inv_bbbb");
        assert_eq!(
            invocations(&json!({"invocations": []})),
            "no invocation matches\n"
        );
    }

    /// An action another process carries out is not reported done (found by review: the
    /// admin API's 202 printed "kill: done").
    #[test]
    fn an_action_handed_over_says_so() {
        let answer = |answer| json!({"action": "kill", "invocationId": "inv_a", "answer": answer});
        assert_eq!(action(&answer(json!({}))), "kill: done for inv_a\n");
        assert_eq!(
            action(&answer(json!({"handedOver": true}))),
            "kill: handed to the process that runs inv_a, which carries it out\n"
        );
    }

    #[test]
    fn an_invocation_backing_off_shows_when_its_next_attempt_starts() {
        let view = json!({"id": "inv_a", "status": "backing-off", "attempts": 2,
            "next_retry_at": "2026-12-07T16:00:00Z", "last_error": "down", "journal": []});
        let shown = invocation(&view);
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(
            lines[..4],
            [
                "id              inv_a",
                "status          backing-off",
                "attempts        2",
                "next attempt    2026-12-07T16:00:00Z",
            ]
        );
    }
}
