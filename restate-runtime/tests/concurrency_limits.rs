//! Concurrency limits on the virtual clock: never more than the limit run at once (a
//! high-water mark), the others wait acknowledged and start in arrival order, keys have limits
//! of their own, named limits gate `ctx.run` steps, a kill or a cancel gives a permit (or a
//! place in the queue) back, and a crash keeps the count.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use restate_runtime::prelude::*;
use restate_runtime::testing::{InvocationFilter, TestRuntime};

const SECOND: Duration = Duration::from_secs(1);

/// Counts what runs at once (the high-water mark) and the order runs start in, per label.
#[derive(Default, Clone)]
pub struct Jobs {
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    started: Arc<Mutex<Vec<String>>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Job {
    tenant: String,
    n: u32,
}

impl Jobs {
    fn tenant(job: &Job) -> String {
        job.tenant.clone()
    }

    /// One second of work between two journaled marks.
    async fn work(&self, ctx: &Context<'_>, label: String, secs: u64) -> HandlerResult<()> {
        let (running, most, started) = (
            self.running.clone(),
            self.most.clone(),
            self.started.clone(),
        );
        ctx.run(move || {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            started.lock().unwrap().push(label.clone());
            std::future::ready(Ok(()))
        })
        .name("start")
        .await?;
        ctx.sleep(Duration::from_secs(secs)).await?;
        let running = self.running.clone();
        ctx.run(move || {
            running.fetch_sub(1, Ordering::SeqCst);
            std::future::ready(Ok(()))
        })
        .name("end")
        .await?;
        Ok(())
    }

    fn started(&self) -> Vec<String> {
        self.started.lock().unwrap().clone()
    }
}

#[service]
impl Jobs {
    #[handler(concurrency = 3)]
    async fn three(&self, ctx: Context<'_>, n: u32) -> HandlerResult<()> {
        self.work(&ctx, format!("{n:04}"), 1).await
    }

    #[handler(concurrency(limit = 1, key = Self::tenant))]
    async fn per_tenant(&self, ctx: Context<'_>, job: Job) -> HandlerResult<()> {
        self.work(&ctx, format!("{}-{}", job.tenant, job.n), 1)
            .await
    }

    /// An hour per tenant, one at a time.
    #[handler(concurrency(limit = 1, key = Self::tenant))]
    async fn per_tenant_long(&self, ctx: Context<'_>, job: Job) -> HandlerResult<()> {
        self.work(&ctx, format!("{}-long-{}", job.tenant, job.n), 3600)
            .await
    }

    /// Fails every time: killed after two attempts, holding the permit until then.
    #[handler(concurrency = 1, retry(max_attempts = 2, on_max_attempts = "kill"))]
    async fn doomed(&self, ctx: Context<'_>, n: u32) -> HandlerResult<()> {
        self.work(&ctx, format!("doomed-{n}"), 0).await?;
        Err("the provider is down".into())
    }

    #[handler(concurrency = 1)]
    async fn long(&self, ctx: Context<'_>, n: u32) -> HandlerResult<()> {
        self.work(&ctx, format!("long-{n}"), 3600).await
    }

    /// A step through the named limit "warehouse" (configured, or not, at run time).
    #[handler]
    async fn export(&self, ctx: Context<'_>, n: u32) -> HandlerResult<()> {
        let (running, most, started) = (
            self.running.clone(),
            self.most.clone(),
            self.started.clone(),
        );
        ctx.run(move || {
            let running = running.clone();
            let most = most.clone();
            let started = started.clone();
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                started.lock().unwrap().push(format!("export-{n}"));
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .name("export")
        .limiter("warehouse")
        .await?;
        Ok(())
    }
}

async fn runtime(jobs: &Jobs) -> TestRuntime {
    TestRuntime::builder().bind(jobs.clone()).build().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_invocations_with_a_limit_of_three_run_three_at_a_time_in_arrival_order() {
    let jobs = Jobs::default();
    let t = runtime(&jobs).await;
    for n in 0..1000 {
        t.handle().client::<Jobs>().three(n).send().await.unwrap();
    }
    t.run_until_idle().await;
    assert_eq!(
        jobs.running.load(Ordering::SeqCst),
        3,
        "three hold a permit"
    );
    // Crashed in the middle: the permits and the queue are durable.
    t.advance(100 * SECOND).await;
    t.restart().await;
    t.advance(300 * SECOND).await;
    let started = jobs.started();
    assert_eq!(started.len(), 1000, "all ran");
    assert_eq!(jobs.most.load(Ordering::SeqCst), 3, "never more than three");
    // The first three took the free permits as they started; the others got theirs in
    // arrival order. Those given permits at once (up to three) race to their first step, so
    // each starts at most two places from its place in arrival order.
    let mut sorted = started[3..].to_vec();
    sorted.sort();
    for (place, label) in started[3..].iter().enumerate() {
        let due = sorted.iter().position(|l| l == label).unwrap();
        assert!(
            place.abs_diff(due) <= 2,
            "{label} started at {place}, arrived {due}th"
        );
    }
    let waiting = t.invocations(
        InvocationFilter::default()
            .handler("three")
            .status("completed"),
    );
    assert_eq!(waiting.len(), 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_key_has_a_limit_of_its_own() {
    let jobs = Jobs::default();
    let t = runtime(&jobs).await;
    for n in 0..3 {
        for tenant in ["acme", "globex"] {
            let job = Job {
                tenant: tenant.into(),
                n,
            };
            t.handle()
                .client::<Jobs>()
                .per_tenant(job)
                .send()
                .await
                .unwrap();
        }
    }
    t.run_until_idle().await;
    assert_eq!(jobs.running.load(Ordering::SeqCst), 2, "one per tenant");
    t.advance(10 * SECOND).await;
    assert_eq!(jobs.most.load(Ordering::SeqCst), 2);
    let acme: Vec<_> = jobs
        .started()
        .into_iter()
        .filter(|s| s.starts_with("acme"))
        .collect();
    // The first took the free permit as it started; the others waited, in arrival order.
    assert_eq!(acme.len(), 3);
    let mut waited = acme[1..].to_vec();
    waited.sort();
    assert_eq!(acme[1..], waited);
    // Idle again, a key's bucket keeps no state.
    for tenant in ["acme", "globex"] {
        let bucket = serde_json::to_string(&("Jobs/per_tenant", tenant)).unwrap();
        assert!(
            t.state_keys("restate.Limiter", &bucket).is_empty(),
            "{tenant}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_named_limit_gates_steps_when_configured_and_lets_them_through_when_not() {
    let jobs = Jobs::default();
    let t = TestRuntime::builder()
        .bind(jobs.clone())
        .concurrency_limit("warehouse", 1)
        .build()
        .await;
    for n in 0..20 {
        t.handle().client::<Jobs>().export(n).send().await.unwrap();
    }
    t.run_until_idle().await;
    assert_eq!(jobs.started().len(), 20);
    assert_eq!(jobs.most.load(Ordering::SeqCst), 1);

    let free = Jobs::default();
    let t = runtime(&free).await;
    for n in 0..5 {
        t.handle().client::<Jobs>().export(n).send().await.unwrap();
    }
    t.run_until_idle().await;
    assert_eq!(free.started().len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_holder_gives_its_permit_back_and_a_cancelled_waiter_its_place() {
    let jobs = Jobs::default();
    let t = runtime(&jobs).await;
    let client = t.handle().client::<Jobs>();
    let first = client.long(1).send().await.unwrap();
    t.run_until_idle().await;
    let second = client.long(2).send().await.unwrap();
    client.long(3).send().await.unwrap();
    t.run_until_idle().await;
    assert_eq!(jobs.started(), ["long-1"], "the others wait");
    // Those waiting for a permit are shown as queued, the holder as it is (asleep).
    let queued = t.invocations(InvocationFilter::default().status("queued"));
    let ids: Vec<_> = queued.iter().map(|v| v.id).collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&second.invocation_id()), "{ids:?}");
    assert!(queued.iter().all(|v| v.status() == "queued"));
    let holder = t.invocation(first.invocation_id()).unwrap().status();
    assert!(["running", "suspended"].contains(&holder), "{holder}");
    let holders = t.invocations(InvocationFilter::default().status(holder));
    assert_eq!(holders.len(), 1, "the holder alone");
    // The second gives up its place: the third is next.
    t.handle().cancel(second.invocation_id()).await.unwrap();
    t.run_until_idle().await;
    // The holder is killed: its permit goes to the third.
    t.handle().kill(first.invocation_id()).await.unwrap();
    t.run_until_idle().await;
    assert_eq!(jobs.started(), ["long-1", "long-3"]);
    let second = t.invocation(second.invocation_id()).unwrap();
    assert_eq!(second.status(), "completed");
    assert_eq!(second.output::<()>().unwrap().unwrap_err().code(), 409);
}

/// The JSON an admin API `GET` answers.
async fn get_json(http: &reqwest::Client, url: impl reqwest::IntoUrl) -> serde_json::Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_shows_limits_and_changes_them() {
    let server = common::TestServer::start_with(tempfile::tempdir().unwrap(), |b| {
        b.concurrency_limit("warehouse", 1)
    })
    .await;
    let http = reqwest::Client::new();
    let admin = |path: &str| format!("{}{path}", server.admin);
    let list: serde_json::Value = get_json(&http, admin("/limiters")).await;
    assert_eq!(list["limiters"][0]["name"], "warehouse");
    assert_eq!(list["limiters"][0]["limit"], 1);
    // Three long invocations under `concurrency = 1`: one runs, two wait.
    for n in 0..3 {
        server.handle.client::<Jobs>().long(n).send().await.unwrap();
    }
    let bucket = admin("/limiters/Jobs%2Flong");
    common::wait_until(Duration::from_secs(30), || async {
        let view: serde_json::Value = get_json(&http, &bucket).await;
        view["running"] == 1 && view["queued"] == 2
    })
    .await;
    // The two that wait are shown, and listed, as queued.
    let queued: serde_json::Value = get_json(&http, admin("/invocations?status=queued")).await;
    let waiting = queued["invocations"].as_array().unwrap();
    assert_eq!(waiting.len(), 2, "{queued}");
    assert!(
        waiting
            .iter()
            .all(|v| v["status"] == "queued" && v["handler"] == "long")
    );
    let id = waiting[0]["id"].as_str().unwrap();
    let view: serde_json::Value = get_json(&http, admin(&format!("/invocations/{id}"))).await;
    assert_eq!(view["status"], "queued", "{view}");
    // The list names the handler's own limit too, once used, with the same counts.
    let list: serde_json::Value = get_json(&http, admin("/limiters")).await;
    let own = list["limiters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "Jobs/long")
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(
        (&own["limit"], &own["running"], &own["queued"]),
        (
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(2)
        )
    );
    // `/metrics` shows the handler's own limit (used) and the configured one (idle).
    let metrics = http
        .get(admin("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "restate_limiter_running{limiter=\"Jobs/long\"} 1",
        "restate_limiter_queued{limiter=\"Jobs/long\"} 2",
        "restate_limiter_running{limiter=\"warehouse\"} 0",
        "restate_limiter_queued{limiter=\"warehouse\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    // Raised at run time: the two waiting get their permits at once.
    let raised = http
        .put(admin("/limiters/Jobs%2Flong"))
        .json(&serde_json::json!({ "limit": 3 }))
        .send()
        .await
        .unwrap();
    assert_eq!(raised.status(), 200);
    common::wait_until(Duration::from_secs(30), || async {
        let view: serde_json::Value = get_json(&http, &bucket).await;
        view["running"] == 3 && view["queued"] == 0 && view["limit"] == 3
    })
    .await;
    // A keyed bucket: acme's waiting job starts once its own limit is raised.
    for n in 0..2 {
        let job = Job {
            tenant: "acme".into(),
            n,
        };
        server
            .handle
            .client::<Jobs>()
            .per_tenant_long(job)
            .send()
            .await
            .unwrap();
    }
    let acme = admin("/limiters/Jobs%2Fper_tenant_long?key=acme");
    common::wait_until(Duration::from_secs(30), || async {
        let view: serde_json::Value = http.get(&acme).send().await.unwrap().json().await.unwrap();
        view["running"] == 1 && view["queued"] == 1
    })
    .await;
    // A misspelt `key` is refused, not read as the unkeyed bucket.
    let misspelt = admin("/limiters/Jobs%2Fper_tenant_long?kye=acme");
    let refused = http.get(&misspelt).send().await.unwrap();
    assert_eq!(refused.status(), 400);
    let raised = http
        .put(&acme)
        .json(&serde_json::json!({ "limit": 2 }))
        .send()
        .await
        .unwrap();
    assert_eq!(raised.status(), 200);
    common::wait_until(Duration::from_secs(30), || async {
        let view: serde_json::Value = http.get(&acme).send().await.unwrap().json().await.unwrap();
        view["running"] == 2 && view["queued"] == 0
    })
    .await;
    let bad = http
        .put(admin("/limiters/warehouse"))
        .json(&serde_json::json!({ "limit": 0 }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    // A field this API does not know: refused, and the limit stays as it was.
    let before = get_json(&http, &admin("/limiters/warehouse")).await;
    let misspelt = http
        .put(admin("/limiters/warehouse"))
        .json(&serde_json::json!({ "limit": 7, "burst": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(misspelt.status(), 400);
    let after = get_json(&http, &admin("/limiters/warehouse")).await;
    assert_eq!(after["limit"], before["limit"], "{after}");
    assert_ne!(after["limit"], 7, "{after}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invocation_killed_when_its_retries_run_out_gives_its_permit_back() {
    let jobs = Jobs::default();
    let t = runtime(&jobs).await;
    let client = t.handle().client::<Jobs>();
    let first = client.doomed(1).send().await.unwrap();
    let second = client.doomed(2).send().await.unwrap();
    t.advance(10 * SECOND).await;
    for handle in [first, second] {
        let view = t.invocation(handle.invocation_id()).unwrap();
        assert_eq!(view.status(), "completed");
        assert_eq!(
            view.output::<()>().unwrap().unwrap_err().code(),
            409,
            "killed"
        );
    }
    // Whichever took the free permit first, the other got it once the first was killed.
    let mut started = jobs.started();
    started.sort();
    assert_eq!(started, ["doomed-1", "doomed-2"], "both ran");
    assert_eq!(jobs.most.load(Ordering::SeqCst), 1, "one at a time");
}
