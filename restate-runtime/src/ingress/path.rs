//! Parses an ingress path into what it asks for, following Restate's grammar.

use crate::registry::Registry;

/// What an ingress path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Health,
    /// `/{Service}/{handler}[/send]`, `/{Object}/{key}/{handler}[/send]`, `/restate/call|send/…`.
    Invoke {
        service: String,
        key: Option<String>,
        handler: String,
        send: bool,
    },
    /// `/restate/invocation/…`, `/restate/workflow/…`, `/restate/attach|output/{id}`.
    Lookup {
        target: LookupTarget,
        verb: Verb,
    },
    /// `POST /restate/attach|output|lookup` with a JSON body naming the target.
    LookupByBody(Verb),
    /// `/restate/a/{id}/resolve|reject`.
    Awakeable {
        id: String,
        resolve: bool,
    },
    /// `POST /restate/relay`: a call another process of a shared store relays to this one.
    Relay,
}

impl Route {
    /// The methods it is answered for (a 405 names them in `Allow`).
    pub(crate) fn methods(&self) -> &'static [http::Method] {
        use http::Method;
        match self {
            // HEAD too: load balancers probe with it (hyper sends no body).
            Self::Health => &[Method::GET, Method::HEAD],
            Self::Invoke { .. } => &[Method::GET, Method::POST],
            Self::Lookup { .. } => &[Method::GET],
            Self::LookupByBody(_) | Self::Awakeable { .. } | Self::Relay => &[Method::POST],
        }
    }
}

/// The refusal of a scoped invocation or lookup: Restate's own answer without its
/// experimental queues, as this runtime has no scopes.
pub(crate) const NO_SCOPES: &str = "scoped invocations require vqueues to be enabled: this \
     runtime has no scopes, leave the scope out";

/// How attach and output name an invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LookupTarget {
    Id(String),
    Idempotent {
        service: String,
        key: Option<String>,
        handler: String,
        idempotency_key: String,
    },
    Workflow {
        name: String,
        key: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Attach,
    Output,
    Lookup,
}

/// A path that is not valid: status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathError {
    pub status: u16,
    pub message: String,
}

fn bad(message: impl Into<String>) -> PathError {
    PathError {
        status: 400,
        message: message.into(),
    }
}

fn not_found(message: impl Into<String>) -> PathError {
    PathError {
        status: 404,
        message: message.into(),
    }
}

const BAD_INVOKE: &str =
    "bad path, expected either /:service-name/:handler or /:object-name/:object-key/:handler";

/// Percent-decodes an object or workflow key; `+` stays `+`.
fn decode_key(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = crate::percent::escaped_byte(raw, i).ok_or_else(|| {
                bad(format!(
                    "bad path, cannot decode key: invalid escape in '{raw}'"
                ))
            })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|e| bad(format!("bad path, cannot decode key: {e}")))
}

/// A request's path as the routes read it: a doubled leading slash (a client's base URL ending
/// in `/`) collapses, as Restate's does, and a trailing one is dropped; inner empty segments
/// stay (`/Counter//key` is the empty key). The token check and the listener's exemptions read
/// paths the same way, so a route is exempt under every spelling that reaches it.
pub(crate) fn route_path(path: &str) -> &str {
    path.trim_end_matches('/').trim_start_matches('/')
}

pub(crate) fn parse(path: &str, registry: &Registry) -> Result<Route, PathError> {
    let trimmed = route_path(path);
    let segments: Vec<&str> = trimmed.split('/').collect();
    if trimmed.is_empty() || !(2..=7).contains(&segments.len()) {
        return Err(bad(format!("bad path: {path}")));
    }
    if segments[0] == "restate" {
        return parse_restate(&segments[1..], registry);
    }
    parse_invoke(&segments, registry, None)
}

fn parse_invoke(
    segments: &[&str],
    registry: &Registry,
    verb_send: Option<bool>,
) -> Result<Route, PathError> {
    let service = segments[0];
    let definition = registry.get(service).ok_or_else(|| {
        not_found(format!(
            "service '{service}' not found, make sure to register the service before calling it."
        ))
    })?;
    let keyed = definition.definition.kind.is_keyed();
    let rest = &segments[1..];
    let (key, rest) = if keyed {
        match rest.split_first() {
            Some((key, rest)) => (Some(decode_key(key)?), rest),
            None => return Err(bad(BAD_INVOKE)),
        }
    } else {
        (None, rest)
    };
    let (handler, send) = match (rest, verb_send) {
        ([handler], Some(send)) => (*handler, send),
        ([handler], None) => (*handler, false),
        ([handler, "send"], None) => (*handler, true),
        _ => return Err(bad(BAD_INVOKE)),
    };
    if definition.definition.handler(handler).is_none() {
        return Err(not_found(format!(
            "the service '{service}' exists, but the handler '{handler}' was not found, check that the handler exists in the latest registered service version."
        )));
    }
    Ok(Route::Invoke {
        service: service.to_owned(),
        key,
        handler: handler.to_owned(),
        send,
    })
}

fn verb(s: &str) -> Option<Verb> {
    match s {
        "attach" => Some(Verb::Attach),
        "output" => Some(Verb::Output),
        _ => None,
    }
}

fn parse_restate(segments: &[&str], registry: &Registry) -> Result<Route, PathError> {
    let lookup = |target, v: &str| {
        verb(v)
            .map(|verb| Route::Lookup { target, verb })
            .ok_or_else(|| not_found("not found"))
    };
    match segments {
        ["health"] => Ok(Route::Health),
        ["relay"] => Ok(Route::Relay),
        ["call" | "send", rest @ ..] if !rest.is_empty() => {
            parse_invoke(rest, registry, Some(segments[0] == "send"))
        }
        ["scope", _, "call" | "send", rest @ ..] if !rest.is_empty() => Err(bad(NO_SCOPES)),
        ["invocation", id, v] => lookup(LookupTarget::Id((*id).to_owned()), v),
        ["invocation", service, rest @ .., v] if rest.len() == 2 || rest.len() == 3 => {
            let def = registry.get(service).ok_or_else(|| {
                not_found(format!("service '{service}' not found, make sure to register the service before calling it."))
            })?;
            let (key, handler, ik) = match (def.definition.kind.is_keyed(), rest) {
                (false, [handler, ik]) => (None, *handler, *ik),
                (true, [key, handler, ik]) => (Some(decode_key(key)?), *handler, *ik),
                _ => return Err(bad(format!("bad path: /restate/invocation/{service}/…"))),
            };
            lookup(
                LookupTarget::Idempotent {
                    service: (*service).to_owned(),
                    key,
                    handler: handler.to_owned(),
                    idempotency_key: ik.to_owned(),
                },
                v,
            )
        }
        ["workflow", name, key, v] => lookup(
            LookupTarget::Workflow {
                name: (*name).to_owned(),
                key: decode_key(key)?,
            },
            v,
        ),
        ["attach" | "output", id] => lookup(LookupTarget::Id((*id).to_owned()), segments[0]),
        ["attach"] => Ok(Route::LookupByBody(Verb::Attach)),
        ["output"] => Ok(Route::LookupByBody(Verb::Output)),
        ["lookup"] => Ok(Route::LookupByBody(Verb::Lookup)),
        ["a" | "awakeables", id, action @ ("resolve" | "reject")] => Ok(Route::Awakeable {
            id: (*id).to_owned(),
            resolve: *action == "resolve",
        }),
        _ => Err(not_found("not found")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_keys_like_restate() {
        assert_eq!(decode_key("a%2Fb%20c").unwrap(), "a/b c");
        assert_eq!(decode_key("a+b").unwrap(), "a+b");
        assert_eq!(decode_key("%E2%9C%93").unwrap(), "✓");
        assert_eq!(decode_key("%FF").unwrap_err().status, 400);
        assert_eq!(decode_key("%G1").unwrap_err().status, 400);
        // A sign is not a hex digit: `%+A` used to decode to a newline.
        assert_eq!(decode_key("%+A").unwrap_err().status, 400);
    }

    #[test]
    fn restate_paths() {
        let r = Registry::default();
        assert_eq!(parse("/restate/health", &r).unwrap(), Route::Health);
        // A leading `//` collapses, a trailing slash is trimmed.
        assert_eq!(parse("//restate/health/", &r).unwrap(), Route::Health);
        let unknown = parse("//Nope/x", &r).unwrap_err();
        assert_eq!(unknown.status, 404);
        assert!(unknown.message.contains("'Nope'"), "{}", unknown.message);
        assert_eq!(parse("/Greeter", &r).unwrap_err().status, 400);
        assert_eq!(parse("/Nope/x", &r).unwrap_err().status, 404);
        assert_eq!(parse("/restate/unknown", &r).unwrap_err().status, 404);
        // Scoped calls and sends: refused as Restate refuses them without its vqueues.
        for scoped in [
            "/restate/scope/s1/call/Greeter/greet",
            "/restate/scope/s1/send/Greeter/greet",
        ] {
            let refused = parse(scoped, &r).unwrap_err();
            assert_eq!(refused.status, 400, "{scoped}");
            assert!(
                refused
                    .message
                    .contains("scoped invocations require vqueues"),
                "{scoped}"
            );
        }
        assert!(matches!(
            parse("/restate/invocation/inv_1x/output", &r).unwrap(),
            Route::Lookup {
                verb: Verb::Output,
                ..
            }
        ));
        assert_eq!(
            parse("/restate/workflow/W/a%20b/attach", &r).unwrap(),
            Route::Lookup {
                target: LookupTarget::Workflow {
                    name: "W".into(),
                    key: "a b".into()
                },
                verb: Verb::Attach
            }
        );
        assert!(matches!(
            parse("/restate/a/sign_1abc/resolve", &r).unwrap(),
            Route::Awakeable { resolve: true, .. }
        ));
    }
}
