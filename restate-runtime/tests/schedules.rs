//! Schedules made at run time, on the test runtime's virtual clock: a tick fires once at its
//! time in its zone (daylight-saving days included), missed ticks follow the catch-up policy
//! after downtime, overlapping ticks the overlap policy, and pause, resume, trigger and delete
//! do what they say, through the handle and through the admin API.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use restate_runtime::prelude::*;
use restate_runtime::testing::TestRuntime;
use restate_runtime::{
    CatchUp, Overlap, RunOutcome, ScheduleError, ScheduleOrigin, ScheduleSpec, ScheduledTime,
    TriggerOutcome,
};

const MINUTE: Duration = Duration::from_secs(60);

/// Counts each tick it is given, per log key: a tick that ran twice shows a 2.
#[derive(Default)]
pub struct Ticks;

#[object]
impl Ticks {
    #[handler]
    async fn add(&self, ctx: ObjectContext<'_>, tick: ScheduledTime) -> HandlerResult<()> {
        let name = tick.to_string();
        let seen = ctx.get::<u32>(&name).await?.unwrap_or(0);
        ctx.set(&name, seen + 1);
        Ok(())
    }

    #[handler]
    async fn ping(&self, _ctx: ObjectContext<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

/// Takes 90 seconds a run, with a high-water mark of the runs going on at once.
#[derive(Default, Clone)]
pub struct Slow {
    running: Arc<AtomicUsize>,
    most: Arc<AtomicUsize>,
    started: Arc<Mutex<Vec<String>>>,
}

#[service]
impl Slow {
    #[handler]
    async fn work(&self, ctx: Context<'_>, tick: ScheduledTime) -> HandlerResult<()> {
        let (running, most, started) = (
            self.running.clone(),
            self.most.clone(),
            self.started.clone(),
        );
        ctx.run(move || {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            started.lock().unwrap().push(tick.to_string());
            std::future::ready(Ok(()))
        })
        .name("start")
        .await?;
        ctx.sleep(Duration::from_secs(90)).await?;
        let running = self.running.clone();
        ctx.run(move || {
            running.fetch_sub(1, Ordering::SeqCst);
            std::future::ready(Ok(()))
        })
        .name("end")
        .await?;
        Ok(())
    }

    #[handler]
    async fn fail(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Err(TerminalError::new("no report today").into())
    }
}

fn at(rfc3339: &str) -> SystemTime {
    let ms = rfc3339
        .parse::<jiff_free::Timestamp>()
        .expect("an RFC 3339 time");
    UNIX_EPOCH + Duration::from_millis(ms.0)
}

/// RFC 3339 without a time crate in the test: the runtime's own type reads it.
mod jiff_free {
    pub struct Timestamp(pub u64);
    impl std::str::FromStr for Timestamp {
        type Err = serde_json::Error;
        fn from_str(s: &str) -> Result<Self, Self::Err> {
            let t: restate_runtime::ScheduledTime = serde_json::from_value(s.into())?;
            Ok(Self(t.unix_millis()))
        }
    }
}

/// The ticks a log key saw, each with how many times.
fn ticks(t: &TestRuntime, log: &str) -> Vec<(String, u32)> {
    let mut names = t.state_keys("Ticks", log);
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let count = t.state::<u32>("Ticks", log, &n).unwrap();
            (n, count)
        })
        .collect()
}

fn every_minute(id: &str, log: &str) -> ScheduleSpec {
    ScheduleSpec::new(id, "* * * * *")
        .object("Ticks", log, "add")
        .scheduled_time_input()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tick_at_02_30_in_paris_fires_after_the_spring_forward_gap_and_once_in_the_repeated_hour()
{
    let t = TestRuntime::builder()
        .start_at(at("2026-03-28T12:00:00Z"))
        .build()
        .await;
    let spec = ScheduleSpec::new("paris", "30 2 * * *")
        .timezone("Europe/Paris")
        .object("Ticks", "paris", "add")
        .scheduled_time_input();
    let created = t.handle().schedules().create(spec).await.unwrap();
    assert_eq!(
        created.next_fire_at.unwrap().to_string(),
        "2026-03-29T01:00:00Z",
        "02:30 does not exist on the 29th: 03:00 CEST"
    );
    t.advance(Duration::from_secs(2 * 86_400)).await;
    assert_eq!(
        ticks(&t, "paris"),
        vec![
            ("2026-03-29T01:00:00Z".into(), 1),
            ("2026-03-30T00:30:00Z".into(), 1)
        ]
    );
    // Autumn: 02:30 happens twice on the 25th of October, and fires once.
    let t = TestRuntime::builder()
        .start_at(at("2026-10-24T12:00:00Z"))
        .build()
        .await;
    let spec = ScheduleSpec::new("paris", "30 2 * * *")
        .timezone("Europe/Paris")
        .object("Ticks", "paris", "add")
        .scheduled_time_input();
    t.handle().schedules().create(spec).await.unwrap();
    t.advance(Duration::from_secs(2 * 86_400)).await;
    assert_eq!(
        ticks(&t, "paris"),
        vec![
            ("2026-10-25T00:30:00Z".into(), 1),
            ("2026-10-26T01:30:00Z".into(), 1)
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn after_downtime_missed_ticks_follow_the_catch_up_policy() {
    let t = TestRuntime::builder().build().await;
    let schedules = t.handle().schedules();
    for (id, policy, overlap) in [
        ("skip", CatchUp::Skip, Overlap::Allow),
        ("one", CatchUp::One, Overlap::Allow),
        ("all", CatchUp::All, Overlap::Allow),
        // Every missed tick runs under `skip` too: one after another.
        ("all-skip", CatchUp::All, Overlap::Skip),
    ] {
        let spec = every_minute(id, id).catch_up(policy).overlap(overlap);
        schedules.create(spec).await.unwrap();
    }
    // 00:01 fires on time; then the process is down from 00:01 to 00:11:30.
    t.advance(MINUTE).await;
    t.restart_after(Duration::from_secs(10 * 60 + 30)).await;
    t.run_until_idle().await;
    // The next tick after the restart, 00:12, fires under every policy.
    t.advance(MINUTE).await;
    let minute = |m: u32| (format!("2025-01-01T00:{m:02}:00Z"), 1);
    assert_eq!(ticks(&t, "skip"), vec![minute(1), minute(12)]);
    assert_eq!(ticks(&t, "one"), vec![minute(1), minute(11), minute(12)]);
    let all: Vec<_> = (1..=12).map(minute).collect();
    assert_eq!(ticks(&t, "all"), all);
    assert_eq!(ticks(&t, "all-skip"), all);
    let skip = schedules.get("skip").await.unwrap().unwrap();
    assert_eq!((skip.fired, skip.skipped), (2, 10));
    let one = schedules.get("one").await.unwrap().unwrap();
    assert_eq!((one.fired, one.skipped), (3, 9));
}

/// Under `all`, the tick that is on time as a restart catches up (due less than 15 s before)
/// waits for the missed ones before it instead of being skipped as overlapping them (found
/// from outside: each restart lost its last tick under `overlap = "skip"`).
#[tokio::test(flavor = "multi_thread")]
async fn after_downtime_the_tick_on_time_runs_after_the_missed_ones_under_all() {
    let t = TestRuntime::builder().build().await;
    let schedules = t.handle().schedules();
    for (id, overlap) in [("skip", Overlap::Skip), ("queue", Overlap::Queue)] {
        let spec = every_minute(id, id).catch_up(CatchUp::All).overlap(overlap);
        schedules.create(spec).await.unwrap();
    }
    // 00:01 fires on time; down from 00:01 to 00:11:05, so 00:11 is on time at the restart.
    t.advance(MINUTE).await;
    t.restart_after(Duration::from_secs(10 * 60 + 5)).await;
    t.run_until_idle().await;
    t.advance(MINUTE).await;
    let all: Vec<_> = (1..=12)
        .map(|m: u32| (format!("2025-01-01T00:{m:02}:00Z"), 1))
        .collect();
    for id in ["skip", "queue"] {
        assert_eq!(ticks(&t, id), all, "{id}");
        let view = schedules.get(id).await.unwrap().unwrap();
        assert_eq!((view.fired, view.skipped), (12, 0), "{id}: {view:?}");
    }
}

/// Ticks every minute from 00:01 to 00:10 for a target that takes 90 s, then paused (and
/// run 30 minutes more).
async fn overlapping(
    policy: Overlap,
    catch_up: CatchUp,
) -> (TestRuntime, Slow, restate_runtime::ScheduleView) {
    let slow = Slow::default();
    let t = TestRuntime::builder().bind(slow.clone()).build().await;
    let schedules = t.handle().schedules();
    let spec = ScheduleSpec::new("slow", "* * * * *")
        .service("Slow", "work")
        .scheduled_time_input()
        .overlap(policy)
        .catch_up(catch_up);
    schedules.create(spec).await.unwrap();
    t.advance(10 * MINUTE).await;
    schedules.pause("slow").await.unwrap();
    t.advance(30 * MINUTE).await;
    let view = schedules.get("slow").await.unwrap().unwrap();
    assert_eq!(slow.running.load(Ordering::SeqCst), 0, "every run ended");
    (t, slow, view)
}

fn started(slow: &Slow) -> Vec<u32> {
    slow.started
        .lock()
        .unwrap()
        .iter()
        .map(|s| s[14..16].parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn overlapping_ticks_are_skipped_queued_or_allowed() {
    let (_, slow, view) = overlapping(Overlap::Skip, CatchUp::One).await;
    assert_eq!(started(&slow), vec![1, 3, 5, 7, 9]);
    assert_eq!(slow.most.load(Ordering::SeqCst), 1);
    assert_eq!((view.fired, view.skipped, view.queued), (5, 5, 0));

    // Queued: one after the other in tick order (run k starts at 1 + 1.5 (k - 1) minutes);
    // what waits at the pause waits until the resume.
    let (t, slow, view) = overlapping(Overlap::Queue, CatchUp::One).await;
    assert_eq!(started(&slow), (1..=7).collect::<Vec<_>>(), "in tick order");
    assert_eq!(
        (view.fired, view.skipped, view.queued, view.running),
        (7, 0, 3, 0)
    );
    t.handle().schedules().resume("slow").await.unwrap();
    t.advance(2 * MINUTE).await;
    assert_eq!(started(&slow), (1..=9).collect::<Vec<_>>());
    assert_eq!(slow.most.load(Ordering::SeqCst), 1);

    let (_, slow, view) = overlapping(Overlap::Allow, CatchUp::One).await;
    assert_eq!(started(&slow), (1..=10).collect::<Vec<_>>());
    assert_eq!(slow.most.load(Ordering::SeqCst), 2);
    assert_eq!((view.fired, view.skipped), (10, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_resume_trigger_and_delete() {
    let t = TestRuntime::builder().build().await;
    let schedules = t.handle().schedules();
    let view = schedules.create(every_minute("m", "m")).await.unwrap();
    assert_eq!(view.origin, ScheduleOrigin::Api);
    assert!(!view.paused);
    t.advance(2 * MINUTE).await;
    assert_eq!(ticks(&t, "m").len(), 2);

    let paused = schedules.pause("m").await.unwrap();
    assert!(paused.paused && paused.next_fire_at.is_none());
    t.advance(5 * MINUTE).await;
    assert_eq!(ticks(&t, "m").len(), 2, "nothing fires while paused");
    // A restart keeps it paused.
    t.restart().await;
    t.advance(2 * MINUTE).await;
    assert_eq!(ticks(&t, "m").len(), 2);

    // Trigger runs now, paused or not.
    assert_eq!(
        schedules.trigger("m").await.unwrap(),
        TriggerOutcome::Started
    );
    t.run_until_idle().await;
    assert_eq!(ticks(&t, "m").len(), 3);
    let view = schedules.get("m").await.unwrap().unwrap();
    let last = view.last_run.unwrap();
    assert!(last.manual);
    assert_eq!(last.outcome, RunOutcome::Succeeded);
    // Two triggers in one millisecond (the clock stands still) are two runs.
    for _ in 0..2 {
        schedules.trigger("m").await.unwrap();
        t.run_until_idle().await;
    }
    assert_eq!(ticks(&t, "m").len(), 5);
    assert_eq!(
        schedules.get("m").await.unwrap().unwrap().fired,
        view.fired + 2
    );

    // Resume: the next minute, not the ones missed while paused.
    let resumed = schedules.resume("m").await.unwrap();
    assert_eq!(
        resumed.next_fire_at.unwrap().to_string(),
        "2025-01-01T00:10:00Z"
    );
    t.advance(MINUTE).await;
    assert_eq!(ticks(&t, "m").len(), 6);

    assert_eq!(schedules.list().await.unwrap().len(), 1);
    assert!(schedules.delete("m").await.unwrap());
    assert!(!schedules.delete("m").await.unwrap());
    assert!(schedules.get("m").await.unwrap().is_none());
    assert!(schedules.list().await.unwrap().is_empty());
    t.advance(5 * MINUTE).await;
    assert_eq!(ticks(&t, "m").len(), 6, "a deleted schedule fires no more");
    assert!(matches!(
        schedules.pause("m").await,
        Err(ScheduleError::NotFound(_))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_run_is_the_last_outcome_and_the_schedule_goes_on() {
    let t = TestRuntime::builder().build().await;
    let schedules = t.handle().schedules();
    let spec = ScheduleSpec::new("report", "*/5 * * * *").service("Slow", "fail");
    schedules.create(spec).await.unwrap();
    t.advance(11 * MINUTE).await;
    let view = schedules.get("report").await.unwrap().unwrap();
    assert_eq!(view.fired, 2);
    let last = view.last_run.unwrap();
    assert_eq!(last.outcome, RunOutcome::Failed);
    assert!(last.error.unwrap().contains("no report today"));
    assert_eq!(last.tick_at.to_string(), "2025-01-01T00:10:00Z");
    assert_eq!(
        view.next_fire_at.unwrap().to_string(),
        "2025-01-01T00:15:00Z"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_schedule_fires_on_its_new_expression_only() {
    let t = TestRuntime::builder().build().await;
    let schedules = t.handle().schedules();
    schedules.create(every_minute("x", "x")).await.unwrap();
    t.advance(MINUTE).await;
    let hourly = ScheduleSpec::new("x", "0 * * * *")
        .object("Ticks", "x", "add")
        .scheduled_time_input();
    let view = schedules.create(hourly).await.unwrap();
    assert_eq!(view.fired, 1, "counters are kept");
    t.advance(60 * MINUTE).await;
    assert_eq!(
        ticks(&t, "x"),
        vec![
            ("2025-01-01T00:01:00Z".into(), 1),
            ("2025-01-01T01:00:00Z".into(), 1)
        ],
        "the minute ticks armed before the change are stale"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_specs_are_refused_with_what_is_wrong() {
    let t = TestRuntime::builder().build().await;
    let schedules = t.handle().schedules();
    let cases = [
        (
            ScheduleSpec::new("a", "0 2 * *").service("Slow", "fail"),
            "invalid cron expression",
        ),
        (
            ScheduleSpec::new("a", "0 0 30 2 *").service("Slow", "fail"),
            "never fires",
        ),
        (
            ScheduleSpec::new("a", "0 2 * * *")
                .timezone("Mars/Olympus")
                .service("Slow", "fail"),
            "unknown time zone",
        ),
        (ScheduleSpec::new("a", "0 2 * * *"), "no target"),
        (
            ScheduleSpec::new("a", "0 2 * * *").service("Nope", "x"),
            "no service `Nope`",
        ),
        (
            ScheduleSpec::new("a", "0 2 * * *").service("Slow", "nope"),
            "has no handler `nope`",
        ),
        (
            ScheduleSpec::new("a", "0 2 * * *").service("Ticks", "ping"),
            "is keyed",
        ),
        (
            ScheduleSpec::new("a", "0 2 * * *").object("Slow", "k", "fail"),
            "without keys",
        ),
        (
            ScheduleSpec::new("a", "0 2 * * *")
                .service("Slow", "work")
                .input(&42)
                .unwrap(),
            "does not fit `Slow/work`",
        ),
        (
            ScheduleSpec::new("a", "0 2 * * *")
                .service("Slow", "fail")
                .input(&"x")
                .unwrap(),
            "takes no input",
        ),
        (
            ScheduleSpec::new("a", "0 2 * * *").service("restate.Schedule", "tick"),
            "no service `restate.Schedule`",
        ),
        (
            ScheduleSpec::new("", "0 2 * * *").service("Slow", "fail"),
            "schedule id ``",
        ),
        (
            ScheduleSpec::new("a/b", "0 2 * * *").service("Slow", "fail"),
            "it is a URL segment",
        ),
    ];
    for (spec, expected) in cases {
        match schedules.create(spec.clone()).await {
            Err(ScheduleError::Invalid(message)) => {
                assert!(message.contains(expected), "{spec:?}: {message}")
            }
            other => panic!("{spec:?}: {other:?}"),
        }
    }
    assert!(
        schedules.list().await.unwrap().is_empty(),
        "nothing was stored"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_creates_lists_pauses_triggers_and_deletes_schedules() {
    let server = common::TestServer::start().await;
    let admin = |path: &str| format!("{}{path}", server.admin);
    let http = reqwest::Client::new();
    let created = http
        .post(admin("/schedules"))
        .json(&serde_json::json!({
            "id": "every-second",
            "cron": "* * * * * *",
            "service": "Ticks",
            "key": "admin",
            "handler": "add",
            "scheduled_time_input": true,
            "overlap": "allow",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let view: serde_json::Value = created.json().await.unwrap();
    assert_eq!(view["origin"], "api");
    assert_eq!(view["overlap"], "allow");
    assert_eq!(view["catch_up"], "one");
    assert!(view["next_fire_at"].as_str().unwrap().ends_with('Z'));

    // Fires on the wall clock.
    let get = |id: &'static str| {
        let url = admin(&format!("/schedules/{id}"));
        let http = http.clone();
        async move { http.get(url).send().await.unwrap() }
    };
    common::wait_until(Duration::from_secs(30), || async {
        let view: serde_json::Value = get("every-second").await.json().await.unwrap();
        view["fired"].as_u64().unwrap() >= 2 && view["last_run"]["outcome"] == "succeeded"
    })
    .await;
    let list: serde_json::Value = http
        .get(admin("/schedules"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["schedules"][0]["id"], "every-second");

    let paused: serde_json::Value = http
        .patch(admin("/schedules/every-second/pause"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paused["paused"], true);
    assert!(paused["next_fire_at"].is_null());
    let triggered: serde_json::Value = http
        .patch(admin("/schedules/every-second/trigger"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(triggered["outcome"], "started");

    let metrics = http
        .get(admin("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains(r#"restate_schedule_ticks_total{schedule="every-second",outcome="fired"}"#),
        "{metrics}"
    );
    assert!(metrics.contains("restate_schedule_next_fire_timestamp_seconds"));

    // The ingress cannot reach the internal objects.
    let forged = server
        .post(
            "/restate.Schedule/every-second/trigger",
            serde_json::Value::Null,
        )
        .await;
    assert!(forged.status().is_client_error(), "{}", forged.status());

    // Mistakes are JSON errors with the right status, and change nothing.
    let bad = [
        (
            http.post(admin("/schedules"))
                .body("{")
                .header("content-type", "application/json"),
            400,
            "expected a body like",
        ),
        (
            http.post(admin("/schedules"))
                .body(r#"{"id": "x", "cron": "@daily", "service": "Slow", "handler": "work"}"#)
                .header("content-type", "text/plain"),
            415,
            "expected a body like",
        ),
        (
            http.post(admin("/schedules")).json(&serde_json::json!({
                "id": "x", "cron": "61 * * * *", "service": "Slow", "handler": "fail"
            })),
            400,
            "invalid cron expression",
        ),
        (
            http.post(admin("/schedules")).json(&serde_json::json!({
                "id": "x", "cron": "@daily", "service": "Slow", "handler": "work",
                "input": "x", "scheduled_time_input": true
            })),
            400,
            "not both",
        ),
        (
            http.get(admin("/schedules/nope")),
            404,
            "no schedule `nope`",
        ),
        (
            http.delete(admin("/schedules/nope")),
            404,
            "no schedule `nope`",
        ),
        (
            http.patch(admin("/schedules/nope/pause")),
            404,
            "no schedule `nope`",
        ),
        (
            http.patch(admin("/schedules/every-second/explode")),
            404,
            "unknown schedule action",
        ),
    ];
    for (request, status, message) in bad {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status);
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body["message"].as_str().unwrap().contains(message),
            "{body}"
        );
    }

    let deleted = http
        .delete(admin("/schedules/every-second"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let list: serde_json::Value = http
        .get(admin("/schedules"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["schedules"], serde_json::json!([]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_deleted_and_created_again_ignores_the_ticks_and_runs_of_the_old_one() {
    let slow = Slow::default();
    let t = TestRuntime::builder().bind(slow.clone()).build().await;
    let schedules = t.handle().schedules();
    // The old one: a run going on (90 s) and a tick pending for 00:02 when it is deleted.
    let old = ScheduleSpec::new("s", "* * * * *")
        .service("Slow", "work")
        .scheduled_time_input();
    schedules.create(old).await.unwrap();
    t.advance(MINUTE + Duration::from_secs(10)).await;
    assert_eq!(slow.running.load(Ordering::SeqCst), 1);
    assert!(schedules.delete("s").await.unwrap());
    // The new one, same id, hourly, into the log: the old tick (00:02) and the old run's end
    // (00:02:30) must not touch it.
    let new = ScheduleSpec::new("s", "0 * * * *")
        .object("Ticks", "s", "add")
        .scheduled_time_input();
    schedules.create(new).await.unwrap();
    t.advance(5 * MINUTE).await;
    assert_eq!(slow.running.load(Ordering::SeqCst), 0, "the old run ended");
    assert_eq!(started(&slow), vec![1], "the old schedule fired no more");
    let view = schedules.get("s").await.unwrap().unwrap();
    assert_eq!(
        (view.fired, view.running, view.skipped),
        (0, 0, 0),
        "{view:?}"
    );
    assert!(
        view.last_run.is_none(),
        "the old run's end is not this one's"
    );
    t.advance(60 * MINUTE).await;
    assert_eq!(ticks(&t, "s"), vec![("2025-01-01T01:00:00Z".into(), 1)]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_whose_pending_tick_was_killed_is_caught_up_at_the_next_start() {
    let t = TestRuntime::builder().build().await;
    let schedules = t.handle().schedules();
    schedules
        .create(every_minute("k", "k").catch_up(CatchUp::One))
        .await
        .unwrap();
    t.advance(MINUTE).await;
    // An operator kills the pending tick (it is listed only when asked for by name).
    let internal = restate_runtime::testing::InvocationFilter::default().status("scheduled");
    assert!(
        t.invocations(internal.clone()).is_empty(),
        "hidden by default"
    );
    let pending = t.invocations(internal.service("restate.Schedule"));
    assert_eq!(pending.len(), 1);
    t.handle().kill(pending[0].id).await.unwrap();
    t.advance(3 * MINUTE).await;
    assert_eq!(ticks(&t, "k").len(), 1, "the chain is broken until a start");
    // A start catches the overdue schedule up (the latest tick, 00:04) and re-arms it.
    t.restart().await;
    t.advance(MINUTE).await;
    let minutes: Vec<String> = ticks(&t, "k").into_iter().map(|(m, _)| m).collect();
    assert_eq!(
        minutes,
        [
            "2025-01-01T00:01:00Z",
            "2025-01-01T00:04:00Z",
            "2025-01-01T00:05:00Z"
        ]
    );
}

/// A start sets each schedule's gauge of its next tick (found from outside: after a restart
/// it was missing until the schedule's next tick, an hour or a day later).
#[tokio::test(flavor = "multi_thread")]
async fn a_start_shows_each_schedules_next_tick_in_the_metrics() {
    let t = TestRuntime::builder()
        .admin_addr("127.0.0.1:0".parse().unwrap())
        .build()
        .await;
    t.handle()
        .schedules()
        .create(every_minute("g", "g"))
        .await
        .unwrap();
    t.restart().await;
    let admin = t.admin_url().expect("served");
    let metrics = reqwest::get(format!("{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // 2025-01-01T00:01:00Z, the first tick after the test clock's start.
    let gauge = r#"restate_schedule_next_fire_timestamp_seconds{schedule="g"} 1735689660"#;
    assert!(metrics.contains(gauge), "{metrics}");
}

/// Under `catch_up = "all"` a tick on time still follows `overlap = "skip"`.
#[tokio::test(flavor = "multi_thread")]
async fn a_tick_on_time_is_skipped_under_catch_up_all_and_overlap_skip() {
    let (_, slow, view) = overlapping(Overlap::Skip, CatchUp::All).await;
    assert_eq!(started(&slow), vec![1, 3, 5, 7, 9], "{view:?}");
    assert_eq!((view.fired, view.skipped, view.queued), (5, 5, 0));
}

/// A schedule deleted and created again runs a trigger in the same millisecond as one of its
/// predecessor's.
#[tokio::test(flavor = "multi_thread")]
async fn a_trigger_after_delete_and_create_in_one_millisecond_runs() {
    let t = TestRuntime::builder().build().await;
    let schedules = t.handle().schedules();
    for _ in 0..2 {
        schedules.create(every_minute("m", "m")).await.unwrap();
        schedules.pause("m").await.unwrap();
        schedules.trigger("m").await.unwrap();
        t.run_until_idle().await;
        assert!(schedules.delete("m").await.unwrap());
    }
    assert_eq!(ticks(&t, "m")[0].1, 2, "the second life's trigger ran");
}
