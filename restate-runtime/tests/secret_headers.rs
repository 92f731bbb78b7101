//! Credentials and webhook signatures are never stored with an invocation nor shown to its
//! handler: every attempt sees the same headers, and a journal read leaks no secret.

mod common;

use common::TestServer;
use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Echo;

#[service]
impl Echo {
    /// The names of the headers the handler sees, sorted.
    #[handler]
    async fn header_names(&self, _ctx: Context<'_>, input: RawInput) -> HandlerResult<Vec<String>> {
        let mut names: Vec<String> = input.headers().iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        Ok(names)
    }

    /// The `x-restate-ingress-path` header the handler sees.
    #[handler]
    async fn ingress_path(&self, _ctx: Context<'_>, input: RawInput) -> HandlerResult<Vec<String>> {
        Ok(input
            .headers()
            .iter()
            .filter(|(n, _)| n == "x-restate-ingress-path")
            .map(|(_, v)| v.clone())
            .collect())
    }
}

/// As Restate, the path and query the invocation came in by, once, whatever a client sent.
#[tokio::test]
async fn the_ingress_path_is_forwarded_and_cannot_be_forged() {
    let s = TestServer::start().await;
    let paths: Vec<String> = reqwest::Client::new()
        .post(s.url("/Echo/ingress_path?from=test"))
        .header("x-restate-ingress-path", "/Elsewhere/forged")
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paths, ["/Echo/ingress_path?from=test"]);
}

#[tokio::test]
async fn credentials_and_signatures_are_not_kept() {
    let s = TestServer::start().await;
    let names: Vec<String> = reqwest::Client::new()
        .post(s.url("/Echo/header_names"))
        .header("authorization", "Bearer secret")
        .header("cookie", "session=secret")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .header("stripe-signature", "t=1,v1=00")
        .header("x-hub-signature-256", "sha256=00")
        .header("x-request-id", "kept")
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(names.contains(&"x-request-id".to_owned()), "{names:?}");
    for secret in [
        "authorization",
        "cookie",
        "proxy-authorization",
        "stripe-signature",
        "x-hub-signature-256",
    ] {
        assert!(
            !names.contains(&secret.to_owned()),
            "{secret} kept: {names:?}"
        );
    }
}
