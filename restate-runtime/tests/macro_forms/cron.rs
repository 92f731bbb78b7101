use restate_runtime::prelude::*;
use restate_runtime::{CatchUp, Overlap, ScheduledTime, Service};

#[derive(Default)]
pub struct Reports;

#[service]
impl Reports {
    #[handler(
        cron = "0 2 * * *",
        timezone = "Europe/Paris",
        catch_up = "all",
        overlap = "queue"
    )]
    async fn nightly(&self, _ctx: Context<'_>, tick: ScheduledTime) -> HandlerResult<String> {
        Ok(tick.to_string())
    }

    #[handler(cron = "*/10 * * * * *", name = "everyTenSeconds")]
    async fn often(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

#[test]
fn cron_options_are_read_from_the_attribute() {
    let definition = Reports::definition();
    let nightly = definition.handler("nightly").unwrap().options.cron.unwrap();
    assert_eq!(nightly.timezone, "Europe/Paris");
    assert_eq!(
        (nightly.catch_up, nightly.overlap),
        (CatchUp::All, Overlap::Queue)
    );
    assert!(nightly.scheduled_time_input);
    let often = definition
        .handler("everyTenSeconds")
        .unwrap()
        .options
        .cron
        .unwrap();
    assert_eq!(
        (often.timezone, often.catch_up, often.overlap),
        ("UTC", CatchUp::One, Overlap::Skip)
    );
    assert!(!often.scheduled_time_input);
}
