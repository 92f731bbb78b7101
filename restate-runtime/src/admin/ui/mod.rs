//! The web UI at `/ui` on the admin listener: invocations with the admin API's filters and
//! paging, one invocation's journal as a timeline, an object key's state, the registered
//! services, and the control actions behind a confirmation. Server-rendered HTML with one
//! small inline script for live refresh: nothing to build, nothing fetched from elsewhere.
//! Links follow wherever the admin router is nested (`/admin/ui` under `.nest("/admin", ..)`).
//!
//! With an admin token, the UI asks for it once and keeps a session cookie derived from it
//! (HttpOnly, SameSite=Strict, the UI's path); a request that changes anything must come from
//! the UI's own origin (`Origin`, or `Sec-Fetch-Site: same-origin`) or carry the bearer
//! token, so another site cannot make a browser act.

mod html;
mod pages;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Extension, Form, FromRef, OriginalUri, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::Value;

use super::AdminState;
use super::invocations::{self, Action};
use crate::filter::InvocationFilter;
use crate::ingress::parse_invocation_id;
use crate::percent::component;
use crate::storage::StateScope;

/// The session cookie's name.
const COOKIE: &str = "restate_ui";
/// Invocations per page of the list.
const PAGE: usize = 50;

/// Who may use the UI.
struct Access {
    /// The admin token's digest, when one is configured.
    token: Option<[u8; 32]>,
    /// The session cookie's value for that token.
    session: Option<String>,
}

/// What the UI's handlers read.
#[derive(Clone)]
struct Ui {
    admin: AdminState,
    access: Arc<Access>,
}

impl FromRef<Ui> for AdminState {
    fn from_ref(ui: &Ui) -> AdminState {
        ui.admin.clone()
    }
}

impl FromRef<Ui> for Arc<Access> {
    fn from_ref(ui: &Ui) -> Arc<Access> {
        ui.access.clone()
    }
}

/// Where the UI is, as the browser sees it: `/ui`, or `/admin/ui` when the admin router is
/// nested at `/admin`. Every link, form and cookie path starts with it.
#[derive(Clone)]
struct Base(String);

/// The UI's routes, to be nested at `/ui`, guarded by the admin token (or its session
/// cookie) when one is set.
pub(super) fn router(admin: AdminState, token: Option<&str>) -> Router {
    let access = Arc::new(Access {
        token: token.map(crate::bearer::digest),
        session: token.map(session_value),
    });
    Router::new()
        .route("/", get(list))
        .route("/services", get(services))
        .route("/invocations/{id}", get(invocation))
        .route("/invocations/{id}/{action}", get(confirm).post(act))
        .route("/state", get(state_page))
        .route("/login", get(login_form).post(login))
        .with_state(Ui {
            admin,
            access: access.clone(),
        })
        .layer(middleware::from_fn_with_state(access, guard))
        .layer(middleware::map_response(unframed))
}

/// No page of the UI shows inside another site's frame: a framed form posts with the UI's
/// own origin, so a page elsewhere could make a visitor click "kill" (clickjacking). Nor
/// does a page run, load or send anything but its own script and style (named by their
/// hashes), its own fetches and its own forms: markup that got past the escaping of stored
/// data could do nothing. Nothing is sniffed as another type than it is served as.
async fn unframed(mut response: Response) -> Response {
    static POLICY: std::sync::LazyLock<HeaderValue> = std::sync::LazyLock::new(|| {
        use base64::Engine as _;
        use sha2::Digest as _;
        let hash = |text: &str| {
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(text))
        };
        let policy = format!(
            "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; \
             img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; \
             frame-ancestors 'none'",
            hash(html::LIVE),
            hash(html::STYLE)
        );
        HeaderValue::from_str(&policy).expect("a policy of ASCII")
    });
    let headers = response.headers_mut();
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CONTENT_SECURITY_POLICY, POLICY.clone());
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The cookie's value: a MAC of a fixed label under the token, so the cookie does not hold
/// the token itself, and a new token ends every session.
fn session_value(token: &str) -> String {
    hex::encode(crate::mac::hmac_sha256(
        token.as_bytes(),
        &[b"restate admin ui session"],
    ))
}

/// Finds the UI's base, refuses a change from elsewhere, then lets through whoever has the
/// token, its session or (without a token) anyone; others get the sign-in form.
async fn guard(State(access): State<Arc<Access>>, mut req: Request, next: Next) -> Response {
    let inner = req.uri().path().to_owned();
    let original = req
        .extensions()
        .get::<OriginalUri>()
        .map(|uri| uri.0.clone());
    let original_path = original
        .as_ref()
        .map_or_else(|| format!("/ui{inner}"), |uri| uri.path().to_owned());
    let base = original_path
        .strip_suffix(inner.as_str())
        .filter(|_| inner != "/")
        .unwrap_or(original_path.trim_end_matches('/'))
        .to_owned();
    let bearer = access.bearer(req.headers());
    if req.method() == Method::POST && !bearer && !same_origin(&req) {
        return refusal(
            &base,
            StatusCode::FORBIDDEN,
            "Refused",
            "A change from another origin: the UI acts only on forms of its own pages.",
        );
    }
    let allowed = access.token.is_none() || bearer || access.session(req.headers());
    req.extensions_mut().insert(Base(base.clone()));
    if inner == "/login" || allowed {
        return next.run(req).await;
    }
    // Back to the page asked for, once signed in.
    let asked = original
        .as_ref()
        .and_then(|uri| uri.path_and_query())
        .map_or_else(|| base.clone(), ToString::to_string);
    (
        StatusCode::UNAUTHORIZED,
        Html(pages::login(&base, &asked, false)),
    )
        .into_response()
}

impl Access {
    /// Whether the request carries the bearer token (never, without a token configured).
    fn bearer(&self, headers: &HeaderMap) -> bool {
        let Some(digest) = &self.token else {
            return false;
        };
        crate::bearer::carries(headers, digest)
    }

    /// The session cookie (any of the request's cookies of that name).
    fn session(&self, headers: &HeaderMap) -> bool {
        let Some(session) = &self.session else {
            return false;
        };
        let expected = crate::bearer::digest(session);
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .any(|(name, value)| name == COOKIE && crate::bearer::matches(&expected, value))
    }
}

/// Whether a browser sent the request from one of the UI's own pages: its `Origin` is this
/// listener's (by `Host`, or HTTP/2's authority), or it says `Sec-Fetch-Site: same-origin`.
fn same_origin(req: &Request) -> bool {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(ToString::to_string));
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    match (origin, host) {
        (Some(origin), Some(host)) => {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                == Some(host.as_str())
        }
        (Some(_), None) => false,
        (None, _) => headers
            .get("sec-fetch-site")
            .is_some_and(|site| site == "same-origin"),
    }
}

fn refusal(base: &str, status: StatusCode, title: &str, message: &str) -> Response {
    (status, Html(pages::problem(base, title, message))).into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
}

async fn login_form(
    State(access): State<Arc<Access>>,
    Extension(Base(base)): Extension<Base>,
    headers: HeaderMap,
) -> Response {
    // Nothing to sign in to without a token, or with a valid session already.
    if access.token.is_none() || access.bearer(&headers) || access.session(&headers) {
        return Redirect::to(&base).into_response();
    }
    Html(pages::login(&base, &base, false)).into_response()
}

async fn login(
    State(access): State<Arc<Access>>,
    Extension(Base(base)): Extension<Base>,
    Form(form): Form<LoginForm>,
) -> Response {
    let (Some(digest), Some(session)) = (&access.token, &access.session) else {
        return Redirect::to(&base).into_response();
    };
    // Only back into the UI: never a redirect elsewhere.
    let inside = form.next == base
        || form.next.starts_with(&format!("{base}/"))
        || form.next.starts_with(&format!("{base}?"));
    let next = match inside && !form.next.starts_with("//") {
        true => form.next.clone(),
        false => base.clone(),
    };
    if !crate::bearer::matches(digest, &form.token) {
        return (
            StatusCode::UNAUTHORIZED,
            Html(pages::login(&base, &next, true)),
        )
            .into_response();
    }
    let cookie = format!("{COOKIE}={session}; Path={base}; HttpOnly; SameSite=Strict");
    (
        StatusCode::SEE_OTHER,
        [(header::SET_COOKIE, cookie), (header::LOCATION, next)],
    )
        .into_response()
}

/// `GET /ui`: the invocations the filters match, a page at a time.
async fn list(
    State(state): State<AdminState>,
    Extension(Base(base)): Extension<Base>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let given = |name: &str| query.get(name).filter(|v| !v.is_empty()).cloned();
    // The API's filters, read as `GET /invocations` reads them; a field left empty in the
    // form is no filter.
    let given_fields: serde_json::Map<String, Value> = query
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    // A name the API does not take (`?stauts=`, a hand-edited link) is refused as the API
    // refuses it, not read as no filter, which would list everything.
    let unknown = query
        .keys()
        .find(|name| !InvocationFilter::PARAMS.contains(&name.as_str()) && *name != "after");
    let filter = match unknown {
        Some(name) => Err(format!(
            "unknown filter `{name}`: this page takes {} and after",
            InvocationFilter::PARAMS.join(", ")
        )),
        None => serde_json::from_value::<InvocationFilter>(Value::Object(
            given_fields
                .into_iter()
                .filter(|(k, _)| k != "after")
                .collect(),
        ))
        .map_err(|e| e.to_string()),
    };
    let mut services: Vec<String> = state
        .engine
        .registry()
        .definitions()
        .iter()
        .map(|d| d.name.to_owned())
        .collect();
    // A service asked for by name (the runtime's own, say) stays selectable.
    if let Some(asked) = given("service").filter(|s| !services.contains(s)) {
        services.push(asked);
    }
    services.sort_unstable();
    let mut listing = pages::Listing {
        base: &base,
        query: &query,
        services,
        invocations: Vec::new(),
        next: None,
        error: None,
    };
    let after = given("after").map(|a| parse_invocation_id(&a));
    match (
        filter.and_then(|f| f.check().map(|()| f)),
        after.transpose(),
    ) {
        (Err(e), _) => listing.error = Some(e),
        (_, Err(e)) => listing.error = Some(e.message),
        (Ok(filter), Ok(after)) => match state.engine.list(
            |id, r| filter.matches(r, || state.engine.shown_status(id, r)),
            after,
            PAGE,
        ) {
            Ok((page, next)) => {
                listing.invocations = page
                    .iter()
                    .map(|(id, r)| {
                        let status = state.engine.shown_status(id, r);
                        invocations::summary(*id, r, status, state.engine.next_retry_at_ms(id, r))
                    })
                    .collect();
                listing.next = next.map(|id| id.to_string());
            }
            Err(e) => listing.error = Some(e.to_string()),
        },
    }
    let status = match listing.error {
        Some(_) => StatusCode::BAD_REQUEST,
        None => StatusCode::OK,
    };
    (status, Html(pages::invocations(&listing))).into_response()
}

async fn services(
    State(state): State<AdminState>,
    Extension(Base(base)): Extension<Base>,
) -> Response {
    let services: Vec<Value> = state
        .engine
        .registry()
        .definitions()
        .iter()
        .map(|d| super::services::describe(d, &state))
        .collect();
    Html(pages::services(&base, &services)).into_response()
}

#[derive(serde::Deserialize)]
struct Done {
    done: Option<String>,
}

async fn invocation(
    State(state): State<AdminState>,
    Extension(Base(base)): Extension<Base>,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    match invocations::view(&state.engine, &id) {
        Ok(view) => Html(pages::invocation(&base, &view, done.done.as_deref())).into_response(),
        Err((status, message)) => refusal(&base, status, "Invocation", &message),
    }
}

async fn confirm(
    Extension(Base(base)): Extension<Base>,
    Path((id, action)): Path<(String, String)>,
) -> Response {
    if let Err(e) = Action::parse(&action, None) {
        return refusal(&base, StatusCode::NOT_FOUND, "Unknown action", &e.message);
    }
    Html(pages::confirm(&base, &id, &action)).into_response()
}

#[derive(serde::Deserialize)]
struct ActForm {
    #[serde(default)]
    from: String,
}

/// `POST /ui/invocations/{id}/{action}`: the confirmed action, then back to the invocation
/// (for a restart, to the new one).
async fn act(
    State(state): State<AdminState>,
    Extension(Base(base)): Extension<Base>,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<ActForm>,
) -> Response {
    let from = match form.from.trim() {
        "" => None,
        n => match n.parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                return refusal(
                    &base,
                    StatusCode::BAD_REQUEST,
                    "Restart",
                    "Keep a whole number of journal entries, or leave it empty.",
                );
            }
        },
    };
    let parsed = match parse_invocation_id(&id)
        .and_then(|parsed| Ok((parsed, Action::parse(&action, from)?)))
    {
        Ok(parsed) => parsed,
        Err(e) => return refusal(&base, StatusCode::BAD_REQUEST, "Refused", &e.message),
    };
    match parsed.1.apply(&state.engine, parsed.0).await {
        Ok(invocations::Applied::Restarted(new)) => Redirect::to(&format!(
            "{base}/invocations/{new}?done={}",
            component(&format!(
                "Restarted as {new}; {id} keeps its result if it had finished, else it was killed."
            ))
        ))
        .into_response(),
        Ok(applied) => {
            let said = match applied {
                invocations::Applied::HandedOver => {
                    "handed to the process that runs it, which carries it out"
                }
                _ => "done",
            };
            Redirect::to(&format!(
                "{base}/invocations/{}?done={}",
                component(&id),
                component(&format!("{action}: {said}."))
            ))
            .into_response()
        }
        Err(e) => {
            let (status, message) = invocations::control_failure(e);
            refusal(&base, status, "Not done", &message)
        }
    }
}

#[derive(serde::Deserialize)]
struct StateQuery {
    service: String,
    key: String,
}

/// `GET /ui/state?service=&key=`: an object's or workflow's state under one key (a query,
/// not a path: keys such as `..` or with slashes stay as they are).
async fn state_page(
    State(state): State<AdminState>,
    Extension(Base(base)): Extension<Base>,
    Query(StateQuery { service, key }): Query<StateQuery>,
) -> Response {
    let scope = StateScope {
        service: service.clone(),
        key: key.clone(),
    };
    let storage = state.engine.storage();
    let read = storage.state_keys(&scope).and_then(|names| {
        names
            .into_iter()
            .map(|name| {
                let value = storage.state(&scope, &name)?.unwrap_or_default();
                Ok((name, invocations::payload_json(&value)))
            })
            .collect::<Result<Vec<_>, _>>()
    });
    match read {
        Ok(entries) => Html(pages::state(&base, &service, &key, &entries)).into_response(),
        Err(e) => refusal(
            &base,
            StatusCode::SERVICE_UNAVAILABLE,
            "State",
            &e.to_string(),
        ),
    }
}
