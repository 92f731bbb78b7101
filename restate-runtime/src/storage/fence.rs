//! A data folder's real files with a kill switch, for the test runtime: a kill fails every
//! later write and sync of the handles opened before it, as a SIGKILL ends a process's writes.
//! The files stay as that process left them: what it wrote is there (the kernel had it), its
//! last checkpoint never runs, and the next open recovers from the log. Handles opened after
//! the kill are alive. (redb fails its file after a failed write, so the dead handles' reads
//! fail too, as the in-memory store's do.)
//!
//! A kill right after the n-th commit lets that commit finish as the writer does it (applied
//! to the store, answered): the process dies at its next step that would make anything
//! durable, and counts as dead at once.

use std::io;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use redb::backends::FileBackend;
use redb::{BackendError, Builder, Database, DatabaseError, StorageBackend};

use super::OpenError;
use super::files::{Files, LogFile, OsFiles};
use super::kills::Kills;
use super::redb_store::{RedbOptions, RedbStorage};

/// The kill switch of one data folder; clones share it.
#[derive(Clone, Default)]
pub(crate) struct Fence(Arc<Mutex<FenceState>>);

#[derive(Default)]
struct FenceState {
    kills: Kills,
    /// The commit an armed kill waited for is durable: the next durable step of this epoch's
    /// handles kills.
    armed: bool,
}

impl Fence {
    /// Opens the store in `dir` (created if missing) on handles that the next kill ends.
    pub(crate) fn open(&self, dir: &Path, options: &RedbOptions) -> Result<RedbStorage, OpenError> {
        std::fs::create_dir_all(dir).map_err(|source| OpenError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let files = FencedFiles {
            fence: self.clone(),
            epoch: self.state().kills.epoch(),
        };
        RedbStorage::open_with(dir, options, &files)
    }

    /// How many kills there have been (an armed one included).
    pub(crate) fn kills(&self) -> u64 {
        let state = self.state();
        state.kills.epoch() + u64::from(state.armed)
    }

    /// A process kill: the handles opened before it write nothing more. A pending
    /// [`Fence::kill_after_commits`] is disarmed (it was for the dead process).
    pub(crate) fn kill(&self) {
        let mut state = self.state();
        state.kills.kill();
        state.armed = false;
    }

    /// A [`Fence::kill`] right after the `n`-th commit from now (1: the next) is durable. A
    /// commit is one group's append to the log, synced.
    pub(crate) fn kill_after_commits(&self, n: u64) {
        self.state().kills.arm(n);
    }

    fn state(&self) -> MutexGuard<'_, FenceState> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Fails unless the handles of `epoch` may take a step that makes something durable
    /// (a log write, any sync); an armed kill happens here.
    fn durable_step(&self, epoch: u64) -> io::Result<()> {
        let mut state = self.state();
        if state.kills.epoch() == epoch && state.armed {
            state.kills.kill();
            state.armed = false;
        }
        Self::check(&state, epoch)
    }

    /// Fails unless the handles of `epoch` are alive: for the store's writes, which a commit
    /// that armed a kill still makes (the group's apply) and only a sync makes durable.
    fn alive(&self, epoch: u64) -> io::Result<()> {
        Self::check(&self.state(), epoch)
    }

    fn check(state: &FenceState, epoch: u64) -> io::Result<()> {
        if state.kills.epoch() == epoch {
            Ok(())
        } else {
            Err(io::Error::other("the store's process was killed"))
        }
    }

    /// A commit of `epoch` is durable: counts towards a pending kill.
    fn committed(&self, epoch: u64) {
        let mut state = self.state();
        if state.kills.committed(epoch) {
            state.armed = true;
        }
    }
}

/// The folder's files as one process opens them.
struct FencedFiles {
    fence: Fence,
    epoch: u64,
}

impl Files for FencedFiles {
    fn open_log(&self, path: &Path) -> io::Result<(Box<dyn LogFile>, bool)> {
        self.fence.durable_step(self.epoch)?;
        let (inner, created) = OsFiles.open_log(path)?;
        let log = FencedLog {
            inner,
            fence: self.fence.clone(),
            epoch: self.epoch,
        };
        Ok((Box::new(log), created))
    }

    fn sync_parent(&self, path: &Path) -> io::Result<()> {
        self.fence.durable_step(self.epoch)?;
        OsFiles.sync_parent(path)
    }

    fn open_store(&self, builder: &Builder, path: &Path) -> Result<Database, DatabaseError> {
        self.fence.durable_step(self.epoch)?;
        let file = super::files::open_data_file(path)?;
        let backend = FencedBackend {
            inner: FileBackend::new(file)?,
            fence: self.fence.clone(),
            epoch: self.epoch,
        };
        builder.create_with_backend(backend)
    }
}

struct FencedLog {
    inner: Box<dyn LogFile>,
    fence: Fence,
    epoch: u64,
}

impl LogFile for FencedLog {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.fence.durable_step(self.epoch)?;
        self.inner.write_all_at(buf, offset)
    }

    /// The sync that makes a group's append durable: a commit.
    fn sync_data(&self) -> io::Result<()> {
        self.fence.durable_step(self.epoch)?;
        self.inner.sync_data()?;
        self.fence.committed(self.epoch);
        Ok(())
    }

    fn sync_all(&self) -> io::Result<()> {
        self.fence.durable_step(self.epoch)?;
        self.inner.sync_all()
    }
}

/// redb's own file backend, its writes and syncs fenced; locks as on any other open.
#[derive(Debug)]
struct FencedBackend {
    inner: FileBackend,
    fence: Fence,
    epoch: u64,
}

impl std::fmt::Debug for Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fence")
            .field("kills", &self.kills())
            .finish()
    }
}

impl StorageBackend for FencedBackend {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.fence.alive(self.epoch)?;
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.fence.durable_step(self.epoch)?;
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.fence.alive(self.epoch)?;
        self.inner.write(offset, data)
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{StateScope, Storage as _, WriteOp};

    fn set(name: &str) -> WriteOp {
        WriteOp::SetState {
            scope: scope(),
            name: name.into(),
            value: b"1".to_vec(),
        }
    }

    fn scope() -> StateScope {
        StateScope {
            service: "S".into(),
            key: "k".into(),
        }
    }

    /// Every file of the folder, with a hash of its bytes.
    fn files(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
        use std::hash::{Hash as _, Hasher as _};
        let mut all: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| {
                let path = entry.unwrap().path();
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                std::fs::read(&path).unwrap().hash(&mut hasher);
                (path, hasher.finish())
            })
            .collect();
        all.sort();
        all
    }

    #[tokio::test]
    async fn a_kill_after_a_commit_keeps_it_writes_nothing_more_and_the_log_recovers_it() {
        let dir = tempfile::tempdir().unwrap();
        let options = RedbOptions {
            // No idle checkpoint: what the reopened store has comes from the log.
            idle_checkpoint: std::time::Duration::from_secs(3600),
            ..RedbOptions::default()
        };
        let fence = Fence::default();
        let store = fence.open(dir.path(), &options).unwrap();
        fence.kill_after_commits(2);
        store.submit(vec![set("a")]).await.unwrap();
        // The second commit is answered as made: it is.
        store.submit(vec![set("b")]).await.unwrap();
        assert_eq!(fence.kills(), 1, "dead right after the second commit");
        assert!(store.submit(vec![set("c")]).await.is_err());
        // What the dead process left is what stays: its close (a checkpoint) writes nothing.
        let left = files(dir.path());
        drop(store);
        assert_eq!(files(dir.path()), left);

        let reopened = fence.open(dir.path(), &options).unwrap();
        assert_eq!(reopened.state_keys(&scope()).unwrap(), ["a", "b"]);
        reopened.submit(vec![set("d")]).await.unwrap();
        assert_eq!(reopened.state_keys(&scope()).unwrap(), ["a", "b", "d"]);
    }
}
