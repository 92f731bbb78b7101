//! Per-handler metrics on `/metrics`, read by a Prometheus text parser: invocations started,
//! completed by result, retried and paused, labelled with the registered service and handler
//! names, and a latency histogram whose buckets add up; the journal's commit latencies as a
//! histogram, and the deepest key queues by key.

mod common;

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use common::TestServer;
use prometheus_parse::{Scrape, Value};
use restate_runtime::prelude::*;
use serde_json::json;

static FLAKY_ATTEMPTS: AtomicU32 = AtomicU32::new(0);

#[derive(Default)]
pub struct Shop;

#[service]
impl Shop {
    #[handler]
    async fn buy(&self, _ctx: Context<'_>, item: String) -> HandlerResult<String> {
        Ok(item)
    }

    #[handler(name = "refundOrder")]
    async fn refund(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Err(TerminalError::new_with_code(400, "nothing to refund").into())
    }

    /// Suspends twice (the server suspends at once) before it ends.
    #[handler]
    async fn nap(&self, ctx: Context<'_>) -> HandlerResult<()> {
        for _ in 0..2 {
            ctx.sleep(std::time::Duration::from_millis(20)).await?;
        }
        Ok(())
    }

    /// Fails its first attempt, then succeeds.
    #[handler]
    async fn flaky(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        if FLAKY_ATTEMPTS.fetch_add(1, SeqCst) == 0 {
            return Err(anyhow::anyhow!("first attempt fails").into());
        }
        Ok(())
    }
}

fn sample<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<&'a Value> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| &s.value)
}

fn counter(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match sample(scrape, metric, labels) {
        Some(Value::Counter(v) | Value::Untyped(v) | Value::Gauge(v)) => *v,
        other => panic!("{metric} {labels:?}: {other:?}"),
    }
}

/// The count of histogram `metric`, once its buckets are checked to be a histogram's: more
/// than ten, bounds and counts increasing, the last one +Inf.
fn histogram_count(scrape: &Scrape, metric: &str, labels: &[(&str, &str)], text: &str) -> f64 {
    let Some(Value::Histogram(buckets)) = sample(scrape, metric, labels) else {
        panic!("no histogram {metric} {labels:?} in {text}");
    };
    assert!(buckets.len() > 10, "{buckets:?}");
    assert!(
        buckets
            .windows(2)
            .all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count),
        "{buckets:?}"
    );
    let all = buckets.last().unwrap();
    assert!(all.less_than.is_infinite());
    all.count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_are_counted_and_timed_under_their_registered_names() {
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), |b| {
        b.suspend_after(std::time::Duration::ZERO)
    })
    .await;
    for _ in 0..3 {
        let r = reqwest::Client::new()
            .post(server.url("/Shop/nap"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    for item in ["a", "b"] {
        let r = server.post("/Shop/buy", json!(item)).await;
        assert_eq!(r.status(), 200);
    }
    let r = reqwest::Client::new()
        .post(server.url("/Shop/refundOrder"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = reqwest::Client::new()
        .post(server.url("/Shop/flaky"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let (scrape, text) = scrape(&server).await;
    let shop = |handler| [("service", "Shop"), ("handler", handler)];
    let done = "restate_handler_invocations_completed_total";
    let with_result = |handler, result| {
        [
            ("service", "Shop"),
            ("handler", handler),
            ("result", result),
        ]
    };
    assert_eq!(counter(&scrape, done, &with_result("buy", "success")), 2.0);
    assert_eq!(
        counter(&scrape, done, &with_result("refundOrder", "failure")),
        1.0
    );
    assert_eq!(
        counter(&scrape, done, &with_result("flaky", "success")),
        1.0
    );
    // Every registered handler's series are there from the start, at zero until counted.
    assert_eq!(counter(&scrape, done, &with_result("buy", "failure")), 0.0);
    let failed = "restate_handler_invocations_failed_total";
    assert_eq!(counter(&scrape, failed, &shop("refundOrder")), 1.0);
    assert_eq!(counter(&scrape, failed, &shop("buy")), 0.0);
    let paused = "restate_handler_invocations_paused_total";
    assert_eq!(counter(&scrape, paused, &shop("buy")), 0.0);
    let started = "restate_handler_invocations_started_total";
    assert_eq!(counter(&scrape, started, &shop("buy")), 2.0);
    // Woken twice each from a suspension: still three invocations started.
    let suspensions = counter(&scrape, "restate_invocation_suspensions_total", &[]);
    assert!(suspensions >= 6.0, "{text}");
    assert_eq!(counter(&scrape, started, &shop("nap")), 3.0);
    assert_eq!(counter(&scrape, done, &with_result("nap", "success")), 3.0);
    assert_eq!(
        counter(&scrape, "restate_handler_retries_total", &shop("flaky")),
        1.0
    );
    assert_eq!(
        counter(&scrape, "restate_handler_retries_total", &shop("buy")),
        0.0
    );

    let latency = "restate_handler_invocation_duration_seconds";
    assert_eq!(histogram_count(&scrape, latency, &shop("buy"), &text), 2.0);
    drop(server.stop().await);
}

#[derive(Default)]
pub struct Desk;

#[object]
impl Desk {
    /// Holds its key a moment: later invocations on the key queue behind it.
    #[handler]
    async fn hold(&self, _ctx: ObjectContext<'_>, ms: u64) -> HandlerResult<()> {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        Ok(())
    }
}

async fn scrape(server: &TestServer) -> (Scrape, String) {
    // As Prometheus asks: the body is OpenMetrics (`_total` samples under a counter's name,
    // `# EOF`) and is said so, or its classic parser takes the counters for untyped samples.
    let response = reqwest::Client::new()
        .get(format!("{}/metrics", server.admin))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        kind.starts_with("application/openmetrics-text; version=1.0.0"),
        "{kind}"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    (scrape, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_latencies_are_a_histogram_and_the_deepest_key_queues_are_named() {
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), |b| b.bind(Desk)).await;
    // Five on one key, one on another: the first key's queue is the deepest.
    for _ in 0..5 {
        let r = server.post("/Desk/busy/hold/send", json!(2_000)).await;
        assert_eq!(r.status(), 202);
    }
    let r = server.post("/Desk/calm/hold/send", json!(1)).await;
    assert_eq!(r.status(), 202);
    common::wait_until(std::time::Duration::from_secs(30), || async {
        let (scrape, _) = scrape(&server).await;
        sample(
            &scrape,
            "restate_key_queue_depth_top",
            &[("service", "Desk"), ("key", "busy")],
        )
        .is_some_and(|v| matches!(v, Value::Gauge(n) if *n >= 3.0))
    })
    .await;
    let (scrape, text) = scrape(&server).await;
    assert!(
        sample(&scrape, "restate_key_queue_depth_top", &[("key", "calm")]).is_none(),
        "an idle key is not listed: {text}"
    );

    let commits = counter(&scrape, "restate_journal_commits_total", &[]);
    let latency = "restate_journal_commit_latency_seconds";
    let all = histogram_count(&scrape, latency, &[], &text);
    assert!(all >= 1.0, "{text}");
    // Every commit counted is in the histogram (scraped at the same moment).
    assert_eq!(all, commits, "{text}");
    drop(server.stop().await);
}

/// A first start counts wherever it happens: here, of an invocation that waited on disk behind
/// its key through a restart and starts there once the key frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_after_a_restart_behind_a_key_is_counted() {
    let quick = |b: restate_runtime::RuntimeBuilder| b.bind(Desk);
    let server = TestServer::start_with(tempfile::tempdir().unwrap(), quick).await;
    for ms in [1_500, 1] {
        let r = server.post("/Desk/k/hold/send", json!(ms)).await;
        assert_eq!(r.status(), 202);
    }
    let dir = server.stop().await;
    let server = TestServer::start_with(dir, quick).await;
    let started = || async {
        let (scrape, _) = scrape(&server).await;
        let labels = [("service", "Desk"), ("handler", "hold")];
        (
            counter(
                &scrape,
                "restate_handler_invocations_started_total",
                &labels,
            ),
            counter(
                &scrape,
                "restate_handler_invocations_completed_total",
                &[
                    ("service", "Desk"),
                    ("handler", "hold"),
                    ("result", "success"),
                ],
            ),
        )
    };
    common::wait_until(std::time::Duration::from_secs(30), || async {
        started().await.1 == 2.0
    })
    .await;
    // The second had never started: its first start is here, and counted (the first one's
    // attempt, cut short by the stop, may have been counted before it).
    let (started, completed) = started().await;
    assert!(
        (1.0..=completed).contains(&started),
        "{started} of {completed}"
    );
    drop(server.stop().await);
}
