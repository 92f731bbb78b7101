//! The pacer after a gate's durable wait: a process's own copy of each bucket's arrival time,
//! which spaces the passes again when the waits end together. Reservations space due times,
//! but a process that was down while some fell due wakes all of those sleepers at once on its
//! restart; here they get slots one interval apart (the burst allowing), ahead of those that
//! come due on time. On time, a pass finds its slot there already: the reservation spaced it.
//! Under a load above the limit a late wake-up's delay stays with the passes after it until
//! the load drops under the limit: the rate holds, and the passes run that much later.
//!
//! A slot is remembered for its gate until the gate passes, so that a gate whose wait for it
//! was journaled (and suspended) finds it again when it wakes, unless it comes much later than
//! a resume takes (a stall): then it takes a new one, once, behind those handed out since, so
//! the slots that fell inside the stall do not pass together. Nothing here is durable, nor
//! needs to be: a crash replays each gate to its wait, and the new process paces them again.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::RateLimit;
use super::object::Bucket;
use crate::ids::InvocationId;

/// Entries kept in a table before those that no longer matter are dropped: buckets whose time
/// has passed (as good as absent) and slots long past (their gate was cancelled or moved).
const KEPT_BEFORE_SWEEP: usize = 1024;
/// How long a slot is remembered after its time, for a gate that wakes late.
const SLOT_KEPT_MS: u64 = 10 * 60 * 1000;
/// How late a gate may come for its slot and keep it (at least an interval): a journaled wait
/// resumes from disk a little late by nature. Later than that, the process stalled.
const LATE_ALLOWED_MS: u64 = 250;

/// A gate: its invocation and the position of its wait.
pub(crate) type GateId = (InvocationId, u32);

/// Each bucket's arrival time in this process, and the slots handed out and not yet passed.
#[derive(Debug, Default)]
pub(crate) struct Pacers {
    inner: Mutex<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    /// By bucket: µs since the epoch.
    tat_us: Swept<String>,
    /// By gate: ms since the epoch.
    slots: Swept<GateId>,
    /// Gates given a new slot after a stall: they keep the next one however late they come
    /// for it, so that no gate is moved back twice (a backlog that resumes late would never
    /// pass).
    moved: std::collections::HashSet<GateId>,
}

/// A table of times, swept of those that no longer matter once it has doubled since its
/// last sweep: a table of live entries (a long backlog's slots) costs O(1) per insert.
#[derive(Debug)]
struct Swept<K> {
    map: HashMap<K, u64>,
    sweep_at: usize,
}

impl<K> Default for Swept<K> {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            sweep_at: KEPT_BEFORE_SWEEP,
        }
    }
}

impl<K: std::hash::Hash + Eq> Swept<K> {
    /// Before an insert: keeps only the times after `after`, when a sweep is due.
    fn sweep_if_due(&mut self, after: u64) {
        if self.map.len() >= self.sweep_at {
            self.map.retain(|_, at| *at > after);
            self.sweep_at = (self.map.len() * 2).max(KEPT_BEFORE_SWEEP);
        }
    }
}

/// When a gate may pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// ms since the epoch, rounded up (never early).
    pub at_ms: u64,
    /// Handed out by this call (not remembered from an earlier one).
    pub new: bool,
}

impl Pacers {
    fn tables(&self) -> MutexGuard<'_, Tables> {
        // Nothing under the lock can be left half-done by a panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The slot of `gate` through `bucket` under `limit` at `now_ms`: the one it was given
    /// if it was given one, a new one otherwise (remembered while it is ahead). A gate that
    /// comes for its slot more than [`LATE_ALLOWED_MS`] (or an interval) late takes a new one,
    /// once: the process stalled, and the slots that fell inside the stall would otherwise
    /// pass together.
    pub(crate) fn slot(&self, bucket: &str, limit: RateLimit, now_ms: u64, gate: GateId) -> Slot {
        let mut tables = self.tables();
        if let Some(&at_ms) = tables.slots.map.get(&gate) {
            let late_us = now_ms.saturating_sub(at_ms).saturating_mul(1000);
            let allowed_us = limit.interval_us().max(LATE_ALLOWED_MS * 1000);
            if late_us <= allowed_us || tables.moved.contains(&gate) {
                return Slot { at_ms, new: false };
            }
            tables.slots.map.remove(&gate);
            tables.moved.insert(gate);
        }
        let now_us = now_ms.saturating_mul(1000);
        let buckets = &mut tables.tat_us;
        let allowed_at = match buckets.map.get_mut(bucket) {
            Some(tat) => {
                let (allowed_at, next) = Bucket::reserve(*tat, limit, now_us);
                *tat = next;
                allowed_at
            }
            None => {
                // A bucket whose time has passed is as good as absent.
                buckets.sweep_if_due(now_us);
                let (allowed_at, next) = Bucket::reserve(0, limit, now_us);
                buckets.map.insert(bucket.to_owned(), next);
                allowed_at
            }
        };
        let at_ms = allowed_at.div_ceil(1000);
        if at_ms > now_ms {
            let tables = &mut *tables;
            let swept_at = tables.slots.sweep_at;
            tables
                .slots
                .sweep_if_due(now_ms.saturating_sub(SLOT_KEPT_MS));
            if tables.slots.sweep_at != swept_at {
                let slots = &tables.slots.map;
                tables.moved.retain(|gate| slots.contains_key(gate));
            }
            tables.slots.map.insert(gate, at_ms);
        }
        Slot { at_ms, new: true }
    }

    /// `gate` has passed (or will not): its slot is forgotten.
    pub(crate) fn passed(&self, gate: GateId) {
        let mut tables = self.tables();
        tables.slots.map.remove(&gate);
        tables.moved.remove(&gate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Gate `n` of one invocation.
    fn gate(n: u32) -> GateId {
        static ONE: std::sync::LazyLock<InvocationId> =
            std::sync::LazyLock::new(|| InvocationId::fresh(0, 1));
        (*ONE, n)
    }

    /// The slots of `n` gates seen for the first time.
    fn slots(pacers: &Pacers, bucket: &str, limit: RateLimit, now_ms: u64, n: u32) -> Vec<u64> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1_000_000);
        (0..n)
            .map(|_| {
                let fresh = gate(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
                pacers.slot(bucket, limit, now_ms, fresh).at_ms
            })
            .collect()
    }

    #[test]
    fn passes_that_come_together_leave_one_interval_apart_and_those_on_time_wait_for_nothing() {
        let pacers = Pacers::default();
        let limit = RateLimit::new(20, Duration::from_secs(1));
        // Twenty sleepers woken together (the process was down while they fell due).
        let late = slots(&pacers, "email", limit, 10_000, 20);
        assert_eq!(late, (0..20).map(|n| 10_000 + n * 50).collect::<Vec<_>>());
        // Another bucket is not held up.
        assert_eq!(pacers.slot("sms", limit, 10_000, gate(100)).at_ms, 10_000);
        // One due on time after the backlog goes at once; so does each one interval on.
        assert_eq!(pacers.slot("email", limit, 11_000, gate(101)).at_ms, 11_000);
        assert_eq!(pacers.slot("email", limit, 11_050, gate(102)).at_ms, 11_050);
        // A burst goes at once after a quiet spell, then the rate holds.
        let bursty = RateLimit::new(1, Duration::from_secs(1)).burst(3);
        assert_eq!(slots(&pacers, "b", bursty, 0, 5), vec![0, 0, 0, 1000, 2000]);
    }

    #[test]
    fn a_gate_finds_its_slot_again_until_it_passes() {
        let pacers = Pacers::default();
        let limit = RateLimit::per_second(1);
        assert_eq!(pacers.slot("b", limit, 0, gate(0)).at_ms, 0);
        let first = pacers.slot("b", limit, 0, gate(1));
        assert_eq!(
            first,
            Slot {
                at_ms: 1000,
                new: true
            }
        );
        // Woken by its journaled wait: the same slot, not one more.
        let again = pacers.slot("b", limit, 1000, gate(1));
        assert_eq!(
            again,
            Slot {
                at_ms: 1000,
                new: false
            }
        );
        pacers.passed(gate(1));
        assert_eq!(pacers.slot("b", limit, 1000, gate(2)).at_ms, 2000);
    }

    #[test]
    fn slots_that_fell_inside_a_stall_are_spaced_again() {
        let pacers = Pacers::default();
        let limit = RateLimit::new(20, Duration::from_secs(1));
        let given: Vec<u64> = (0..4)
            .map(|n| pacers.slot("b", limit, 0, gate(n)).at_ms)
            .collect();
        assert_eq!(given, vec![0, 50, 100, 150]);
        // A wake-up a little late for its slot keeps it.
        assert_eq!(pacers.slot("b", limit, 120, gate(2)).at_ms, 100);
        // The process stalled for a second: the three still waiting come together.
        let after: Vec<u64> = (1..4)
            .map(|n| pacers.slot("b", limit, 1150, gate(n)).at_ms)
            .collect();
        assert_eq!(after, vec![1150, 1200, 1250]);
        // Moved once, a gate keeps its new slot however late it comes for it.
        assert_eq!(pacers.slot("b", limit, 9000, gate(3)).at_ms, 1250);
    }

    #[test]
    fn a_backlog_whose_waits_resume_late_still_passes() {
        // 3,000 gates at 100/s woken together; each journaled wait resumes late: a little
        // (they keep their slots), or beyond the allowance (each is moved back once).
        for late in [20, 300] {
            let passed = backlog_with_late_resumes(late);
            assert_eq!(passed, 3000, "{late} ms late");
        }
    }

    /// How many of a 3,000-gate backlog pass in ten rounds of resumes `late` ms late.
    fn backlog_with_late_resumes(late: u64) -> u32 {
        let pacers = Pacers::default();
        let limit = RateLimit::per_second(100);
        let mut waiting: Vec<(u32, u64)> = (0..3000)
            .map(|n| (n, pacers.slot("b", limit, 0, gate(n)).at_ms))
            .collect();
        let mut passed = 0;
        for _round in 0..10 {
            let mut later = Vec::new();
            for (n, at) in waiting {
                let now = at + late;
                let slot = pacers.slot("b", limit, now, gate(n));
                if slot.at_ms <= now {
                    pacers.passed(gate(n));
                    passed += 1;
                } else {
                    later.push((n, slot.at_ms));
                }
            }
            waiting = later;
        }
        passed
    }

    #[test]
    fn idle_buckets_and_slots_long_past_are_dropped_once_many_are_kept() {
        let pacers = Pacers::default();
        let limit = RateLimit::per_second(1);
        for n in 0..KEPT_BEFORE_SWEEP as u32 {
            pacers.slot(&format!("tenant-{n}"), limit, 0, gate(n));
            // The second of each bucket waits a second: its slot is remembered.
            pacers.slot(&format!("tenant-{n}"), limit, 0, gate(n + 100_000));
        }
        let later = SLOT_KEPT_MS + 5_000;
        pacers.slot("another", limit, later, gate(200_000));
        assert_eq!(
            pacers.slot("another", limit, later, gate(200_001)).at_ms,
            later + 1000
        );
        let tables = pacers.tables();
        assert_eq!(
            tables.tat_us.map.len(),
            1,
            "only the bucket whose time is ahead is kept"
        );
        assert_eq!(tables.slots.map.len(), 1, "only the slot ahead is kept");
    }

    #[test]
    fn a_long_backlog_is_swept_only_each_time_it_doubles() {
        let pacers = Pacers::default();
        let limit = RateLimit::per_second(1000);
        // Three thousand gates woken together: all their slots are ahead, none can go.
        let backlog = slots(&pacers, "email", limit, 0, 3000);
        assert_eq!(backlog.last(), Some(&2999));
        let tables = pacers.tables();
        assert_eq!(tables.slots.map.len(), 2999, "the first one went at once");
        assert_eq!(tables.slots.sweep_at, 4096, "swept at 1,024 and 2,048 only");
    }
}
