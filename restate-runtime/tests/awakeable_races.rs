//! A handler completes another invocation's awakeable whose id was handed out before the
//! awakeable's journal entry was durable, and a crash took that entry. The completion must
//! wait for the waiter's replay to journal the awakeable again: the completer's attempt writes
//! nothing (not even its own entry) and retries. Both orders of the race are tried (the
//! completer before the waiter's replay, held back by the test, and after it), and a crash
//! right after the completion's commit, on the in-memory store and on a redb data folder:
//! the waiter gets the value once, and the completer completes.

use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use restate_runtime::prelude::*;
use restate_runtime::storage::JournalEntry;
use restate_runtime::testing::TestRuntime;

/// Awakeable ids handed out by waiters, by tag.
static PUBLISHED: LazyLock<Mutex<HashMap<String, String>>> = LazyLock::new(Mutex::default);

/// Tags whose waiters must not go past their start (a replay the test holds back).
static HELD: LazyLock<tokio::sync::watch::Sender<HashSet<String>>> =
    LazyLock::new(|| tokio::sync::watch::channel(HashSet::new()).0);

fn hold(tag: &str, held: bool) {
    HELD.send_modify(|tags| {
        if held {
            tags.insert(tag.to_owned());
        } else {
            tags.remove(tag);
        }
    });
}

#[derive(Default)]
pub struct Races;

#[service]
impl Races {
    /// Waits on an awakeable and hands its id out at once, not journaled: known outside
    /// before the awakeable's entry is durable. An attempt waits first while its tag is held,
    /// then makes a step (a commit of its own, to crash after).
    #[handler]
    async fn wait(&self, ctx: Context<'_>, tag: String) -> HandlerResult<String> {
        let mut held = HELD.subscribe();
        let _ = held.wait_for(|tags| !tags.contains(&tag)).await;
        ctx.run(|| async { Ok(()) }).name("before").await?;
        let (id, value) = ctx.awakeable::<String>();
        PUBLISHED.lock().unwrap().insert(tag, id);
        Ok(value.await?)
    }

    /// Resolves another invocation's awakeable.
    #[handler]
    async fn complete(&self, ctx: Context<'_>, (id, value): (String, String)) -> HandlerResult<()> {
        ctx.awakeable_handle(id).resolve(value).await?;
        Ok(())
    }
}

enum Store {
    Memory,
    Folder(tempfile::TempDir),
}

async fn runtime(store: &Store) -> TestRuntime {
    let mut builder = TestRuntime::builder().bind(Races);
    if let Store::Folder(dir) = store {
        builder = builder.data_dir(dir.path());
    }
    builder.suspend_after(Duration::from_secs(1)).build().await
}

/// The waiter's invocation and first step commit, its awakeable's entry does not (a crash
/// right after the step's commit), and the runtime restarts with the waiter held back when
/// `completer_first`; then a handler completes the awakeable.
async fn race(store: Store, completer_first: bool) {
    let tag = format!(
        "{}-{}",
        matches!(store, Store::Memory),
        if completer_first { "early" } else { "late" }
    );
    let t = runtime(&store).await;
    hold(&tag, true);
    let waiter = t
        .handle()
        .client::<Races>()
        .wait(tag.clone())
        .send()
        .await
        .unwrap()
        .invocation_id();
    t.run_until_idle().await;
    t.crash_after_commits(1);
    hold(&tag, false);
    t.run_until_idle().await;
    assert!(t.crashed(), "crashed after the step's commit");
    let awakeable = PUBLISHED.lock().unwrap()[&tag].clone();
    let view = t.invocation(waiter).expect("the invocation is durable");
    assert_eq!(
        view.run_names(),
        ["before"],
        "no awakeable: {:?}",
        view.journal
    );

    hold(&tag, completer_first);
    t.restart().await;
    if !completer_first {
        t.run_until_idle().await;
        let journal = t.invocation(waiter).unwrap().journal;
        assert!(
            matches!(journal.last(), Some((1, JournalEntry::Awakeable { .. }))),
            "the replay journaled it first: {journal:?}"
        );
    }
    let completer = t
        .handle()
        .client::<Races>()
        .complete((awakeable.clone(), "v".to_owned()))
        .send()
        .await
        .unwrap()
        .invocation_id();
    t.run_until_idle().await;
    if completer_first {
        // Refused as not journaled yet: nothing written, the attempt retries.
        let view = t.invocation(completer).unwrap();
        assert_eq!(view.status(), "running", "{:?}", view.record);
        assert!(view.journal.is_empty(), "{:?}", view.journal);
        let error = view.record.last_error.clone().unwrap_or_default();
        assert!(error.contains("not journaled yet"), "{error}");
        assert_eq!(
            t.invocation(waiter).unwrap().journal.len(),
            1,
            "the step only"
        );
        // The waiter's replay journals the awakeable again, with the same id; the
        // completer's next attempt lands, and a crash right after that commit keeps it.
        hold(&tag, false);
        t.run_until_idle().await;
        assert_eq!(PUBLISHED.lock().unwrap()[&tag], awakeable, "the same id");
        t.crash_after_commits(1);
        t.advance(Duration::from_secs(60)).await;
        assert!(t.crashed());
        t.restart().await;
        let journal = t.invocation(waiter).unwrap().journal;
        assert!(
            journal
                .iter()
                .any(|e| matches!(e, (1, JournalEntry::Awakeable { outcome: Some(_) }))),
            "the completion is the commit the crash came after: {journal:?}"
        );
    }
    t.advance(Duration::from_secs(60)).await;
    let done = t.invocation(waiter).unwrap();
    assert_eq!(done.output::<String>(), Some(Ok("v".to_owned())));
    let completed = t.invocation(completer).unwrap();
    assert_eq!(completed.output::<()>(), Some(Ok(())));
    if !completer_first {
        assert_eq!(completed.record.last_error, None, "never refused");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completer_before_the_waiters_replay_retries_until_it_lands_in_memory() {
    race(Store::Memory, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completer_after_the_waiters_replay_lands_at_once_in_memory() {
    race(Store::Memory, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completer_before_the_waiters_replay_retries_until_it_lands_in_a_data_folder() {
    race(Store::Folder(tempfile::tempdir().unwrap()), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completer_after_the_waiters_replay_lands_at_once_in_a_data_folder() {
    race(Store::Folder(tempfile::tempdir().unwrap()), false).await;
}
