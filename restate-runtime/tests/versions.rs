//! The application version: recorded on every invocation when it is accepted (delayed ones
//! included), kept across a restart onto a new version, shown and filtered by the admin API,
//! counted in `/metrics`; by default the crate version plus a hash of the services' shape.

mod common;

use std::time::Duration;

use common::{TestServer, accepted_id};
use restate_runtime::RuntimeBuilder;
use restate_runtime::prelude::*;
use serde_json::{Value, json};

#[derive(Default)]
pub struct Reminders;

#[service]
impl Reminders {
    #[handler]
    async fn remind(&self, ctx: Context<'_>, note: String) -> HandlerResult<String> {
        ctx.sleep(Duration::from_secs(3600)).await?;
        Ok(note)
    }

    #[handler]
    async fn echo(&self, _ctx: Context<'_>, note: String) -> HandlerResult<String> {
        Ok(note)
    }
}

async fn get(url: String) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn ids_of_version(server: &TestServer, version: &str) -> Vec<String> {
    let page = get(format!("{}/invocations?version={version}", server.admin)).await;
    let mut ids: Vec<String> = page["invocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            assert_eq!(v["version"], version);
            v["id"].as_str().unwrap().to_owned()
        })
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_invocation_keeps_the_version_that_accepted_it() {
    let v1 = |b: RuntimeBuilder| b.app_version("1").suspend_after(Duration::from_millis(50));
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), v1).await;
    let waiting = accepted_id(server.post("/Reminders/remind/send", json!("a")).await).await;
    let delayed = accepted_id(
        server
            .post("/Reminders/echo/send?delay=1h", json!("b"))
            .await,
    )
    .await;
    let done = server
        .post("/Reminders/echo", json!("c"))
        .await
        .headers()
        .get("x-restate-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        server.wait_status(&waiting, "suspended").await["version"],
        "1"
    );
    assert_eq!(server.inspect(&delayed).await["status"], "scheduled");
    assert_eq!(server.inspect(&delayed).await["version"], "1");
    assert_eq!(server.inspect(&done).await["version"], "1");

    // The next deploy: version 2 on the same data.
    let v2 = |b: RuntimeBuilder| b.app_version("2");
    let server = TestServer::start_with(server.stop().await, v2).await;
    let new = accepted_id(server.post("/Reminders/remind/send", json!("d")).await).await;
    let mut v1_ids = vec![waiting.clone(), delayed, done];
    v1_ids.sort();
    assert_eq!(ids_of_version(&server, "1").await, v1_ids);
    assert_eq!(ids_of_version(&server, "2").await, [new]);
    assert!(ids_of_version(&server, "3").await.is_empty());
    // Filters combine.
    let page = get(format!(
        "{}/invocations?version=1&status=suspended",
        server.admin
    ))
    .await;
    assert_eq!(page["invocations"].as_array().unwrap().len(), 1);
    assert_eq!(page["invocations"][0]["id"], waiting.as_str());
    let metrics = reqwest::get(format!("{}/metrics", server.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("restate_invocations_accepted_total{version=\"2\"} 1"),
        "{metrics}"
    );
    drop(server.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_configured_version_the_crate_version_and_the_services_shape_are_recorded() {
    let server = TestServer::start().await;
    let r = server.post("/Reminders/echo", json!("x")).await;
    let id = r.headers()["x-restate-id"].to_str().unwrap().to_owned();
    let version = server.inspect(&id).await["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let (crate_version, hash) = version.split_once('+').unwrap();
    assert_eq!(crate_version, env!("CARGO_PKG_VERSION"));
    assert!(
        hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "{version}"
    );
    drop(server.stop().await);
}
