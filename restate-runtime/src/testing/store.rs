//! Where a test runtime keeps what survives its restarts: the in-memory store (the default),
//! or a redb data folder ([`TestRuntimeBuilder::data_dir`](super::TestRuntimeBuilder)).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::TestRuntimeError;
use crate::runtime::Assembled;
use crate::storage::{MemoryStore, OpenError, RedbStorage, Storage};

/// How long a restart on a data folder waits for the last engine to let go of it.
const UNLOCK_WAIT: Duration = Duration::from_secs(10);

pub(super) enum TestStore {
    Memory(MemoryStore),
    Folder(PathBuf),
}

impl TestStore {
    /// Opens the store for a new engine.
    pub(super) fn open(&self, assembled: &Assembled) -> Result<Arc<dyn Storage>, TestRuntimeError> {
        match self {
            Self::Memory(store) => Ok(Arc::new(store.open(assembled.config.partitions))),
            Self::Folder(dir) => {
                let started = Instant::now();
                loop {
                    match RedbStorage::open(dir, &assembled.redb_options()) {
                        Ok(storage) => return Ok(Arc::new(storage)),
                        // The last engine's store is still being dropped.
                        Err(OpenError::Locked { .. }) if started.elapsed() < UNLOCK_WAIT => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => return Err(TestRuntimeError::Build(e.into())),
                    }
                }
            }
        }
    }

    /// A crash's first step: the running engine's writes stop reaching the store (a data
    /// folder is instead closed once its engine is dropped).
    pub(super) fn kill(&self) {
        if let Self::Memory(store) = self {
            store.kill();
        }
    }

    /// Crashes the engine right after the `n`-th commit from now.
    pub(super) fn kill_after_commits(&self, n: u64) {
        match self {
            Self::Memory(store) => store.kill_after_commits(n),
            Self::Folder(_) => self.refuse_crashes("crash_after_commits"),
        }
    }

    /// Panics for a crash asked of a data folder, which cannot be fenced.
    pub(super) fn refuse_crashes(&self, asked: &str) {
        if let Self::Folder(dir) = self {
            panic!(
                "{asked} needs the in-memory store; this test runtime uses the folder {}",
                dir.display()
            );
        }
    }
}
