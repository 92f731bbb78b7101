//! A simulated disk for crash tests, shared by the store (as a redb [`StorageBackend`]) and its
//! log (as a [`LogFile`]): each file keeps its durable bytes and the operations since its last
//! sync. [`Disk::crash`] loses unsynced operations (a random prefix survives, the last one
//! maybe torn at any byte), [`Disk::fail_sync_after`] fails a sync with EIO, and every choice
//! comes from one seed, so a failing case replays.
//!
//! A crash also fences off the handles opened before it, as a dead process's: whatever the old
//! store still does (its writer's final checkpoint when it is dropped) fails and reaches no file.
//! Folders are not simulated: a file exists once created.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use redb::{Builder, Database, DatabaseError, StorageBackend};

use super::files::{Files, LogFile};

/// The simulated disk; clones share it.
#[derive(Clone)]
pub(super) struct Disk {
    state: Arc<Mutex<State>>,
    /// Held by every sync while it runs; [`Disk::stall_syncs`] holds it to stall them.
    sync_gate: Arc<Mutex<()>>,
    /// The same for checkpoints alone ([`Disk::stall_checkpoints`]).
    store_sync_gate: Arc<Mutex<()>>,
}

struct State {
    /// Ordered, so that a crash draws for the files in the same order every run.
    files: BTreeMap<PathBuf, SimFile>,
    rng: StdRng,
    /// Bumped by every crash; handles from an earlier one are dead.
    epoch: u64,
    /// Syncs to go before one fails (1: the next).
    fail_sync_in: Option<u64>,
}

#[derive(Clone, Default)]
struct SimFile {
    /// What survives any crash.
    durable: Vec<u8>,
    /// What reads see.
    live: Vec<u8>,
    /// Since the last sync, in order: `durable` plus all of them is `live`.
    unsynced: Vec<Change>,
}

#[derive(Clone)]
enum Change {
    Write { offset: usize, data: Vec<u8> },
    SetLen(usize),
}

impl Change {
    fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            Self::Write { offset, data } => {
                let end = offset + data.len();
                if bytes.len() < end {
                    bytes.resize(end, 0);
                }
                bytes[*offset..end].copy_from_slice(data);
            }
            Self::SetLen(len) => bytes.resize(*len, 0),
        }
    }
}

/// What one file keeps of its unsynced changes at a crash: the first `changes`, the last of
/// them cut to its first `torn_at` bytes if it is a write.
#[derive(Debug, Clone, Copy)]
pub(super) struct Kept {
    pub changes: usize,
    pub torn_at: Option<usize>,
}

impl Disk {
    pub(super) fn new(seed: u64) -> Self {
        Self::with_state(State {
            files: BTreeMap::new(),
            rng: StdRng::seed_from_u64(seed),
            epoch: 0,
            fail_sync_in: None,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock leaves nothing worth protecting.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_state(state: State) -> Self {
        Self {
            state: Arc::new(Mutex::new(state)),
            sync_gate: Arc::default(),
            store_sync_gate: Arc::default(),
        }
    }

    /// A slow disk: every sync waits until the guard is dropped, so what is submitted
    /// meanwhile queues behind the writer.
    pub(super) fn stall_syncs(&self) -> MutexGuard<'_, ()> {
        self.sync_gate.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Slow checkpoints: the syncs of a store file made on the checkpointer thread (its
    /// checkpoints) wait until the guard is dropped; the log's, and the writer's, go on.
    pub(super) fn stall_checkpoints(&self) -> MutexGuard<'_, ()> {
        self.store_sync_gate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The `n`-th sync from now (1: the next), of any file, fails with EIO and makes nothing
    /// durable; the writes it covered stay unsynced, lost or kept by the next crash.
    pub(super) fn fail_sync_after(&self, n: u64) {
        assert!(n > 0, "the 0th sync from now has happened");
        self.state().fail_sync_in = Some(n);
    }

    /// Power loss: each file keeps a random prefix of its unsynced changes, the last one torn
    /// at a random byte half of the time.
    pub(super) fn crash(&self) {
        let mut state = self.state();
        let State { files, rng, .. } = &mut *state;
        for file in files.values_mut() {
            let changes = rng.random_range(0..=file.unsynced.len());
            let torn_at = match file.unsynced[..changes].last() {
                Some(Change::Write { data, .. }) if rng.random_bool(0.5) => {
                    Some(rng.random_range(0..data.len().max(1)))
                }
                _ => None,
            };
            file.crash(Kept { changes, torn_at });
        }
        state.epoch += 1;
    }

    /// A crash in which `path` keeps what `kept` says and every other file nothing unsynced.
    pub(super) fn crash_keeping(&self, path: &Path, kept: Kept) {
        let mut state = self.state();
        let nothing = Kept {
            changes: 0,
            torn_at: None,
        };
        for (name, file) in &mut state.files {
            file.crash(if name == path { kept } else { nothing });
        }
        state.epoch += 1;
    }

    /// The sizes of the unsynced changes of `path`, in order (0 for a change of length).
    pub(super) fn unsynced(&self, path: &Path) -> Vec<usize> {
        let state = self.state();
        let Some(file) = state.files.get(path) else {
            return Vec::new();
        };
        file.unsynced
            .iter()
            .map(|change| match change {
                Change::Write { data, .. } => data.len(),
                Change::SetLen(_) => 0,
            })
            .collect()
    }

    /// An independent copy of the disk as it is now (no handle is open on it), to crash the
    /// same moment in many ways.
    pub(super) fn fork(&self, seed: u64) -> Self {
        let state = self.state();
        Self::with_state(State {
            files: state.files.clone(),
            rng: StdRng::seed_from_u64(seed),
            epoch: 0,
            fail_sync_in: state.fail_sync_in,
        })
    }

    fn handle(&self, path: &Path, store: bool) -> (Handle, bool) {
        let mut state = self.state();
        let created = !state.files.contains_key(path);
        state.files.entry(path.to_owned()).or_default();
        let handle = Handle {
            disk: self.clone(),
            path: path.to_owned(),
            epoch: state.epoch,
            store,
        };
        (handle, created)
    }
}

impl SimFile {
    fn crash(&mut self, kept: Kept) {
        let mut kept_changes = std::mem::take(&mut self.unsynced);
        kept_changes.truncate(kept.changes);
        if let (Some(cut), Some(Change::Write { data, .. })) =
            (kept.torn_at, kept_changes.last_mut())
        {
            data.truncate(cut);
        }
        for change in &kept_changes {
            change.apply(&mut self.durable);
        }
        self.live = self.durable.clone();
    }
}

impl Files for Disk {
    fn open_log(&self, path: &Path) -> io::Result<(Box<dyn LogFile>, bool)> {
        let (handle, created) = self.handle(path, false);
        Ok((Box::new(handle), created))
    }

    fn sync_parent(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    fn open_store(&self, builder: &Builder, path: &Path) -> Result<Database, DatabaseError> {
        builder.create_with_backend(self.handle(path, true).0)
    }
}

/// One open file of the disk, for the process that opened it.
struct Handle {
    disk: Disk,
    path: PathBuf,
    epoch: u64,
    /// A redb store's file (not a log's).
    store: bool,
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "simulated {}", self.path.display())
    }
}

impl Handle {
    /// The file (and the armed sync failure), unless a crash has ended the process that
    /// opened it.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut SimFile, &mut Option<u64>) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut guard = self.disk.state();
        let State {
            files,
            epoch,
            fail_sync_in,
            ..
        } = &mut *guard;
        if *epoch != self.epoch {
            return Err(io::Error::other("the simulated machine crashed"));
        }
        f(
            files.get_mut(&self.path).expect("never removed"),
            fail_sync_in,
        )
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.with(|file, _| {
            let start = offset as usize;
            let bytes = file
                .live
                .get(start..start + out.len())
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            out.copy_from_slice(bytes);
            Ok(())
        })
    }

    fn change(&self, change: Change) -> io::Result<()> {
        self.with(|file, _| {
            change.apply(&mut file.live);
            file.unsynced.push(change);
            Ok(())
        })
    }

    fn sync(&self) -> io::Result<()> {
        let checkpointing = std::thread::current().name() == Some("journal-checkpointer");
        let _checkpoint_gate = (self.store && checkpointing).then(|| self.disk.stall_checkpoints());
        let _gate = self.disk.stall_syncs();
        self.with(|file, fail_sync_in| {
            if let Some(n) = *fail_sync_in {
                *fail_sync_in = (n > 1).then(|| n - 1);
                if n == 1 {
                    return Err(io::Error::from_raw_os_error(libc::EIO));
                }
            }
            for change in std::mem::take(&mut file.unsynced) {
                change.apply(&mut file.durable);
            }
            Ok(())
        })
    }
}

impl LogFile for Handle {
    fn len(&self) -> io::Result<u64> {
        self.with(|file, _| Ok(file.live.len() as u64))
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read(offset, buf)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.change(Change::Write {
            offset: offset as usize,
            data: buf.to_vec(),
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }
}

impl StorageBackend for Handle {
    fn len(&self) -> io::Result<u64> {
        LogFile::len(self)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        Handle::read(self, offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.change(Change::SetLen(len as usize))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write_all_at(data, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> &'static Path {
        Path::new("/sim/file")
    }

    /// A file whose durable bytes are `[1; 4]`, then unsynced writes of `[2; 4]` at 4 and
    /// `[3; 4]` at 8.
    fn written(disk: &Disk) -> Handle {
        let (file, _) = disk.handle(path(), false);
        file.write_all_at(&[1; 4], 0).unwrap();
        file.sync().unwrap();
        file.write_all_at(&[2; 4], 4).unwrap();
        file.write_all_at(&[3; 4], 8).unwrap();
        file
    }

    fn durable(disk: &Disk) -> Vec<u8> {
        disk.state().files[path()].durable.clone()
    }

    #[test]
    fn a_crash_keeps_synced_bytes_and_a_prefix_of_the_rest_torn_at_most_once() {
        let disk = Disk::new(0);
        let _file = written(&disk);
        assert_eq!(disk.unsynced(path()), [4, 4]);
        let fork = disk.fork(0);
        fork.crash_keeping(
            path(),
            Kept {
                changes: 2,
                torn_at: Some(1),
            },
        );
        assert_eq!(durable(&fork), [1, 1, 1, 1, 2, 2, 2, 2, 3]);
        // Whatever a random crash keeps is one of these: never a later write without the
        // earlier ones.
        for seed in 0..64 {
            let fork = disk.fork(seed);
            fork.crash();
            let bytes = durable(&fork);
            let whole = [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3];
            assert!(whole.starts_with(&bytes) && bytes.len() >= 4, "{bytes:?}");
        }
    }

    #[test]
    fn a_failed_sync_makes_nothing_durable_and_a_crash_ends_old_handles() {
        let disk = Disk::new(0);
        let file = written(&disk);
        disk.fail_sync_after(2);
        file.sync().unwrap();
        file.write_all_at(&[4; 4], 0).unwrap();
        let err = file.sync().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        assert_eq!(disk.unsynced(path()), [4]);
        disk.crash_keeping(
            path(),
            Kept {
                changes: 0,
                torn_at: None,
            },
        );
        assert_eq!(durable(&disk), [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]);
        assert!(file.write_all_at(&[5; 4], 0).is_err());
        assert!(file.sync().is_err());
        let (reopened, created) = disk.handle(path(), false);
        assert!(!created);
        let mut head = [0; 4];
        reopened.read_exact_at(&mut head, 0).unwrap();
        assert_eq!(head, [1; 4]);
    }
}
