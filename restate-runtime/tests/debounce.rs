//! Debounce on the virtual clock: a burst runs once, with its last input, a period after its
//! last arrival; `max_wait` bounds the delay under a continuous stream; keys have bursts of
//! their own; the others complete superseded with the output (or the error) of the one that
//! ran, as callers see it too (a handler's call, the ingress with `x-restate-superseded-by`);
//! a cancelled or killed arrival leaves its burst (the latest of the others runs for a gone
//! leader); and a crash, or downtime past the close, keeps the burst.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use restate_runtime::prelude::*;
use restate_runtime::testing::{RunFault, TestRuntime};

const SECOND: Duration = Duration::from_secs(1);

/// A run: the invoice, its input's number, and when (virtual seconds since the start).
type Run = (String, u32, u64);

/// What each run saw, by invocation (a replay writes the same again).
#[derive(Default, Clone)]
pub struct Invoices {
    ran: Arc<Mutex<BTreeMap<String, Run>>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Change {
    invoice: String,
    n: u32,
}

fn change(invoice: &str, n: u32) -> Change {
    Change {
        invoice: invoice.into(),
        n,
    }
}

impl Invoices {
    fn invoice(change: &Change) -> &str {
        &change.invoice
    }

    async fn record(&self, ctx: &Context<'_>, change: &Change) -> HandlerResult<String> {
        let at = ctx.now().await?.duration_since(UNIX_EPOCH)?.as_secs();
        let start = TestRuntime::default_start()
            .duration_since(UNIX_EPOCH)?
            .as_secs();
        self.ran.lock().unwrap().insert(
            ctx.invocation_id().to_string(),
            (change.invoice.clone(), change.n, at - start),
        );
        Ok(format!("{}#{}", change.invoice, change.n))
    }

    /// The runs, in the order of their times.
    fn runs(&self) -> Vec<Run> {
        let mut runs: Vec<_> = self.ran.lock().unwrap().values().cloned().collect();
        runs.sort_by_key(|(invoice, n, at)| (*at, invoice.clone(), *n));
        runs
    }
}

#[service]
impl Invoices {
    /// Recomputes an invoice once its changes have stopped for 30 s (at most 2 min late).
    #[handler(debounce(key = Self::invoice, period = "30s", max_wait = "2m"))]
    async fn recompute(&self, ctx: Context<'_>, change: Change) -> HandlerResult<String> {
        self.record(&ctx, &change).await
    }

    /// One burst for every invocation; fails terminally for 13.
    #[handler(debounce(period = "10s"))]
    async fn refresh(&self, ctx: Context<'_>, n: u32) -> HandlerResult<String> {
        if n == 13 {
            return Err(TerminalError::new_with_code(422, "unlucky").into());
        }
        self.record(&ctx, &change("all", n)).await
    }

    /// One burst for every invocation, closing half a second after its latest arrival.
    #[handler(debounce(period = "500ms"))]
    async fn quick(&self, ctx: Context<'_>, n: u32) -> HandlerResult<String> {
        self.record(&ctx, &change("quick", n)).await
    }

    /// Takes an hour once chosen.
    #[handler(debounce(period = "10s"))]
    async fn slow(&self, ctx: Context<'_>, n: u32) -> HandlerResult<u32> {
        ctx.sleep(Duration::from_secs(3600)).await?;
        Ok(n)
    }

    /// Calls `recompute` and answers what it answered.
    #[handler]
    async fn relay(&self, ctx: Context<'_>, change: Change) -> HandlerResult<String> {
        Ok(ctx.client::<Invoices>().recompute(change).call().await?)
    }
}

async fn runtime(invoices: &Invoices) -> TestRuntime {
    TestRuntime::builder().bind(invoices.clone()).build().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_runs_once_with_its_last_input_a_period_after_its_last_arrival() {
    let invoices = Invoices::default();
    let t = runtime(&invoices).await;
    let client = t.handle().client::<Invoices>();
    let mut sent = Vec::new();
    for n in 0..10 {
        sent.push(client.recompute(change("inv-1", n)).send().await.unwrap());
        t.advance(SECOND).await;
    }
    t.advance(20 * SECOND).await;
    assert!(invoices.runs().is_empty(), "quiet for 21 s only: not yet");
    t.advance(10 * SECOND).await;
    // The last arrived at 9 s: 30 s later it ran, once.
    assert_eq!(invoices.runs(), [("inv-1".to_string(), 9, 39)]);
    let ran = sent[9].invocation_id();
    assert_eq!(t.invocation(ran).unwrap().superseded_by(), None);
    for handle in &sent[..9] {
        let view = t.invocation(handle.invocation_id()).unwrap();
        assert_eq!(view.status(), "completed");
        assert_eq!(view.superseded_by(), Some(ran));
        assert_eq!(view.output::<String>().unwrap().unwrap(), "inv-1#9");
    }
    // A later burst is a burst of its own.
    client.recompute(change("inv-1", 10)).send().await.unwrap();
    t.advance(31 * SECOND).await;
    assert_eq!(invoices.runs().len(), 2);
    assert_eq!(invoices.runs()[1].1, 10);
    // Closed, a key's burst keeps no state.
    let bucket = serde_json::to_string(&("Invoices/recompute", "inv-1")).unwrap();
    assert!(t.state_keys("restate.Debouncer", &bucket).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_a_thousand_at_one_instant_runs_the_latest_arrival_once() {
    let invoices = Invoices::default();
    let t = runtime(&invoices).await;
    let client = t.handle().client::<Invoices>();
    let mut sent = Vec::new();
    for n in 0..1000 {
        sent.push(client.recompute(change("inv-1", n)).send().await.unwrap());
    }
    t.run_until_idle().await;
    t.advance(31 * SECOND).await;
    assert_eq!(invoices.runs(), [("inv-1".to_string(), 999, 30)]);
    let ran = sent[999].invocation_id();
    let superseded = sent
        .iter()
        .filter(|h| t.invocation(h.invocation_id()).unwrap().superseded_by() == Some(ran))
        .count();
    assert_eq!(superseded, 999);
}

#[tokio::test(flavor = "multi_thread")]
async fn max_wait_bounds_the_delay_under_a_continuous_stream() {
    let invoices = Invoices::default();
    let t = runtime(&invoices).await;
    let client = t.handle().client::<Invoices>();
    // One change every 10 s for 10 minutes: never quiet for 30 s.
    for n in 0..60 {
        client.recompute(change("inv-1", n)).send().await.unwrap();
        t.advance(10 * SECOND).await;
    }
    t.advance(60 * SECOND).await;
    let runs = invoices.runs();
    // Each burst closed 2 minutes after its first arrival, with the latest one then.
    let expected: Vec<Run> = (1..=5)
        .map(|k| ("inv-1".to_string(), 12 * k - 1, 120 * k as u64))
        .collect();
    assert_eq!(runs, expected);
    // No arrival waited longer than max_wait for the run that covers it.
    for n in 0..60u64 {
        let covering = runs.iter().find(|(_, _, at)| *at >= n * 10).unwrap();
        assert!(covering.2 - n * 10 <= 120, "arrival {n} waited too long");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_key_has_a_burst_of_its_own() {
    let invoices = Invoices::default();
    let t = runtime(&invoices).await;
    let client = t.handle().client::<Invoices>();
    for n in 0..3 {
        client.recompute(change("inv-1", n)).send().await.unwrap();
        client
            .recompute(change("inv-2", n + 10))
            .send()
            .await
            .unwrap();
        t.advance(SECOND).await;
    }
    t.advance(40 * SECOND).await;
    assert_eq!(
        invoices.runs(),
        [("inv-1".to_string(), 2, 32), ("inv-2".to_string(), 12, 32)]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_of_a_superseded_invocation_get_what_the_one_that_ran_answered() {
    let invoices = Invoices::default();
    let t = runtime(&invoices).await;
    let client = t.handle().client::<Invoices>();
    let mut relays = Vec::new();
    for n in 0..3 {
        relays.push(client.relay(change("inv-1", n)).send().await.unwrap());
        t.advance(SECOND).await;
    }
    t.advance(31 * SECOND).await;
    for relay in &relays {
        let view = t.invocation(relay.invocation_id()).unwrap();
        assert_eq!(view.output::<String>().unwrap().unwrap(), "inv-1#2");
    }
    // A terminal error of the one that ran is every superseded one's error too.
    let failed: Vec<_> = futures::future::join_all([12, 13].map(|n| client.refresh(n).send()))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    t.advance(11 * SECOND).await;
    for handle in &failed {
        let view = t.invocation(handle.invocation_id()).unwrap();
        let error = view.output::<String>().unwrap().unwrap_err();
        assert_eq!((error.code(), error.message()), (422, "unlucky"));
    }
    let superseded = failed
        .iter()
        .filter(|h| {
            t.invocation(h.invocation_id())
                .unwrap()
                .superseded_by()
                .is_some()
        })
        .count();
    assert_eq!(superseded, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_or_killed_arrival_leaves_its_burst() {
    let invoices = Invoices::default();
    let t = runtime(&invoices).await;
    let client = t.handle().client::<Invoices>();
    let mut sent = Vec::new();
    for n in 0..4 {
        sent.push(client.recompute(change("inv-1", n)).send().await.unwrap());
        t.advance(SECOND).await;
    }
    // The leader (the latest) is cancelled: the latest of the others runs in its place.
    t.handle().cancel(sent[3].invocation_id()).await.unwrap();
    t.run_until_idle().await;
    // A superseded one is killed: it ends, the burst goes on without it.
    t.handle().kill(sent[0].invocation_id()).await.unwrap();
    t.advance(40 * SECOND).await;
    assert_eq!(invoices.runs(), [("inv-1".to_string(), 2, 33)]);
    for gone in [&sent[3], &sent[0]] {
        let view = t.invocation(gone.invocation_id()).unwrap();
        assert_eq!(view.output::<String>().unwrap().unwrap_err().code(), 409);
        assert_eq!(view.superseded_by(), None);
    }
    let second = t.invocation(sent[1].invocation_id()).unwrap();
    assert_eq!(second.superseded_by(), Some(sent[2].invocation_id()));
    // Every arrival gone: the burst is over, and the next one opens a new one.
    let alone = client.recompute(change("inv-1", 7)).send().await.unwrap();
    t.run_until_idle().await;
    t.handle().cancel(alone.invocation_id()).await.unwrap();
    t.advance(40 * SECOND).await;
    assert_eq!(
        invoices.runs().len(),
        1,
        "nothing ran for the cancelled burst"
    );
    client.recompute(change("inv-1", 8)).send().await.unwrap();
    t.advance(40 * SECOND).await;
    assert_eq!(invoices.runs().last().unwrap().1, 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chosen_arrival_gone_before_it_starts_hands_the_run_to_the_latest_other() {
    let invoices = Invoices::default();
    let t = runtime(&invoices).await;
    let client = t.handle().client::<Invoices>();
    let mut sent = Vec::new();
    for n in 0..3 {
        sent.push(client.recompute(change("inv-1", n)).send().await.unwrap());
        t.advance(SECOND).await;
    }
    // The close is held back (its clock read fails once: it waits to retry, holding the
    // burst's key) and the chosen one is killed meanwhile, so its leave comes after the close
    // has told it to run.
    // (At 30 s the close, armed by the first arrival, finds the burst grown and re-arms.)
    t.advance(28 * SECOND).await;
    t.fail_run("now", 1, RunFault::Retryable);
    t.advance(SECOND).await; // to the close: 30 s after the last arrival, at 2 s
    assert!(invoices.runs().is_empty());
    t.handle().kill(sent[2].invocation_id()).await.unwrap();
    t.run_until_idle().await;
    t.advance(60 * SECOND).await;
    let runs = invoices.runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].1, 1, "the latest of the others ran");
    let first = t.invocation(sent[0].invocation_id()).unwrap();
    assert_eq!(first.superseded_by(), Some(sent[1].invocation_id()));
    assert_eq!(first.output::<String>().unwrap().unwrap(), "inv-1#1");
    let killed = t.invocation(sent[2].invocation_id()).unwrap();
    assert_eq!(killed.output::<String>().unwrap().unwrap_err().code(), 409);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_cancelled_while_it_waits_for_the_one_that_runs_is_cancelled_not_superseded() {
    let invoices = Invoices::default();
    let t = runtime(&invoices).await;
    let client = t.handle().client::<Invoices>();
    let waiting = client.slow(1).send().await.unwrap();
    let chosen = client.slow(2).send().await.unwrap();
    let other = client.slow(3).send().await.unwrap();
    t.run_until_idle().await;
    t.handle().cancel(other.invocation_id()).await.unwrap();
    t.advance(11 * SECOND).await;
    // The latest was cancelled: the one before it runs (an hour); the first waits for it,
    // then is cancelled.
    let chosen_view = t.invocation(chosen.invocation_id()).unwrap();
    assert_ne!(chosen_view.status(), "completed", "the chosen one sleeps");
    let first = t.invocation(waiting.invocation_id()).unwrap();
    assert_ne!(first.status(), "completed", "the first waits for it");
    t.handle().cancel(waiting.invocation_id()).await.unwrap();
    t.run_until_idle().await;
    let cancelled = t.invocation(waiting.invocation_id()).unwrap();
    assert_eq!(cancelled.superseded_by(), None);
    assert_eq!(cancelled.output::<u32>().unwrap().unwrap_err().code(), 409);
    t.advance(3600 * SECOND).await;
    let ran = t.invocation(chosen.invocation_id()).unwrap();
    assert_eq!(ran.output::<u32>().unwrap().unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_or_downtime_past_the_close_keeps_the_burst() {
    let invoices = Invoices::default();
    let t = runtime(&invoices).await;
    let client = t.handle().client::<Invoices>();
    for n in 0..3 {
        client.recompute(change("inv-1", n)).send().await.unwrap();
        t.advance(SECOND).await;
    }
    t.restart().await;
    for n in 3..5 {
        client.recompute(change("inv-1", n)).send().await.unwrap();
        t.advance(SECOND).await;
    }
    t.advance(40 * SECOND).await;
    assert_eq!(invoices.runs(), [("inv-1".to_string(), 4, 34)]);

    // Down for an hour while a burst was open: it closes at the restart, once.
    for n in 10..13 {
        client.recompute(change("inv-2", n)).send().await.unwrap();
    }
    t.run_until_idle().await;
    t.restart_after(Duration::from_secs(3600)).await;
    t.advance(60 * SECOND).await;
    let runs = invoices.runs();
    let inv2: Vec<_> = runs.iter().filter(|r| r.0 == "inv-2").collect();
    assert_eq!(inv2.len(), 1, "{runs:?}");
    assert_eq!(inv2[0].1, 12);
}

/// An arrival accepted just before a crash, whose gate runs only after the restart (when
/// its burst's `fire` is overdue too, in either order): it is of the burst it was accepted
/// in, which runs once, with it. The same for a delayed send that fell due while down.
#[tokio::test(flavor = "multi_thread")]
async fn an_arrival_accepted_before_a_crash_stays_in_its_burst_after_downtime() {
    let invoices = Invoices::default();
    let t = runtime(&invoices).await;
    let client = t.handle().client::<Invoices>();
    let keys: Vec<String> = (0..8).map(|k| format!("inv-{k}")).collect();
    for key in &keys {
        client.recompute(change(key, 1)).send().await.unwrap();
        client
            .recompute(change(&format!("{key}-delayed"), 1))
            .send()
            .await
            .unwrap();
        client
            .recompute(change(&format!("{key}-delayed"), 2))
            .send_after(25 * SECOND)
            .await
            .unwrap();
    }
    t.run_until_idle().await;
    t.advance(20 * SECOND).await;
    for key in &keys {
        client.recompute(change(key, 2)).send().await.unwrap();
    }
    // Down from 20 s to 80 s: the bursts closed at 50 s and 55 s, by acceptance times.
    t.restart_after(60 * SECOND).await;
    t.advance(60 * SECOND).await;
    let runs = invoices.runs();
    for key in &keys {
        for key in [key.clone(), format!("{key}-delayed")] {
            let mine: Vec<_> = runs.iter().filter(|r| r.0 == key).collect();
            assert_eq!(mine.len(), 1, "{key}: one burst, one run: {runs:?}");
            assert_eq!(mine[0].1, 2, "{key}: with the last input: {runs:?}");
            assert!(
                (80..=82).contains(&mine[0].2),
                "{key}: at the restart: {runs:?}"
            );
        }
    }
}

/// Arrivals accepted after a restart that came past an open burst's close are a burst of
/// their own: the overdue one runs at the restart with its own last input, the new one a
/// period later with its.
#[tokio::test(flavor = "multi_thread")]
async fn arrivals_after_a_restart_past_the_close_are_a_burst_of_their_own() {
    let invoices = Invoices::default();
    let t = runtime(&invoices).await;
    let client = t.handle().client::<Invoices>();
    let mut sent = Vec::new();
    for n in 0..3 {
        sent.push(client.recompute(change("inv-1", n)).send().await.unwrap());
        t.advance(SECOND).await;
    }
    t.run_until_idle().await;
    // Down from 3 s to 63 s: the burst closed at 32 s.
    t.restart_after(60 * SECOND).await;
    for n in 3..8 {
        sent.push(client.recompute(change("inv-1", n)).send().await.unwrap());
    }
    t.run_until_idle().await;
    // While the overdue burst has not closed, the next one's leader and a member leave it.
    t.handle().cancel(sent[7].invocation_id()).await.unwrap();
    t.handle().kill(sent[3].invocation_id()).await.unwrap();
    t.advance(60 * SECOND).await;
    let runs = invoices.runs();
    assert_eq!(runs.len(), 2, "two bursts, two runs: {runs:?}");
    assert_eq!(
        runs[0].1, 2,
        "the overdue burst with its last input: {runs:?}"
    );
    assert!((63..=65).contains(&runs[0].2), "at the restart: {runs:?}");
    assert_eq!(runs[1], ("inv-1".to_string(), 6, 93), "{runs:?}");
    let by = |i: usize| {
        t.invocation(sent[i].invocation_id())
            .unwrap()
            .superseded_by()
    };
    for i in [0, 1] {
        assert_eq!(by(i), Some(sent[2].invocation_id()));
    }
    for i in [4, 5] {
        assert_eq!(by(i), Some(sent[6].invocation_id()));
    }
    for gone in [3, 7] {
        assert_eq!(by(gone), None);
    }
    let bucket = serde_json::to_string(&("Invoices/recompute", "inv-1")).unwrap();
    assert!(t.state_keys("restate.Debouncer", &bucket).is_empty());
}

/// The burst after an overdue one comes due before that one closes (its close put off for
/// the gates a restart replays): it closes after it, and runs.
#[tokio::test(flavor = "multi_thread")]
async fn a_next_burst_due_before_the_overdue_one_closes_runs_after_it() {
    let invoices = Invoices::default();
    let t = runtime(&invoices).await;
    let client = t.handle().client::<Invoices>();
    client.quick(0).send().await.unwrap();
    t.run_until_idle().await;
    // Down from 0 s to 10 s: the burst closed at 0.5 s; the next one closes at 10.5 s,
    // before the overdue close put off to 11 s.
    t.restart_after(10 * SECOND).await;
    client.quick(1).send().await.unwrap();
    t.run_until_idle().await;
    let bucket = "Invoices/quick";
    let bursts: serde_json::Value = t.state("restate.Debouncer", bucket, "bursts").unwrap();
    assert!(
        bursts["next"].is_object(),
        "waits behind the open one: {bursts}"
    );
    t.advance(10 * SECOND).await;
    let runs = invoices.runs();
    let ns: Vec<u32> = runs.iter().map(|r| r.1).collect();
    assert_eq!(ns, [0, 1], "{runs:?}");
    assert!(t.state_keys("restate.Debouncer", bucket).is_empty());
}

/// A delayed send arrives when it falls due, not when it was sent.
#[tokio::test(flavor = "multi_thread")]
async fn a_delayed_arrival_counts_from_its_start_time() {
    let invoices = Invoices::default();
    let t = runtime(&invoices).await;
    let client = t.handle().client::<Invoices>();
    client.recompute(change("inv-1", 1)).send().await.unwrap();
    client
        .recompute(change("inv-1", 2))
        .send_after(20 * SECOND)
        .await
        .unwrap();
    t.advance(120 * SECOND).await;
    assert_eq!(invoices.runs(), [("inv-1".to_string(), 2, 50)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ingress_answers_a_superseded_request_with_the_output_and_the_one_that_ran() {
    let invoices = Invoices::default();
    let t = TestRuntime::builder()
        .bind(invoices.clone())
        .serve_ingress()
        .build()
        .await;
    let url = t.ingress_url().unwrap();
    let http = reqwest::Client::new();
    let mut requests = Vec::new();
    for n in 0..3u32 {
        let request = http
            .post(format!("{url}/Invoices/recompute"))
            .json(&serde_json::json!({ "invoice": "inv-9", "n": n }))
            .send();
        requests.push(tokio::spawn(request));
        // Each arrives before the next is sent (arrival order is the order that counts).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while t
            .invocations(restate_runtime::testing::InvocationFilter::default().handler("recompute"))
            .len()
            < n as usize + 1
        {
            assert!(std::time::Instant::now() < deadline, "request {n} arrives");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        t.run_until_idle().await;
    }
    t.advance(31 * SECOND).await;
    let mut answers = Vec::new();
    for request in requests {
        let response = request.await.unwrap().unwrap();
        assert_eq!(response.status(), 200);
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let (id, by) = (
            header("x-restate-id").unwrap(),
            header("x-restate-superseded-by"),
        );
        answers.push((id, by, response.text().await.unwrap()));
    }
    let ran = answers[2].0.clone();
    assert_eq!(answers[2].1, None, "the one that ran is not superseded");
    for (_, by, body) in &answers {
        assert_eq!(body, "\"inv-9#2\"");
        assert!(by.is_none() || by.as_deref() == Some(ran.as_str()));
    }
    assert_eq!(answers[0].1.as_deref(), Some(ran.as_str()));
    assert_eq!(answers[1].1.as_deref(), Some(ran.as_str()));
    // Its output, asked for later, says the same.
    let output = http
        .get(format!("{url}/restate/invocation/{}/output", answers[0].0))
        .send()
        .await
        .unwrap();
    assert_eq!(
        output.headers()["x-restate-superseded-by"]
            .to_str()
            .unwrap(),
        ran
    );
    assert_eq!(output.text().await.unwrap(), "\"inv-9#2\"");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_shows_an_open_burst() {
    let server = common::TestServer::start_with(tempfile::tempdir().unwrap(), |b| {
        b.bind(Invoices::default())
    })
    .await;
    let client = server.handle.client::<Invoices>();
    let first = client.recompute(change("inv-3", 1)).send().await.unwrap();
    let second = client.recompute(change("inv-3", 2)).send().await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/debouncers/Invoices%2Frecompute?key=inv-3", server.admin);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let view = loop {
        let view: serde_json::Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        if view["burst"]["superseded"] == 1 {
            break view;
        }
        assert!(std::time::Instant::now() < deadline, "both arrive: {view}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(view["open"], true);
    assert_eq!(
        view["burst"]["leader"],
        second.invocation_id().to_string(),
        "the latest runs"
    );
    let _ = first;
    let closed: serde_json::Value = http
        .get(format!(
            "{}/debouncers/Invoices%2Frecompute?key=inv-4",
            server.admin
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(closed["open"], false);
}
