//! Parses the options shared by the service attribute and `#[handler(..)]`.

use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Lit, LitStr, Meta, Token};

use crate::ctxt::Ctxt;
use crate::duration::parse_millis;
use crate::model::{ConcurrencyArgs, CronArgs, DebounceArgs, Options, RateArgs, RetryArgs};

const SUPPORTED: &str = "supported options are: name = \"...\", ingress_private, retention = \"24h\", retry(initial_interval = \"500ms\", factor = 2.0, max_interval = \"60s\", max_attempts = 70, on_max_attempts = \"pause\" | \"kill\"), and on a handler cron = \"0 2 * * *\" with timezone = \"Europe/Paris\", catch_up = \"skip\" | \"one\" | \"all\", overlap = \"skip\" | \"queue\" | \"allow\", rate(limit = 25, per = \"1s\", burst = 1, key = Self::tenant, name = \"...\"), concurrency = 10 or concurrency(limit = 2, key = Self::tenant, name = \"...\"), debounce(period = \"30s\", max_wait = \"5m\", key = Self::invoice)";
const CONCURRENCY_SUPPORTED: &str = "write `concurrency = 10`, or `concurrency(limit = 2, key = Self::key_of_input, name = \"shared\")`";
const DEBOUNCE_SUPPORTED: &str = "supported debounce options are: period = \"30s\" (required), max_wait = \"5m\", key = Self::key_of_input";
const RATE_SUPPORTED: &str = "supported rate options are: limit = 25, per = \"1s\", burst = 5, key = Self::key_of_input, name = \"shared-bucket\"";
const RETRY_SUPPORTED: &str = "supported retry options are: initial_interval, factor, max_interval, max_attempts, on_max_attempts";

/// A comma-separated list of `Meta` items.
pub(crate) struct MetaList(pub Punctuated<Meta, Token![,]>);

impl Parse for MetaList {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        Ok(Self(Punctuated::parse_terminated(input)?))
    }
}

fn lit_str(cx: &mut Ctxt, expr: &Expr, what: &str) -> Option<LitStr> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Some(s.clone()),
        other => {
            cx.error_spanned_by(other, format!("`{what}` takes a string literal"));
            None
        }
    }
}

fn duration(cx: &mut Ctxt, expr: &Expr, what: &str) -> Option<u64> {
    let lit = lit_str(cx, expr, what)?;
    match parse_millis(&lit.value()) {
        Ok(ms) => Some(ms),
        Err(e) => {
            cx.error_spanned_by(
                &lit,
                format!("invalid duration for `{what}`: {e}; write e.g. \"500ms\", \"30s\", \"1 day\" or \"PT10S\""),
            );
            None
        }
    }
}

/// Checks a wire name: non-empty, letters, digits, `_`, `-` and `.` only (it is a URL segment).
pub(crate) fn check_wire_name(cx: &mut Ctxt, lit: &LitStr) -> Option<String> {
    let value = lit.value();
    let valid = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Some(value)
    } else {
        cx.error_spanned_by(
            lit,
            "a name must be non-empty and use only ASCII letters, digits, `_`, `-` and `.`",
        );
        None
    }
}

pub(crate) fn parse_options(cx: &mut Ctxt, metas: &MetaList) -> Options {
    let mut options = Options::default();
    let mut seen: Vec<String> = Vec::new();
    let mut companions: Vec<(&Meta, &'static str, Option<String>)> = Vec::new();
    for meta in &metas.0 {
        let Some(ident) = meta.path().get_ident().map(ToString::to_string) else {
            cx.error_spanned_by(meta.path(), format!("unknown option; {SUPPORTED}"));
            continue;
        };
        if seen.contains(&ident) {
            cx.error_spanned_by(meta.path(), format!("duplicate option `{ident}`"));
            continue;
        }
        seen.push(ident.clone());
        match (ident.as_str(), meta) {
            ("name", Meta::NameValue(nv)) => {
                options.name = lit_str(cx, &nv.value, "name").and_then(|l| check_wire_name(cx, &l));
            }
            ("ingress_private", Meta::Path(_)) => options.ingress_private = true,
            ("retention", Meta::NameValue(nv)) => {
                options.retention_ms = duration(cx, &nv.value, "retention");
            }
            ("concurrency", Meta::NameValue(nv)) => {
                options.concurrency =
                    positive(cx, &nv.value, "concurrency").map(|limit| ConcurrencyArgs {
                        name: None,
                        limit: Some(limit),
                        key: None,
                        attr: meta.clone(),
                    });
            }
            ("concurrency", Meta::List(list)) => match list.parse_args::<MetaList>() {
                Ok(inner) => options.concurrency = parse_concurrency(cx, &inner, meta),
                Err(e) => cx.push(e),
            },
            ("concurrency", other) => {
                cx.error_spanned_by(other, CONCURRENCY_SUPPORTED);
            }
            ("rate", Meta::List(list)) => match list.parse_args::<MetaList>() {
                Ok(inner) => options.rate = parse_rate(cx, &inner, meta),
                Err(e) => cx.push(e),
            },
            ("debounce", Meta::List(list)) => match list.parse_args::<MetaList>() {
                Ok(inner) => options.debounce = parse_debounce(cx, &inner, meta),
                Err(e) => cx.push(e),
            },
            ("retry", Meta::List(list)) => match list.parse_args::<MetaList>() {
                Ok(inner) => options.retry = Some(parse_retry(cx, &inner)),
                Err(e) => cx.push(e),
            },
            ("cron", Meta::NameValue(nv)) => {
                if let Some(lit) = lit_str(cx, &nv.value, "cron") {
                    options.cron = check_cron(cx, lit);
                }
            }
            ("timezone", Meta::NameValue(nv)) => {
                let value = lit_str(cx, &nv.value, "timezone").map(|l| l.value());
                companions.push((meta, "timezone", value));
            }
            ("catch_up", Meta::NameValue(nv)) => {
                let value = policy(cx, &nv.value, "catch_up", &["skip", "one", "all"]);
                companions.push((meta, "catch_up", value));
            }
            ("overlap", Meta::NameValue(nv)) => {
                let value = policy(cx, &nv.value, "overlap", &["skip", "queue", "allow"]);
                companions.push((meta, "overlap", value));
            }
            ("name" | "retention" | "cron" | "timezone" | "catch_up" | "overlap", other) => {
                cx.error_spanned_by(other, format!("write `{ident} = \"...\"`"));
            }
            ("ingress_private", other) => {
                cx.error_spanned_by(
                    other,
                    "`ingress_private` is a flag: write `ingress_private`",
                );
            }
            ("rate", other) => {
                cx.error_spanned_by(other, format!("write `rate(..)`; {RATE_SUPPORTED}"));
            }
            ("retry", other) => {
                cx.error_spanned_by(other, format!("write `retry(..)`; {RETRY_SUPPORTED}"));
            }
            ("debounce", other) => {
                cx.error_spanned_by(other, format!("write `debounce(..)`; {DEBOUNCE_SUPPORTED}"));
            }
            (_, other) => {
                cx.error_spanned_by(
                    other.path(),
                    format!("unknown option `{ident}`; {SUPPORTED}"),
                );
            }
        }
    }
    for (meta, what, value) in companions {
        match &mut options.cron {
            Some(cron) => match what {
                "timezone" => cron.timezone = value,
                "catch_up" => cron.catch_up = value,
                _ => cron.overlap = value,
            },
            None => cx.error_spanned_by(
                meta,
                format!("`{what}` goes with a schedule: add `cron = \"...\"` (e.g. \"0 2 * * *\")"),
            ),
        }
    }
    options
}

/// A cron expression as the runtime reads it: five fields, or six with seconds first, or a
/// nickname such as `@daily`; no year field.
fn check_cron(cx: &mut Ctxt, lit: LitStr) -> Option<CronArgs> {
    match cron_parser().parse(&lit.value()) {
        Ok(cron) if !fires(&cron) => {
            cx.error_spanned_by(
                &lit,
                "this cron expression never fires: it names no date that exists (such as the \
                 30th of February); check the day-of-month and month fields",
            );
            None
        }
        Ok(_) => Some(CronArgs {
            expression: lit,
            timezone: None,
            catch_up: None,
            overlap: None,
        }),
        Err(e) => {
            cx.error_spanned_by(
                &lit,
                format!(
                    "invalid cron expression: {e}; write five fields (minute hour day-of-month \
                     month day-of-week, e.g. \"0 2 * * *\"), optionally with seconds first, or \
                     @hourly, @daily, @weekly, @monthly, @yearly"
                ),
            );
            None
        }
    }
}

/// The parser of the runtime's cron expressions (its `schedules::cron::parser`).
fn cron_parser() -> croner::parser::CronParser {
    use croner::parser::{CronParser, Seconds, Year};
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

/// Whether an expression names a date that exists: one that does has a tick within 28 years
/// of any start (the calendar repeats), so a fixed start decides it for every time zone.
fn fires(cron: &croner::Cron) -> bool {
    let start = jiff::civil::date(2000, 1, 1)
        .at(0, 0, 0, 0)
        .to_zoned(jiff::tz::TimeZone::UTC);
    start.is_ok_and(|start| cron.find_next_occurrence(&start, false).is_ok())
}

/// One of a policy's names.
fn policy(cx: &mut Ctxt, expr: &Expr, what: &str, allowed: &[&str]) -> Option<String> {
    let lit = lit_str(cx, expr, what)?;
    let value = lit.value();
    if allowed.contains(&value.as_str()) {
        Some(value)
    } else {
        let names: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
        cx.error_spanned_by(&lit, format!("`{what}` is one of {}", names.join(", ")));
        None
    }
}

/// The `option = value` items of a list, each once: anything else, or a repeat, is an error
/// that says what `what` takes.
fn name_values<'a>(
    cx: &mut Ctxt,
    metas: &'a MetaList,
    what: &str,
    supported: &str,
) -> Vec<(String, &'a syn::MetaNameValue)> {
    let mut seen: Vec<(String, &syn::MetaNameValue)> = Vec::new();
    for meta in &metas.0 {
        let Meta::NameValue(nv) = meta else {
            cx.error_spanned_by(meta, format!("write `option = value`; {supported}"));
            continue;
        };
        let name = nv
            .path
            .get_ident()
            .map(ToString::to_string)
            .unwrap_or_default();
        if seen.iter().any(|(n, _)| *n == name) {
            cx.error_spanned_by(
                &nv.path,
                format!("duplicate {what} option `{name}`: give each at most once"),
            );
            continue;
        }
        seen.push((name, nv));
    }
    seen
}

/// An integer literal of at least 1.
fn positive(cx: &mut Ctxt, expr: &Expr, what: &str) -> Option<u32> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => match i.base10_parse::<u32>() {
            Ok(v) if v >= 1 => Some(v),
            _ => {
                cx.error_spanned_by(i, format!("`{what}` must be an integer of at least 1"));
                None
            }
        },
        other => {
            cx.error_spanned_by(other, format!("`{what}` takes an integer such as 10"));
            None
        }
    }
}

/// `key = Self::f`: a function of the input that gives the bucket's key.
fn key_path(cx: &mut Ctxt, expr: &Expr) -> Option<syn::ExprPath> {
    match expr {
        Expr::Path(path) => Some(path.clone()),
        other => {
            cx.error_spanned_by(
                other,
                "`key` names a function of the input that gives the bucket's key: \
                 `key = Self::tenant` with `fn tenant(input: &Input) -> String`",
            );
            None
        }
    }
}

fn parse_concurrency(cx: &mut Ctxt, metas: &MetaList, whole: &Meta) -> Option<ConcurrencyArgs> {
    let mut args = ConcurrencyArgs {
        name: None,
        limit: None,
        key: None,
        attr: whole.clone(),
    };
    let errors = cx.len();
    for (name, nv) in name_values(cx, metas, "concurrency", CONCURRENCY_SUPPORTED) {
        match name.as_str() {
            "limit" => args.limit = positive(cx, &nv.value, "limit"),
            "name" => {
                args.name = lit_str(cx, &nv.value, "name").and_then(|l| check_wire_name(cx, &l))
            }
            "key" => args.key = key_path(cx, &nv.value),
            _ => cx.error_spanned_by(
                &nv.path,
                format!("unknown concurrency option; {CONCURRENCY_SUPPORTED}"),
            ),
        }
    }
    if cx.len() > errors {
        return None;
    }
    if args.limit.is_none() && args.name.is_none() {
        cx.error_spanned_by(
            whole,
            format!("give a `limit`, or the `name` of one configured at run time; {CONCURRENCY_SUPPORTED}"),
        );
        return None;
    }
    Some(args)
}

fn parse_rate(cx: &mut Ctxt, metas: &MetaList, whole: &Meta) -> Option<RateArgs> {
    let mut rate = RateArgs {
        name: None,
        limit: None,
        per_ms: None,
        burst: None,
        key: None,
        attr: whole.clone(),
    };
    let errors = cx.len();
    for (name, nv) in name_values(cx, metas, "rate", RATE_SUPPORTED) {
        match name.as_str() {
            "limit" => rate.limit = positive(cx, &nv.value, "limit"),
            "burst" => rate.burst = positive(cx, &nv.value, "burst"),
            "per" => {
                rate.per_ms = duration(cx, &nv.value, "per").filter(|ms| {
                    *ms > 0 || {
                        cx.error_spanned_by(&nv.value, "`per` must be at least 1ms");
                        false
                    }
                })
            }
            "name" => {
                rate.name = lit_str(cx, &nv.value, "name").and_then(|l| check_wire_name(cx, &l))
            }
            "key" => rate.key = key_path(cx, &nv.value),
            _ => cx.error_spanned_by(&nv.path, format!("unknown rate option; {RATE_SUPPORTED}")),
        }
    }
    if cx.len() > errors {
        return None;
    }
    match (rate.limit, rate.per_ms, &rate.name) {
        (Some(_), Some(_), _) | (None, None, Some(_)) => {}
        (Some(_), None, _) | (None, Some(_), _) => {
            cx.error_spanned_by(
                whole,
                "`limit` and `per` go together: `rate(limit = 25, per = \"1s\")`",
            );
            return None;
        }
        (None, None, None) => {
            cx.error_spanned_by(
                whole,
                format!("give a limit (`limit = 25, per = \"1s\"`) or the `name` of one configured at run time; {RATE_SUPPORTED}"),
            );
            return None;
        }
    }
    if rate.burst.is_some() && rate.limit.is_none() {
        cx.error_spanned_by(whole, "`burst` goes with `limit` and `per`");
        return None;
    }
    Some(rate)
}

fn parse_debounce(cx: &mut Ctxt, metas: &MetaList, whole: &Meta) -> Option<DebounceArgs> {
    let (mut period_ms, mut max_wait_ms, mut key) = (None, None, None);
    let errors = cx.len();
    for (name, nv) in name_values(cx, metas, "debounce", DEBOUNCE_SUPPORTED) {
        let at_least_1ms = |cx: &mut Ctxt, what: &str| {
            duration(cx, &nv.value, what).filter(|ms| {
                *ms > 0 || {
                    cx.error_spanned_by(&nv.value, format!("`{what}` must be at least 1ms"));
                    false
                }
            })
        };
        match name.as_str() {
            "period" => period_ms = at_least_1ms(cx, "period"),
            "max_wait" => max_wait_ms = at_least_1ms(cx, "max_wait"),
            "key" => key = key_path(cx, &nv.value),
            _ => cx.error_spanned_by(
                &nv.path,
                format!("unknown debounce option; {DEBOUNCE_SUPPORTED}"),
            ),
        }
    }
    if cx.len() > errors {
        return None;
    }
    let Some(period_ms) = period_ms else {
        cx.error_spanned_by(
            whole,
            "give the quiet `period` that closes a burst: `debounce(period = \"30s\")`",
        );
        return None;
    };
    if max_wait_ms.is_some_and(|max| max < period_ms) {
        cx.error_spanned_by(
            whole,
            "`max_wait` bounds how long a burst stays open, so it is at least the `period`",
        );
        return None;
    }
    Some(DebounceArgs {
        period_ms,
        max_wait_ms,
        key,
        attr: whole.clone(),
    })
}

fn parse_retry(cx: &mut Ctxt, metas: &MetaList) -> RetryArgs {
    let mut retry = RetryArgs::default();
    for (name, nv) in name_values(cx, metas, "retry", RETRY_SUPPORTED) {
        match name.as_str() {
            "initial_interval" => {
                retry.initial_interval_ms = duration(cx, &nv.value, "initial_interval")
            }
            "max_interval" => retry.max_interval_ms = duration(cx, &nv.value, "max_interval"),
            "factor" => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Float(f), ..
                }) => match f.base10_parse::<f64>() {
                    Ok(v) if v >= 1.0 => retry.factor = Some(v),
                    _ => cx.error_spanned_by(f, "`factor` must be a number of at least 1.0"),
                },
                Expr::Lit(ExprLit {
                    lit: Lit::Int(i), ..
                }) => match i.base10_parse::<u32>() {
                    Ok(v) if v >= 1 => retry.factor = Some(f64::from(v)),
                    _ => cx.error_spanned_by(i, "`factor` must be a number of at least 1.0"),
                },
                other => cx.error_spanned_by(other, "`factor` takes a number such as 2.0"),
            },
            "max_attempts" => match &nv.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Int(i), ..
                }) => match i.base10_parse::<u32>() {
                    Ok(v) if v >= 1 => retry.max_attempts = Some(v),
                    _ => cx.error_spanned_by(i, "`max_attempts` must be an integer of at least 1"),
                },
                other => cx.error_spanned_by(other, "`max_attempts` takes an integer such as 70"),
            },
            "on_max_attempts" => {
                if let Some(lit) = lit_str(cx, &nv.value, "on_max_attempts") {
                    match lit.value().as_str() {
                        "pause" => retry.kill_on_max_attempts = Some(false),
                        "kill" => retry.kill_on_max_attempts = Some(true),
                        _ => {
                            cx.error_spanned_by(&lit, "`on_max_attempts` is \"pause\" or \"kill\"")
                        }
                    }
                }
            }
            _ => cx.error_spanned_by(&nv.path, format!("unknown retry option; {RETRY_SUPPORTED}")),
        }
    }
    retry
}

/// Merges handler options over service options (handler values win).
pub(crate) fn merge(service: &Options, handler: &Options) -> Options {
    Options {
        name: handler.name.clone(),
        ingress_private: service.ingress_private || handler.ingress_private,
        retention_ms: handler.retention_ms.or(service.retention_ms),
        // A schedule is one handler's: the service attribute refuses `cron`.
        cron: handler.cron.clone(),
        rate: handler.rate.clone(),
        concurrency: handler.concurrency.clone(),
        debounce: handler.debounce.clone(),
        retry: match (&service.retry, &handler.retry) {
            (Some(s), Some(h)) => Some(RetryArgs {
                initial_interval_ms: h.initial_interval_ms.or(s.initial_interval_ms),
                factor: h.factor.or(s.factor),
                max_interval_ms: h.max_interval_ms.or(s.max_interval_ms),
                max_attempts: h.max_attempts.or(s.max_attempts),
                kill_on_max_attempts: h.kill_on_max_attempts.or(s.kill_on_max_attempts),
            }),
            (s, h) => h.clone().or_else(|| s.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::{cron_parser, fires};

    fn cron(expression: &str) -> croner::Cron {
        cron_parser().parse(expression).unwrap()
    }

    #[test]
    fn an_expression_fires_when_it_names_a_date_that_exists() {
        assert!(fires(&cron("0 2 * * *")));
        assert!(fires(&cron("0 0 29 2 *")), "every leap year");
        assert!(
            fires(&cron("0 0 29 2 MON")),
            "the 29th or any Monday of February"
        );
        assert!(!fires(&cron("0 0 30 2 *")));
        assert!(!fires(&cron("0 0 31 4,6,9,11 *")));
    }
}
