//! The files under the store and its write-ahead log: the seam where tests put a simulated disk
//! (`faults`) that loses unsynced writes, tears them and fails syncs. Production uses the real
//! file system through [`OsFiles`], one dynamic call per file operation.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use redb::{Builder, Database, DatabaseError};

/// Where a data folder's files live.
pub(super) trait Files {
    /// Opens the log file at `path`, creating it if missing; `true` when it was created.
    fn open_log(&self, path: &Path) -> io::Result<(Box<dyn LogFile>, bool)>;
    /// Makes the folder holding `path` durable, so a file just created there survives a crash.
    fn sync_parent(&self, path: &Path) -> io::Result<()>;
    /// Opens (or creates) the redb store at `path`.
    fn open_store(&self, builder: &Builder, path: &Path) -> Result<Database, DatabaseError>;
}

/// What the log does with its file: positioned reads and writes, and syncs.
pub(super) trait LogFile: Send {
    /// The file's length in bytes.
    fn len(&self) -> io::Result<u64>;
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// fdatasync: the data written, and the length, are durable.
    fn sync_data(&self) -> io::Result<()>;
    /// fsync: as [`LogFile::sync_data`], with the rest of the file's metadata.
    fn sync_all(&self) -> io::Result<()>;
}

/// The real file system.
pub(super) struct OsFiles;

/// Opens `path` for reading and writing, creating it if missing, keeping what it holds.
pub(super) fn open_data_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

impl Files for OsFiles {
    fn open_log(&self, path: &Path) -> io::Result<(Box<dyn LogFile>, bool)> {
        let existed = path.exists();
        let file = open_data_file(path)?;
        Ok((Box::new(file), !existed))
    }

    fn sync_parent(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(dir) => File::open(dir)?.sync_all(),
            None => Ok(()),
        }
    }

    fn open_store(&self, builder: &Builder, path: &Path) -> Result<Database, DatabaseError> {
        builder.create(path)
    }
}

impl LogFile for File {
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn sync_all(&self) -> io::Result<()> {
        File::sync_all(self)
    }
}
