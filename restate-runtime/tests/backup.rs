//! Online backup: `POST /backup` during a load of writes gives a folder that opens as a
//! consistent store (each key's state holds exactly the writes of the journals it holds), and
//! that, served, finishes every invocation it holds exactly once; the live process keeps
//! serving; a folder with files is refused with 409, a bad body with 400.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use common::{TestServer, wait_until};
use restate_runtime::prelude::*;
use restate_runtime::storage::{
    JournalEntry, RedbOptions, RedbStorage, StateScope, Status, Storage,
};
use serde_json::{Value, json};

/// Appends numbers to a key's list, one step and one state write per number.
#[derive(Default)]
pub struct Ledger;

#[object]
impl Ledger {
    #[handler]
    async fn append(&self, ctx: ObjectContext<'_>, n: u64) -> HandlerResult<usize> {
        let mut seen: Vec<u64> = ctx.get("seen").await?.unwrap_or_default();
        ctx.run(|| async { Ok(()) }).name("check").await?;
        seen.push(n);
        let len = seen.len();
        ctx.set("seen", seen);
        Ok(len)
    }
}

async fn post_backup(server: &TestServer, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/backup", server.admin))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Per key: the numbers its stored state holds, and those its stored journals wrote, both
/// sorted (concurrent requests to one key run in the order they reach it, which their arrival
/// numbers need not follow).
fn written(store: &RedbStorage) -> BTreeMap<String, (Vec<u64>, Vec<u64>)> {
    let mut keys: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut after = None;
    loop {
        let page = store.invocations(after, 500).unwrap();
        let Some((last, _)) = page.last() else { break };
        after = Some(*last);
        for (id, record) in page {
            let key = record.target.key.clone().unwrap();
            let n: u64 = serde_json::from_slice(&record.input).unwrap();
            let journal = store.journal(&id).unwrap();
            let wrote = journal
                .iter()
                .any(|(_, e)| matches!(e, JournalEntry::SetState { .. }));
            if matches!(record.status, Status::Completed { .. }) {
                assert!(wrote, "{id} completed without its write");
            }
            let entry = keys.entry(key).or_default();
            if wrote {
                entry.push(n);
            }
        }
    }
    keys.into_iter()
        .map(|(key, mut journaled)| {
            journaled.sort();
            let scope = StateScope {
                service: "Ledger".into(),
                key: key.clone(),
            };
            let mut state: Vec<u64> = store
                .state(&scope, "seen")
                .unwrap()
                .map(|v| serde_json::from_slice(&v).unwrap())
                .unwrap_or_default();
            state.sort();
            (key, (state, journaled))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_opens_consistent_and_finishes_what_it_holds_once() {
    let server = TestServer::start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (stop, next, url) = (stop.clone(), next.clone(), server.url(""));
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                while !stop.load(SeqCst) {
                    let n = next.fetch_add(1, SeqCst);
                    let r = client
                        .post(format!("{url}/Ledger/k{}/append/send", (n + w) % 6))
                        .json(&n)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 202);
                }
            })
        })
        .collect();
    wait_until(Duration::from_secs(30), || async {
        next.load(SeqCst) > 300
    })
    .await;

    let folder = tempfile::tempdir().unwrap();
    let path = folder.path().join("nested").join("copy");
    let (status, report) = post_backup(&server, json!({ "path": path })).await;
    assert_eq!(status, 200, "{report}");
    assert!(report["invocations"].as_u64().unwrap() > 0, "{report}");
    assert!(report["bytes"].as_u64().unwrap() > 0, "{report}");
    // Into a folder with files, or without a path: refused, nothing touched.
    let (status, refused) = post_backup(&server, json!({ "path": path })).await;
    assert_eq!(status, 409, "{refused}");
    let (status, _) = post_backup(&server, json!({ "folder": "x" })).await;
    assert_eq!(status, 400);
    // A field this API does not know, beside a good path: refused, not ignored.
    let elsewhere = folder.path().join("other");
    let (status, refused) =
        post_backup(&server, json!({ "path": elsewhere, "compress": true })).await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("compress"),
        "{refused}"
    );
    assert!(!elsewhere.exists());
    // A relative path would land in the server's working directory.
    let (status, refused) = post_backup(&server, json!({ "path": "relative/copy" })).await;
    assert_eq!(status, 400, "{refused}");
    assert!(!std::path::Path::new("relative").exists());
    // A NUL byte, which no path holds; a body over the admin API's limit.
    let nul = format!("{}/a\0b", folder.path().display());
    let (status, refused) = post_backup(&server, json!({ "path": nul })).await;
    assert_eq!(status, 400, "{refused}");
    let long = format!("/{}", "x".repeat(4 << 20));
    let (status, refused) = post_backup(&server, json!({ "path": long })).await;
    assert_eq!(status, 413, "{refused}");
    // Inside the live data folder (the next backup would copy it), or named through `..`.
    for (inside, says) in [
        (
            server.dir.path().join("backups").join("today"),
            "inside the data folder",
        ),
        (
            server.dir.path().join("new").join("..").join("b"),
            "without `..`",
        ),
    ] {
        let (status, refused) = post_backup(&server, json!({ "path": inside })).await;
        assert_eq!(status, 400, "{refused}");
        assert!(
            refused["message"].as_str().unwrap().contains(says),
            "{refused}"
        );
        assert!(!server.dir.path().join("backups").exists());
        assert!(!server.dir.path().join("new").exists());
    }

    stop.store(true, SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    // The live process kept serving.
    let r = server.post("/Ledger/k0/append", json!(u64::MAX)).await;
    assert_eq!(r.status(), 200);
    drop(server.stop().await);

    // The copy is a store at one commit: each key's state holds exactly the journaled writes.
    let held = {
        let store = RedbStorage::open(&path, &RedbOptions::default()).unwrap();
        let written = written(&store);
        assert!(!written.is_empty());
        for (key, (state, journaled)) in &written {
            assert_eq!(state, journaled, "key {key}");
        }
        let held: u64 = store
            .invocations(None, 100_000)
            .unwrap()
            .len()
            .try_into()
            .unwrap();
        store.close();
        held
    };
    assert_eq!(held, report["invocations"].as_u64().unwrap());

    // Served, it finishes what it holds, each once.
    let dir = tempfile::TempDir::new_in(folder.path()).unwrap();
    std::fs::remove_dir(dir.path()).unwrap();
    std::fs::rename(&path, dir.path()).unwrap();
    let restored = TestServer::start_with(dir, |b| b).await;
    wait_until(Duration::from_secs(60), || async {
        let page: Value = reqwest::get(format!(
            "{}/invocations?status=running&limit=1000",
            restored.admin
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        page["invocations"].as_array().unwrap().is_empty()
    })
    .await;
    let dir = restored.stop().await;
    // The stopped runtime lets go of the folder once its last task has ended.
    let start = std::time::Instant::now();
    let store = loop {
        match RedbStorage::open(dir.path(), &RedbOptions::default()) {
            Err(restate_runtime::storage::OpenError::Locked { .. })
                if start.elapsed() < Duration::from_secs(30) =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            opened => break opened.unwrap(),
        }
    };
    let written = written(&store);
    let mut all: Vec<u64> = Vec::new();
    for (key, (state, journaled)) in written {
        assert_eq!(state, journaled, "key {key}");
        all.extend(state);
    }
    let count = all.len();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), count, "a number was appended twice");
    assert_eq!(count as u64, held);
    store.close();
}
