//! The sign-up workflow example end to end: submitted twice (one run), a wrong secret refused
//! and the right one accepted, the result read by attach and output, across a SIGKILL.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{App, example_bin, free_port, poll};

#[tokio::test]
async fn signup_verifies_once_across_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ports = (free_port(), free_port());
    let env = [("RESTATE_SUSPEND_AFTER", "200ms".to_owned())];
    let bin = example_bin("signup");
    let app = App::start_on(&bin, &data, &env, ports).await;
    let client = reqwest::Client::new();
    let submit = || {
        client
            .post(format!("{}/Signup/ada/run/send", app.ingress))
            .json(&json!("ada@example.com"))
            .send()
    };
    let first: Value = submit().await.unwrap().json().await.unwrap();
    let again: Value = submit().await.unwrap().json().await.unwrap();
    assert_eq!(
        (first["status"].as_str(), again["status"].as_str()),
        (Some("Accepted"), Some("PreviouslyAccepted"))
    );
    let id = first["invocationId"].as_str().unwrap().to_owned();
    let inspect = format!("{}/invocations/{id}", app.admin);
    poll(Duration::from_secs(30), || {
        let inspect = inspect.clone();
        async move {
            let v: Value = reqwest::get(inspect).await.unwrap().json().await.unwrap();
            v["status"] == "suspended"
        }
    })
    .await;
    let view: Value = reqwest::get(&inspect).await.unwrap().json().await.unwrap();
    let link = view["journal"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e["result"]["success"].as_str())
        .unwrap()
        .to_owned();
    let secret = link.rsplit('=').next().unwrap().to_owned();
    app.kill();

    let app = App::start_on(&bin, &data, &env, ports).await;
    let status = client
        .get(format!("{}/Signup/ada/status", app.ingress))
        .send()
        .await
        .unwrap();
    assert_eq!(
        status.json::<Value>().await.unwrap(),
        json!("waiting for click")
    );
    let out = client
        .get(format!(
            "{}/restate/workflow/Signup/ada/output",
            app.ingress
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 470);
    let r = client
        .post(format!("{}/Signup/ada/click", app.ingress))
        .json(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!(
            "{}/restate/workflow/Signup/ada/attach",
            app.ingress
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<String>().await.unwrap(),
        "ada@example.com verified"
    );
    let r = client
        .post(format!("{}/Signup/ada/click", app.ingress))
        .json(&"again")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "the promise is already resolved");

    // A wrong secret is refused.
    let r = client
        .post(format!("{}/Signup/bob/run/send", app.ingress))
        .json(&json!("bob@example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = client
        .post(format!("{}/Signup/bob/click", app.ingress))
        .json(&"guess")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .get(format!(
            "{}/restate/workflow/Signup/bob/attach",
            app.ingress
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}
