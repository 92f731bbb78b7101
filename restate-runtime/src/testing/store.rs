//! Where a test runtime keeps what survives its restarts: the in-memory store (the default),
//! or a redb data folder ([`TestRuntimeBuilder::data_dir`](super::TestRuntimeBuilder)).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::TestRuntimeError;
use crate::runtime::Assembled;
use crate::storage::{Fence, MemoryStore, OpenError, Storage};

/// How long a restart on a data folder waits for the last engine to let go of it.
const UNLOCK_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub(super) enum TestStore {
    Memory(MemoryStore),
    /// A redb folder on handles that a crash fences off, as a SIGKILL ends a process's writes.
    Folder {
        dir: PathBuf,
        fence: Fence,
    },
}

impl TestStore {
    pub(super) fn folder(dir: PathBuf) -> Self {
        Self::Folder {
            dir,
            fence: Fence::default(),
        }
    }

    /// Opens the store for a new engine.
    pub(super) fn open(&self, assembled: &Assembled) -> Result<Arc<dyn Storage>, TestRuntimeError> {
        match self {
            Self::Memory(store) => Ok(Arc::new(store.open(assembled.config.partitions))),
            Self::Folder { dir, fence } => {
                let started = Instant::now();
                loop {
                    match fence.open(dir, &assembled.redb_options()) {
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

    /// A crash's first step: the running engine's writes stop reaching the store.
    pub(super) fn kill(&self) {
        match self {
            Self::Memory(store) => store.kill(),
            Self::Folder { fence, .. } => fence.kill(),
        }
    }

    /// How many crashes the store has seen.
    pub(super) fn kills(&self) -> u64 {
        match self {
            Self::Memory(store) => store.kills(),
            Self::Folder { fence, .. } => fence.kills(),
        }
    }

    /// Crashes the engine right after the `n`-th commit from now.
    pub(super) fn kill_after_commits(&self, n: u64) {
        match self {
            Self::Memory(store) => store.kill_after_commits(n),
            Self::Folder { fence, .. } => fence.kill_after_commits(n),
        }
    }
}
