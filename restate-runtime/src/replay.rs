//! What a replay check reports: the invocations in a store whose journals the current code
//! would not replay, each with where and how it diverges.

use std::fmt;

use crate::ids::InvocationId;
use crate::runtime::BuildError;
use crate::storage::StorageError;

/// Which invocations a replay check replays: the unfinished ones, and with
/// [`include_completed`](Self::include_completed) also those finished within their retention.
///
/// ```
/// let options = restate_runtime::ReplayOptions::default().include_completed(true);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct ReplayOptions {
    pub(crate) include_completed: bool,
}

impl ReplayOptions {
    /// Also replays finished invocations (whose result the code must give again).
    ///
    /// ```
    /// let options = restate_runtime::ReplayOptions::default().include_completed(true);
    /// ```
    pub fn include_completed(mut self, include: bool) -> Self {
        self.include_completed = include;
        self
    }
}

/// The outcome of a replay check.
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// use restate_runtime::{ReplayOptions, Runtime};
/// let report = Runtime::builder()
///     .data_dir("./backups/before-deploy")
///     .check_replay(ReplayOptions::default())
///     .await?;
/// for problem in &report.problems {
///     eprintln!("{problem}");
/// }
/// assert!(report.is_ok(), "this build would break {} invocations", report.problems.len());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    /// Invocations replayed (those not started yet, with nothing journaled, included).
    pub checked: usize,
    /// The invocations the current code would break, in id order.
    pub problems: Vec<ReplayProblem>,
}

impl ReplayReport {
    /// No invocation would break.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in &self.problems {
            writeln!(f, "{problem}")?;
        }
        let plural = if self.checked == 1 { "" } else { "s" };
        write!(
            f,
            "{} invocation{plural} checked, {} would break",
            self.checked,
            self.problems.len()
        )
    }
}

/// One invocation the current code would break.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayProblem {
    /// The invocation.
    pub invocation_id: InvocationId,
    /// Its target (`Service/handler` or `Object/key/handler`).
    pub target: String,
    /// Its status (`suspended`, `running`, `paused`, …).
    pub status: &'static str,
    /// The application version that accepted it.
    pub version: Option<String>,
    /// What breaks.
    pub problem: Problem,
}

impl fmt::Display for ReplayProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} ({}, version {}): {}",
            self.invocation_id,
            self.target,
            self.status,
            self.version.as_deref().unwrap_or("unknown"),
            self.problem
        )
    }
}

/// How an invocation's journal and the current code disagree.
///
/// ```
/// use restate_runtime::Problem;
/// let problem = Problem::Diverges {
///     index: 1,
///     journal: "`sleep` (until 1767225600000 ms)".into(),
///     code: "run (name `reserve`)".into(),
/// };
/// assert!(problem.to_string().contains("entry 1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// At journal entry `index` the code does something else.
    Diverges {
        /// The entry's position.
        index: u32,
        /// What the journal holds there.
        journal: String,
        /// What the code does there.
        code: String,
    },
    /// The code returns while the journal holds more entries, the first at `index`.
    EndsEarly {
        /// The first entry the code no longer reaches.
        index: u32,
        /// What the journal holds there.
        journal: String,
    },
    /// A finished invocation for which the code returns another result than it recorded.
    DifferentResult {
        /// The recorded result.
        recorded: String,
        /// What the code returns now.
        code: String,
    },
    /// The handler panicked or stopped with an error while replaying.
    Fails {
        /// What it reported.
        message: String,
    },
    /// The binary does not serve the invocation's service or handler.
    UnknownTarget {
        /// Which part is missing.
        reason: String,
    },
    /// The replay did not reach the end of the journal in time: the code waits on something
    /// outside its context.
    Stuck {
        /// How long the check waited.
        seconds: u64,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Diverges {
                index,
                journal,
                code,
            } => write!(
                f,
                "journal entry {index} is {journal} but the code now does `{code}`"
            ),
            Self::EndsEarly { index, journal } => write!(
                f,
                "the code returns before journal entry {index} ({journal})"
            ),
            Self::DifferentResult { recorded, code } => write!(
                f,
                "the code returns {code} where the invocation recorded {recorded}"
            ),
            Self::Fails { message } => write!(f, "the replay fails: {message}"),
            Self::UnknownTarget { reason } => {
                write!(f, "not served by this binary: {reason}")
            }
            Self::Stuck { seconds } => write!(
                f,
                "the replay did not reach the end of the journal within {seconds} s \
                 (the code waits on something outside its context)"
            ),
        }
    }
}

/// Why a replay check could not run.
///
/// ```no_run
/// # async fn demo() {
/// use restate_runtime::{ReplayCheckError, ReplayOptions, Runtime};
/// match Runtime::check_replay(ReplayOptions::default()).await {
///     Ok(report) => println!("{report}"),
///     Err(ReplayCheckError::Build(e)) => eprintln!("cannot open the store: {e}"),
///     Err(e) => eprintln!("{e}"),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum ReplayCheckError {
    /// The configuration, the services or the store could not be set up.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Reading the store failed.
    #[error("reading the store failed: {0}")]
    Read(#[from] StorageError),
}
