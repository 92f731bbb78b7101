//! Duplicates of one idempotency key (or workflow key) racing each other and the first one's
//! end: however they interleave with its start, its run, its suspension and its completion,
//! the handler runs once and every duplicate gets the first one's invocation and result (a
//! workflow's second run, the answer that it ran).

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use common::TestServer;
use restate_runtime::prelude::*;
use serde_json::{Value, json};

/// Runs per key, of both services.
static RUNS: Mutex<Option<HashMap<String, u32>>> = Mutex::new(None);

fn ran(key: &str) {
    let mut runs = RUNS.lock().unwrap();
    *runs
        .get_or_insert_with(HashMap::new)
        .entry(key.to_owned())
        .or_default() += 1;
}

fn runs_of(key: &str) -> u32 {
    let runs = RUNS.lock().unwrap();
    runs.as_ref().and_then(|r| r.get(key)).copied().unwrap_or(0)
}

#[derive(Default)]
pub struct Once;

#[service]
impl Once {
    /// Counts its run; odd keys sleep first, so that later duplicates find them suspended.
    #[handler]
    async fn run(&self, ctx: Context<'_>, key: String) -> HandlerResult<String> {
        if key.len() % 2 == 1 {
            ctx.sleep(Duration::from_millis(30)).await?;
        }
        ran(&key);
        Ok(format!("done {key}"))
    }
}

#[derive(Default)]
pub struct Flow;

#[workflow]
impl Flow {
    #[handler]
    async fn run(&self, ctx: WorkflowContext<'_>) -> HandlerResult<String> {
        let key = format!("wf-{}", ctx.key());
        ran(&key);
        Ok(key)
    }
}

/// `n` duplicates of one request at once, each started after a different number of yields,
/// so some arrive before the first is created, some while it runs, some after it ended.
async fn duplicates(
    s: &TestServer,
    path: String,
    idempotency_key: Option<String>,
    body: Option<Value>,
    n: usize,
) -> Vec<(u16, Value)> {
    let client = reqwest::Client::new();
    let requests = (0..n).map(|i| {
        let request = client.post(s.url(&path));
        let request = match &body {
            Some(body) => request.json(body),
            None => request,
        };
        let request = match &idempotency_key {
            Some(key) => request.header("idempotency-key", key),
            None => request,
        };
        tokio::spawn(async move {
            for _ in 0..i * 3 {
                tokio::task::yield_now().await;
            }
            let r = request.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        })
    });
    let mut answers = Vec::new();
    for answer in futures::future::join_all(requests).await {
        answers.push(answer.unwrap());
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_duplicates_of_one_key_run_it_once_and_share_its_answer() {
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), |b| {
        b.suspend_after(Duration::from_millis(1))
    })
    .await;
    let keys: Vec<String> = (0..60)
        .map(|i| format!("key-{i}{}", "x".repeat(i % 2)))
        .collect();
    let rounds = keys.iter().map(|key| {
        let s = &s;
        async move {
            let path = match key.len() % 3 {
                0 => "/Once/run/send".to_owned(),
                _ => "/Once/run".to_owned(),
            };
            let send = path.ends_with("/send");
            let body = Some(json!(key));
            let mut answers = duplicates(s, path.clone(), Some(key.clone()), body.clone(), 8).await;
            // A second wave once the first has its answers: a send's finds the invocation
            // running or suspended in its sleep (odd keys), a call's finds it completed.
            answers.extend(duplicates(s, path, Some(key.clone()), body, 8).await);
            (key, send, answers)
        }
    });
    for (key, send, answers) in futures::future::join_all(rounds).await {
        if send {
            let ids: Vec<&str> = answers
                .iter()
                .map(|(status, body)| {
                    assert_eq!(*status, 202, "{key}: {body}");
                    body["invocationId"].as_str().unwrap()
                })
                .collect();
            assert!(
                ids.iter().all(|id| *id == ids[0]),
                "{key}: one invocation, got {ids:?}"
            );
            assert_eq!(
                answers
                    .iter()
                    .filter(|(_, b)| b["status"] == "Accepted")
                    .count(),
                1,
                "{key}: one send is accepted, the others previously accepted: {answers:?}"
            );
            let (status, output) = s.attach(ids[0]).await;
            assert_eq!((status, output), (200, json!(format!("done {key}"))));
        } else {
            for (status, body) in &answers {
                assert_eq!(
                    (*status, body),
                    (200, &json!(format!("done {key}"))),
                    "{key}"
                );
            }
        }
        assert_eq!(runs_of(key), 1, "{key} ran once");
    }

    for i in 0..20 {
        let key = format!("w{i}");
        let answers = duplicates(&s, format!("/Flow/{key}/run"), None, None, 8).await;
        // A duplicate that finds the run going waits for its result; one that finds it ended
        // is told it ran (as Restate answers a second run of a workflow).
        for (status, body) in &answers {
            match status {
                200 => assert_eq!(body, &json!(format!("wf-{key}"))),
                409 => assert_eq!(body["message"], "the workflow method was already invoked"),
                _ => panic!("workflow {key}: {status} {body}"),
            }
        }
        assert!(
            answers.iter().any(|(status, _)| *status == 200),
            "{answers:?}"
        );
        assert_eq!(runs_of(&format!("wf-{key}")), 1, "workflow {key} ran once");
    }
    s.stop().await;
}
