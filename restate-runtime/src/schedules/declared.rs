//! Schedules declared with `#[handler(cron = ..)]`: created or updated at every start, named
//! `<service>:<handler>`, and deleted once their handler no longer declares one.

use super::spec::ScheduleInput;
use super::{ScheduleError, ScheduleOrigin, ScheduleSpec, Schedules};
use crate::runtime::RuntimeHandle;

/// The id of the schedule a handler declares: `<service>:<handler>` (`:` is in no wire name,
/// so two handlers never share one).
pub(crate) fn declared_id(service: &str, handler: &str) -> String {
    format!("{service}:{handler}")
}

/// The schedules this binary's handlers declare.
fn declared(handle: &RuntimeHandle) -> Result<Vec<ScheduleSpec>, ScheduleError> {
    let engine = handle
        .engine()
        .map_err(|e| ScheduleError::Unavailable(e.to_string()))?;
    let mut specs = Vec::new();
    for definition in engine.registry().definitions() {
        for handler in &definition.handlers {
            let Some(cron) = handler.options.cron else {
                continue;
            };
            let mut spec =
                ScheduleSpec::new(declared_id(definition.name, handler.name), cron.expression)
                    .service(definition.name, handler.name)
                    .timezone(cron.timezone)
                    .catch_up(cron.catch_up)
                    .overlap(cron.overlap);
            if cron.scheduled_time_input {
                spec.input = ScheduleInput::Tick;
            }
            specs.push(spec);
        }
    }
    Ok(specs)
}

/// Brings the stored schedules in step with the code: each declared one created or updated
/// (an unchanged one is left as it is, pending tick and all), each one that came from code
/// and is no longer declared deleted. Every process may run it; the result is the same.
pub(crate) async fn sync_declared(handle: &RuntimeHandle) -> Result<(), ScheduleError> {
    let schedules = Schedules::new(handle.clone());
    let specs = declared(handle)?;
    for spec in &specs {
        schedules.upsert(spec.clone(), ScheduleOrigin::Code).await?;
    }
    let engine = handle
        .engine()
        .map_err(|e| ScheduleError::Unavailable(e.to_string()))?;
    let now = engine.config().clock.now_ms();
    for stored in schedules.list().await? {
        let declared = specs.iter().any(|s| s.id == stored.id);
        if stored.origin == ScheduleOrigin::Code && !declared {
            tracing::info!(schedule = %stored.id, "deleting a schedule its handler no longer declares");
            schedules.remove(&stored.id).await?;
            continue;
        }
        // This process's gauge, which only a tick, a change or a pause sets otherwise.
        let next_fire = stored.next_fire_at.map(|at| at.unix_millis());
        super::object::show_next_fire(&engine, &stored.id, next_fire);
        if !declared
            && !stored.paused
            && stored
                .next_fire_at
                .is_some_and(|at| at.unix_millis() <= now)
        {
            // Overdue after the downtime: caught up now, whether or not its tick is alive.
            schedules.rearm(&stored.id).await?;
        }
    }
    Ok(())
}
