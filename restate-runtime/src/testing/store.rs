//! Where a test runtime keeps what survives its restarts: the in-memory store (the default),
//! a redb data folder ([`TestRuntimeBuilder::data_dir`](super::TestRuntimeBuilder)) or a
//! PostgreSQL database (`TestRuntimeBuilder::database_url`, feature `postgres`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::TestRuntimeError;
use crate::runtime::Assembled;
use crate::storage::{Fence, MemoryStore, OpenError, Storage};

/// How long a restart waits for the last engine to let go of its data folder or database.
const UNLOCK_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub(super) enum TestStore {
    Memory(MemoryStore),
    /// A redb folder on handles that a crash fences off, as a SIGKILL ends a process's writes.
    Folder {
        dir: PathBuf,
        fence: Fence,
    },
    /// A database on sessions that a crash cuts off, as a SIGKILL ends a process's.
    #[cfg(feature = "postgres")]
    Database {
        url: String,
        switch: crate::storage::KillSwitch,
    },
}

impl TestStore {
    pub(super) fn folder(dir: PathBuf) -> Self {
        Self::Folder {
            dir,
            fence: Fence::default(),
        }
    }

    #[cfg(feature = "postgres")]
    pub(super) fn database(url: String) -> Self {
        Self::Database {
            url,
            switch: crate::storage::KillSwitch::default(),
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
            #[cfg(feature = "postgres")]
            Self::Database { url, switch } => {
                let options = crate::runtime::postgres_options(&assembled.config, false);
                let storage = switch
                    .open(url, &options)
                    .map_err(|e| TestRuntimeError::Build(e.into()))?;
                // The last engine's partitions are free once the database has ended its cut
                // session (soon after the crash); the store's lease rounds take them then.
                // Its engine starts with all of them, as after a restart on a folder.
                let started = Instant::now();
                let owned = storage.owned();
                let all = || {
                    let owned = owned.borrow();
                    owned.len() == owned.count() as usize
                };
                while !all() {
                    if started.elapsed() >= UNLOCK_WAIT {
                        return Err(TestRuntimeError::Build(
                            OpenError::Locked {
                                path: crate::config::redact_password(url),
                            }
                            .into(),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(Arc::new(storage))
            }
        }
    }

    /// A crash's first step: the running engine's writes stop reaching the store.
    pub(super) fn kill(&self) {
        match self {
            Self::Memory(store) => store.kill(),
            Self::Folder { fence, .. } => fence.kill(),
            #[cfg(feature = "postgres")]
            Self::Database { switch, .. } => switch.kill(),
        }
    }

    /// How many crashes the store has seen.
    pub(super) fn kills(&self) -> u64 {
        match self {
            Self::Memory(store) => store.kills(),
            Self::Folder { fence, .. } => fence.kills(),
            #[cfg(feature = "postgres")]
            Self::Database { switch, .. } => switch.kills(),
        }
    }

    /// Crashes the engine right after the `n`-th commit from now.
    pub(super) fn kill_after_commits(&self, n: u64) {
        match self {
            Self::Memory(store) => store.kill_after_commits(n),
            Self::Folder { fence, .. } => fence.kill_after_commits(n),
            #[cfg(feature = "postgres")]
            Self::Database { switch, .. } => switch.kill_after_commits(n),
        }
    }
}
