//! Two completions of one awakeable racing each other and the waiter's suspension
//! (`RESTATE_SUSPEND_AFTER=1ms`): both are accepted (`202`, as in Restate), exactly one wins,
//! the waiter returns the winner, and after a SIGKILL and a restart the stored result is still
//! that value (the losing completion changed nothing, durably).

mod support;

use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use support::{App, free_port, lines, poll};

const BIN: &str = env!("CARGO_BIN_EXE_crash_app");
const WAITERS: usize = 100;

/// The awakeable id `Chaos/await_http(tag)` announced in the steps file.
fn announced(steps: &std::path::PathBuf) -> HashMap<String, String> {
    lines(steps)
        .iter()
        .filter_map(|l| {
            let (tag, id) = l.strip_prefix("awakeable ")?.split_once(' ')?;
            Some((tag.to_owned(), id.to_owned()))
        })
        .collect()
}

/// The result of each invocation, once all have one.
async fn outputs(client: &reqwest::Client, ingress: &str, ids: &[String]) -> Vec<String> {
    join_all(ids.iter().map(|id| {
        let url = format!("{ingress}/restate/invocation/{id}/attach");
        let client = client.clone();
        async move {
            let r = client.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200, "{id}");
            r.json::<String>().await.unwrap()
        }
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_completions_of_one_awakeable_racing_a_suspension_have_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let steps = dir.path().join("steps.log");
    let env = [
        ("STEPS_FILE", steps.display().to_string()),
        ("RESTATE_SUSPEND_AFTER", "1ms".to_owned()),
        // 200 completions at once: none waits on the in-flight cap (128), whose 429 would
        // depend on the machine's speed.
        ("RESTATE_MAX_IN_FLIGHT", "1024".to_owned()),
    ];
    let ports = (free_port(), free_port());
    let app = App::start_on(BIN, &data, &env, ports).await;
    let client = reqwest::Client::new();
    let ids: Vec<String> =
        join_all((0..WAITERS).map(|i| {
            let (client, ingress) = (client.clone(), app.ingress.clone());
            async move {
                support::send_json(&client, &ingress, "/Chaos/await_http", &format!("t{i}")).await
            }
        }))
        .await;
    poll(Duration::from_secs(60), || {
        let steps = steps.clone();
        async move { announced(&steps).len() == WAITERS }
    })
    .await;
    let awakeables = announced(&steps);
    // Both completions of each awakeable at once, while its waiter suspends or resumes.
    join_all((0..WAITERS).flat_map(|i| {
        ["a", "b"].map(|who| {
            let url = format!(
                "{}/restate/a/{}/resolve",
                app.ingress,
                awakeables[&format!("t{i}")]
            );
            let client = client.clone();
            async move {
                let r = client
                    .post(url)
                    .json(&format!("{who}{i}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202, "completion {who}{i}");
            }
        })
    }))
    .await;
    let first = outputs(&client, &app.ingress, &ids).await;
    for (i, out) in first.iter().enumerate() {
        assert!(
            *out == format!("a{i}") || *out == format!("b{i}"),
            "waiter {i} returned {out}"
        );
    }
    app.kill();
    let app = App::start_on(BIN, &data, &env, ports).await;
    let again = outputs(&client, &app.ingress, &ids).await;
    assert_eq!(first, again, "a result changed across the restart");
}
