//! The replay check against a backup: it names exactly the invocations a code change breaks
//! (where, and what the journal and the code each hold), none once the change is behind a
//! patch marker, finished ones whose result changes when asked to, and invocations of a
//! handler the binary does not serve; it runs no step and writes nothing.

mod common;

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use common::{TestServer, accepted_id};
use restate_runtime::prelude::*;
use restate_runtime::storage::{
    InvocationRecord, JournalEntry, Outcome, RedbOptions, RedbStorage, Status, Storage, Target,
    WriteOp,
};
use restate_runtime::{InvocationId, Problem, ReplayOptions, RuntimeBuilder};
use serde_json::json;

/// The deployed code: 1 before the change, 2 with it behind a patch marker, 3 without one.
static CODE: AtomicU8 = AtomicU8::new(1);
/// Step bodies executed.
static STEPS: AtomicUsize = AtomicUsize::new(0);
/// The tests change [`CODE`], so they take turns.
static DEPLOYS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Price {
    cents: u64,
}

#[derive(Default)]
pub struct Orders;

#[object]
impl Orders {
    #[handler]
    async fn complete(&self, ctx: ObjectContext<'_>) -> HandlerResult<String> {
        step(&ctx, "charge").await?;
        let reserve = match CODE.load(SeqCst) {
            1 => false,
            2 => ctx.patched("reserve-stock"),
            _ => true,
        };
        if reserve {
            step(&ctx, "reserve").await?;
        }
        ctx.sleep(Duration::from_secs(3600)).await?;
        step(&ctx, "email").await?;
        Ok("done".into())
    }

    #[handler]
    async fn quick(&self, ctx: ObjectContext<'_>) -> HandlerResult<String> {
        step(&ctx, "quick").await?;
        Ok(format!("v{}", CODE.load(SeqCst)))
    }

    /// Writes state and waits; from version 3 it writes another entry and returns at once.
    #[handler]
    async fn tally(&self, ctx: ObjectContext<'_>) -> HandlerResult<()> {
        if CODE.load(SeqCst) >= 3 {
            ctx.set("total", 1);
            return Ok(());
        }
        ctx.set("count", 1);
        ctx.sleep(Duration::from_secs(3600)).await?;
        Ok(())
    }

    /// Two short sleeps joined (a join journals nothing when both succeed), then a wait; version 3
    /// adds a step after the join.
    #[handler]
    async fn fan(&self, ctx: ObjectContext<'_>) -> HandlerResult<()> {
        let short = || ctx.sleep(Duration::from_millis(1));
        ctx.all([short(), short()]).await?;
        if CODE.load(SeqCst) >= 3 {
            step(&ctx, "z").await?;
        }
        ctx.sleep(Duration::from_secs(3600)).await?;
        Ok(())
    }

    /// Takes a typed input (never called here: a delayed send of an older shape is written
    /// straight into a store).
    #[handler]
    async fn priced(&self, _ctx: ObjectContext<'_>, price: Price) -> HandlerResult<u64> {
        Ok(price.cents)
    }

    /// Sleeps a few seconds (longer than a backup takes, however slow the machine), then
    /// takes a step: in a backup taken during the nap, the step is where the journal ends
    /// once the nap is over.
    #[handler]
    async fn nap(&self, ctx: ObjectContext<'_>) -> HandlerResult<()> {
        ctx.sleep(Duration::from_secs(6)).await?;
        step(&ctx, "after-nap").await?;
        Ok(())
    }
}

async fn step(ctx: &ObjectContext<'_>, name: &str) -> Result<(), TerminalError> {
    ctx.run(|| async {
        STEPS.fetch_add(1, SeqCst);
        Ok(())
    })
    .name(name)
    .await
}

/// The check of the folder `dir`; a runtime stopped just now lets go of it once its last task
/// has ended.
async fn check(dir: &std::path::Path, options: ReplayOptions) -> restate_runtime::ReplayReport {
    let start = std::time::Instant::now();
    loop {
        let checked = restate_runtime::Runtime::builder()
            .without_env()
            .data_dir(dir)
            .check_replay(options.clone())
            .await;
        match checked {
            Err(restate_runtime::ReplayCheckError::Build(
                restate_runtime::BuildError::Storage(restate_runtime::storage::OpenError::Locked {
                    ..
                }),
            )) if start.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            checked => return checked.unwrap(),
        }
    }
}

/// Writes `record` as `id`'s into the store in `dir` (closed again).
async fn store_record(dir: &std::path::Path, id: InvocationId, record: &InvocationRecord) {
    let store = RedbStorage::open(dir, &RedbOptions::default()).unwrap();
    store
        .submit(vec![WriteOp::put_invocation(id, record)])
        .await
        .unwrap();
    store.close();
}

/// The problem `report` names for `id`.
fn problem_of(
    report: &restate_runtime::ReplayReport,
    id: InvocationId,
) -> &restate_runtime::ReplayProblem {
    (report.problems.iter())
        .find(|p| p.invocation_id == id)
        .unwrap_or_else(|| panic!("{id} is named: {report}"))
}

fn journal_lengths(dir: &std::path::Path) -> Vec<(InvocationId, usize)> {
    let store = RedbStorage::open(dir, &RedbOptions::default()).unwrap();
    let all = store
        .invocations(None, 1000)
        .unwrap()
        .into_iter()
        .map(|(id, _)| (id, store.journal(&id).unwrap().len()))
        .collect();
    store.close();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_names_exactly_the_invocations_a_change_breaks_and_runs_nothing() {
    let _turn = DEPLOYS.lock().await;
    CODE.store(1, SeqCst);
    let configure = |b: RuntimeBuilder| b.suspend_after(Duration::from_millis(50));
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), configure).await;
    let send = |path: String| reqwest::Client::new().post(server.url(&path)).send();
    let mut waiting = Vec::new();
    for key in ["a", "b", "c"] {
        let id = accepted_id(send(format!("/Orders/{key}/complete/send")).await.unwrap()).await;
        server.wait_status(&id, "suspended").await;
        waiting.push(id);
    }
    for key in ["q1", "q2"] {
        let r = send(format!("/Orders/{key}/quick")).await.unwrap();
        assert_eq!(r.text().await.unwrap(), "\"v1\"");
    }
    let napping = accepted_id(send("/Orders/n/nap/send".into()).await.unwrap()).await;
    server.wait_status(&napping, "suspended").await;
    let folder = tempfile::tempdir().unwrap();
    let backup = folder.path().join("backup");
    let r = reqwest::Client::new()
        .post(format!("{}/backup", server.admin))
        .json(&json!({ "path": backup }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The nap ends in the live process; in the copy it is still suspended.
    server.wait_status(&napping, "completed").await;
    drop(server.stop().await);
    let steps = STEPS.load(SeqCst);
    let before = journal_lengths(&backup);

    // Version 1 replays its own journals.
    let report = check(&backup, ReplayOptions::default().include_completed(true)).await;
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.checked, 6);

    // The change without a marker breaks the three waiting orders, at the entry after the
    // charge, and nothing else.
    CODE.store(3, SeqCst);
    let report = check(&backup, ReplayOptions::default()).await;
    assert_eq!(report.checked, 4, "{report}");
    let mut broken: Vec<String> = report
        .problems
        .iter()
        .map(|p| p.invocation_id.to_string())
        .collect();
    broken.sort();
    waiting.sort();
    assert_eq!(broken, waiting, "{report}");
    for problem in &report.problems {
        assert_eq!(problem.status, "suspended");
        assert!(problem.target.starts_with("Orders/"), "{problem}");
        assert!(problem.version.is_some());
        match &problem.problem {
            Problem::Diverges {
                index,
                journal,
                code,
            } => {
                assert_eq!(*index, 1);
                assert!(journal.starts_with("`sleep`"), "{journal}");
                assert_eq!(code, "run (name `reserve`)");
            }
            other => panic!("{other:?}"),
        }
    }
    // Asked to, it also replays finished ones: their result changed.
    let report = check(&backup, ReplayOptions::default().include_completed(true)).await;
    let changed: Vec<_> = report
        .problems
        .iter()
        .filter(|p| matches!(p.problem, Problem::DifferentResult { .. }))
        .collect();
    assert_eq!(changed.len(), 2, "{report}");
    assert!(
        changed[0].to_string().contains("`\"v3\"`"),
        "{}",
        changed[0]
    );

    // Behind a patch marker, nothing breaks.
    CODE.store(2, SeqCst);
    let report = check(&backup, ReplayOptions::default()).await;
    assert!(report.is_ok(), "{report}");

    // The checks ran no step (not even the nap's next one, past its journal) and wrote
    // nothing.
    assert_eq!(STEPS.load(SeqCst), steps);
    assert_eq!(journal_lengths(&backup), before);

    // An invocation of a handler this binary does not serve is named too.
    let gone: InvocationId = "inv_1gdJBtdVEcM942bjcDmb1c1khoaJe11Hbz".parse().unwrap();
    {
        let store = RedbStorage::open(&backup, &RedbOptions::default()).unwrap();
        let mut record = store.invocations(None, 1).unwrap().remove(0).1;
        record.target = Target {
            service: "Invoices".into(),
            handler: "settle".into(),
            key: None,
        };
        record.status = Status::Runnable;
        let entry = JournalEntry::Run {
            name: "x".into(),
            outcome: Outcome::Success(b"1".to_vec()),
        };
        let record: InvocationRecord = record;
        store
            .submit(vec![
                WriteOp::put_invocation(gone, &record),
                WriteOp::put_journal(gone, 0, &entry),
            ])
            .await
            .unwrap();
        store.close();
    }
    let report = check(&backup, ReplayOptions::default()).await;
    assert_eq!(report.problems.len(), 1, "{report}");
    assert_eq!(report.problems[0].invocation_id, gone);
    assert!(
        matches!(&report.problems[0].problem, Problem::UnknownTarget { reason } if reason.contains("Invoices")),
        "{report}"
    );

    // A delayed send not started yet, whose input the new code cannot read, is named too: it
    // would fail at its first attempt.
    let unreadable: InvocationId = "inv_1gdJBtdVEcM942bjcDmb1c1khoaJe11Hbq".parse().unwrap();
    let mut record = {
        let store = RedbStorage::open(&backup, &RedbOptions::default()).unwrap();
        let record = store.invocations(None, 1).unwrap().remove(0).1;
        store.close();
        record
    };
    record.target = Target {
        service: "Orders".into(),
        handler: "priced".into(),
        key: Some("p".into()),
    };
    record.input = br#"{"amount": 5}"#.to_vec();
    record.status = Status::Scheduled {
        at_ms: u64::MAX / 2,
    };
    store_record(&backup, unreadable, &record).await;
    let report = check(&backup, ReplayOptions::default()).await;
    assert_eq!(report.problems.len(), 2, "{report}");
    let problem = problem_of(&report, unreadable);
    assert!(
        matches!(&problem.problem, Problem::Fails { message } if message.contains("missing field `cents`")),
        "{report}"
    );
    assert_eq!(problem.status, "scheduled");

    // The same, come due and waiting for its key: named with the status the admin API shows.
    record.status = Status::Runnable;
    record.attempts = 0;
    store_record(&backup, unreadable, &record).await;
    let report = check(&backup, ReplayOptions::default()).await;
    let problem = problem_of(&report, unreadable);
    assert_eq!(problem.status, "pending", "{report}");

    // A folder without a store is an error, not an empty pass.
    let missing = restate_runtime::Runtime::builder()
        .without_env()
        .data_dir(folder.path().join("nothing-here"))
        .check_replay(ReplayOptions::default())
        .await;
    assert!(missing.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn divergences_right_before_a_return_or_after_a_join_are_named() {
    let _turn = DEPLOYS.lock().await;
    CODE.store(1, SeqCst);
    let configure = |b: RuntimeBuilder| b.suspend_after(Duration::from_millis(50));
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), configure).await;
    let send = |path: &str| reqwest::Client::new().post(server.url(path)).send();
    let tally = accepted_id(send("/Orders/t/tally/send").await.unwrap()).await;
    let fan = accepted_id(send("/Orders/f/fan/send").await.unwrap()).await;
    server.wait_status(&tally, "suspended").await;
    server.wait_status(&fan, "suspended").await;
    let dir = server.stop().await;
    let report = check(dir.path(), ReplayOptions::default()).await;
    assert!(report.is_ok(), "{report}");

    CODE.store(3, SeqCst);
    let report = check(dir.path(), ReplayOptions::default()).await;
    assert_eq!(report.problems.len(), 2, "{report}");
    for problem in &report.problems {
        let id = problem.invocation_id.to_string();
        match &problem.problem {
            // The write of another entry is seen though the handler returns right after it.
            Problem::Diverges { index: 0, code, .. } if id == tally => {
                assert_eq!(code, "set_state");
            }
            // The join journaled nothing; the check goes on past it.
            Problem::Diverges {
                index: 3,
                journal,
                code,
            } if id == fan => {
                assert!(journal.starts_with("`sleep`"), "{journal}");
                assert_eq!(code, "run (name `z`)");
            }
            other => panic!("{id}: {other:?}"),
        }
    }
}
