//! The web UI at `/ui` on the admin listener: invocations with the admin API's filters and
//! paging, one invocation's journal as a timeline, an object key's state, the registered
//! services, and the control actions behind a confirmation. Server-rendered HTML with one
//! small inline script for live refresh: nothing to build, nothing fetched from elsewhere.
//!
//! With an admin token, the UI asks for it once and keeps a session cookie derived from it
//! (HttpOnly, SameSite=Strict, path `/ui`); a request that changes anything must come from
//! the UI's own origin (`Origin`), so another site cannot make a signed-in browser act.

mod html;
mod pages;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Form, FromRef, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::Value;

use super::AdminState;
use super::invocations::{self, Action};
use crate::filter::InvocationFilter;
use crate::ingress::parse_invocation_id;
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

/// The UI's routes, guarded by the admin token (or its session cookie) when one is set.
pub(super) fn router(admin: AdminState, token: Option<&str>) -> Router {
    let access = Arc::new(Access {
        token: token.map(crate::bearer::digest),
        session: token.map(session_value),
    });
    Router::new()
        .route("/ui", get(list))
        .route("/ui/", get(|| async { Redirect::to("/ui") }))
        .route("/ui/services", get(services))
        .route("/ui/invocations/{id}", get(invocation))
        .route("/ui/invocations/{id}/{action}", get(confirm).post(act))
        .route("/ui/state/{service}/{key}", get(state_page))
        .route("/ui/login", get(login_form).post(login))
        .with_state(Ui {
            admin,
            access: access.clone(),
        })
        .layer(middleware::from_fn_with_state(access, guard))
}

/// The cookie's value: a MAC of a fixed label under the token, so the cookie does not hold
/// the token itself, and a new token ends every session.
fn session_value(token: &str) -> String {
    hex::encode(crate::mac::hmac_sha256(
        token.as_bytes(),
        &[b"restate admin ui session"],
    ))
}

/// Refuses a cross-origin change, then lets through whoever has the token, its session or
/// (without a token) anyone; others get the sign-in form.
async fn guard(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    if req.method() == Method::POST && !same_origin(req.headers()) {
        return refusal(
            StatusCode::FORBIDDEN,
            "Refused",
            "A change from another origin: the UI acts only on forms of its own pages.",
        );
    }
    let path = req.uri().path();
    if path == "/ui/login" || access.allows(req.headers()) {
        return next.run(req).await;
    }
    let next_page = req
        .uri()
        .path_and_query()
        .map_or("/ui".to_owned(), ToString::to_string);
    (
        StatusCode::UNAUTHORIZED,
        Html(pages::login(&next_page, false)),
    )
        .into_response()
}

impl Access {
    fn allows(&self, headers: &HeaderMap) -> bool {
        let (Some(digest), Some(session)) = (&self.token, &self.session) else {
            return true;
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if bearer.is_some_and(|given| crate::bearer::matches(digest, given)) {
            return true;
        }
        cookie(headers, COOKIE)
            .is_some_and(|given| crate::bearer::matches(&crate::bearer::digest(session), &given))
    }
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Whether a request's `Origin` (sent by browsers with every form POST) is this listener's
/// own, by its `Host`. Tools that send no `Origin` are no browser a page could drive.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (origin.to_str().ok(), host) {
        (Some(origin), Some(host)) => {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                == Some(host)
        }
        _ => false,
    }
}

fn refusal(status: StatusCode, title: &str, message: &str) -> Response {
    (status, Html(pages::problem(title, message))).into_response()
}

#[derive(serde::Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
}

async fn login_form(State(access): State<Arc<Access>>, headers: HeaderMap) -> Response {
    // Nothing to sign in to without a token, or with a valid session already.
    if access.allows(&headers) {
        return Redirect::to("/ui").into_response();
    }
    Html(pages::login("/ui", false)).into_response()
}

async fn login(State(access): State<Arc<Access>>, Form(form): Form<LoginForm>) -> Response {
    let (Some(digest), Some(session)) = (&access.token, &access.session) else {
        return Redirect::to("/ui").into_response();
    };
    // Only back into the UI: never a redirect elsewhere.
    let next = if form.next.starts_with("/ui") && !form.next.starts_with("//") {
        form.next.clone()
    } else {
        "/ui".to_owned()
    };
    if !crate::bearer::matches(digest, &form.token) {
        return (StatusCode::UNAUTHORIZED, Html(pages::login(&next, true))).into_response();
    }
    let cookie = format!("{COOKIE}={session}; Path=/ui; HttpOnly; SameSite=Strict");
    (
        StatusCode::SEE_OTHER,
        [(header::SET_COOKIE, cookie), (header::LOCATION, next)],
    )
        .into_response()
}

/// `GET /ui`: the invocations the filters match, a page at a time.
async fn list(
    State(state): State<AdminState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let given = |name: &str| query.get(name).filter(|v| !v.is_empty()).cloned();
    let mut filter = InvocationFilter::default();
    if let Some(v) = given("service") {
        filter = filter.service(v);
    }
    if let Some(v) = given("handler") {
        filter = filter.handler(v);
    }
    if let Some(v) = given("key") {
        filter = filter.key(v);
    }
    if let Some(v) = given("status") {
        filter = filter.status(v);
    }
    if let Some(v) = given("version") {
        filter = filter.version(v);
    }
    if let Some(v) = given("reason") {
        filter = filter.reason(v);
    }
    let mut services: Vec<&'static str> = state
        .engine
        .registry()
        .definitions()
        .iter()
        .map(|d| d.name)
        .collect();
    services.sort_unstable();
    let mut listing = pages::Listing {
        query: &query,
        services,
        invocations: Vec::new(),
        next: None,
        error: None,
    };
    let after = given("after").map(|a| parse_invocation_id(&a));
    match (filter.check(), after.transpose()) {
        (Err(e), _) => listing.error = Some(e),
        (_, Err(e)) => listing.error = Some(e.message),
        (Ok(()), Ok(after)) => match state.engine.list(|r| filter.matches(r), after, PAGE) {
            Ok((page, next)) => {
                listing.invocations = page
                    .iter()
                    .map(|(id, record)| invocations::summary(*id, record))
                    .collect();
                listing.next = next.map(|id| id.to_string());
            }
            Err(e) => listing.error = Some(e.to_string()),
        },
    }
    let status = if listing.error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    (status, Html(pages::invocations(&listing))).into_response()
}

async fn services(State(state): State<AdminState>) -> Response {
    let services: Vec<Value> = state
        .engine
        .registry()
        .definitions()
        .iter()
        .map(|d| super::services::describe(d, &state))
        .collect();
    Html(pages::services(&services)).into_response()
}

#[derive(serde::Deserialize)]
struct Done {
    done: Option<String>,
}

async fn invocation(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    match invocations::view(&state.engine, &id) {
        Ok(view) => Html(pages::invocation(&view, done.done.as_deref())).into_response(),
        Err((status, message)) => refusal(status, "Invocation", &message),
    }
}

async fn confirm(Path((id, action)): Path<(String, String)>) -> Response {
    if let Err(e) = Action::parse(&action, None) {
        return refusal(StatusCode::NOT_FOUND, "Unknown action", &e.message);
    }
    Html(pages::confirm(&id, &action)).into_response()
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
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<ActForm>,
) -> Response {
    let from = match form.from.trim() {
        "" => None,
        n => match n.parse::<u32>() {
            Ok(n) => Some(n),
            Err(_) => {
                return refusal(
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
        Err(e) => return refusal(StatusCode::BAD_REQUEST, "Refused", &e.message),
    };
    match parsed.1.apply(&state.engine, parsed.0).await {
        Ok(Some(new)) => Redirect::to(&format!(
            "/ui/invocations/{new}?done={}",
            html::url(&format!("Restarted as {new}; {id} was killed."))
        ))
        .into_response(),
        Ok(None) => Redirect::to(&format!(
            "/ui/invocations/{}?done={}",
            html::url(&id),
            html::url(&format!("{action}: done."))
        ))
        .into_response(),
        Err(e) => {
            let (status, message) = invocations::control_failure(e);
            refusal(status, "Not done", &message)
        }
    }
}

async fn state_page(
    State(state): State<AdminState>,
    Path((service, key)): Path<(String, String)>,
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
        Ok(entries) => Html(pages::state(&service, &key, &entries)).into_response(),
        Err(e) => refusal(StatusCode::SERVICE_UNAVAILABLE, "State", &e.to_string()),
    }
}
