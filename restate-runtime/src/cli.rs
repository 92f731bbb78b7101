//! A binary's command line: without arguments it serves; `check-replay` replays a data folder
//! against the binary's handlers and exits non-zero when an invocation would break. Commands
//! open no port and log to standard error; their report goes to standard output.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::replay::ReplayOptions;
use crate::runtime::RuntimeBuilder;

/// Exit status of a replay check that found invocations the code would break.
const BREAKS: u8 = 1;
/// Exit status of a command that could not run (bad arguments, no store).
const FAILED: u8 = 2;

const USAGE: &str = "\
usage: <binary>                      serve (ingress and admin API)
       <binary> check-replay [--data-dir <folder> | --database-url <url>] [--include-completed]
            replay the invocations of a data folder (a backup) or of a PostgreSQL database
            (read only) against this binary's handlers; exit 1 when one would break, 2 when
            the check cannot run";

/// What the arguments ask for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Serve,
    Help,
    CheckReplay {
        store: Option<Store>,
        include_completed: bool,
    },
}

/// The store a command reads, named on its command line.
#[derive(Debug, PartialEq, Eq)]
enum Store {
    DataDir(PathBuf),
    DatabaseUrl(String),
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let Some(command) = args.next() else {
        return Ok(Command::Serve);
    };
    match command.as_str() {
        "help" | "--help" | "-h" => Ok(Command::Help),
        "check-replay" => {
            let (mut store, mut include_completed) = (None, false);
            while let Some(arg) = args.next() {
                let named = match arg.as_str() {
                    "--data-dir" => {
                        let dir = args.next().ok_or("--data-dir needs a folder")?;
                        Store::DataDir(PathBuf::from(dir))
                    }
                    "--database-url" => {
                        let url = args.next().ok_or("--database-url needs a URL")?;
                        Store::DatabaseUrl(url)
                    }
                    "--include-completed" => {
                        include_completed = true;
                        continue;
                    }
                    other => return Err(format!("check-replay: unknown argument `{other}`")),
                };
                if store.replace(named).is_some() {
                    return Err(
                        "check-replay reads one store: give --data-dir or --database-url once"
                            .into(),
                    );
                }
            }
            Ok(Command::CheckReplay {
                store,
                include_completed,
            })
        }
        other => Err(format!("unknown command `{other}`")),
    }
}

/// Whether the process was started to run a command (not to serve): arguments of the
/// binary's own are not commands.
pub(crate) fn command_requested() -> bool {
    matches!(
        parse(std::env::args().skip(1)),
        Ok(Command::Help | Command::CheckReplay { .. })
    )
}

impl RuntimeBuilder {
    /// The body of a binary's `main`: without arguments it builds and serves this runtime
    /// until SIGINT or SIGTERM; `check-replay [--data-dir <folder>] [--include-completed]`
    /// replays the invocations stored in the folder (a backup; default `RESTATE_DATA_DIR`)
    /// against this binary's handlers, prints what would break, and exits with 1 when
    /// something would (2 when the check cannot run), so that it can gate a deploy. Commands
    /// open no port, and with [`init_tracing`](crate::init_tracing) they log to standard
    /// error.
    ///
    /// ```no_run
    /// use restate_runtime::Runtime;
    ///
    /// #[tokio::main]
    /// async fn main() -> std::process::ExitCode {
    ///     restate_runtime::init_tracing();
    ///     // `app` serves; `app check-replay --data-dir ./backup` checks a deploy.
    ///     Runtime::builder().main().await
    /// }
    /// ```
    pub async fn main(self) -> ExitCode {
        let command = match parse(std::env::args().skip(1)) {
            Ok(command) => command,
            Err(e) => {
                eprintln!("{e}\n{USAGE}");
                return ExitCode::from(FAILED);
            }
        };
        match command {
            Command::Help => {
                println!("{USAGE}");
                ExitCode::SUCCESS
            }
            Command::Serve => {
                let served = match self.build() {
                    Ok(runtime) => runtime.serve().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match served {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!(error = %e, "the runtime stopped");
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Command::CheckReplay {
                store,
                include_completed,
            } => {
                let builder = match store {
                    // The store named here, whatever RESTATE_DATA_DIR or RESTATE_DATABASE_URL say.
                    Some(Store::DataDir(dir)) => self.without_env().data_dir(dir),
                    Some(Store::DatabaseUrl(url)) => self.without_env().database_url(url),
                    None => self,
                };
                let options = ReplayOptions::default().include_completed(include_completed);
                match builder.check_replay(options).await {
                    Ok(report) => {
                        println!("{report}");
                        match report.is_ok() {
                            true => ExitCode::SUCCESS,
                            false => ExitCode::from(BREAKS),
                        }
                    }
                    Err(e) => {
                        eprintln!("check-replay: {e}");
                        ExitCode::from(FAILED)
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(|a| (*a).to_owned()))
    }

    #[test]
    fn arguments_name_a_command_or_serve() {
        assert_eq!(parsed(&[]), Ok(Command::Serve));
        assert_eq!(
            parsed(&["check-replay", "--data-dir", "/b", "--include-completed"]),
            Ok(Command::CheckReplay {
                store: Some(Store::DataDir("/b".into())),
                include_completed: true
            })
        );
        assert_eq!(
            parsed(&["check-replay", "--database-url", "postgres://h/db"]),
            Ok(Command::CheckReplay {
                store: Some(Store::DatabaseUrl("postgres://h/db".into())),
                include_completed: false
            })
        );
        assert_eq!(
            parsed(&["check-replay"]),
            Ok(Command::CheckReplay {
                store: None,
                include_completed: false
            })
        );
        assert!(parsed(&["check-replay", "--data-dir", "/a", "--database-url", "u"]).is_err());
        assert!(parsed(&["check-replay", "--data-dir"]).is_err());
        assert!(parsed(&["check-replay", "--bogus"]).is_err());
        assert!(parsed(&["serve-please"]).is_err());
        assert_eq!(parsed(&["--help"]), Ok(Command::Help));
    }
}
