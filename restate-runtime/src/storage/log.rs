//! The write-ahead log as two segments, `journal.wal` and `journal.1.wal`: one takes appends
//! while the records of the other are checkpointed into the store in the background, so a
//! checkpoint never holds up a group commit. A segment is written again (from its start) only
//! once the checkpoint that covers its records is durable.
//!
//! Sequence numbers run on across segments: a segment holds one run of consecutive records
//! from its start, and the runs alternate. At open, the run that starts right after the
//! store's last applied record is read first, then the other segment's run that continues it;
//! damage followed by a later record, in either segment, is corruption (see `wal`).

use std::io;
use std::path::{Path, PathBuf};

use super::WriteOp;
use super::files::Files;
use super::wal::{Replayed, Wal, WalError};

/// The segments' file names in the data folder; the first is the log's name from before
/// segments, so an older store's log is read as the first segment.
pub(super) const SEGMENT_NAMES: [&str; 2] = ["journal.wal", "journal.1.wal"];

pub(super) struct Log {
    segments: [Wal; 2],
    /// The segment taking appends.
    active: usize,
    /// Per segment: it filled before the checkpoint of the other's records ended, so it grows
    /// when it is next written from its start.
    too_small: [bool; 2],
}

impl Log {
    /// Opens (or creates) both segments in `dir` and returns the records after `applied`, in
    /// order.
    pub(super) fn open(
        files: &dyn Files,
        dir: &Path,
        applied: u64,
        salt: u64,
    ) -> Result<(Self, Vec<Replayed>), WalError> {
        let paths = Self::paths(dir);
        let segments = [
            Wal::open_file(files, &paths[0], salt)?,
            Wal::open_file(files, &paths[1], salt)?,
        ];
        // The run after `applied` is in the segment that starts with it. When neither does,
        // one is read to tell a log's end from damage: not one that starts with a later record
        // (it holds the newer run; the damage is at the start of the other).
        let next = applied + 1;
        let later = |s: &Wal| Ok::<_, io::Error>(s.first_seq()?.is_some_and(|seq| seq > next));
        let first = if segments[0].starts_with(next)? {
            0
        } else if segments[1].starts_with(next)? {
            1
        } else {
            usize::from(later(&segments[0])? && !later(&segments[1])?)
        };
        let (mut replayed, end) = segments[first].read_after(applied, &paths[first])?;
        let next = replayed.last().map_or(applied, |r| r.seq);
        let second = 1 - first;
        // The other segment starts with a record after the one due next: the first segment's
        // run ends in damage (its later records were acknowledged).
        if let Some(found) = segments[second].first_seq()?
            && found > next + 1
        {
            return Err(WalError::Corrupt {
                path: paths[first].display().to_string(),
                offset: end,
                reason: format!(
                    "record {} is damaged or missing, but record {found} starts {}",
                    next + 1,
                    paths[second].display()
                ),
            });
        }
        replayed.extend(segments[second].read_after(next, &paths[second])?.0);
        let active = if replayed.is_empty() { first } else { second };
        Ok((
            Self {
                segments,
                active,
                too_small: [false; 2],
            },
            replayed,
        ))
    }

    fn paths(dir: &Path) -> [PathBuf; 2] {
        SEGMENT_NAMES.map(|name| dir.join(name))
    }

    /// Appends one record to the active segment and syncs it; `Ok(false)`: it does not fit
    /// there ([`Log::switch`] first).
    pub(super) fn append(&mut self, seq: u64, ops: &[&WriteOp]) -> io::Result<bool> {
        self.segments[self.active].append(seq, ops)
    }

    /// The other segment takes appends from its start (it must hold no record the store lacks
    /// durably). `filled_first`: the active segment filled before the checkpoint of the other's
    /// records ended, so the active one is too small for the load and doubles (up to 64 MiB)
    /// when it is next written from its start. Not the other one: a larger segment to
    /// checkpoint would only make that checkpoint longer, and the small one would go on
    /// filling first (it did, until 2026-12-03: one segment grew to 64 MiB, the other stayed
    /// at 1 MiB, and commits waited for every checkpoint of the large one).
    pub(super) fn switch(&mut self, filled_first: bool) -> io::Result<()> {
        self.too_small[self.active] |= filled_first;
        self.active = 1 - self.active;
        let grow = std::mem::take(&mut self.too_small[self.active]);
        self.segments[self.active].restart(grow)
    }

    /// The active segment cannot hold one record even from its start (a group larger than
    /// the segment, committed to the store directly instead): it too is too small for the
    /// load, and doubles when it is next written from its start.
    pub(super) fn outgrown(&mut self) {
        self.too_small[self.active] = true;
    }

    /// After a checkpoint of everything: both segments hold only records the store has; the
    /// active one is written from its start again (larger if it proved too small).
    pub(super) fn restart(&mut self) -> io::Result<()> {
        let grow = std::mem::take(&mut self.too_small[self.active]);
        self.segments[self.active].restart(grow)
    }

    /// Uses a new salt from now on (a store that had none gets one after its first replay).
    pub(super) fn set_salt(&mut self, salt: u64) {
        for segment in &mut self.segments {
            segment.set_salt(salt);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::InvocationId;
    use crate::storage::files::OsFiles;

    const SALT: u64 = 0x5eed;

    fn op(seq: u64) -> WriteOp {
        WriteOp::PutJournal {
            id: InvocationId::random(1),
            index: seq as u32,
            encoded: vec![seq as u8; 64],
        }
    }

    fn append(log: &mut Log, seqs: std::ops::RangeInclusive<u64>) {
        for seq in seqs {
            assert!(log.append(seq, &[&op(seq)]).unwrap());
        }
    }

    fn seqs(replayed: &[Replayed]) -> Vec<u64> {
        replayed.iter().map(|r| r.seq).collect()
    }

    fn open(dir: &Path, applied: u64) -> Result<Vec<u64>, WalError> {
        Log::open(&OsFiles, dir, applied, SALT).map(|(_, replayed)| seqs(&replayed))
    }

    #[test]
    fn runs_in_both_segments_replay_in_order_whichever_comes_first() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, replayed) = Log::open(&OsFiles, dir.path(), 0, SALT).unwrap();
        assert!(replayed.is_empty());
        append(&mut log, 1..=3);
        log.switch(false).unwrap();
        append(&mut log, 4..=5);
        drop(log);
        assert_eq!(open(dir.path(), 0).unwrap(), [1, 2, 3, 4, 5]);
        // A checkpoint covered the first segment: only the second's run is new.
        assert_eq!(open(dir.path(), 3).unwrap(), [4, 5]);
        assert_eq!(open(dir.path(), 5).unwrap(), Vec::<u64>::new());

        // The first segment taken again from its start (its records are in the store), while
        // the second's wait for their checkpoint: the run starts in the second segment.
        let (mut log, replayed) = Log::open(&OsFiles, dir.path(), 3, SALT).unwrap();
        assert_eq!(seqs(&replayed), [4, 5]);
        append(&mut log, 6..=7);
        drop(log);
        assert_eq!(open(dir.path(), 3).unwrap(), [4, 5, 6, 7]);
        assert_eq!(open(dir.path(), 5).unwrap(), [6, 7]);
    }

    #[test]
    fn the_segment_that_filled_first_grows_not_the_one_it_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let len = |i: usize| {
            std::fs::metadata(dir.path().join(SEGMENT_NAMES[i]))
                .unwrap()
                .len()
        };
        let (mut log, _) = Log::open(&OsFiles, dir.path(), 0, SALT).unwrap();
        let initial = len(0);
        assert_eq!(len(1), initial);
        append(&mut log, 1..=3);
        // The first segment is checkpointed; the second fills before that checkpoint ends.
        log.switch(false).unwrap();
        append(&mut log, 4..=5);
        log.switch(true).unwrap();
        // Expected: the first segment is written from its start at its own size; the second,
        // which filled too soon, has not been restarted yet.
        assert_eq!((len(0), len(1)), (initial, initial));
        append(&mut log, 6..=7);
        log.switch(false).unwrap();
        // Expected: now restarted, the second segment is twice as large; the first is not.
        assert_eq!((len(0), len(1)), (initial, 2 * initial));
        append(&mut log, 8..=9);
        log.switch(false).unwrap();
        assert_eq!((len(0), len(1)), (initial, 2 * initial));
        drop(log);
        assert_eq!(open(dir.path(), 7).unwrap(), [8, 9]);
    }

    #[test]
    fn a_segment_too_small_for_one_record_grows_at_its_restart() {
        let dir = tempfile::tempdir().unwrap();
        let len = || {
            std::fs::metadata(dir.path().join(SEGMENT_NAMES[0]))
                .unwrap()
                .len()
        };
        let (mut log, _) = Log::open(&OsFiles, dir.path(), 0, SALT).unwrap();
        let initial = len();
        let larger = WriteOp::PutJournal {
            id: InvocationId::random(1),
            index: 0,
            encoded: vec![7; initial as usize],
        };
        // Expected: refused even by the empty segment; a restart after a checkpoint keeps
        // its size unless it was marked outgrown, then it doubles.
        assert!(!log.append(1, &[&larger]).unwrap());
        log.restart().unwrap();
        assert_eq!(len(), initial);
        log.outgrown();
        log.restart().unwrap();
        assert_eq!(len(), 2 * initial);
        log.restart().unwrap();
        assert_eq!(len(), 2 * initial);
    }

    #[test]
    fn damage_at_the_end_of_one_segment_is_corruption_when_the_other_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(&OsFiles, dir.path(), 0, SALT).unwrap();
        append(&mut log, 1..=3);
        let third = log.segments[0].end_of_records() - 20;
        log.switch(false).unwrap();
        append(&mut log, 4..=4);
        drop(log);
        let first = dir.path().join(SEGMENT_NAMES[0]);
        let mut bytes = std::fs::read(&first).unwrap();
        bytes[third as usize] ^= 0x5a;
        std::fs::write(&first, &bytes).unwrap();
        // Expected: record 3 is the last of its segment, but record 4 (acknowledged after it)
        // starts the other one: the damage is named in the first segment's file.
        match open(dir.path(), 0) {
            Err(WalError::Corrupt { path, reason, .. }) => {
                assert!(path.ends_with(SEGMENT_NAMES[0]), "{path}");
                assert!(reason.contains("record 3"), "{reason}");
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        // With the second segment's only record damaged too, nothing tells the damage from a
        // crash's torn tail: the log ends before record 3 (a limit of any log without a
        // separate end marker; record 4 can only exist once record 3 was synced).
        let second = dir.path().join(SEGMENT_NAMES[1]);
        let mut bytes = std::fs::read(&second).unwrap();
        bytes[30] ^= 0x5a;
        std::fs::write(&second, &bytes).unwrap();
        assert_eq!(open(dir.path(), 0).unwrap(), [1, 2]);
    }

    #[test]
    fn damage_at_the_start_of_the_older_run_is_named_in_its_own_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(&OsFiles, dir.path(), 0, SALT).unwrap();
        append(&mut log, 1..=3);
        log.switch(false).unwrap();
        append(&mut log, 4..=6);
        // The first segment taken again after a checkpoint covering record 3.
        log.switch(false).unwrap();
        append(&mut log, 7..=8);
        drop(log);
        assert_eq!(open(dir.path(), 3).unwrap(), [4, 5, 6, 7, 8]);
        let second = dir.path().join(SEGMENT_NAMES[1]);
        let mut bytes = std::fs::read(&second).unwrap();
        bytes[30] ^= 0x5a;
        std::fs::write(&second, &bytes).unwrap();
        // Expected: record 4 (the start of the older run, in the second segment) is damaged and
        // records 5 and 6 follow it there: corruption at offset 0 of that segment.
        match open(dir.path(), 3) {
            Err(WalError::Corrupt { path, offset, .. }) => {
                assert!(path.ends_with(SEGMENT_NAMES[1]), "{path}");
                assert_eq!(offset, 0);
            }
            other => panic!("expected corruption, got {other:?}"),
        }
    }
}
