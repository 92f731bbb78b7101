//! The admin API (default 127.0.0.1:9070): health, registered services, invocations with their
//! journals and their control, schedules, concurrency limits, drain, backup, metrics, and the
//! web UI at `/ui`. With a token configured, every route but `/health` requires
//! `Authorization: Bearer <token>` (the UI also takes its session cookie).

mod backup;
mod debouncers;
mod drain;
mod invocations;
mod limiters;
mod params;
mod rate_limits;
mod schedules;
mod services;
mod ui;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde_json::json;

use crate::engine::Engine;
use crate::ingress::ApiError;

/// What the admin handlers read: the engine, and the webhook scheme of each webhook handler
/// by (service, handler).
#[derive(Clone)]
pub(crate) struct AdminState {
    engine: Engine,
    webhooks: Arc<HashMap<(String, String), &'static str>>,
}

impl FromRef<AdminState> for Engine {
    fn from_ref(state: &AdminState) -> Engine {
        state.engine.clone()
    }
}

pub(crate) fn router(
    engine: Engine,
    token: Option<String>,
    webhooks: HashMap<(String, String), &'static str>,
) -> Router {
    let state = AdminState {
        engine,
        webhooks: Arc::new(webhooks),
    };
    let routes = Router::new()
        .route(
            "/health",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/services", get(services::services))
        .route("/services/{name}", get(services::service))
        .route(
            "/invocations",
            get(invocations::list).patch(invocations::bulk),
        )
        .route("/invocations/{id}", get(invocations::invocation))
        .route("/invocations/{id}/{action}", patch(invocations::control))
        .route("/metrics", get(metrics))
        .route("/drain", get(drain::status).patch(drain::start))
        .route("/undrain", patch(drain::stop))
        .route("/backup", post(backup::backup))
        .route("/schedules", get(schedules::list).post(schedules::create))
        .route(
            "/schedules/{id}",
            get(schedules::get).delete(schedules::delete),
        )
        .route("/schedules/{id}/{action}", patch(schedules::control))
        .route("/limiters", get(limiters::list))
        .route("/limiters/{name}", get(limiters::get).put(limiters::set))
        .route("/debouncers/{name}", get(debouncers::get))
        .route("/rate-limits", get(rate_limits::list))
        .route("/rate-limits/{name}", get(rate_limits::get))
        .fallback(|uri: axum::http::Uri| async move {
            ApiError::ingress(404, format!("no admin route {}", uri.path())).into_response()
        })
        // axum adds the `Allow` header to this answer.
        .method_not_allowed_fallback(
            |method: axum::http::Method, uri: axum::http::Uri| async move {
                ApiError::ingress(
                    405,
                    format!(
                        "{method} is not allowed on {}: see the Allow header",
                        uri.path()
                    ),
                )
                .into_response()
            },
        )
        .with_state(state.clone());
    let ui = ui::router(state, token.as_deref());
    crate::bearer::require(routes, token, "admin", "/health")
        .nest("/ui", ui)
        // Typed with a slash: relative, so that it also holds under a nesting prefix.
        .route(
            "/ui/",
            get(|| async { axum::response::Redirect::to("../ui") }),
        )
}

/// Routes (as `route_path` gives them) that read a body from a client without the admin
/// token: the UI's sign-in form. The listener reads their bodies ahead as it does those of
/// requests with the token.
pub(crate) const OPEN_ROUTES: &[&str] = &["ui/login"];

/// For an admin listener on loopback: refuses requests whose `Host` is not a loopback name
/// (`localhost`, `127.0.0.1`, `[::1]`, any port), so a web page whose domain was rebound to
/// 127.0.0.1 cannot drive the admin API from a browser on this machine.
pub(crate) fn loopback_host_only(router: Router) -> Router {
    router.layer(middleware::from_fn(check_loopback_host))
}

async fn check_loopback_host(req: Request, next: Next) -> Response {
    // HTTP/2 carries the host as the `:authority` of the URI, not as a header.
    let host = req
        .headers()
        .get(axum::http::header::HOST)
        .map(|v| v.to_str().unwrap_or("?").to_owned())
        .or_else(|| req.uri().authority().map(ToString::to_string));
    match host {
        Some(host) if !is_loopback_name(&host) => ApiError::ingress(
            403,
            format!(
                "Host '{host}' is not a loopback name: the admin API on loopback answers only \
                 localhost, 127.0.0.1 and [::1] (DNS rebinding protection)"
            ),
        )
        .into_response(),
        _ => next.run(req).await,
    }
}

/// `localhost`, `127.0.0.1` or `[::1]`, with or without a port.
fn is_loopback_name(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    ["localhost", "127.0.0.1", "[::1]"]
        .iter()
        .any(|allowed| name.eq_ignore_ascii_case(allowed))
}

async fn metrics(State(engine): State<Engine>, headers: axum::http::HeaderMap) -> Response {
    let mut snapshot = engine.metrics_snapshot();
    (snapshot.unfinished_stored, snapshot.limiters) = engine.stored_counts().await;
    let body = engine.metrics().render(&snapshot);
    // The body is OpenMetrics (`encode` writes it): named so to a scraper that asks for it
    // (Prometheus does), whose classic parser would otherwise take the counters' `_total`
    // samples for untyped ones; plain text to everyone else.
    let openmetrics = (headers.get_all(axum::http::header::ACCEPT).iter())
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let kind = match openmetrics {
        true => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        false => "text/plain; version=0.0.4; charset=utf-8",
    };
    ([(axum::http::header::CONTENT_TYPE, kind)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::is_loopback_name;

    #[test]
    fn loopback_names() {
        for ok in [
            "localhost",
            "LOCALHOST:9070",
            "127.0.0.1",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:9070",
        ] {
            assert!(is_loopback_name(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9070",
            "127.0.0.1.evil.example",
            "localhost.evil",
            "[::2]:1",
            "",
        ] {
            assert!(!is_loopback_name(bad), "{bad}");
        }
    }

    /// The status a router behind the Host check gives a request for `uri` with `host`.
    async fn status(uri: &str, host: Option<&str>) -> u16 {
        use tower_service::Service as _;
        let ok = axum::routing::get(|| async { "ok" });
        let mut router = super::loopback_host_only(axum::Router::new().route("/x", ok));
        let mut req = axum::extract::Request::builder().uri(uri);
        if let Some(host) = host {
            req = req.header("host", host);
        }
        let req = req.body(axum::body::Body::empty()).unwrap();
        router.call(req).await.unwrap().status().as_u16()
    }

    #[tokio::test]
    async fn the_host_check_reads_the_http2_authority_too() {
        assert_eq!(status("/x", Some("127.0.0.1:9070")).await, 200);
        assert_eq!(status("/x", Some("evil.example")).await, 403);
        // HTTP/2: no Host header, the name is the URI's authority.
        assert_eq!(status("http://localhost:9070/x", None).await, 200);
        assert_eq!(status("http://evil.example:9070/x", None).await, 403);
    }
}
