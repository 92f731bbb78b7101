//! A database's kill switch, for the test runtime: what the [`Fence`](crate::storage::Fence)
//! is to a data folder. A kill ends the stores opened before it as a SIGKILL ends a process:
//! no transaction of theirs begins any more, nothing is forwarded, the store fails, and the
//! writer's session is cut off at once, so that the database frees their partitions for the
//! next store as it frees a killed process's. What they committed stays; a transaction already
//! sent may or may not land, as a killed process's.
//!
//! A kill right after the n-th commit lets that commit be answered, as the writer answers it:
//! the process dies before its next transaction.

use std::sync::Arc;

use tokio::sync::watch;

use super::{PostgresOptions, PostgresStorage};
use crate::storage::OpenError;
use crate::storage::kills::Kills;

/// The kill switch of one database; clones share it. A watch, so that a store's writer
/// session can end at the kill.
#[derive(Clone)]
pub(crate) struct KillSwitch(Arc<watch::Sender<Kills>>);

impl Default for KillSwitch {
    fn default() -> Self {
        Self(Arc::new(watch::channel(Kills::default()).0))
    }
}

impl KillSwitch {
    /// Opens the store at `url` as one that the next kill ends.
    pub(crate) fn open(
        &self,
        url: &str,
        options: &PostgresOptions,
    ) -> Result<PostgresStorage, OpenError> {
        let life = Life {
            switch: self.clone(),
            born: self.kills(),
        };
        PostgresStorage::open_with(url, options, Some(life))
    }

    /// How many kills there have been.
    pub(crate) fn kills(&self) -> u64 {
        self.0.borrow().epoch()
    }

    /// A process kill: the stores opened before it write nothing more. A pending
    /// [`KillSwitch::kill_after_commits`] is disarmed (it was for the dead process).
    pub(crate) fn kill(&self) {
        self.0.send_modify(Kills::kill);
    }

    /// A [`KillSwitch::kill`] right after the `n`-th commit from now (1: the next). A commit
    /// is one transaction of the writer's.
    pub(crate) fn kill_after_commits(&self, n: u64) {
        // No store waits for an armed kill: nobody is told.
        self.0.send_if_modified(|kills| {
            kills.arm(n);
            false
        });
    }
}

/// A store's life under a kill switch: it ends at the next kill.
pub(super) struct Life {
    switch: KillSwitch,
    /// The switch's kill count when the store opened.
    born: u64,
}

impl Life {
    pub(super) fn ended(&self) -> bool {
        self.switch.kills() != self.born
    }

    /// Returns once the life has ended.
    pub(super) async fn end(&self) {
        let mut kills = self.switch.0.subscribe();
        // The sender lives as long as `self`: waiting cannot fail.
        let _ = kills.wait_for(|kills| kills.epoch() != self.born).await;
    }

    /// A transaction of this store committed: counts towards a pending kill, which happens
    /// here.
    pub(super) fn committed(&self) {
        self.switch.0.send_if_modified(|kills| {
            let fires = kills.committed(self.born);
            if fires {
                kills.kill();
            }
            fires
        });
    }
}
