//! Schedules declared with `#[handler(cron = ..)]`: stored at start, each tick fired exactly
//! once over three virtual days with crashes in between, in their time zone, and deleted
//! once their handler no longer declares one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;
use restate_runtime::prelude::*;
use restate_runtime::testing::TestRuntime;
use restate_runtime::{
    CatchUp, CronOptions, HandlerDefinition, HandlerError, HandlerKind, HandlerOptions, InputShape,
    Overlap, ScheduleOrigin, ScheduledTime, Service, ServiceDefinition, ServiceKind,
};

/// Every minute, and at 02:30 in Paris: each run tallies its tick, journaled, so a tick
/// that ran twice counts 2.
#[derive(Default)]
pub struct Clockwork;

#[service]
impl Clockwork {
    #[handler(cron = "* * * * *")]
    async fn minutely(&self, ctx: Context<'_>, tick: ScheduledTime) -> HandlerResult<()> {
        ctx.object::<Tally>("minutely").add(tick).send();
        Ok(())
    }

    #[handler(
        cron = "30 2 * * *",
        timezone = "Europe/Paris",
        catch_up = "all",
        overlap = "queue"
    )]
    async fn nightly(&self, ctx: Context<'_>, tick: ScheduledTime) -> HandlerResult<()> {
        ctx.object::<Tally>("nightly").add(tick).send();
        Ok(())
    }

    #[handler(cron = "0 0 1 1 *")]
    async fn new_year(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

#[derive(Default)]
pub struct Tally;

#[object]
impl Tally {
    #[handler]
    async fn add(&self, ctx: ObjectContext<'_>, tick: ScheduledTime) -> HandlerResult<()> {
        let name = tick.to_string();
        let seen = ctx.get::<u32>(&name).await?.unwrap_or(0);
        ctx.set(&name, seen + 1);
        Ok(())
    }
}

fn at(rfc3339: &str) -> SystemTime {
    let tick: ScheduledTime = serde_json::from_value(rfc3339.into()).unwrap();
    UNIX_EPOCH + Duration::from_millis(tick.unix_millis())
}

#[tokio::test(flavor = "multi_thread")]
async fn declared_schedules_fire_each_tick_once_over_three_days_with_crashes() {
    let t = TestRuntime::builder()
        .start_at(at("2026-03-28T00:00:00Z"))
        .build()
        .await;
    let schedules = t.handle().schedules();
    let minutely = schedules.get("Clockwork:minutely").await.unwrap().unwrap();
    assert_eq!(minutely.origin, ScheduleOrigin::Code);
    assert_eq!(
        minutely.next_fire_at.unwrap().to_string(),
        "2026-03-28T00:01:00Z"
    );
    let nightly = schedules.get("Clockwork:nightly").await.unwrap().unwrap();
    assert_eq!(
        (nightly.timezone.as_str(), nightly.catch_up, nightly.overlap),
        ("Europe/Paris", CatchUp::All, Overlap::Queue)
    );
    assert_eq!(schedules.list().await.unwrap().len(), 3);

    // Three days in steps of a prime number of minutes, a crash after each: crashes land at
    // every phase of a tick's handling.
    let end = at("2026-03-31T00:00:00Z");
    let mut crashes = 0;
    while t.now() < end {
        let step = Duration::from_secs(97 * 60).min(end.duration_since(t.now()).unwrap());
        t.advance(step).await;
        t.restart().await;
        crashes += 1;
    }
    t.run_until_idle().await;
    assert!(crashes >= 44, "{crashes}");

    let minutes = t.state_keys("Tally", "minutely");
    assert_eq!(minutes.len(), 3 * 24 * 60, "one run per minute");
    for minute in &minutes {
        assert_eq!(
            t.state::<u32>("Tally", "minutely", minute),
            Some(1),
            "{minute}"
        );
    }
    let mut nights = t.state_keys("Tally", "nightly");
    nights.sort();
    assert_eq!(
        nights,
        [
            "2026-03-28T01:30:00Z", // 02:30 CET
            "2026-03-29T01:00:00Z", // no 02:30 on the spring-forward day: 03:00 CEST
            "2026-03-30T00:30:00Z", // 02:30 CEST
        ]
    );
    let view = schedules.get("Clockwork:minutely").await.unwrap().unwrap();
    assert_eq!((view.fired, view.skipped), (3 * 24 * 60, 0));

    // The API does not replace what code declares.
    let replaced = restate_runtime::ScheduleSpec::new("Clockwork:minutely", "@daily")
        .service("Clockwork", "new_year");
    match schedules.create(replaced).await {
        Err(restate_runtime::ScheduleError::Invalid(message)) => {
            assert!(
                message.contains("declared with `#[handler(cron = ..)]`"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    // Nor deletes it: the next start would create it again.
    match schedules.delete("Clockwork:minutely").await {
        Err(restate_runtime::ScheduleError::Invalid(message)) => {
            assert!(message.contains("remove the declaration"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    assert!(schedules.get("Clockwork:minutely").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declared_schedule_catches_up_the_ticks_missed_while_down() {
    let t = TestRuntime::builder()
        .start_at(at("2026-03-28T00:00:30Z"))
        .build()
        .await;
    // Down from 00:00:30 to 02:00:00: the nightly run of 01:30Z (02:30 in Paris) was missed
    // and catches up (`catch_up = "all"`), the minute ticks catch up the latest (`one`).
    t.restart_after(Duration::from_secs(2 * 3600 - 30)).await;
    t.run_until_idle().await;
    assert_eq!(t.state_keys("Tally", "nightly"), ["2026-03-28T01:30:00Z"]);
    assert_eq!(t.state_keys("Tally", "minutely"), ["2026-03-28T02:00:00Z"]);
    let minutely = t
        .handle()
        .schedules()
        .get("Clockwork:minutely")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((minutely.fired, minutely.skipped), (1, 119));
}

/// A service whose `cron` attribute comes and goes between two "deploys".
static DECLARES_CRON: AtomicBool = AtomicBool::new(true);

pub struct Sweeper;

impl Service for Sweeper {
    fn definition() -> ServiceDefinition {
        let cron = DECLARES_CRON.load(Ordering::SeqCst).then_some(CronOptions {
            expression: "*/5 * * * *",
            timezone: "UTC",
            catch_up: CatchUp::One,
            overlap: Overlap::Skip,
            scheduled_time_input: false,
        });
        ServiceDefinition {
            name: "Sweeper",
            kind: ServiceKind::Service,
            handlers: vec![HandlerDefinition {
                name: "sweep",
                kind: HandlerKind::Stateless,
                input_type: None,
                output_type: "()",
                options: HandlerOptions {
                    cron,
                    ..HandlerOptions::default()
                },
                input: InputShape::None,
                check_input: |_| Ok(()),
            }],
        }
    }

    fn invoke<'a>(
        &'a self,
        _handler: &'a str,
        _ctx: &'a restate_runtime::__private::InvocationContext,
        _input: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, HandlerError>> {
        Box::pin(async { Ok(Bytes::new()) })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_whose_attribute_is_gone_is_deleted_at_the_next_start_and_api_ones_stay() {
    let folder = tempfile::tempdir().unwrap();
    let t = TestRuntime::builder()
        .data_dir(folder.path())
        .bind(Sweeper)
        .build()
        .await;
    let schedules = t.handle().schedules();
    assert!(schedules.get("Sweeper:sweep").await.unwrap().is_some());
    let kept = restate_runtime::ScheduleSpec::new("by-hand", "@hourly").service("Sweeper", "sweep");
    schedules.create(kept).await.unwrap();
    t.advance(Duration::from_secs(600)).await;
    assert_eq!(
        schedules.get("Sweeper:sweep").await.unwrap().unwrap().fired,
        2
    );
    drop(t);

    // The next release no longer declares it.
    DECLARES_CRON.store(false, Ordering::SeqCst);
    let t = loop {
        match TestRuntime::builder()
            .data_dir(folder.path())
            .bind(Sweeper)
            .try_build()
            .await
        {
            Ok(t) => break t,
            // The folder of the runtime just dropped may be held for a moment.
            Err(e) if e.to_string().contains("another process") => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    let schedules = t.handle().schedules();
    assert!(schedules.get("Sweeper:sweep").await.unwrap().is_none());
    let ids: Vec<String> = schedules
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert!(
        ids.contains(&"by-hand".to_owned()) && !ids.contains(&"Sweeper:sweep".to_owned()),
        "{ids:?}"
    );
}
