//! The n-ary combinators (`all`, `race`, `unordered`, `or_timeout`) take the same branch on
//! replay: each test decides a combinator, then completes the other operations too, restarts
//! the runtime in the middle of the handler, and checks that the replay (where every operation
//! is complete, so an unjournaled choice would go to the first position) kept the decision.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use common::{TestServer, accepted_id, wait_until};
use futures::StreamExt;
use restate_runtime::prelude::*;
use serde_json::{Value, json};

/// Awakeable ids by test tag, published by the handlers for the test to complete.
static IDS: Mutex<Option<HashMap<String, Vec<String>>>> = Mutex::new(None);

fn ids(tag: &str) -> Option<Vec<String>> {
    IDS.lock().unwrap().as_ref()?.get(tag).cloned()
}

#[derive(Default)]
pub struct Combine;

impl Combine {
    /// `n` awakeables and a gate, their ids published under `tag`.
    async fn awakeables<'a>(
        ctx: &Context<'a>,
        tag: &str,
        n: usize,
    ) -> HandlerResult<(
        Vec<DurableFuture<'a, Result<String, TerminalError>>>,
        DurableFuture<'a, Result<String, TerminalError>>,
    )> {
        let mut futures = Vec::new();
        let mut names = Vec::new();
        for _ in 0..n {
            let (id, value) = ctx.awakeable::<String>();
            names.push(id);
            futures.push(value);
        }
        let (gate_id, gate) = ctx.awakeable::<String>();
        names.push(gate_id);
        ctx.run(|| {
            IDS.lock()
                .unwrap()
                .get_or_insert_with(HashMap::new)
                .insert(tag.to_owned(), names.clone());
            async { Ok(()) }
        })
        .name("publish")
        .await?;
        Ok((futures, gate))
    }
}

#[service]
impl Combine {
    #[handler]
    async fn race(&self, ctx: Context<'_>, tag: String) -> HandlerResult<String> {
        let (futures, gate) = Self::awakeables(&ctx, &tag, 3).await?;
        let (winner, value) = ctx.race(futures).await;
        gate.await?;
        Ok(format!("{winner}:{}", value?))
    }

    #[handler]
    async fn all(&self, ctx: Context<'_>, tag: String) -> HandlerResult<String> {
        let (futures, gate) = Self::awakeables(&ctx, &tag, 3).await?;
        let all = ctx.all(futures).await;
        gate.await?;
        Ok(match all {
            Ok(values) => values.join(","),
            Err(e) => format!("failed: {}", e.message()),
        })
    }

    /// A race of operations of two output types, mapped into one.
    #[handler]
    async fn mapped(&self, ctx: Context<'_>, tag: String) -> HandlerResult<String> {
        let (mut futures, gate) = Self::awakeables(&ctx, &tag, 1).await?;
        let text = futures.pop().expect("one");
        let number = ctx.client::<Combine>().slow(60_000).call();
        let (winner, value) = ctx
            .race([
                number.map(|n| n.map(|n| format!("number {n}"))),
                text.map(|t| t.map(|t| format!("text {t}"))),
            ])
            .await;
        gate.await?;
        Ok(format!("{winner}:{}", value?))
    }

    #[handler]
    async fn unordered(&self, ctx: Context<'_>, tag: String) -> HandlerResult<String> {
        let (futures, gate) = Self::awakeables(&ctx, &tag, 3).await?;
        let mut stream = ctx.unordered(futures);
        let mut order = Vec::new();
        for _ in 0..2 {
            let (at, value) = stream.next().await.expect("three items");
            order.push(format!("{at}={}", value?));
        }
        gate.await?;
        let (at, value) = stream.next().await.expect("three items");
        order.push(format!("{at}={}", value?));
        assert!(stream.next().await.is_none());
        Ok(order.join(","))
    }

    #[handler]
    async fn timeout(&self, ctx: Context<'_>, tag: String) -> HandlerResult<String> {
        let (mut futures, gate) = Self::awakeables(&ctx, &tag, 1).await?;
        let bounded = futures
            .pop()
            .expect("one")
            .or_timeout(Duration::from_millis(200));
        let outcome = match bounded.await {
            Ok(v) => format!("value {v}"),
            Err(e) => format!("{} {}", e.code(), e.message()),
        };
        gate.await?;
        Ok(outcome)
    }

    /// Every combinator over calls, without restarts: the plain results.
    #[handler]
    async fn calls(&self, ctx: Context<'_>) -> HandlerResult<Value> {
        let me = ctx.client::<Combine>();
        let all = ctx.all((1..=3).map(|n| me.double(n).call())).await?;
        let failed = ctx
            .all([me.double(1).call(), me.fail(7).call(), me.double(2).call()])
            .await
            .unwrap_err();
        let (winner, fast) = ctx.race([me.slow(300).call(), me.slow(0).call()]).await;
        let mut stream = ctx.unordered([me.slow(300).call(), me.slow(1).call()]);
        let mut order = Vec::new();
        while let Some((at, value)) = stream.next().await {
            order.push((at, value?));
        }
        let late = me
            .slow(5_000)
            .call()
            .or_timeout(Duration::from_millis(50))
            .await;
        let early = me
            .slow(0)
            .call()
            .or_timeout(Duration::from_secs(60))
            .await?;
        Ok(json!({
            "all": all,
            "failed": [failed.code(), failed.message()],
            "race": [winner, fast?],
            "unordered": order,
            "late": late.unwrap_err().code(),
            "early": early,
        }))
    }

    #[handler]
    async fn double(&self, _ctx: Context<'_>, n: u64) -> HandlerResult<u64> {
        Ok(n * 2)
    }

    #[handler]
    async fn fail(&self, _ctx: Context<'_>, n: u64) -> HandlerResult<u64> {
        Err(TerminalError::new_with_code(422, format!("no {n}")).into())
    }

    #[handler]
    async fn slow(&self, _ctx: Context<'_>, ms: u64) -> HandlerResult<u64> {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(ms)
    }
}

async fn resolve(s: &TestServer, id: &str, value: &str) {
    let r = s
        .post(&format!("/restate/a/{id}/resolve"), json!(value))
        .await;
    assert!(r.status().is_success(), "{}", r.status());
}

async fn reject(s: &TestServer, id: &str, message: &str) {
    let r = reqwest::Client::new()
        .post(s.url(&format!("/restate/a/{id}/reject")))
        .body(message.to_owned())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

/// Starts `handler` with a fresh tag; returns the invocation id and the awakeable ids.
async fn start(s: &TestServer, handler: &str) -> (String, Vec<String>) {
    let tag = format!("{handler}-{}", rand_tag());
    let id = accepted_id(
        s.post(&format!("/Combine/{handler}/send"), json!(tag))
            .await,
    )
    .await;
    let mut found = None;
    wait_until(Duration::from_secs(30), || {
        found = ids(&tag);
        std::future::ready(found.is_some())
    })
    .await;
    (id, found.unwrap())
}

fn rand_tag() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Waits until the invocation's journal holds `n` combinator decisions; returns their winners.
async fn decisions(s: &TestServer, id: &str, n: usize) -> Vec<u64> {
    let mut winners = Vec::new();
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let view = s.inspect(id).await;
        winners = view["journal"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["kind"] == "select")
            .map(|e| e["winner"].as_u64().unwrap())
            .collect();
        if winners.len() >= n {
            return winners;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{id} made {} decisions, not {n}", winners.len());
}

/// Restarts on the same data folder, with suspension after 50 ms so that waits also suspend.
async fn restart(s: TestServer) -> TestServer {
    let dir = s.stop().await;
    TestServer::start_with(dir, |b| b.suspend_after(Duration::from_millis(50))).await
}

#[tokio::test]
async fn race_replays_the_winner_after_a_restart() {
    let s = TestServer::start().await;
    let (id, a) = start(&s, "race").await;
    resolve(&s, &a[1], "second").await;
    assert_eq!(decisions(&s, &id, 1).await, [1]);
    // Now every branch is complete: a replay that decided again would pick position 0.
    resolve(&s, &a[0], "first").await;
    reject(&s, &a[2], "third").await;
    let s = restart(s).await;
    resolve(&s, &a[3], "go").await;
    assert_eq!(s.attach(&id).await, (200, json!("1:second")));
    assert_eq!(decisions(&s, &id, 1).await, [1], "decided once");
    s.stop().await;
}

#[tokio::test]
async fn mapped_operations_of_two_types_race_and_replay_the_winner() {
    let s = TestServer::start().await;
    let (id, a) = start(&s, "mapped").await;
    resolve(&s, &a[0], "first").await;
    assert_eq!(decisions(&s, &id, 1).await, [1]);
    let s = restart(s).await;
    resolve(&s, &a[1], "go").await;
    assert_eq!(s.attach(&id).await, (200, json!("1:text first")));
    assert_eq!(decisions(&s, &id, 1).await, [1], "decided once");
    s.stop().await;
}

#[tokio::test]
async fn all_replays_the_first_failure_after_a_restart() {
    let s = TestServer::start().await;
    let (id, a) = start(&s, "all").await;
    resolve(&s, &a[1], "fine").await;
    reject(&s, &a[2], "the third failed first").await;
    assert_eq!(decisions(&s, &id, 1).await, [2]);
    reject(&s, &a[0], "the first failed later").await;
    let s = restart(s).await;
    resolve(&s, &a[3], "go").await;
    assert_eq!(
        s.attach(&id).await,
        (200, json!("failed: the third failed first"))
    );
    s.stop().await;
}

#[tokio::test]
async fn all_gives_every_value_in_order() {
    let s = TestServer::start().await;
    let (id, a) = start(&s, "all").await;
    for (at, value) in [(2, "c"), (0, "a"), (1, "b")] {
        resolve(&s, &a[at], value).await;
    }
    resolve(&s, &a[3], "go").await;
    assert_eq!(s.attach(&id).await, (200, json!("a,b,c")));
    assert!(
        decisions(&s, &id, 0).await.is_empty(),
        "success journals no decision"
    );
    s.stop().await;
}

#[tokio::test]
async fn unordered_replays_the_completion_order_after_a_restart() {
    let s = TestServer::start().await;
    let (id, a) = start(&s, "unordered").await;
    resolve(&s, &a[2], "z").await;
    assert_eq!(decisions(&s, &id, 1).await, [2]);
    resolve(&s, &a[0], "x").await;
    assert_eq!(decisions(&s, &id, 2).await, [2, 0]);
    // The handler waits at the gate with one item left; that one completes too.
    resolve(&s, &a[1], "y").await;
    let s = restart(s).await;
    resolve(&s, &a[3], "go").await;
    assert_eq!(s.attach(&id).await, (200, json!("2=z,0=x,1=y")));
    assert_eq!(decisions(&s, &id, 3).await, [2, 0, 1]);
    s.stop().await;
}

#[tokio::test]
async fn or_timeout_replays_the_timeout_after_a_restart() {
    let s = TestServer::start().await;
    let (id, a) = start(&s, "timeout").await;
    // The timer (position 1) wins; then the awakeable completes too.
    assert_eq!(decisions(&s, &id, 1).await, [1]);
    resolve(&s, &a[0], "too late").await;
    let s = restart(s).await;
    resolve(&s, &a[1], "go").await;
    let (status, body) = s.attach(&id).await;
    assert_eq!(status, 200);
    let text = body.as_str().unwrap();
    assert!(text.starts_with("408 timed out after"), "{text}");
    s.stop().await;
}

#[tokio::test]
async fn combinators_over_calls() {
    let s = TestServer::start().await;
    let r = reqwest::Client::new()
        .post(s.url("/Combine/calls"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["all"], json!([2, 4, 6]));
    assert_eq!(body["failed"], json!([422, "no 7"]));
    assert_eq!(body["race"], json!([1, 0]));
    assert_eq!(body["unordered"], json!([[1, 1], [0, 300]]));
    assert_eq!(body["late"], json!(408));
    assert_eq!(body["early"], json!(0));
    s.stop().await;
}

#[derive(Default)]
pub struct Slow;

#[service]
impl Slow {
    #[handler]
    async fn nap(&self, ctx: Context<'_>, ms: u64) -> HandlerResult<u64> {
        ctx.sleep(Duration::from_millis(ms)).await?;
        Ok(ms)
    }

    /// Bounds the wait for an hour-long nap by `ms`, suspending in between.
    #[handler]
    async fn bounded(&self, ctx: Context<'_>, ms: u64) -> HandlerResult<u16> {
        let long = ctx.client::<Slow>().nap(3_600_000).send();
        let code = match long.attach().or_timeout(Duration::from_millis(ms)).await {
            Ok(_) => 200,
            Err(e) => e.code(),
        };
        long.cancel();
        Ok(code)
    }
}

#[tokio::test]
async fn or_timeout_over_a_pending_attach_times_out_while_suspended() {
    let s = TestServer::start_with(tempfile::tempdir().unwrap(), |b| {
        b.suspend_after(Duration::from_millis(1))
    })
    .await;
    for ms in [5, 20, 50] {
        let code = tokio::time::timeout(
            Duration::from_secs(30),
            s.handle.client::<Slow>().bounded(ms).call(),
        )
        .await
        .expect("times out within 30 s")
        .unwrap();
        assert_eq!(code, 408);
    }
    s.stop().await;
}
