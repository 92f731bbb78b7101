//! Online backups: what a backup reports, why one fails, and the folder it goes into.

use std::path::{Path, PathBuf};

/// Why a backup was not made.
///
/// ```no_run
/// use restate_runtime::storage::BackupError;
/// # async fn demo(runtime: restate_runtime::Runtime) {
/// match runtime.backup("/backups/2026-11-30").await {
///     Ok(report) => println!("{} invocations copied", report.invocations),
///     Err(BackupError::NotEmpty(folder)) => eprintln!("{folder} holds files already"),
///     Err(e) => eprintln!("{e}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The store has no online backup of its own (on PostgreSQL, the database's backups are
    /// the backups).
    #[error("{0}")]
    Unsupported(String),
    /// The path cannot be a backup folder (empty, or a file).
    #[error("{0}")]
    BadPath(String),
    /// The folder holds files already: a backup never overwrites anything.
    #[error("backup folder {0} is not empty: a backup goes into a new or empty folder")]
    NotEmpty(String),
    /// Creating or writing the copy failed; nothing usable was left in the folder.
    #[error("backup into {path} failed: {reason}")]
    Failed {
        /// The backup folder.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// What a backup copied: a data folder that opens as the store was at one commit.
///
/// ```no_run
/// # async fn demo(runtime: restate_runtime::Runtime) -> anyhow::Result<()> {
/// let report = runtime.backup("/backups/before-deploy").await?;
/// assert_eq!(report.path, std::path::Path::new("/backups/before-deploy"));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The backup folder: usable as `RESTATE_DATA_DIR`.
    pub path: PathBuf,
    /// Invocations it holds (finished ones within their retention included).
    pub invocations: u64,
    /// Size of its store file in bytes.
    pub bytes: u64,
}

/// Creates `dir` (with its parents), or checks that it is an empty folder outside the data
/// folder `data` (a backup inside the folder it copies would be copied into the next one).
pub(crate) fn prepare_folder(dir: &Path, data: &Path) -> Result<(), BackupError> {
    let shown = dir.display().to_string();
    if shown.is_empty() {
        return Err(BackupError::BadPath("the backup path is empty".into()));
    }
    if dir.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(BackupError::BadPath(format!(
            "{}: a path holds no NUL byte",
            shown.replace('\0', "\\0")
        )));
    }
    if dir
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(BackupError::BadPath(format!(
            "{shown}: name the backup folder without `..`"
        )));
    }
    if let (Some(at), Ok(data)) = (resolved(dir), data.canonicalize())
        && at.starts_with(&data)
    {
        return Err(BackupError::BadPath(format!(
            "{shown} is inside the data folder {}: back up to a folder outside it",
            data.display()
        )));
    }
    if dir.exists() && !dir.is_dir() {
        return Err(BackupError::BadPath(format!(
            "{shown} exists and is not a folder"
        )));
    }
    let failed = |e: std::io::Error| BackupError::Failed {
        path: shown.clone(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    if std::fs::read_dir(dir).map_err(failed)?.next().is_some() {
        return Err(BackupError::NotEmpty(shown));
    }
    Ok(())
}

/// Where `path` (without `..`) is once links are followed, also if it does not exist yet: its
/// nearest existing ancestor resolved, with the rest of it after.
fn resolved(path: &Path) -> Option<PathBuf> {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(at) = existing.canonicalize() {
            return Some(rest.iter().rev().fold(at, |at, part| at.join(part)));
        }
        rest.push(existing.file_name()?);
        existing = existing.parent()?;
    }
}
