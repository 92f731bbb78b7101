//! Free disk space under a data folder. Below a reserve, new work is refused (work already
//! accepted keeps the reserve to commit its progress), and a start waits for space instead of
//! failing in a loop. Both recover by themselves once space is freed.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::StorageError;

/// How long a measurement is reused: admission asks on every new invocation.
const FRESH_FOR: Duration = Duration::from_millis(100);
/// How often a start on a full disk measures again, and how often it says so again.
const START_RECHECK: Duration = Duration::from_millis(250);
const START_REPEAT_LOG: Duration = Duration::from_secs(30);

/// Bytes an unprivileged process may still write on the file system that holds `dir`.
pub(super) fn available(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `stats` is a valid out-pointer for one statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled `stats`.
    let stats = unsafe { stats.assume_init() };
    // The field types differ by platform (u32 on some 32-bit targets).
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (u64::from(stats.f_bavail), u64::from(stats.f_frsize));
    Ok(blocks.saturating_mul(size))
}

/// Admission by free space: [`Reserve::admit`] refuses while less than the reserve is free.
pub(super) struct Reserve {
    dir: PathBuf,
    bytes: u64,
    /// Bytes free at the last measurement, and when it was taken (microseconds after
    /// `start`, 0 for never): atomics, because admission runs under the engine's map lock.
    free: AtomicU64,
    measured_at: AtomicU64,
    start: Instant,
}

impl Reserve {
    pub(super) fn new(dir: &Path, bytes: u64) -> Self {
        Self {
            dir: dir.to_owned(),
            bytes,
            free: AtomicU64::new(0),
            measured_at: AtomicU64::new(0),
            start: Instant::now(),
        }
    }

    /// The data folder it measures.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// `Ok` when new work fits; else an error that names the folder and the sizes. A failed
    /// measurement admits: the writer still stops the process on a failed write (law 10).
    pub(super) fn admit(&self) -> Result<(), StorageError> {
        if self.bytes == 0 {
            return Ok(());
        }
        // Two callers may both measure after it goes stale; either result is current.
        let now = self.start.elapsed().as_micros() as u64 + 1;
        let at = self.measured_at.load(Ordering::Relaxed);
        let free = if at != 0 && now.saturating_sub(at) < FRESH_FOR.as_micros() as u64 {
            self.free.load(Ordering::Relaxed)
        } else {
            let free = available(&self.dir).unwrap_or(u64::MAX);
            self.free.store(free, Ordering::Relaxed);
            self.measured_at.store(now, Ordering::Relaxed);
            free
        };
        if free >= self.bytes {
            return Ok(());
        }
        Err(StorageError::Backend(format!(
            "disk full: {free} bytes free for {}, below the reserve of {} bytes \
             (RESTATE_MIN_FREE_DISK_BYTES); new work is refused until space is freed",
            self.dir.display(),
            self.bytes
        )))
    }

    /// Whether a copy of about `bytes` fits in `dir` (a backup folder), leaving the reserve
    /// free when `dir` is on the data folder's file system: a backup must not take the room
    /// accepted work commits its progress in. A failed measurement lets the copy try.
    pub(super) fn room_for_copy(&self, dir: &Path, bytes: u64) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let Ok(free) = available(dir) else {
            return Ok(());
        };
        let device = |path: &Path| std::fs::metadata(path).map(|m| m.dev()).ok();
        let shared = device(dir).is_some_and(|d| Some(d) == device(&self.dir));
        let kept = if shared { self.bytes } else { 0 };
        if free >= bytes.saturating_add(kept) {
            return Ok(());
        }
        Err(format!(
            "not enough free disk: the copy needs about {bytes} bytes and {free} are free{}",
            if shared {
                format!(
                    " on the data folder's disk, which keeps {kept} bytes for accepted work \
                     (RESTATE_MIN_FREE_DISK_BYTES)"
                )
            } else {
                String::new()
            }
        ))
    }

    /// Blocks until the reserve is free, saying so by name while it waits: a start on a full
    /// disk then recovers once space is freed, instead of failing again and again.
    pub(super) fn wait_for_room(&self) {
        if self.bytes == 0 {
            return;
        }
        let mut said_at: Option<Instant> = None;
        loop {
            let free = match available(&self.dir) {
                Ok(free) => free,
                // Unmeasurable: opening will report the real problem.
                Err(_) => return,
            };
            if free >= self.bytes {
                if said_at.is_some() {
                    tracing::info!(dir = %self.dir.display(), free, "disk space available again; starting");
                }
                return;
            }
            if said_at.is_none_or(|at| at.elapsed() >= START_REPEAT_LOG) {
                tracing::error!(
                    dir = %self.dir.display(),
                    free,
                    reserve = self.bytes,
                    "disk full: not enough free space to start (RESTATE_MIN_FREE_DISK_BYTES); \
                     waiting until space is freed"
                );
                said_at = Some(Instant::now());
            }
            std::thread::sleep(START_RECHECK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backup_copy_must_leave_the_reserve_free_on_the_data_folders_disk() {
        let data = tempfile::tempdir().unwrap();
        let copy = data.path().join("copy");
        std::fs::create_dir(&copy).unwrap();
        let free = available(data.path()).unwrap();
        let reserve = Reserve::new(data.path(), free / 2);
        assert!(reserve.room_for_copy(&copy, free / 4).is_ok());
        let refused = reserve.room_for_copy(&copy, free).unwrap_err();
        assert!(
            refused.contains("keeps") && refused.contains("RESTATE_MIN_FREE_DISK_BYTES"),
            "{refused}"
        );
        // Without a reserve, only the copy's own size counts.
        assert!(
            Reserve::new(data.path(), 0)
                .room_for_copy(&copy, free / 2)
                .is_ok()
        );
        assert!(
            Reserve::new(data.path(), 0)
                .room_for_copy(&copy, free * 2)
                .is_err()
        );
    }

    #[test]
    fn a_reserve_larger_than_the_disk_refuses_and_names_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let free = available(dir.path()).unwrap();
        assert!(Reserve::new(dir.path(), 1).admit().is_ok());
        let err = Reserve::new(dir.path(), free.saturating_add(1 << 40))
            .admit()
            .unwrap_err()
            .to_string();
        assert!(err.contains("disk full"), "{err}");
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
    }

    #[test]
    fn no_reserve_admits_without_measuring() {
        let reserve = Reserve::new(Path::new("/nonexistent/folder"), 0);
        assert!(reserve.admit().is_ok());
        reserve.wait_for_room();
    }
}
