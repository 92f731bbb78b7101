//! Virtual objects: exact counts under concurrency, per-key order, state operations, the
//! self-call deadlock guard, and durable sleep across a restart.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{TestServer, wait_until};
use restate_runtime::prelude::*;
use serde_json::json;

static WAKES: AtomicU32 = AtomicU32::new(0);

#[derive(Default)]
pub struct Counter;

#[object]
impl Counter {
    #[handler]
    async fn add(&self, ctx: ObjectContext<'_>, n: u64) -> HandlerResult<u64> {
        let count = ctx.get::<u64>("count").await?.unwrap_or(0) + n;
        ctx.set("count", count);
        Ok(count)
    }

    #[handler]
    async fn get(&self, ctx: SharedObjectContext<'_>) -> HandlerResult<u64> {
        Ok(ctx.get::<u64>("count").await?.unwrap_or(0))
    }

    #[handler]
    async fn append(&self, ctx: ObjectContext<'_>, item: u32) -> HandlerResult<()> {
        let mut list = ctx.get::<Vec<u32>>("list").await?.unwrap_or_default();
        list.push(item);
        ctx.set("list", list);
        Ok(())
    }

    #[handler]
    async fn list(&self, ctx: SharedObjectContext<'_>) -> HandlerResult<Vec<u32>> {
        Ok(ctx.get::<Vec<u32>>("list").await?.unwrap_or_default())
    }

    /// Sends `n` messages to one key, in order.
    #[handler]
    async fn fan(&self, ctx: ObjectContext<'_>, n: u32) -> HandlerResult<()> {
        let target = ctx.object::<Counter>("ordered");
        for i in 0..n {
            target.append(i).send();
        }
        Ok(())
    }

    #[handler]
    async fn selfcall(&self, ctx: ObjectContext<'_>) -> HandlerResult<u64> {
        let me = ctx.object::<Counter>(ctx.key());
        Ok(me.add(1).call().await?)
    }

    #[handler]
    async fn states(
        &self,
        ctx: ObjectContext<'_>,
    ) -> HandlerResult<(Vec<String>, Option<String>, Vec<String>)> {
        ctx.set("b", "2");
        ctx.set("a", "1");
        ctx.set("c", "3");
        ctx.clear("c");
        let keys = ctx.state_keys().await?;
        let a = ctx.get::<String>("a").await?;
        ctx.clear_all();
        Ok((keys, a, ctx.state_keys().await?))
    }

    #[handler]
    async fn nap(&self, ctx: ObjectContext<'_>, ms: u64) -> HandlerResult<()> {
        ctx.sleep(Duration::from_millis(ms)).await?;
        WAKES.fetch_add(1, Ordering::SeqCst);
        ctx.set("woke", true);
        Ok(())
    }

    #[handler]
    async fn woke(&self, ctx: SharedObjectContext<'_>) -> HandlerResult<bool> {
        Ok(ctx.get::<bool>("woke").await?.unwrap_or(false))
    }
}

#[tokio::test]
async fn concurrent_increments_on_one_key_are_exact() {
    let s = TestServer::start().await;
    let handle = s.handle.clone();
    let calls = (0..1000).map(|_| {
        let h = handle.clone();
        tokio::spawn(async move { h.object::<Counter>("hot").add(1).call().await })
    });
    let mut seen = Vec::new();
    for c in calls {
        seen.push(c.await.unwrap().unwrap());
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=1000).collect::<Vec<u64>>(),
        "each increment saw its own count"
    );
    let total = handle.object::<Counter>("hot").get().call().await.unwrap();
    assert_eq!(total, 1000);
    s.stop().await;
}

#[tokio::test]
async fn many_keys_over_http_are_each_exact() {
    let s = TestServer::start().await;
    let client = reqwest::Client::new();
    let calls = (0..100).flat_map(|k| (0..10).map(move |_| k)).map(|k| {
        client
            .post(s.url(&format!("/Counter/key%20{k}/add")))
            .json(&1)
            .send()
    });
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap().status(), 200);
    }
    for k in 0..100 {
        let r = client
            .get(s.url(&format!("/Counter/key%20{k}/get")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.json::<u64>().await.unwrap(), 10, "key {k}");
    }
    // Once idle and durable, the keys leave memory (their state is read from the store).
    let metrics = format!("{}/metrics", s.admin);
    wait_until(Duration::from_secs(30), || async {
        let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
        text.lines().any(|l| l == "restate_key_lanes 0")
    })
    .await;
    let r = client
        .post(s.url("/Counter/key%207/add"))
        .json(&1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<u64>().await.unwrap(), 11);
    s.stop().await;
}

#[tokio::test]
async fn messages_to_one_key_run_in_send_order() {
    let s = TestServer::start().await;
    let counter = |k: &str| s.handle.object::<Counter>(k);
    counter("sender").fan(100).call().await.unwrap();
    common::wait_until(Duration::from_secs(30), || async {
        counter("ordered").list().call().await.unwrap().len() == 100
    })
    .await;
    assert_eq!(
        counter("ordered").list().call().await.unwrap(),
        (0..100).collect::<Vec<u32>>()
    );
    s.stop().await;
}

#[tokio::test]
async fn state_operations_and_self_call_guard() {
    let s = TestServer::start().await;
    let counter = s.handle.object::<Counter>("st");
    let (keys, a, after) = counter.states().call().await.unwrap();
    assert_eq!(keys, vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(a.as_deref(), Some("1"));
    assert!(after.is_empty());
    let err = counter.selfcall().call().await.unwrap_err();
    assert!(err.to_string().contains("deadlock"), "{err}");
    s.stop().await;
}

#[tokio::test]
async fn a_sleep_survives_restart_and_fires_once() {
    let s = TestServer::start().await;
    let r = reqwest::Client::new()
        .post(s.url("/Counter/sleeper/nap/send"))
        .json(&json!(5000))
        .send()
        .await
        .unwrap();
    let id = r.json::<serde_json::Value>().await.unwrap()["invocationId"]
        .as_str()
        .unwrap()
        .to_owned();
    // Stop once the timer is journaled.
    common::wait_until(Duration::from_secs(20), || async {
        s.inspect(&id).await["journal"][0]["kind"] == "sleep"
    })
    .await;
    let before = WAKES.load(Ordering::SeqCst);
    let dir = s.stop().await;
    assert_eq!(
        WAKES.load(Ordering::SeqCst),
        before,
        "stopped before waking"
    );
    let s = TestServer::start_with(dir, |b| b).await;
    let counter = s.handle.object::<Counter>("sleeper");
    common::wait_until(Duration::from_secs(30), || async {
        counter.woke().call().await.unwrap()
    })
    .await;
    assert_eq!(WAKES.load(Ordering::SeqCst), before + 1);
    s.stop().await;
}
