//! The web UI at `/ui` on the admin listener: the pages carry what the admin API has (list with
//! filters and paging, an invocation's journal, an object's state, services), text is escaped,
//! actions need a confirmed POST from the UI's own origin, and with a token the UI asks for it
//! once and keeps a session cookie.

mod common;

use std::time::Duration;

use common::{TestServer, accepted_id};
use restate_runtime::prelude::*;
use serde_json::json;

#[derive(Default)]
pub struct Shop;

#[service]
impl Shop {
    /// Two steps, then a long nap: a journal to look at while it runs.
    #[handler(retention = "1h")]
    async fn order(&self, ctx: Context<'_>, item: String) -> HandlerResult<String> {
        let price = ctx.run(|| async { Ok(42u32) }).name("price").await?;
        ctx.run(|| async { Ok(()) }).name("reserve").await?;
        ctx.sleep(Duration::from_secs(3600)).await?;
        Ok(format!("{item} for {price}"))
    }

    #[handler]
    async fn quick(&self, _ctx: Context<'_>, n: u32) -> HandlerResult<u32> {
        Ok(n)
    }
}

#[derive(Default)]
pub struct Cart;

#[object]
impl Cart {
    #[handler]
    async fn add(&self, ctx: ObjectContext<'_>, item: String) -> HandlerResult<u32> {
        let mut items = ctx.get::<Vec<String>>("items").await?.unwrap_or_default();
        items.push(item);
        let count = items.len() as u32;
        ctx.set("items", items);
        Ok(count)
    }
}

async fn server(token: Option<&'static str>) -> TestServer {
    TestServer::start_with(tempfile::tempdir().unwrap(), move |b| {
        let b = b
            .bind(Shop)
            .bind(Cart)
            .suspend_after(Duration::from_millis(100));
        match token {
            Some(token) => b.admin_token(token),
            None => b,
        }
    })
    .await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn page(s: &TestServer, path: &str) -> (u16, String) {
    let r = client()
        .get(format!("{}{path}", s.admin))
        .send()
        .await
        .unwrap();
    // Never inside another site's frame (clickjacking), whatever the page; nothing runs,
    // loads or is styled but the page's own script and style sheet, named by their hashes.
    assert_eq!(r.headers()["x-frame-options"], "DENY", "{path}");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{path}");
    let policy = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let (status, body) = (r.status().as_u16(), r.text().await.unwrap());
    for directive in [
        "frame-ancestors 'none'",
        "default-src 'none'",
        "base-uri 'none'",
    ] {
        assert!(policy.contains(directive), "{path}: {policy}");
    }
    let inline = |open: &str, close: &str| {
        let start = body.find(open).map(|at| at + open.len());
        let text = start.and_then(|at| body[at..].find(close).map(|end| &body[at..at + end]));
        text.unwrap_or_else(|| panic!("{path}: no {open} in the page"))
            .to_owned()
    };
    for (directive, text) in [
        ("script-src", inline("<script>", "</script>")),
        ("style-src", inline("<style>", "</style>")),
    ] {
        use base64::Engine as _;
        use sha2::Digest as _;
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&text));
        assert!(
            policy.contains(&format!("{directive} 'sha256-{hash}'")),
            "{path}: {policy}"
        );
    }
    (status, body)
}

#[tokio::test]
async fn the_pages_show_invocations_their_journal_state_and_services() {
    let s = server(None).await;
    let order = accepted_id(s.post("/Shop/order/send", json!("<b>lamp</b>")).await).await;
    let quick: Vec<String> = {
        let mut ids = Vec::new();
        for n in 0..3 {
            ids.push(accepted_id(s.post("/Shop/quick/send", json!(n)).await).await);
        }
        ids
    };
    let added = s.post("/Cart/<k&1>/add", json!("pen")).await;
    assert_eq!(added.status(), 200);
    s.wait_status(&order, "suspended").await;

    let (status, list) = page(&s, "/ui").await;
    assert_eq!(status, 200);
    for id in quick.iter().chain([&order]) {
        assert!(
            list.contains(&format!("data-invocation=\"{id}\"")),
            "{id} listed"
        );
    }
    assert!(list.contains("data-live"), "the list refreshes itself");

    // Filters as the admin API has them, and paging.
    let (_, suspended) = page(&s, "/ui?service=Shop&status=suspended&handler=&key=").await;
    assert!(suspended.contains(&order));
    assert!(!quick.iter().any(|id| suspended.contains(id.as_str())));
    let (status, typo) = page(&s, "/ui?status=sleeping").await;
    assert_eq!(status, 400);
    assert!(typo.contains("unknown status"), "{typo}");
    // A misspelt filter's name is refused too, not read as no filter.
    let (status, typo) = page(&s, "/ui?stauts=suspended").await;
    assert_eq!(status, 400);
    assert!(typo.contains("unknown filter `stauts`"), "{typo}");
    assert!(!typo.contains(&order), "nothing listed");

    // One invocation: the journal step by step, payloads escaped.
    let (status, detail) = page(&s, &format!("/ui/invocations/{order}")).await;
    assert_eq!(status, 200);
    for shown in ["price", "reserve", "sleep", "42", "Shop/order"] {
        assert!(detail.contains(shown), "{shown} in the journal");
    }
    assert!(!detail.contains("<b>lamp</b>"), "a payload is never markup");
    assert!(detail.contains(&format!("/ui/invocations/{order}/cancel")));

    // An object's state, its key escaped.
    let (status, state) = page(&s, "/ui/state?service=Cart&key=%3Ck%261%3E").await;
    assert_eq!(status, 200);
    assert!(state.contains("items") && state.contains("pen"), "{state}");
    assert!(state.contains("&lt;k&amp;1&gt;") && !state.contains("<k&1>"));

    let slash = client()
        .get(format!("{}/ui/", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(slash.status(), 303);
    assert_eq!(slash.headers()["location"], "../ui");
    let (status, services) = page(&s, "/ui/services").await;
    assert_eq!(status, 200);
    for shown in ["Shop", "order", "quick", "Cart", "add", "retention 1h"] {
        assert!(services.contains(shown), "{shown} in the services page");
    }
    let (status, _) = page(&s, "/ui/invocations/inv_nothing").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn an_action_needs_its_confirmation_posted_from_the_ui_itself() {
    let s = server(None).await;
    let order = accepted_id(s.post("/Shop/order/send", json!("desk")).await).await;
    s.wait_status(&order, "suspended").await;
    let (status, confirm) = page(&s, &format!("/ui/invocations/{order}/kill")).await;
    assert_eq!(status, 200);
    assert!(confirm.contains("method=\"post\""), "a GET only asks");
    assert_eq!(s.inspect(&order).await["status"], "suspended");

    let post = |origin: Option<String>| {
        let mut r = client().post(format!("{}/ui/invocations/{order}/kill", s.admin));
        if let Some(origin) = origin {
            r = r.header("origin", origin);
        }
        r.form(&[("from", "")]).send()
    };
    // A page elsewhere cannot make a browser act.
    let forged = post(Some("http://evil.example".into())).await.unwrap();
    assert_eq!(forged.status(), 403);
    let null = post(Some("null".into())).await.unwrap();
    assert_eq!(null.status(), 403);
    assert_eq!(s.inspect(&order).await["status"], "suspended");

    let host = s.admin.trim_start_matches("http://").to_owned();
    let done = post(Some(format!("http://{host}"))).await.unwrap();
    assert_eq!(done.status(), 303);
    let back = done.headers()["location"].to_str().unwrap();
    assert!(
        back.starts_with(&format!("/ui/invocations/{order}")),
        "{back}"
    );
    let killed = s.wait_status(&order, "completed").await;
    assert!(killed.to_string().contains("killed"), "{killed}");

    // Unknown actions and bad ids are refused with a page, not a panic.
    let (status, _) = page(&s, &format!("/ui/invocations/{order}/explode")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn with_a_token_the_ui_asks_once_and_keeps_a_strict_http_only_cookie() {
    let s = server(Some("s3cret")).await;
    let host = s.admin.trim_start_matches("http://").to_owned();
    let (status, login) = page(&s, "/ui?service=Shop").await;
    assert_eq!(status, 401);
    assert!(login.contains("name=\"token\""), "{login}");
    assert!(
        login.contains("value=\"/ui?service=Shop\""),
        "comes back to the page asked"
    );

    let sign_in = |token: &'static str, next: &'static str| {
        client()
            .post(format!("{}/ui/login", s.admin))
            .header("origin", format!("http://{host}"))
            .form(&[("token", token), ("next", next)])
            .send()
    };
    let wrong = sign_in("guess", "/ui").await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());

    let right = sign_in("s3cret", "/ui?service=Shop").await.unwrap();
    assert_eq!(right.status(), 303);
    assert_eq!(right.headers()["location"], "/ui?service=Shop");
    let cookie = right.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("s3cret"), "the cookie is not the token");
    let session = cookie.split(';').next().unwrap().to_owned();

    let with_cookie = client()
        .get(format!("{}/ui/services", s.admin))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(with_cookie.status(), 200);
    assert!(with_cookie.text().await.unwrap().contains("Shop"));
    // The bearer token works too; a forged cookie does not.
    let bearer = client()
        .get(format!("{}/ui", s.admin))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let forged = client()
        .get(format!("{}/ui", s.admin))
        .header("cookie", "restate_ui=00")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    // Never a redirect out of the UI.
    let away = sign_in("s3cret", "//evil.example/").await.unwrap();
    assert_eq!(away.headers()["location"], "/ui");
    // Outside /ui the JSON API answers as before: its own 401 for unknown paths too.
    let unknown = client()
        .get(format!("{}/nope", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 401);
    assert!(unknown.text().await.unwrap().contains("admin token"));
    // The JSON API still wants its bearer token.
    let api = client()
        .get(format!("{}/invocations", s.admin))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 401);
}

#[tokio::test]
async fn nested_under_a_prefix_the_links_forms_and_cookie_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::builder()
        .data_dir(dir.path())
        .bind(Shop)
        .bind(Cart)
        .admin_token("n3sted")
        .build()
        .unwrap();
    let app = axum::Router::new().nest("/admin", runtime.admin_router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let asked = client()
        .get(format!("{base}/admin/ui/services"))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 401);
    let login = asked.text().await.unwrap();
    assert!(login.contains("action=\"/admin/ui/login\""), "{login}");
    assert!(login.contains("value=\"/admin/ui/services\""), "{login}");

    let signed_in = client()
        .post(format!("{base}/admin/ui/login"))
        .header("origin", &base)
        .form(&[("token", "n3sted"), ("next", "/admin/ui/services")])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    assert_eq!(signed_in.headers()["location"], "/admin/ui/services");
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("Path=/admin/ui;"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();

    let page = client()
        .get(format!("{base}/admin/ui"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("href=\"/admin/ui/services\""), "{html}");
    assert!(html.contains("action=\"/admin/ui\""), "{html}");
    assert!(!html.contains("\"/ui"), "no link escapes the prefix");
    // The JSON API beside it still answers its own errors for unknown paths.
    let unknown = client()
        .get(format!("{base}/admin/nope"))
        .bearer_auth("n3sted")
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    drop(runtime);
}
