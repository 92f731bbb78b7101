//! The saga example end to end: the built `saga` binary books one trip, refuses another at the
//! hotel, and the admin API's journal shows the compensations ran, newest booking first.

mod support;

use serde_json::{Value, json};
use support::{App, example_bin};

/// Books a trip: status, `x-restate-id` and body.
async fn book(app: &App, request: Value) -> (u16, String, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/Trip/book", app.ingress))
        .json(&request)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let id = r.headers()["x-restate-id"].to_str().unwrap().to_owned();
    (status, id, r.json().await.unwrap())
}

/// The admin API's view of an invocation.
async fn inspect(app: &App, id: &str) -> Value {
    reqwest::get(format!("{}/invocations/{id}", app.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `(kind, name)` of each journal entry.
fn steps(invocation: &Value) -> Vec<(String, String)> {
    invocation["journal"]
        .as_array()
        .expect("a journal")
        .iter()
        .map(|e| {
            let field = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (field("kind"), field("name"))
        })
        .collect()
}

fn runs(names: &[&str]) -> Vec<(String, String)> {
    names
        .iter()
        .map(|n| ("run".to_owned(), (*n).to_owned()))
        .collect()
}

#[tokio::test]
async fn a_refused_step_undoes_the_earlier_ones_in_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(&example_bin("saga"), &dir.path().join("data"), &[]).await;

    let (status, id, body) = book(&app, json!({"trip_id": "t1"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!(["flight-t1", "car-t1", "hotel-t1"]));
    let ok = inspect(&app, &id).await;
    assert_eq!(ok["status"], "completed");
    assert_eq!(
        steps(&ok),
        runs(&["reserve flight", "reserve car", "reserve hotel"])
    );

    let (status, id, body) = book(&app, json!({"trip_id": "t2", "fail_on": "hotel"})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        body,
        json!({"code": 409, "message": "no hotel available for trip t2", "source": "invocation"})
    );
    let failed = inspect(&app, &id).await;
    assert_eq!(failed["status"], "completed");
    assert_eq!(failed["result"]["failure"]["code"], 409);
    assert_eq!(
        steps(&failed),
        runs(&[
            "reserve flight",
            "reserve car",
            "reserve hotel",
            "cancel car",
            "cancel flight",
        ])
    );
    let journal = &failed["journal"];
    assert_eq!(journal[1]["result"]["success"], "car-t2");
    assert_eq!(journal[2]["result"]["failure"]["code"], 409);
    assert!(journal[3]["result"]["failure"].is_null(), "{journal}");

    // Refused at the first step: nothing to undo.
    let (status, id, _) = book(&app, json!({"trip_id": "t3", "fail_on": "flight"})).await;
    assert_eq!(status, 409);
    assert_eq!(steps(&inspect(&app, &id).await), runs(&["reserve flight"]));
}
