//! Cron expressions in a time zone: parsed by croner, evaluated on jiff's zoned times (so a
//! tick inside a daylight-saving gap fires right after it, and one in a repeated hour once).

use std::collections::VecDeque;
use std::str::FromStr;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// The most ticks one catch-up looks at: a schedule every second that was down for a day
/// fires (under `catch_up = "all"`) its last this many, and counts the rest as skipped.
pub(crate) const MAX_CATCH_UP: usize = 1000;
/// The most ticks a catch-up walks through one by one before it looks back from now instead.
pub(crate) const MAX_WALK: usize = 100_000;

/// A parsed expression and its time zone.
#[derive(Debug, Clone)]
pub(crate) struct CronTimes {
    cron: Cron,
    zone: TimeZone,
}

impl CronTimes {
    /// Five fields (`minute hour day-of-month month day-of-week`), or six with seconds first;
    /// `@daily` and the other nicknames too. The zone is an IANA name (`Europe/Paris`) or `UTC`.
    pub(crate) fn parse(expression: &str, timezone: &str) -> Result<Self, String> {
        let cron = parser().parse(expression).map_err(|e| {
            format!(
                "invalid cron expression `{expression}`: {e}; write five fields \
                 (minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\"), \
                 optionally with seconds first"
            )
        })?;
        let zone = TimeZone::get(timezone).map_err(|_| {
            format!("unknown time zone `{timezone}`: use an IANA name such as \"Europe/Paris\" or \"UTC\"")
        })?;
        Ok(Self { cron, zone })
    }

    /// The first tick strictly after `ms` (ms since the epoch), or `None` if there is none
    /// (an expression that names no real date, such as the 30th of February).
    pub(crate) fn next_after(&self, ms: u64) -> Option<u64> {
        let from = self.zoned(ms)?;
        let next = self.cron.find_next_occurrence(&from, false).ok()?;
        u64::try_from(next.timestamp().as_millisecond()).ok()
    }

    /// The last tick at or before `ms`.
    fn at_or_before(&self, ms: u64) -> Option<u64> {
        let from = self.zoned(ms)?;
        let previous = self.cron.find_previous_occurrence(&from, true).ok()?;
        u64::try_from(previous.timestamp().as_millisecond()).ok()
    }

    fn zoned(&self, ms: u64) -> Option<jiff::Zoned> {
        Some(
            Timestamp::from_millisecond(i64::try_from(ms).ok()?)
                .ok()?
                .to_zoned(self.zone.clone()),
        )
    }

    /// Ticks from `first` (included, a tick itself) up to `until` (included), at most
    /// [`MAX_CATCH_UP`] of the latest, with how many older ones were left out (counted up to
    /// [`MAX_WALK`]: a year of seconds is not walked one by one).
    pub(crate) fn due(&self, first: u64, until: u64) -> (Vec<u64>, u64) {
        let mut ticks = VecDeque::new();
        let mut dropped = 0u64;
        let mut tick = Some(first);
        while let Some(t) = tick.filter(|t| *t <= until) {
            if ticks.len() + dropped as usize == MAX_WALK {
                return (self.latest(until), dropped);
            }
            if ticks.len() == MAX_CATCH_UP {
                ticks.pop_front();
                dropped += 1;
            }
            ticks.push_back(t);
            tick = self.next_after(t).filter(|next| *next > t);
        }
        (ticks.into(), dropped)
    }

    /// The latest tick from `first` (a tick) up to `until`, with how many came before it
    /// (counted up to [`MAX_CATCH_UP`]): what the `one` and `skip` policies need, without a
    /// walk through a long downtime.
    pub(crate) fn latest_due(&self, first: u64, until: u64) -> (Vec<u64>, u64) {
        let latest = self
            .at_or_before(until)
            .filter(|latest| *latest >= first)
            .unwrap_or(first);
        let mut before = 0u64;
        let mut tick = first;
        while tick < latest && before < MAX_CATCH_UP as u64 {
            before += 1;
            match self.next_after(tick) {
                Some(next) if next > tick => tick = next,
                _ => break,
            }
        }
        (vec![latest], before)
    }

    /// The latest [`MAX_CATCH_UP`] ticks up to `until`, oldest first.
    fn latest(&self, until: u64) -> Vec<u64> {
        let mut ticks = Vec::with_capacity(MAX_CATCH_UP);
        let mut cursor = self.at_or_before(until);
        while let Some(t) = cursor
            && ticks.len() < MAX_CATCH_UP
        {
            ticks.push(t);
            cursor = t
                .checked_sub(1)
                .and_then(|before| self.at_or_before(before));
        }
        ticks.reverse();
        ticks
    }
}

/// The one parser configuration: optional seconds, no year field, day-of-month and
/// day-of-week combined with OR as in Vixie cron. (The macro checks with the same settings.)
fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

impl FromStr for CronTimes {
    type Err = String;

    /// An expression in UTC.
    fn from_str(expression: &str) -> Result<Self, Self::Err> {
        Self::parse(expression, "UTC")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> u64 {
        rfc3339.parse::<Timestamp>().unwrap().as_millisecond() as u64
    }

    #[test]
    fn five_fields_or_six_with_seconds() {
        let daily: CronTimes = "0 2 * * *".parse().unwrap();
        assert_eq!(
            daily.next_after(ms("2026-01-01T02:00:00Z")),
            Some(ms("2026-01-02T02:00:00Z"))
        );
        let seconds: CronTimes = "30 * * * * *".parse().unwrap();
        assert_eq!(
            seconds.next_after(ms("2026-01-01T00:00:00Z")),
            Some(ms("2026-01-01T00:00:30Z"))
        );
        let err = CronTimes::parse("0 2 * *", "UTC").unwrap_err();
        assert!(err.contains("invalid cron expression `0 2 * *`"), "{err}");
        let err = CronTimes::parse("0 2 * * *", "Mars/Olympus").unwrap_err();
        assert!(err.contains("unknown time zone `Mars/Olympus`"), "{err}");
        assert!(
            CronTimes::parse("0 0 1 1 * 2030", "UTC").is_err(),
            "no year field"
        );
    }

    #[test]
    fn a_tick_in_the_spring_forward_gap_fires_right_after_it_and_one_in_the_repeated_hour_once() {
        let paris = CronTimes::parse("30 2 * * *", "Europe/Paris").unwrap();
        // 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist.
        assert_eq!(
            paris.next_after(ms("2026-03-28T12:00:00Z")),
            Some(ms("2026-03-29T01:00:00Z")),
            "03:00 CEST, the first instant after the gap"
        );
        assert_eq!(
            paris.next_after(ms("2026-03-29T01:00:00Z")),
            Some(ms("2026-03-30T00:30:00Z"))
        );
        // 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice, fires once.
        let october = paris
            .due(ms("2026-10-24T00:30:00Z"), ms("2026-10-26T12:00:00Z"))
            .0;
        assert_eq!(
            october,
            vec![
                ms("2026-10-24T00:30:00Z"),
                ms("2026-10-25T00:30:00Z"),
                ms("2026-10-26T01:30:00Z")
            ]
        );
    }

    #[test]
    fn the_latest_due_tick_is_found_without_walking_a_long_downtime() {
        let hourly: CronTimes = "0 * * * *".parse().unwrap();
        let start = ms("2026-01-01T00:00:00Z");
        assert_eq!(hourly.latest_due(start, start + 1_000), (vec![start], 0));
        let (latest, before) = hourly.latest_due(start, ms("2026-01-01T05:30:00Z"));
        assert_eq!((latest, before), (vec![ms("2026-01-01T05:00:00Z")], 5));
        let every_second: CronTimes = "* * * * * *".parse().unwrap();
        let year = 365 * 24 * 3_600_000;
        let (latest, before) = every_second.latest_due(start, start + year);
        assert_eq!((latest, before), (vec![start + year], MAX_CATCH_UP as u64));
    }

    #[test]
    fn catch_up_keeps_the_latest_ticks() {
        let every_second: CronTimes = "* * * * * *".parse().unwrap();
        let start = ms("2026-01-01T00:00:00Z");
        let (ticks, dropped) = every_second.due(start, start + 1_500_000);
        assert_eq!(ticks.len(), MAX_CATCH_UP);
        assert_eq!(dropped, 1501 - MAX_CATCH_UP as u64);
        assert_eq!(*ticks.last().unwrap(), start + 1_500_000);
        // A year of seconds: the latest ticks, found looking back.
        let year = 365 * 24 * 3_600_000;
        let (ticks, dropped) = every_second.due(start, start + year);
        assert_eq!(ticks.len(), MAX_CATCH_UP);
        assert_eq!(dropped as usize, MAX_WALK - MAX_CATCH_UP);
        assert_eq!(ticks[0], start + year - 999_000);
        assert_eq!(*ticks.last().unwrap(), start + year);
    }
}
