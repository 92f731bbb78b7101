//! The ingress over real HTTP: calls, sends, idempotency, attach/output and every bad input.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use common::TestServer;
use restate_runtime::prelude::*;
use serde_json::{Value, json};

#[derive(Default)]
pub struct Greeter;

#[derive(Serialize, Deserialize)]
pub struct Person {
    name: String,
}

/// Runs of `greet` for "Cy", whose duplicates one test counts (the other tests greet others at
/// the same time).
static CY_RUNS: AtomicU32 = AtomicU32::new(0);
/// Runs of `greet` for names starting with "bad": requests that must never run.
static BAD_RUNS: AtomicU32 = AtomicU32::new(0);

#[service]
impl Greeter {
    #[handler]
    async fn greet(&self, _ctx: Context<'_>, person: Person) -> HandlerResult<String> {
        if person.name == "Cy" {
            CY_RUNS.fetch_add(1, Ordering::SeqCst);
        }
        if person.name.starts_with("bad") {
            BAD_RUNS.fetch_add(1, Ordering::SeqCst);
        }
        Ok(format!("Hello {}", person.name))
    }

    #[handler(name = "noInput")]
    async fn no_input(&self, _ctx: Context<'_>) -> HandlerResult<u32> {
        Ok(7)
    }

    #[handler]
    async fn nothing(&self, _ctx: Context<'_>, _v: Option<u32>) -> HandlerResult<()> {
        Ok(())
    }

    #[handler]
    async fn fail(&self, _ctx: Context<'_>, code: u16) -> Result<(), TerminalError> {
        Err(TerminalError::new_with_code(code, format!("boom {code}")))
    }

    /// Works (not durably) for `ms` milliseconds, holding its request's slot.
    #[handler]
    async fn linger(&self, _ctx: Context<'_>, ms: u64) -> HandlerResult<u64> {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        Ok(ms)
    }

    #[handler(ingress_private)]
    async fn hidden(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

#[tokio::test]
async fn call_returns_output_and_unit_is_empty() {
    let s = TestServer::start().await;
    let r = client()
        .post(s.url("/Greeter/greet"))
        .json(&json!({"name": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert!(
        r.headers()["x-restate-id"]
            .to_str()
            .unwrap()
            .starts_with("inv_1")
    );
    assert!(r.headers().get("idempotency-expires").is_none());
    assert_eq!(r.json::<String>().await.unwrap(), "Hello Ada");

    // No input: empty body with or without a JSON content-type, and GET.
    for req in [
        client().post(s.url("/Greeter/noInput")),
        client()
            .post(s.url("/Greeter/noInput"))
            .header("content-type", "application/json"),
        client().get(s.url("/Greeter/noInput")),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "7");
    }

    // `()` output: empty body, no content-type; Option input accepts an empty body.
    let r = client()
        .post(s.url("/Greeter/nothing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-type").is_none());
    assert_eq!(r.text().await.unwrap(), "");
    s.stop().await;
}

async fn error_of(r: reqwest::Response) -> (u16, String, Value) {
    let status = r.status().as_u16();
    let source = r.headers()["x-restate-error-source"]
        .to_str()
        .unwrap()
        .to_owned();
    (status, source, r.json().await.unwrap())
}

#[tokio::test]
async fn terminal_errors_keep_their_code() {
    let s = TestServer::start().await;
    let r = client()
        .post(s.url("/Greeter/fail"))
        .json(&418)
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("x-restate-id").is_some());
    let (status, source, body) = error_of(r).await;
    assert_eq!((status, source.as_str()), (418, "invocation"));
    assert_eq!(
        body,
        json!({"code": 418, "message": "boom 418", "source": "invocation"})
    );

    let r = client()
        .post(s.url("/Greeter/fail"))
        .json(&1000)
        .send()
        .await
        .unwrap();
    let (status, _, body) = error_of(r).await;
    assert_eq!((status, body["code"].as_u64()), (500, Some(1000)));
    s.stop().await;
}

#[tokio::test]
async fn bad_requests_are_refused_clearly() {
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), |b| b.max_body_bytes(1024)).await;
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            client().post(s.url("/Nope/x")),
            404,
            "service 'Nope' not found",
        ),
        (
            client().post(s.url("/Greeter/nope")),
            404,
            "handler 'nope' was not found",
        ),
        (client().post(s.url("/Greeter")), 400, "bad path"),
        (
            client().post(s.url("/Greeter/greet/extra")),
            400,
            "bad path",
        ),
        (
            client()
                .post(s.url("/Greeter/greet"))
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "input validation error",
        ),
        (
            client()
                .post(s.url("/Greeter/greet"))
                .json(&json!({"nom": 1})),
            400,
            "missing field `name`",
        ),
        (
            client()
                .post(s.url("/Greeter/greet"))
                .header("content-type", "text/plain")
                .body("{}"),
            400,
            "does not match 'application/json'",
        ),
        (
            client().post(s.url("/Greeter/greet")),
            400,
            "handler 'greet' expects a JSON body, but the request has none",
        ),
        (
            client().post(s.url("/Greeter/noInput")).body("5"),
            400,
            "takes no input",
        ),
        (
            client()
                .post(s.url("/Greeter/greet"))
                .json(&json!({"name": format!("bad{}", "x".repeat(2000))})),
            413,
            "exceeds the limit",
        ),
        (
            client()
                .post(s.url("/Greeter/greet/send?delay=1000"))
                .json(&json!({"name": "bad"})),
            400,
            "bad delay",
        ),
        (
            client()
                .post(s.url("/Greeter/greet?delay=1s"))
                .json(&json!({"name": "bad"})),
            400,
            "only with sends",
        ),
        (
            client()
                .post(s.url("/Greeter/greet"))
                .header("idempotency-key", "")
                .json(&json!({"name": "bad"})),
            400,
            "idempotency-key",
        ),
        (client().post(s.url("/Greeter/hidden")), 400, "not public"),
        (
            client().put(s.url("/Greeter/greet")),
            405,
            "method not allowed",
        ),
        (
            client().get(s.url("/restate/invocation/inv_1bad/output")),
            400,
            "bad invocation id",
        ),
        (
            client().post(s.url("/restate/output")).body("{]"),
            400,
            "bad request body",
        ),
    ];
    for (req, status, needle) in cases {
        let r = req.send().await.unwrap();
        let (got, source, body) = error_of(r).await;
        assert_eq!(got, status, "{body}");
        assert_eq!(source, "ingress");
        assert!(
            body["message"].as_str().unwrap().contains(needle),
            "{body} lacks {needle}"
        );
        assert_eq!(body["code"], status);
    }
    assert_eq!(BAD_RUNS.load(Ordering::SeqCst), 0, "no invocation ran");
    s.stop().await;
}

#[tokio::test]
async fn send_attach_output_and_idempotency() {
    let s = TestServer::start().await;
    let r = client()
        .post(s.url("/Greeter/greet/send"))
        .json(&json!({"name": "Bo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "Accepted");
    let id = body["invocationId"].as_str().unwrap().to_owned();
    let r = client()
        .get(s.url(&format!("/restate/invocation/{id}/attach")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("idempotency-expires").is_some());
    assert_eq!(r.json::<String>().await.unwrap(), "Hello Bo");
    let r = client()
        .get(s.url(&format!("/restate/invocation/{id}/output")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<String>().await.unwrap(), "Hello Bo");

    // A well-formed unknown id.
    let unknown = format!("inv_1{}1", "0".repeat(32));
    let r = client()
        .get(s.url(&format!("/restate/invocation/{unknown}/output")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client()
        .get(s.url(&format!("/restate/invocation/{unknown}/attach")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Concurrent duplicates with one key: one invocation, same answer.
    let before = CY_RUNS.load(Ordering::SeqCst);
    let calls = (0..10).map(|_| {
        client()
            .post(s.url("/Greeter/greet"))
            .header("idempotency-key", "same")
            .json(&json!({"name": "Cy"}))
            .send()
    });
    let responses = futures::future::join_all(calls).await;
    let mut ids = std::collections::HashSet::new();
    for r in responses {
        let r = r.unwrap();
        assert_eq!(r.status(), 200);
        ids.insert(r.headers()["x-restate-id"].to_str().unwrap().to_owned());
        assert_eq!(r.json::<String>().await.unwrap(), "Hello Cy");
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(CY_RUNS.load(Ordering::SeqCst), before + 1);
    // After completion: replayed with idempotency-expires, body ignored.
    let r = client()
        .post(s.url("/Greeter/greet"))
        .header("idempotency-key", "same")
        .json(&json!({"name": "DIFFERENT"}))
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("idempotency-expires").is_some());
    assert_eq!(r.json::<String>().await.unwrap(), "Hello Cy");
    // /send duplicate: PreviouslyAccepted, same id.
    let send = || {
        client()
            .post(s.url("/Greeter/greet/send"))
            .header("idempotency-key", "same")
            .json(&json!({"name": "x"}))
            .send()
    };
    let body: Value = send().await.unwrap().json().await.unwrap();
    assert_eq!(body["status"], "PreviouslyAccepted");
    assert!(ids.contains(body["invocationId"].as_str().unwrap()));
    // Two headers: the first counts, as in Restate.
    let body: Value = client()
        .post(s.url("/Greeter/greet/send"))
        .header("idempotency-key", "same")
        .header("idempotency-key", "other")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "PreviouslyAccepted", "{body}");
    // The restarts' namespace is not a client's.
    let r = client()
        .post(s.url("/Greeter/greet/send"))
        .header(
            "idempotency-key",
            format!("restart-of:{}", body["invocationId"].as_str().unwrap()),
        )
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let refused: Value = r.json().await.unwrap();
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("reserved for restarts"),
        "{refused}"
    );
    // By idempotency key.
    let r = client()
        .get(s.url("/restate/invocation/Greeter/greet/same/output"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<String>().await.unwrap(), "Hello Cy");
    assert_eq!(CY_RUNS.load(Ordering::SeqCst), before + 1);
    s.stop().await;
}

#[tokio::test]
async fn failures_are_replayed_for_duplicates() {
    let s = TestServer::start().await;
    for _ in 0..2 {
        let r = client()
            .post(s.url("/Greeter/fail"))
            .header("idempotency-key", "f1")
            .json(&409)
            .send()
            .await
            .unwrap();
        let (status, source, _) = error_of(r).await;
        assert_eq!((status, source.as_str()), (409, "invocation"));
    }
    s.stop().await;
}

#[tokio::test]
async fn newer_restate_forms_call_send_attach_output_lookup() {
    let s = TestServer::start().await;
    let r = client()
        .post(s.url("/restate/call/Greeter/greet"))
        .json(&json!({"name": "N"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<String>().await.unwrap(), "Hello N");
    let r = client()
        .post(s.url("/restate/send/Greeter/greet"))
        .header("idempotency-key", "newer")
        .json(&json!({"name": "M"}))
        .send()
        .await
        .unwrap();
    let id = common::accepted_id(r).await;
    let r = client()
        .get(s.url(&format!("/restate/attach/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<String>().await.unwrap(), "Hello M");
    let r = client()
        .get(s.url(&format!("/restate/output/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<String>().await.unwrap(), "Hello M");
    let target = json!({"target": "idempotentInvocation", "service": "Greeter", "handler": "greet", "idempotencyKey": "newer"});
    let r = client()
        .post(s.url("/restate/lookup"))
        .json(&target)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["invocationId"],
        id.as_str()
    );
    let r = client()
        .post(s.url("/restate/output"))
        .json(&target)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<String>().await.unwrap(), "Hello M");
    let r = client()
        .post(s.url("/restate/attach"))
        .json(&json!({"target": "invocation", "invocationId": id}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<String>().await.unwrap(), "Hello M");
    // A body naming what no invocation can be is refused as the path form refuses it.
    for (target, status, says) in [
        (
            json!({"target": "idempotentInvocation", "service": "Nope", "handler": "greet", "idempotencyKey": "newer"}),
            404,
            "service 'Nope'",
        ),
        (
            json!({"target": "idempotentInvocation", "service": "Greeter", "key": "k", "handler": "greet", "idempotencyKey": "newer"}),
            400,
            "no keys",
        ),
        (
            json!({"target": "idempotentInvocation", "service": "Greeter", "handler": "greet", "idempotencyKey": "newer", "scope": "s"}),
            400,
            "scoped invocations",
        ),
        (
            json!({"target": "workflow", "workflowName": "W", "workflowKey": "k", "scope": "s"}),
            400,
            "scoped invocations",
        ),
    ] {
        let r = client()
            .post(s.url("/restate/output"))
            .json(&target)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{target}");
        let message = r.json::<Value>().await.unwrap()["message"].to_string();
        assert!(message.contains(says), "{target}: {message}");
    }
    let r = client().get(s.url("/restate/health")).send().await.unwrap();
    assert!(
        r.json::<Value>().await.unwrap()["services"]
            .as_array()
            .unwrap()
            .contains(&json!("Greeter"))
    );
    s.stop().await;
}

/// Browser clients: a preflight is answered before the token is checked, and every answer
/// (a refusal too) carries the origin it may be read from, as Restate's ingress does.
#[tokio::test]
async fn cors_preflights_are_answered_before_the_token_and_answers_name_the_origin() {
    let s =
        TestServer::start_with(tempfile::tempdir().unwrap(), |b| b.ingress_token("s3cret")).await;
    let origin = "https://app.example";
    let preflight = client()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/Greeter/greet", s.base),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, authorization",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    let allowed = |r: &reqwest::Response| r.headers()["access-control-allow-origin"].clone();
    assert_eq!(allowed(&preflight), origin);
    let allowed_headers = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(
        allowed_headers.contains("authorization"),
        "{allowed_headers}"
    );
    let refused = client()
        .post(format!("{}/Greeter/greet", s.base))
        .header("origin", origin)
        .json(&json!({"name": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(allowed(&refused), origin);
    assert_eq!(refused.headers()["www-authenticate"], "Bearer");
    // The scheme's name is case-insensitive (RFC 9110); the token is not.
    for (authorization, status) in [
        ("bearer s3cret", 200),
        ("BEARER  s3cret", 200),
        ("Bearer S3CRET", 401),
        ("Basic s3cret", 401),
        ("Bearers3cret", 401),
    ] {
        let r = client()
            .post(format!("{}/Greeter/greet", s.base))
            .header("authorization", authorization)
            .json(&json!({"name": "Ada"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{authorization}");
    }
    // The health probe needs no token however its path is spelt; nothing else near it does.
    for (path, status) in [
        ("/restate/health/", 200),
        ("//restate/health", 200),
        ("/restate/healthz", 401),
        ("/restate/health/x", 401),
    ] {
        let r = client()
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
    }
    let served = client()
        .post(format!("{}/Greeter/greet", s.base))
        .header("origin", origin)
        .bearer_auth("s3cret")
        .json(&json!({"name": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(allowed(&served), origin);
}

/// With the only slot in flight taken, a preflight is still answered (no handler runs for
/// one), and the `429` to a request carries the CORS headers, so a browser sees it.
#[tokio::test]
async fn over_the_in_flight_cap_preflights_are_answered_and_refusals_carry_cors() {
    let one = |b: restate_runtime::RuntimeBuilder| b.max_in_flight(1);
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), one).await;
    let origin = "http://app.example";
    // A call of a handler that works for a while holds the one slot.
    let held = tokio::spawn(
        client()
            .post(format!("{}/Greeter/linger", s.base))
            .json(&8000)
            .send(),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let refused = loop {
        let r = client()
            .post(format!("{}/Greeter/greet", s.base))
            .header("origin", origin)
            .json(&json!({"name": "Ed"}))
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            break r;
        }
        // Served before the held request took the slot.
        assert_eq!(r.status(), 200);
        assert!(std::time::Instant::now() < deadline, "never refused");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(refused.headers()["access-control-allow-origin"], origin);
    assert_eq!(
        refused.headers()["access-control-allow-credentials"],
        "true"
    );
    assert_eq!(refused.headers()["retry-after"], "1");
    let preflight = client()
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/Greeter/greet", s.base),
        )
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 200);
    assert_eq!(preflight.headers()["access-control-allow-origin"], origin);
    // The health probe is answered at once however its path is spelt.
    for path in ["/restate/health", "/restate/health/", "//restate/health"] {
        let r = client()
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    assert_eq!(held.await.unwrap().unwrap().status(), 200);
    s.stop().await;
}

/// A handler's terminal error whose code is no error status answers 500, never a success.
#[tokio::test]
async fn a_terminal_error_with_a_success_code_answers_500_with_its_code_in_the_body() {
    let s = TestServer::start().await;
    for (code, status) in [(200, 500), (101, 500), (302, 500), (422, 422)] {
        let r = client()
            .post(format!("{}/Greeter/fail", s.base))
            .json(&code)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "code {code}");
        assert_eq!(r.headers()["x-restate-error-source"], "invocation");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], code, "{body}");
    }
}

/// An unknown admin route is a 404 that says so, in the API's error form.
#[tokio::test]
async fn an_unknown_admin_route_is_a_404_with_a_body() {
    let s = TestServer::start().await;
    // So are a path parameter that is no UTF-8 and a method a route does not take; the 405
    // names the methods it takes.
    for (method, path, status, says) in [
        (reqwest::Method::GET, "/nope", 404, "/nope"),
        (reqwest::Method::GET, "/invocations/%FF", 400, "UTF-8"),
        (
            reqwest::Method::POST,
            "/invocations/inv_1x/kill",
            405,
            "POST",
        ),
    ] {
        let r = client()
            .request(method, format!("{}{path}", s.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
        if status == 405 {
            assert_eq!(r.headers()["allow"], "PATCH");
        }
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], status, "{body}");
        assert!(body["message"].as_str().unwrap().contains(says), "{body}");
    }
    let health = client()
        .get(format!("{}/health", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // The ingress's 405s name the methods too.
    for (method, path, allow) in [
        (reqwest::Method::PUT, "/Greeter/greet", "GET, POST"),
        (reqwest::Method::DELETE, "/restate/health", "GET, HEAD"),
        (reqwest::Method::GET, "/restate/a/sign_1x/resolve", "POST"),
    ] {
        let r = client().request(method, s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 405, "{path}");
        assert_eq!(r.headers()["allow"], allow, "{path}");
    }
    // Scoped calls: refused as Restate refuses them without its experimental queues.
    let r = client()
        .post(format!("{}/restate/scope/s1/call/Greeter/greet", s.base))
        .json(&json!({"name": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("scoped invocations require vqueues"),
        "{body}"
    );
}
