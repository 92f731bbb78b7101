//! The UI's pages, rendered on the server from the admin API's own views (the same JSON the
//! API answers), so the page and the API never disagree.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::html::{Section, esc, field, page, payload};
use crate::filter::STATUSES;
use crate::percent::component as url;

/// What the invocations page shows: the filters as given, the matching page, the cursor.
pub(super) struct Listing<'a> {
    /// Where the UI is: `/ui`, or under the prefix it is nested at.
    pub(super) base: &'a str,
    pub(super) query: &'a HashMap<String, String>,
    pub(super) services: Vec<String>,
    pub(super) invocations: Vec<Value>,
    pub(super) next: Option<String>,
    pub(super) error: Option<String>,
}

/// Filters of the invocations list, as (query name, label).
const FILTERS: [(&str, &str); 7] = [
    ("service", "Service"),
    ("handler", "Handler"),
    ("key", "Key"),
    ("idempotency_key", "Idempotency key (event id)"),
    ("status", "Status"),
    ("version", "Version"),
    ("reason", "Paused because"),
];

pub(super) fn invocations(listing: &Listing<'_>) -> String {
    let base = listing.base;
    let given = |name: &str| listing.query.get(name).map(String::as_str).unwrap_or("");
    let mut body =
        format!("<h1>Invocations</h1><form class=\"filters\" method=\"get\" action=\"{base}\">");
    for (name, label) in FILTERS {
        let _ = write!(body, "<label>{label}");
        match name {
            "service" => {
                let _ = write!(
                    body,
                    "<select name=\"service\"><option value=\"\">any</option>"
                );
                for service in &listing.services {
                    let selected = if service == given("service") {
                        " selected"
                    } else {
                        ""
                    };
                    let _ = write!(
                        body,
                        "<option{selected} value=\"{0}\">{0}</option>",
                        esc(service)
                    );
                }
                body.push_str("</select>");
            }
            "status" => {
                let _ = write!(
                    body,
                    "<select name=\"status\"><option value=\"\">any</option>"
                );
                for status in STATUSES {
                    let selected = if status == given("status") {
                        " selected"
                    } else {
                        ""
                    };
                    let _ = write!(body, "<option{selected}>{status}</option>");
                }
                body.push_str("</select>");
            }
            _ => {
                let _ = write!(
                    body,
                    "<input name=\"{name}\" value=\"{}\">",
                    esc(given(name))
                );
            }
        }
        body.push_str("</label>");
    }
    body.push_str("<button type=\"submit\">Filter</button></form><div id=\"live\">");
    if let Some(error) = &listing.error {
        let _ = write!(body, "<p class=\"notice error\">{}</p>", esc(error));
    }
    if listing.invocations.is_empty() && listing.error.is_none() {
        body.push_str("<p class=\"muted\">No invocation matches.</p>");
    } else {
        body.push_str(
            "<table class=\"rows\" id=\"invocations\"><thead><tr><th>Invocation</th>\
             <th>Target</th><th>Status</th><th>Attempts</th><th>Modified</th><th>Version</th>\
             </tr></thead><tbody>",
        );
        for inv in &listing.invocations {
            let id = field(inv, "id");
            let _ = write!(
                body,
                "<tr data-invocation=\"{0}\"><td data-label=\"Invocation\"><a class=\"id\" \
                 href=\"{base}/invocations/{1}\">{0}</a></td><td data-label=\"Target\">{2}</td>\
                 <td data-label=\"Status\">{3}</td><td data-label=\"Attempts\">{4}</td>\
                 <td data-label=\"Modified\">{5}</td><td data-label=\"Version\">{6}</td></tr>",
                esc(&id),
                url(&id),
                esc(&field(inv, "target")),
                status_badge(&field(inv, "status")),
                esc(&field(inv, "attempts")),
                esc(&field(inv, "modified_at")),
                esc(&field(inv, "version")),
            );
        }
        body.push_str("</tbody></table>");
    }
    if let Some(next) = &listing.next {
        let mut query: Vec<(String, String)> = listing
            .query
            .iter()
            .filter(|(k, v)| k.as_str() != "after" && !v.is_empty())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        query.sort();
        query.push(("after".into(), next.clone()));
        let href: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{}={}", url(k), url(v)))
            .collect();
        let _ = write!(
            body,
            "<p><a rel=\"next\" href=\"{base}?{}\">Next page →</a></p>",
            esc(&href.join("&"))
        );
    }
    body.push_str("</div>");
    page(base, "Invocations", Section::Invocations, true, &body)
}

fn status_badge(status: &str) -> String {
    format!("<span class=\"status status-{0}\">{0}</span>", esc(status))
}

/// Actions on an invocation, by its status: what the engine accepts (none on the runtime's
/// own, which have their own endpoints).
fn actions_for(service: &str, status: &str) -> &'static [&'static str] {
    if crate::registry::is_internal(service) {
        return &[];
    }
    match status {
        "completed" => &["purge", "restart"],
        "paused" => &["resume", "cancel", "kill", "restart"],
        // Waiting for a permit is a suspension (or a start) the engine restarts alike.
        "suspended" | "queued" => &["cancel", "kill", "restart"],
        _ => &["cancel", "kill"],
    }
}

/// One invocation: its summary, result, journal timeline and actions.
pub(super) fn invocation(base: &str, view: &Value, done: Option<&str>) -> String {
    let id = field(view, "id");
    let status = field(view, "status");
    let mut body = format!("<h1>Invocation <span class=\"id\">{}</span></h1>", esc(&id));
    if let Some(done) = done {
        let _ = write!(body, "<p class=\"notice\">{}</p>", esc(done));
    }
    body.push_str("<dl>");
    let mut row = |label: &str, value: String| {
        if !value.is_empty() {
            let _ = write!(body, "<dt>{label}</dt><dd>{value}</dd>");
        }
    };
    row("Target", esc(&field(view, "target")));
    row("Status", status_badge(&status));
    row("Attempts", esc(&field(view, "attempts")));
    row("Version", esc(&field(view, "version")));
    row("Created", esc(&field(view, "created_at")));
    row("Modified", esc(&field(view, "modified_at")));
    row("Completed", esc(&field(view, "completed_at")));
    row("Idempotency key", esc(&field(view, "idempotency_key")));
    row("Paused because", esc(&field(view, "paused_reason")));
    let superseded = field(view, "superseded_by");
    if !superseded.is_empty() {
        row(
            "Superseded by",
            format!(
                "<a class=\"id\" href=\"{base}/invocations/{}\">{}</a>",
                url(&superseded),
                esc(&superseded)
            ),
        );
    }
    let last_error = field(view, "last_error");
    if !last_error.is_empty() {
        // Cut as payloads are: a handler's error may echo what a client sent.
        let shown = payload(&Value::String(last_error));
        row("Last error", format!("<pre>{}</pre>", esc(&shown)));
    }
    let next_retry = field(view, "next_retry_at");
    if !next_retry.is_empty() {
        row("Next attempt", esc(&next_retry));
    }
    if let Some(result) = view.get("result").filter(|r| !r.is_null()) {
        row("Result", format!("<pre>{}</pre>", esc(&payload(result))));
    }
    let key = field(view, "key");
    if !key.is_empty() {
        let service = field(view, "service");
        row(
            "State",
            format!(
                "<a href=\"{base}/state?service={}&amp;key={}\">state of {} / {}</a>",
                url(&service),
                url(&key),
                esc(&service),
                esc(&key)
            ),
        );
    }
    body.push_str("</dl><div class=\"actions\">");
    for action in actions_for(&field(view, "service"), &status) {
        let _ = write!(
            body,
            "<a href=\"{base}/invocations/{}/{action}\">{action}</a>",
            url(&id)
        );
    }
    body.push_str("</div><h2>Journal</h2>");
    let journal = view.get("journal").and_then(Value::as_array);
    match journal {
        Some(entries) if !entries.is_empty() => {
            body.push_str("<ol class=\"timeline\" id=\"journal\">");
            for entry in entries {
                body.push_str(&journal_entry(base, entry));
            }
            body.push_str("</ol>");
        }
        _ => body.push_str("<p class=\"muted\">Nothing journaled yet.</p>"),
    }
    page(
        base,
        &format!("Invocation {id}"),
        Section::Invocations,
        true,
        &body,
    )
}

/// One journal entry: index, kind, what it names, its timing and its payloads.
fn journal_entry(base: &str, entry: &Value) -> String {
    let mut item = format!(
        "<li><span class=\"muted\">#{}</span> <span class=\"kind\">{}</span>",
        esc(&field(entry, "index")),
        esc(&field(entry, "kind"))
    );
    for (name, label) in [("name", ""), ("target", "→ "), ("change", "")] {
        let value = field(entry, name);
        if !value.is_empty() {
            let _ = write!(item, " {label}<code>{}</code>", esc(&value));
        }
    }
    for name in ["invocationId", "awakeableId"] {
        let value = field(entry, name);
        if !value.is_empty() {
            let link = if name == "invocationId" {
                format!(
                    "<a class=\"id\" href=\"{base}/invocations/{}\">{}</a>",
                    url(&value),
                    esc(&value)
                )
            } else {
                format!("<span class=\"id\">{}</span>", esc(&value))
            };
            let _ = write!(item, " {link}");
        }
    }
    let wake = field(entry, "wakeAt");
    if !wake.is_empty() {
        let _ = write!(item, " <span class=\"muted\">until {}</span>", esc(&wake));
        if entry.get("cancelled") == Some(&Value::Bool(true)) {
            item.push_str(" <span class=\"muted\">(cancelled)</span>");
        }
    }
    for (name, label) in [
        ("value", "value"),
        ("result", "result"),
        ("keys", "keys"),
        ("winner", "winner"),
        ("accepted", "accepted"),
    ] {
        match entry.get(name) {
            None => {}
            Some(Value::Null) if name == "result" => {
                item.push_str(" <span class=\"muted\">(waiting)</span>");
            }
            Some(Value::Null) => {}
            Some(value) => {
                let _ = write!(
                    item,
                    "<div class=\"muted\">{label}</div><pre>{}</pre>",
                    esc(&payload(value))
                );
            }
        }
    }
    item.push_str("</li>");
    item
}

/// The page asking to confirm `action` on `id`.
pub(super) fn confirm(base: &str, id: &str, action: &str) -> String {
    let warning = match action {
        "kill" => "Kill ends it at once, without compensation, and fails its callers.",
        "cancel" => "Cancel fails it at its next await point; its handler can still clean up.",
        "purge" => "Purge forgets it: its result and journal are gone.",
        "resume" => "Resume runs the paused invocation again (on the code running now).",
        _ => {
            "Restart runs a new invocation with the same input. A finished one keeps its \
             result; a paused or suspended one is killed once the copy exists, and its callers \
             get the kill."
        }
    };
    let from = if action == "restart" {
        "<label>Keep the first journal entries (empty: start from the beginning) \
         <input name=\"from\" inputmode=\"numeric\" pattern=\"[0-9]*\"></label>"
    } else {
        ""
    };
    let danger = if matches!(action, "kill" | "purge") {
        " class=\"danger\""
    } else {
        ""
    };
    let body = format!(
        "<h1>{action} <span class=\"id\">{0}</span>?</h1><p>{warning}</p>\
         <form method=\"post\" action=\"{base}/invocations/{1}/{action}\">{from}\
         <div class=\"actions\"><button type=\"submit\"{danger}>Yes, {action}</button>\
         <a href=\"{base}/invocations/{1}\">No, go back</a></div></form>",
        esc(id),
        url(id),
    );
    page(
        base,
        &format!("{action} {id}"),
        Section::Invocations,
        false,
        &body,
    )
}

/// Registered services, their handlers and options.
pub(super) fn services(base: &str, services: &[Value]) -> String {
    let mut body = String::from("<h1>Services</h1>");
    for service in services {
        let name = field(service, "name");
        let _ = write!(
            body,
            "<h2>{} <span class=\"muted\">{}</span></h2><table class=\"rows\"><thead><tr>\
             <th>Handler</th><th>Kind</th><th>Input</th><th>Output</th><th>Options</th>\
             </tr></thead><tbody>",
            esc(&name),
            esc(&field(service, "ty"))
        );
        for handler in service
            .get("handlers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let handler_name = field(handler, "name");
            let options = handler_options(handler);
            let _ = write!(
                body,
                "<tr><td data-label=\"Handler\"><a href=\"{base}?service={}&amp;handler={}\">{}</a>\
                 </td><td data-label=\"Kind\">{}</td><td data-label=\"Input\"><code>{}</code></td>\
                 <td data-label=\"Output\"><code>{}</code></td><td data-label=\"Options\">{}</td></tr>",
                url(&name),
                url(&handler_name),
                esc(&handler_name),
                esc(&field(handler, "ty")),
                esc(&field(handler, "input_type")),
                esc(&field(handler, "output_type")),
                esc(&options),
            );
        }
        body.push_str("</tbody></table>");
    }
    page(base, "Services", Section::Services, false, &body)
}

/// A handler's options in words: who may call it, retention, webhook, schedule.
fn handler_options(handler: &Value) -> String {
    let mut options = Vec::new();
    if handler.get("public") == Some(&Value::Bool(false)) {
        options.push("private".to_owned());
    }
    if let Some(ms) = handler.get("retention_ms").and_then(Value::as_u64) {
        options.push(format!("retention {}", humantime_ms(ms)));
    }
    if let Some(webhook) = handler.get("webhook").filter(|w| !w.is_null()) {
        options.push(format!("webhook ({})", field(webhook, "scheme")));
    }
    if let Some(cron) = handler.get("cron").filter(|c| !c.is_null()) {
        options.push(format!(
            "cron {} ({})",
            field(cron, "expression"),
            field(cron, "timezone")
        ));
    }
    options.join(", ")
}

/// A duration in ms in the largest whole unit that fits.
fn humantime_ms(ms: u64) -> String {
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// An object's or workflow's state under one key.
pub(super) fn state(base: &str, service: &str, key: &str, entries: &[(String, Value)]) -> String {
    let mut body = format!(
        "<h1>State of {} / <span class=\"id\">{}</span></h1>",
        esc(service),
        esc(key)
    );
    if entries.is_empty() {
        body.push_str("<p class=\"muted\">No state.</p>");
    } else {
        body.push_str("<table class=\"rows\" id=\"state\"><thead><tr><th>Name</th><th>Value</th></tr></thead><tbody>");
        for (name, value) in entries {
            let _ = write!(
                body,
                "<tr><td data-label=\"Name\"><code>{}</code></td>\
                 <td data-label=\"Value\"><pre>{}</pre></td></tr>",
                esc(name),
                esc(&payload(value))
            );
        }
        body.push_str("</tbody></table>");
    }
    let _ = write!(
        body,
        "<p><a href=\"{base}?service={}&amp;key={}\">Invocations of this key</a></p>",
        url(service),
        url(key)
    );
    page(
        base,
        &format!("State of {service} / {key}"),
        Section::None,
        true,
        &body,
    )
}

/// The token form, shown instead of any page while the browser has no session.
pub(super) fn login(base: &str, next: &str, wrong: bool) -> String {
    let error = if wrong {
        "<p class=\"notice error\">That token is not the admin token.</p>"
    } else {
        ""
    };
    let body = format!(
        "<h1>Admin token</h1><p>This admin API needs its token \
         (<code>RESTATE_ADMIN_TOKEN</code>). It is kept in a cookie of this browser only.</p>\
         {error}<form method=\"post\" action=\"{base}/login\"><input type=\"hidden\" name=\"next\" \
         value=\"{}\"><label>Token <input type=\"password\" name=\"token\" autocomplete=\
         \"current-password\" required autofocus></label> <button type=\"submit\">Sign in\
         </button></form>",
        esc(next)
    );
    page(base, "Sign in", Section::None, false, &body)
}

/// A page for a refusal or a failure, with what to do.
pub(super) fn problem(base: &str, title: &str, message: &str) -> String {
    let body = format!(
        "<h1>{}</h1><p class=\"notice error\">{}</p><p><a href=\"{base}\">Invocations</a></p>",
        esc(title),
        esc(message)
    );
    page(base, title, Section::None, false, &body)
}

#[cfg(test)]
mod tests {
    use super::actions_for;

    #[test]
    fn one_waiting_for_a_permit_can_be_restarted_as_a_suspended_one() {
        assert_eq!(
            actions_for("Svc", "queued"),
            actions_for("Svc", "suspended")
        );
        assert!(actions_for("Svc", "queued").contains(&"restart"));
        assert!(!actions_for("Svc", "running").contains(&"restart"));
    }
}
