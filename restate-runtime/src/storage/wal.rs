//! One segment of the write-ahead log in front of the redb store (the log has two, `log`): each
//! group commit is one record appended to a preallocated file and fdatasynced, and only then
//! applied to redb without a sync.
//!
//! Why: a durable redb commit rewrites every B-tree page on its path (about ten scattered 4 KiB
//! pages for one invocation) and syncs them, 0.3–0.4 ms here, while one appended record syncs in
//! about 0.1 ms. redb gets a durable commit (a checkpoint) only when a segment is full, and that
//! commit covers every page the records since the last one touched, once.
//!
//! Files: `journal.wal` and `journal.1.wal` in the data folder, next to the store
//! `journal.redb`; each preallocated with zeros (2 MiB; a segment that fills before the
//! checkpoint of the other has ended doubles, up to 64 MiB, when it is next written from its
//! start), records from offset 0.
//! It is reached through [`LogFile`], so that crash tests can put a simulated disk under it.
//!
//! Record layout (little-endian): length of the payload (u32), CRC-32 (u32) of the store's
//! salt (u64), the sequence number and the payload, sequence number (u64), payload (the
//! group's operations, postcard). The salt is the store's identity, drawn when the store is
//! created and kept in its metadata (`wal_salt`), so a log left from another store (its
//! `journal.redb` deleted and created anew) fails every checksum and is never replayed. A store
//! from before the salt existed reads its log with salt 0 (the old checksum) once, then gets one.
//!
//! Sequence numbers rise by one per record and continue across checkpoints and segments; the
//! store records the last one it has applied durably. Once a checkpoint covers a segment's
//! records, the segment is written again from its start, so what follows its last record is
//! zeros or older records (lower numbers).
//!
//! Reading at open stops at the first record that is torn, fails its checksum, or does not
//! carry the next number, **if that is the end**: when a valid record with the number after it
//! follows anywhere later in the segment (or starts the other one, `log`), the bad record is
//! damage in the middle of the log (an
//! acknowledged write lost), and opening fails as corrupt, naming the offset. A record that
//! passes its checksum but does not decode is corruption too. Only a bad tail (the write torn by
//! a crash, never acknowledged) ends the log.

use std::io;
use std::path::Path;

use super::WriteOp;
use super::files::{Files, LogFile};

const HEADER: usize = 16;
/// Zeros written per call while the log grows.
const FILL_CHUNK: usize = 1 << 20;
/// Size of a new segment; it doubles (up to `MAX_CAPACITY`) when it fills up too quickly.
/// Each fill is a checkpoint, whose cost is mostly the scattered pages it writes: 2 MiB rather
/// than 1 cut those writes enough for 7% more requests with idempotency keys and 18-35% more
/// fanout at 64 connections, with the same p99 for the former (`BENCHMARKS.md`, 2026-12-04).
pub(super) const INITIAL_CAPACITY: u64 = 2 << 20;
const MAX_CAPACITY: u64 = 64 << 20;

pub(super) struct Wal {
    file: Box<dyn LogFile>,
    /// The store's identity, mixed into every record's checksum.
    salt: u64,
    capacity: u64,
    /// Where the next record goes.
    end: u64,
    /// Reused encoding buffer.
    buffer: Vec<u8>,
}

/// A record read back at open.
pub(super) struct Replayed {
    pub seq: u64,
    pub ops: Vec<WriteOp>,
}

/// Why a log cannot be opened.
#[derive(Debug, thiserror::Error)]
pub(super) enum WalError {
    /// The file cannot be read or written.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// Damage before the log's end: records that were acknowledged would be lost.
    #[error("write-ahead log {path} is corrupt at offset {offset}: {reason}")]
    Corrupt {
        /// The log file.
        path: String,
        /// Where the bad record starts.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
}

impl Wal {
    /// Opens (or creates) the log segment at `path` in `files` for the store with `salt`, and
    /// returns the records that follow `applied` in it from its start. The file is synced with
    /// its folder when it is new.
    #[cfg(test)]
    pub(super) fn open(
        files: &dyn Files,
        path: &Path,
        applied: u64,
        salt: u64,
    ) -> Result<(Self, Vec<Replayed>), WalError> {
        let wal = Self::open_file(files, path, salt)?;
        let (replayed, _) = wal.read_after(applied, path)?;
        Ok((wal, replayed))
    }

    /// Opens (or creates) the segment without reading it.
    pub(super) fn open_file(files: &dyn Files, path: &Path, salt: u64) -> Result<Self, WalError> {
        let (file, created) = files.open_log(path)?;
        let len = file.len()?;
        let mut wal = Self {
            file,
            salt,
            capacity: len,
            end: 0,
            buffer: Vec::new(),
        };
        if len < INITIAL_CAPACITY {
            wal.grow_to(INITIAL_CAPACITY)?;
        }
        if created {
            files.sync_parent(path)?;
        }
        Ok(wal)
    }

    /// Whether the segment's first record is whole and carries `seq`.
    pub(super) fn starts_with(&self, seq: u64) -> io::Result<bool> {
        Ok(self.record_at(0, seq)?.is_some())
    }

    /// Where the next record goes.
    #[cfg(test)]
    pub(super) fn end_of_records(&self) -> u64 {
        self.end
    }

    /// Uses a new salt from now on (a store that had none gets one after its first replay).
    pub(super) fn set_salt(&mut self, salt: u64) {
        self.salt = salt;
    }

    /// The records `applied + 1`, `applied + 2`, ... from the segment's start, up to its end;
    /// damage with a later record after it (in this segment) is corruption. Also the offset
    /// where they end.
    pub(super) fn read_after(
        &self,
        applied: u64,
        path: &Path,
    ) -> Result<(Vec<Replayed>, u64), WalError> {
        let corrupt = |offset, reason| WalError::Corrupt {
            path: path.display().to_string(),
            offset,
            reason,
        };
        let mut out = Vec::new();
        let mut at = 0u64;
        loop {
            let seq = applied + 1 + out.len() as u64;
            let payload = match self.record_at(at, seq)? {
                Some(payload) => payload,
                // From `at` itself: a whole record there with a later number means the ones
                // before it are missing.
                None => match self.find_later_record(at, seq)? {
                    // The end of the log, unless a later record follows: then this one is
                    // damage in the middle, and the records after it were acknowledged.
                    None => return Ok((out, at)),
                    Some((later, offset)) => {
                        return Err(corrupt(
                            at,
                            format!(
                                "record {seq} is damaged or missing, but record {later} follows \
                                 at offset {offset}"
                            ),
                        ));
                    }
                },
            };
            let ops = postcard::from_bytes::<Vec<WriteOp>>(&payload).map_err(|e| {
                corrupt(
                    at,
                    format!("record {seq} passes its checksum but does not decode: {e}"),
                )
            })?;
            out.push(Replayed { seq, ops });
            at += (HEADER + payload.len()) as u64;
        }
    }

    /// The payload of the record at `at` if it is whole, carries `seq` and passes its checksum.
    fn record_at(&self, at: u64, seq: u64) -> io::Result<Option<Vec<u8>>> {
        Ok(self
            .whole_record_at(at, Some(seq))?
            .map(|(_, payload)| payload))
    }

    /// The number of the segment's first record, if it is whole and passes its checksum.
    pub(super) fn first_seq(&self) -> io::Result<Option<u64>> {
        Ok(self.whole_record_at(0, None)?.map(|(seq, _)| seq))
    }

    /// The record at `at` (its number and payload) if it is whole, carries `seq` (any number
    /// when `None`) and passes its checksum.
    fn whole_record_at(&self, at: u64, seq: Option<u64>) -> io::Result<Option<(u64, Vec<u8>)>> {
        if at + HEADER as u64 > self.capacity {
            return Ok(None);
        }
        let mut header = [0u8; HEADER];
        self.file.read_exact_at(&mut header, at)?;
        let (len, crc, found) = parse_header(&header);
        if seq.is_some_and(|seq| found != seq) || at + HEADER as u64 + len > self.capacity {
            return Ok(None);
        }
        let mut payload = vec![0u8; len as usize];
        self.file.read_exact_at(&mut payload, at + HEADER as u64)?;
        Ok((checksum(self.salt, found, &payload) == crc).then_some((found, payload)))
    }

    /// A valid record of this store numbered after `seq`, at or after `from`: its number and
    /// offset. Older records (lower numbers) and zeros are what a log's end looks like; a later
    /// number means the log goes on. Only called where the log looks like it ends, so reading
    /// the rest of the file once is affordable.
    fn find_later_record(&self, from: u64, seq: u64) -> io::Result<Option<(u64, u64)>> {
        if from >= self.capacity {
            return Ok(None);
        }
        let mut rest = vec![0u8; (self.capacity - from) as usize];
        self.file.read_exact_at(&mut rest, from)?;
        // No log holds more records than this past any point; the window keeps the checksum
        // off almost every position of random bytes.
        let window = self.capacity / HEADER as u64;
        let check = |start: usize| {
            let header: [u8; HEADER] = rest[start..start + HEADER].try_into().expect("header");
            let (len, crc, found) = parse_header(&header);
            if found <= seq || found - seq > window {
                return None;
            }
            let body = start + HEADER;
            let payload = rest.get(body..body + len as usize)?;
            (checksum(self.salt, found, payload) == crc).then_some((found, from + start as u64))
        };
        // A record's sequence field is never all zeros, so only starts whose field touches a
        // nonzero 8-byte word are candidates: zeroed stretches are skipped a word at a time.
        let starts = rest.len().saturating_sub(HEADER - 1);
        let mut next = 0;
        for (k, word) in rest.chunks_exact(8).enumerate() {
            if u64::from_ne_bytes(word.try_into().expect("8 bytes")) == 0 {
                continue;
            }
            // Starts whose field (bytes 8..16 of the header) overlaps word k.
            let (lo, hi) = ((8 * k).saturating_sub(15).max(next), (8 * k).min(starts));
            for start in lo..hi {
                if let Some(found) = check(start) {
                    return Ok(Some(found));
                }
            }
            next = next.max(hi);
        }
        Ok(None)
    }

    /// Appends one record and syncs it. `Ok(false)`: it does not fit; checkpoint and
    /// [`Wal::restart`] first (or commit the group to the store directly).
    pub(super) fn append(&mut self, seq: u64, ops: &[&WriteOp]) -> io::Result<bool> {
        self.buffer.clear();
        self.buffer.resize(HEADER, 0);
        let encoded = postcard::to_extend(ops, std::mem::take(&mut self.buffer))
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.buffer = encoded;
        let len = self.buffer.len() - HEADER;
        if self.end + self.buffer.len() as u64 > self.capacity || len > u32::MAX as usize {
            return Ok(false);
        }
        let crc = checksum(self.salt, seq, &self.buffer[HEADER..]);
        self.buffer[0..4].copy_from_slice(&(len as u32).to_le_bytes());
        self.buffer[4..8].copy_from_slice(&crc.to_le_bytes());
        self.buffer[8..16].copy_from_slice(&seq.to_le_bytes());
        self.file.write_all_at(&self.buffer, self.end)?;
        self.file.sync_data()?;
        self.end += self.buffer.len() as u64;
        Ok(true)
    }

    /// After a checkpoint: records are written from the start again; twice as many fit when
    /// it should `grow` (the load fills it faster than a checkpoint of the other ends).
    pub(super) fn restart(&mut self, grow: bool) -> io::Result<()> {
        self.end = 0;
        if grow && self.capacity < MAX_CAPACITY {
            self.grow_to((self.capacity * 2).min(MAX_CAPACITY))?;
        }
        Ok(())
    }

    /// Extends the file to `capacity` with written zeros, not a hole: on ext4 the first write to
    /// a block allocates it, so every append's fdatasync would also commit a filesystem journal
    /// transaction (measured here: 0.26–0.30 ms per fdatasync against 0.13 ms for overwriting
    /// written blocks).
    fn grow_to(&mut self, capacity: u64) -> io::Result<()> {
        let zeros = vec![0u8; FILL_CHUNK];
        let mut at = self.capacity;
        while at < capacity {
            let n = FILL_CHUNK.min((capacity - at) as usize);
            self.file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        self.file.sync_all()?;
        self.capacity = capacity;
        Ok(())
    }
}

/// Payload length, checksum and sequence number of a record header.
fn parse_header(header: &[u8; HEADER]) -> (u64, u32, u64) {
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as u64;
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    (len, crc, seq)
}

/// CRC-32 of the salt (left out when 0: stores from before the salt), sequence number and
/// payload.
fn checksum(salt: u64, seq: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    if salt != 0 {
        hasher.update(&salt.to_le_bytes());
    }
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::InvocationId;
    use crate::storage::files::OsFiles;

    const SALT: u64 = 0x5eed;

    fn op(index: u32) -> WriteOp {
        WriteOp::PutJournal {
            id: InvocationId::random(1),
            index,
            encoded: vec![index as u8; 100],
        }
    }

    fn indexes(replayed: &[Replayed]) -> Vec<u32> {
        replayed
            .iter()
            .flat_map(|r| &r.ops)
            .map(|op| match op {
                WriteOp::PutJournal { index, .. } => *index,
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn reads_back_what_follows_the_applied_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, replayed) = Wal::open(&OsFiles, &path, 0, SALT).unwrap();
        assert!(replayed.is_empty());
        for seq in 1..=3u64 {
            let (a, b) = (op(seq as u32 * 10), op(seq as u32 * 10 + 1));
            assert!(wal.append(seq, &[&a, &b]).unwrap());
        }
        drop(wal);
        let (_, replayed) = Wal::open(&OsFiles, &path, 0, SALT).unwrap();
        assert_eq!(indexes(&replayed), [10, 11, 20, 21, 30, 31]);
        // Records up to the applied one are skipped: after a checkpoint at 3, none follows.
        let (_, replayed) = Wal::open(&OsFiles, &path, 3, SALT).unwrap();
        assert!(replayed.is_empty());
        // Another store's log (another salt) is never replayed.
        let (_, replayed) = Wal::open(&OsFiles, &path, 0, SALT + 1).unwrap();
        assert!(replayed.is_empty());
    }

    #[test]
    fn stops_at_a_torn_record_and_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&OsFiles, &path, 0, SALT).unwrap();
        assert!(wal.append(1, &[&op(1)]).unwrap());
        assert!(wal.append(2, &[&op(2)]).unwrap());
        // Tear the second record's payload.
        let second = wal.end - 10;
        wal.file.write_all_at(&[0xff; 4], second).unwrap();
        let (_, replayed) = Wal::open(&OsFiles, &path, 0, SALT).unwrap();
        assert_eq!(indexes(&replayed), [1]);

        // A checkpoint at 2, then record 3 overwrites the start: the stale tail is not read.
        wal.restart(false).unwrap();
        assert!(wal.append(3, &[&op(3)]).unwrap());
        let (_, replayed) = Wal::open(&OsFiles, &path, 2, SALT).unwrap();
        assert_eq!(indexes(&replayed), [3]);
    }

    #[test]
    fn a_full_log_refuses_and_grows_when_it_filled_fast() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(&OsFiles, &dir.path().join("wal"), 0, SALT).unwrap();
        let big = WriteOp::PutJournal {
            id: InvocationId::random(1),
            index: 0,
            encoded: vec![7; (INITIAL_CAPACITY / 2) as usize],
        };
        assert!(wal.append(1, &[&big]).unwrap());
        assert!(!wal.append(2, &[&big]).unwrap());
        wal.restart(true).unwrap();
        assert_eq!(wal.capacity, 2 * INITIAL_CAPACITY);
        // The new space is written blocks, not a hole.
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(dir.path().join("wal")).unwrap();
        assert_eq!(meta.len(), 2 * INITIAL_CAPACITY);
        assert!(meta.blocks() * 512 >= 2 * INITIAL_CAPACITY);
        assert!(wal.append(2, &[&big]).unwrap());
        assert!(wal.append(3, &[&big]).unwrap());
    }

    /// Records 1..=`n` with payloads of `size` bytes, then the log's path and each record's
    /// offset (the last entry is the end of the last record).
    fn written_log(dir: &Path, n: u64, size: usize) -> (std::path::PathBuf, Vec<u64>) {
        let path = dir.join("wal");
        let (mut wal, _) = Wal::open(&OsFiles, &path, 0, SALT).unwrap();
        let mut offsets = vec![0];
        for seq in 1..=n {
            let op = WriteOp::PutJournal {
                id: InvocationId::random(1),
                index: seq as u32,
                encoded: vec![seq as u8; size],
            };
            assert!(wal.append(seq, &[&op]).unwrap());
            offsets.push(wal.end);
        }
        (path, offsets)
    }

    /// What opening a damaged copy of `path` gives: the records replayed, or the offset of
    /// the corruption.
    fn open_damaged(path: &Path, damage: impl FnOnce(&mut Vec<u8>)) -> Result<usize, u64> {
        let mut bytes = std::fs::read(path).unwrap();
        damage(&mut bytes);
        let copy = tempfile::tempdir().unwrap();
        let damaged = copy.path().join("wal");
        std::fs::write(&damaged, &bytes).unwrap();
        match Wal::open(&OsFiles, &damaged, 0, SALT) {
            Ok((_, replayed)) => Ok(replayed.len()),
            Err(WalError::Corrupt { offset, .. }) => Err(offset),
            Err(e) => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn a_write_torn_at_any_byte_ends_the_log_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = written_log(dir.path(), 4, 40);
        for r in 0..4 {
            for cut in offsets[r]..offsets[r + 1] {
                // Expected: the crash tore record r+1 (never acknowledged), and nothing was
                // written after it: records 1..=r replay, no error.
                let outcome = open_damaged(&path, |b| b[cut as usize..].fill(0));
                assert_eq!(outcome, Ok(r), "cut at byte {cut} of record {}", r + 1);
            }
        }
    }

    #[test]
    fn a_damaged_field_before_the_last_record_is_corruption_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = written_log(dir.path(), 4, 40);
        let fields = [
            ("length", 0),
            ("checksum", 5),
            ("sequence", 9),
            ("payload", 30),
        ];
        for (r, &start) in offsets[..4].iter().enumerate() {
            for (field, at) in fields {
                let byte = (start + at) as usize;
                let outcome = open_damaged(&path, |b| b[byte] ^= 0x5a);
                let expected = if r < 3 {
                    // Expected: later records follow the damaged one, so acknowledged writes
                    // would be lost: corruption, at the damaged record's offset.
                    Err(start)
                } else {
                    // Expected: damage to the last record looks like a torn write (nothing
                    // follows it to tell otherwise): the three before it replay.
                    Ok(3)
                };
                assert_eq!(outcome, expected, "{field} of record {}", r + 1);
            }
        }
    }

    #[test]
    fn a_zeroed_page_holding_two_records_is_corruption_when_records_follow() {
        let dir = tempfile::tempdir().unwrap();
        // Records of about 1.8 KiB: the page [4096, 8192) holds the end of record 3, all of
        // record 4 and the start of record 5; record 6 lies after it.
        let (path, offsets) = written_log(dir.path(), 6, 1800);
        assert!(offsets[2] < 4096 && offsets[5] > 8192 && offsets[5] < offsets[6]);
        // Expected: corruption at record 3, since record 6 follows intact.
        let outcome = open_damaged(&path, |b| b[4096..8192].fill(0));
        assert_eq!(outcome, Err(offsets[2]));
        // Expected: with nothing intact after the page (records 5 and 6 gone too), the
        // damage is the log's end: records 1 and 2 replay.
        let outcome = open_damaged(&path, |b| b[4096..].fill(0));
        assert_eq!(outcome, Ok(2));
    }

    #[test]
    fn a_checksummed_record_that_does_not_decode_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut wal, _) = Wal::open(&OsFiles, &path, 0, SALT).unwrap();
        assert!(wal.append(1, &[&op(1)]).unwrap());
        let second = wal.end;
        // A well-framed record whose payload is not a list of operations.
        let payload = [0xffu8; 12];
        let mut record = Vec::new();
        record.extend((payload.len() as u32).to_le_bytes());
        record.extend(checksum(SALT, 2, &payload).to_le_bytes());
        record.extend(2u64.to_le_bytes());
        record.extend(payload);
        wal.file.write_all_at(&record, second).unwrap();
        match Wal::open(&OsFiles, &path, 0, SALT) {
            Err(WalError::Corrupt { offset, reason, .. }) => {
                assert_eq!(offset, second);
                assert!(reason.contains("does not decode"), "{reason}");
            }
            other => panic!("expected corruption, got {:?}", other.map(|(_, r)| r.len())),
        }
    }
}
