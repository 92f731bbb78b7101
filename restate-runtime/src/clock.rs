//! Time as the engine reads it, in milliseconds since the Unix epoch (the unit every stored time
//! uses): the wall clock, or a virtual clock that only a test moves ([`crate::testing`]).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, by the wall clock, in ms since the epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Time since the machine booted, counting while it was suspended (`CLOCK_BOOTTIME`, which
/// `Instant`'s clock is not): what a lease is measured on, since the database's clock that
/// judges it went on while this machine slept.
pub(crate) fn since_boot() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid out-pointer for one timespec.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// An RFC 3339 rendering of a ms timestamp, as Restate's responses show times.
pub(crate) fn rfc3339(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Milliseconds of a duration, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The engine's clock: what `ctx.now()`, sleeps, timers, retry backoff, suspension and
/// retention read.
#[derive(Clone, Default, Debug)]
pub(crate) enum Clock {
    /// The wall clock, and tokio's timers to wait on it.
    #[default]
    System,
    /// Time that moves only when a test says so.
    Virtual(Arc<VirtualClock>),
}

impl Clock {
    pub(crate) fn now_ms(&self) -> u64 {
        match self {
            Self::System => now_ms(),
            Self::Virtual(clock) => clock.now_ms(),
        }
    }

    pub(crate) fn is_virtual(&self) -> bool {
        matches!(self, Self::Virtual(_))
    }

    /// Completes once the clock reads `at_ms` or later.
    pub(crate) async fn sleep_until_ms(&self, at_ms: u64) {
        match self {
            Self::System => match at_ms.saturating_sub(now_ms()) {
                // Due already: still a yield, so a loop of zero-delay retries lets others run.
                0 => tokio::task::yield_now().await,
                left => tokio::time::sleep(Duration::from_millis(left)).await,
            },
            Self::Virtual(clock) => clock.until(at_ms).await,
        }
    }

    /// The moment `duration` from now, for a wait measured in time passed rather than in
    /// time of day (a suspension delay): on the wall clock a monotonic instant, which a step
    /// of the system time (NTP) does not move.
    pub(crate) fn deadline_after(&self, duration: Duration) -> Deadline {
        match self {
            // A delay too long for an instant (`Duration::MAX` for never) is a century.
            Self::System => Deadline::Monotonic(
                tokio::time::Instant::now()
                    .checked_add(duration)
                    .unwrap_or_else(|| tokio::time::Instant::now() + CENTURY),
            ),
            Self::Virtual(clock) => {
                Deadline::Virtual(clock.now_ms().saturating_add(millis(duration)))
            }
        }
    }

    /// The moment the clock reads `at_ms`, as a [`Deadline`]: on the wall clock an instant
    /// that many ms from now (taken again on every wait, so a step of the system time is
    /// followed).
    pub(crate) fn deadline_at_ms(&self, at_ms: u64) -> Deadline {
        match self {
            Self::System => {
                self.deadline_after(Duration::from_millis(at_ms.saturating_sub(now_ms())))
            }
            Self::Virtual(_) => Deadline::Virtual(at_ms),
        }
    }

    /// Whether `deadline` has come.
    pub(crate) fn reached(&self, deadline: Deadline) -> bool {
        match deadline {
            Deadline::Monotonic(at) => tokio::time::Instant::now() >= at,
            Deadline::Virtual(at_ms) => self.now_ms() >= at_ms,
        }
    }

    /// Completes once `deadline` has come.
    pub(crate) async fn sleep_until(&self, deadline: Deadline) {
        match (self, deadline) {
            (_, Deadline::Monotonic(at)) => tokio::time::sleep_until(at).await,
            (_, Deadline::Virtual(at_ms)) => self.sleep_until_ms(at_ms).await,
        }
    }
}

const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A moment of a [`Clock`] for waits measured in time passed ([`Clock::deadline_after`]).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Deadline {
    Monotonic(tokio::time::Instant),
    /// Milliseconds on the virtual clock.
    Virtual(u64),
}

impl Deadline {
    /// The earlier of two deadlines of one clock.
    pub(crate) fn min(self, other: Deadline) -> Deadline {
        match (self, other) {
            (Self::Monotonic(a), Self::Monotonic(b)) => Self::Monotonic(a.min(b)),
            (Self::Virtual(a), Self::Virtual(b)) => Self::Virtual(a.min(b)),
            // Deadlines of two clocks: none of one engine's.
            (mine, _) => mine,
        }
    }
}

/// A clock that stands still until [`VirtualClock::set`] moves it. It knows every pending
/// sleep's due time, so a test can step from one to the next ([`VirtualClock::next_due`]).
#[derive(Debug)]
pub(crate) struct VirtualClock {
    state: Mutex<VirtualState>,
}

#[derive(Debug, Default)]
struct VirtualState {
    now_ms: u64,
    /// Pending sleeps by (due time, number): each one's waker.
    sleeps: BTreeMap<(u64, u64), Waker>,
    next_sleep: u64,
}

impl VirtualClock {
    pub(crate) fn new(start_ms: u64) -> Self {
        Self {
            state: Mutex::new(VirtualState {
                now_ms: start_ms,
                ..VirtualState::default()
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, VirtualState> {
        // Nothing under this lock can be left half-done by a panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.state().now_ms
    }

    /// Moves the clock to `to_ms` (never back) and wakes every sleep due by then.
    pub(crate) fn set(&self, to_ms: u64) {
        let due = {
            let mut state = self.state();
            state.now_ms = state.now_ms.max(to_ms);
            let now = state.now_ms;
            let mut due = Vec::new();
            while let Some(first) = state.sleeps.first_entry() {
                if first.key().0 > now {
                    break;
                }
                due.push(first.remove());
            }
            due
        };
        for waker in due {
            waker.wake();
        }
    }

    /// The earliest due time of a pending sleep (all are later than now).
    pub(crate) fn next_due(&self) -> Option<u64> {
        self.state()
            .sleeps
            .first_key_value()
            .map(|((at, _), _)| *at)
    }

    fn until(self: &Arc<Self>, at_ms: u64) -> VirtualSleep {
        let number = {
            let mut state = self.state();
            state.next_sleep += 1;
            state.next_sleep
        };
        VirtualSleep {
            clock: self.clone(),
            key: (at_ms, number),
        }
    }
}

/// A sleep on a [`VirtualClock`]; registered while pending, forgotten when dropped.
struct VirtualSleep {
    clock: Arc<VirtualClock>,
    key: (u64, u64),
}

impl Future for VirtualSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.clock.state();
        if state.now_ms >= self.key.0 {
            state.sleeps.remove(&self.key);
            return Poll::Ready(());
        }
        state.sleeps.insert(self.key, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for VirtualSleep {
    fn drop(&mut self) {
        self.clock.state().sleeps.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_virtual_sleep_ends_when_the_clock_is_set_past_it_and_not_before() {
        let clock = Arc::new(VirtualClock::new(1_000));
        let virtual_clock = Clock::Virtual(clock.clone());
        let sleeper = tokio::spawn({
            let c = virtual_clock.clone();
            async move { c.sleep_until_ms(1_500).await }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while clock.next_due() != Some(1_500) {
            assert!(
                std::time::Instant::now() < deadline,
                "the sleep never registered"
            );
            tokio::task::yield_now().await;
        }
        clock.set(1_499);
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        assert_eq!(clock.next_due(), Some(1_500));
        clock.set(1_500);
        tokio::time::timeout(Duration::from_secs(10), sleeper)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(clock.next_due(), None);
        clock.set(10);
        assert_eq!(virtual_clock.now_ms(), 1_500, "the clock never goes back");
    }

    #[tokio::test]
    async fn a_dropped_virtual_sleep_is_no_longer_due() {
        let clock = Arc::new(VirtualClock::new(0));
        let c = Clock::Virtual(clock.clone());
        let pending = tokio::time::timeout(Duration::from_millis(1), c.sleep_until_ms(5)).await;
        assert!(pending.is_err());
        assert_eq!(clock.next_due(), None);
    }
}
