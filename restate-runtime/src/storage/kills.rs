//! What a test runtime's crash does to its store, kept the same way by every backend: a kill
//! count (a handle opened at another count belongs to a dead process) and a kill armed for
//! right after the n-th commit from now.

/// The kills of one store and the one armed, if any.
#[derive(Debug, Default)]
pub(crate) struct Kills {
    /// Bumped by every kill.
    epoch: u64,
    /// Commits to go before an armed kill (1: the next).
    countdown: Option<u64>,
}

impl Kills {
    /// How many kills there have been.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A process kill. An armed kill is disarmed: it was for the dead process.
    pub(crate) fn kill(&mut self) {
        self.epoch += 1;
        self.countdown = None;
    }

    /// Arms a kill right after the `n`-th commit from now (1: the next).
    pub(crate) fn arm(&mut self, n: u64) {
        assert!(n > 0, "the 0th commit from now has happened");
        self.countdown = Some(n);
    }

    /// A commit by a handle opened at `epoch` counts towards the armed kill: true when it is
    /// the commit the kill waits for (its caller kills now, or at its next durable step).
    pub(crate) fn committed(&mut self, epoch: u64) -> bool {
        if epoch != self.epoch {
            return false;
        }
        match self.countdown {
            Some(1) => {
                self.countdown = None;
                true
            }
            Some(n) => {
                self.countdown = Some(n - 1);
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Kills;

    #[test]
    fn an_armed_kill_comes_after_its_commit_and_a_kill_disarms_it() {
        let mut kills = Kills::default();
        kills.arm(2);
        assert!(!kills.committed(0));
        assert!(
            !kills.committed(1),
            "another process's commit does not count"
        );
        assert!(kills.committed(0));
        assert!(!kills.committed(0), "fired once");
        kills.arm(1);
        kills.kill();
        assert_eq!(kills.epoch(), 1);
        assert!(!kills.committed(1), "disarmed by the kill");
    }
}
