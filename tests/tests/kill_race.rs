//! A kill racing the invocation's own completion: a kill answered `200` means the invocation
//! ended killed, and one that completed first answers `409` with its result standing. Sends of
//! durable sleeps of 0-3 ms, each killed at once, land on both sides of the race.

mod support;

use support::{App, send_json};

const BIN: &str = env!("CARGO_BIN_EXE_crash_app");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_answers_200_only_when_it_ended_the_invocation() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(BIN, &dir.path().join("data"), &[]).await;
    let client = reqwest::Client::new();
    let mut workers = Vec::new();
    for w in 0..4 {
        let (client, ingress, admin) = (client.clone(), app.ingress.clone(), app.admin.clone());
        workers.push(tokio::spawn(async move {
            // (kill status, outcome) per invocation.
            let mut seen = Vec::new();
            for i in 0..150u64 {
                let id = send_json(&client, &ingress, "/Waits/nap", &((i + w) % 4)).await;
                let kill = client
                    .patch(format!("{admin}/invocations/{id}/kill"))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16();
                let output = client
                    .get(format!("{ingress}/restate/invocation/{id}/attach"))
                    .send()
                    .await
                    .unwrap();
                let succeeded = output.status().is_success();
                let body = output.text().await.unwrap();
                seen.push((id, kill, succeeded, body));
            }
            seen
        }));
    }
    let (mut killed, mut completed) = (0, 0);
    for worker in workers {
        for (id, kill, succeeded, body) in worker.await.unwrap() {
            match (kill, succeeded) {
                (200, false) => killed += 1,
                (409, true) => completed += 1,
                _ => panic!("{id}: kill answered {kill}, yet the output is {body}"),
            }
            if kill == 200 {
                assert!(body.contains("killed"), "{id}: {body}");
            }
        }
    }
    eprintln!("killed {killed}, completed first {completed}");
    assert_eq!(killed + completed, 600);
    assert!(killed > 0, "no kill ended an invocation");
}
