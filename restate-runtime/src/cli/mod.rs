//! A binary's command line: without arguments it serves; `check-replay` replays a data folder
//! against the binary's handlers and exits non-zero when an invocation would break;
//! `invocations` and `services` ask a running process's admin API. Commands open no port and
//! no data folder of their own (`check-replay` opens the one it checks as a start would,
//! recovering its log into its store, and writes no invocation), log to standard error, and
//! print their answer on standard output: a table for people, one JSON document with `--json`.

mod admin;
mod show;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::replay::ReplayOptions;
use crate::runtime::RuntimeBuilder;
use admin::AdminClient;

/// Exit status of a replay check that found invocations the code would break, and of a
/// request the admin API refused.
const BREAKS: u8 = 1;
/// Exit status of a command that could not run (bad arguments, no store, no process).
const FAILED: u8 = 2;

/// The durable-execution runtime of this binary. Without a command it serves (ingress and
/// admin API).
#[derive(Debug, Parser)]
#[command(disable_version_flag = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Before or after the command: `app --json services` and `app services --json` alike.
    #[command(flatten)]
    remote: Remote,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay the invocations of a data folder (a backup: opened as a start would open it, its
    /// log recovered into its store, no invocation written) or of a PostgreSQL database
    /// (read-only sessions) against this binary's handlers; exit 1 when one would break, 2 when
    /// the check cannot run.
    CheckReplay {
        /// The data folder to read (default: RESTATE_DATA_DIR).
        #[arg(long, conflicts_with = "database_url")]
        data_dir: Option<PathBuf>,
        /// The PostgreSQL database to read (default: RESTATE_DATABASE_URL).
        #[arg(long)]
        database_url: Option<String>,
        /// Also replay the invocations completed within the retention window.
        #[arg(long)]
        include_completed: bool,
    },
    /// The invocations of a running process (its admin API).
    Invocations {
        #[command(subcommand)]
        command: InvocationsCommand,
    },
    /// The services a running process serves, with their handlers.
    Services,
}

#[derive(Debug, Subcommand)]
enum InvocationsCommand {
    /// List invocations, newest last, filtered as the admin API's `GET /invocations`.
    List {
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        handler: Option<String>,
        #[arg(long)]
        key: Option<String>,
        /// The idempotency key it was sent with (a webhook event's id).
        #[arg(long)]
        idempotency_key: Option<String>,
        /// scheduled, pending (waiting for its object or workflow key), running, suspended,
        /// queued (waiting for a concurrency limit), paused or completed.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        version: Option<String>,
        /// Why a paused one is paused: non_determinism, retries_exhausted, unknown_target,
        /// interrupted.
        #[arg(long)]
        reason: Option<String>,
        /// At most this many (1 to 1000, default 100).
        #[arg(long)]
        limit: Option<usize>,
        /// Continue after this cursor (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
    },
    /// One invocation: status, attempts, last error, result and its journal.
    Describe(Target),
    /// Cancel it: a terminal error at its handler's next await point.
    Cancel(Target),
    /// Kill it: it stops now, without compensation.
    Kill(Target),
    /// Resume a paused one.
    Resume(Target),
    /// Forget a finished one.
    Purge(Target),
}

#[derive(Debug, Args)]
struct Target {
    /// The invocation id (`inv_…`).
    id: String,
}

/// Where the running process is and how its answer is shown.
#[derive(Debug, Args)]
struct Remote {
    /// The admin API's address (default: RESTATE_ADMIN_ADDR, else 127.0.0.1:9070); its token
    /// is RESTATE_ADMIN_TOKEN.
    #[arg(long, value_name = "HOST:PORT", global = true)]
    admin: Option<String>,
    /// One JSON document on standard output instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

impl Remote {
    /// Whether either option was given (they belong to a command).
    fn given(&self) -> bool {
        self.json || self.admin.is_some()
    }
}

/// Reads the arguments after the binary's name (help and errors are for
/// [`RuntimeBuilder::main`] to print, under that name).
fn parse(args: impl IntoIterator<Item = String>) -> Result<Cli, clap::Error> {
    let name = std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|path| Some(path.file_name()?.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "app".to_owned());
    Cli::try_parse_from(std::iter::once(name).chain(args))
}

/// The process's arguments after its name (lossily: a non-UTF-8 one is no command anyway).
fn arguments() -> impl Iterator<Item = String> {
    std::env::args_os()
        .skip(1)
        .map(|arg| arg.to_string_lossy().into_owned())
}

/// Whether the process was started to run a command or to print the help (not to serve):
/// arguments of the binary's own are not commands.
pub(crate) fn command_requested() -> bool {
    match parse(arguments()) {
        Ok(cli) => cli.command.is_some() || cli.remote.given(),
        Err(e) => matches!(
            e.kind(),
            clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        ),
    }
}

impl RuntimeBuilder {
    /// The body of a binary's `main`: without arguments it builds and serves this runtime
    /// until SIGINT or SIGTERM. Its commands (`<binary> help` lists them):
    /// - `check-replay [--data-dir <folder> | --database-url <url>] [--include-completed]`
    ///   replays the invocations stored in a folder (a backup; default `RESTATE_DATA_DIR`) or
    ///   database against this binary's handlers, prints what would break, and exits with 1
    ///   when something would (2 when the check cannot run), so that it can gate a deploy;
    /// - `invocations list|describe|cancel|kill|resume|purge` and `services` ask the admin
    ///   API of a running process (`RESTATE_ADMIN_ADDR`, `RESTATE_ADMIN_TOKEN`, or `--admin`):
    ///   a table, or one JSON document with `--json`; exit 1 when the API refuses, 2 when it
    ///   cannot be reached.
    ///
    /// Commands open no port, and with [`init_tracing`](crate::init_tracing) they log to
    /// standard error.
    ///
    /// ```no_run
    /// use restate_runtime::Runtime;
    ///
    /// #[tokio::main]
    /// async fn main() -> std::process::ExitCode {
    ///     restate_runtime::init_tracing();
    ///     // `app` serves; `app check-replay --data-dir ./backup` checks a deploy;
    ///     // `app invocations list --status paused --json` asks the running app.
    ///     Runtime::builder().main().await
    /// }
    /// ```
    pub async fn main(self) -> ExitCode {
        let cli = match parse(arguments()) {
            Ok(cli) => cli,
            Err(e) => {
                let _ = e.print();
                return match e.use_stderr() {
                    true => ExitCode::from(FAILED),
                    false => ExitCode::SUCCESS,
                };
            }
        };
        let remote = cli.remote;
        match cli.command {
            None if remote.given() => {
                eprintln!("error: --json and --admin go with a command (`help` lists them)");
                ExitCode::from(FAILED)
            }
            None => serve(self).await,
            Some(Command::CheckReplay { .. }) if remote.admin.is_some() => {
                eprintln!(
                    "error: check-replay reads a store, not a running process: --admin does not \
                     go with it (--data-dir or --database-url name the store)"
                );
                ExitCode::from(FAILED)
            }
            Some(Command::CheckReplay {
                data_dir,
                database_url,
                include_completed,
            }) => {
                let builder = match (data_dir, database_url) {
                    // The store named here, whatever RESTATE_DATA_DIR or RESTATE_DATABASE_URL say.
                    (Some(dir), _) => self.without_env().data_dir(dir),
                    (None, Some(url)) => self.without_env().database_url(url),
                    (None, None) => self,
                };
                check_replay(builder, include_completed, remote.json).await
            }
            Some(Command::Invocations { command }) => invocations(command, &remote).await,
            Some(Command::Services) => {
                let client = AdminClient::from_env(remote.admin.as_deref());
                answer(&remote, client.get("/services").await, show::services)
            }
        }
    }
}

async fn serve(builder: RuntimeBuilder) -> ExitCode {
    let served = match builder.build() {
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

async fn check_replay(builder: RuntimeBuilder, include_completed: bool, json: bool) -> ExitCode {
    let options = ReplayOptions::default().include_completed(include_completed);
    match builder.check_replay(options).await {
        Ok(report) => {
            match json {
                true => println!("{}", show::replay_report(&report)),
                false => println!("{report}"),
            }
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

async fn invocations(command: InvocationsCommand, remote: &Remote) -> ExitCode {
    let (target, action) = match command {
        InvocationsCommand::List {
            service,
            handler,
            key,
            idempotency_key,
            status,
            version,
            reason,
            limit,
            after,
        } => {
            let limit = limit.map(|n| n.to_string());
            let query = admin::query(&[
                ("service", service.as_deref()),
                ("handler", handler.as_deref()),
                ("key", key.as_deref()),
                ("idempotency_key", idempotency_key.as_deref()),
                ("status", status.as_deref()),
                ("version", version.as_deref()),
                ("reason", reason.as_deref()),
                ("limit", limit.as_deref()),
                ("after", after.as_deref()),
            ]);
            let client = AdminClient::from_env(remote.admin.as_deref());
            let listed = client.get(&format!("/invocations{query}")).await;
            return answer(remote, listed, show::invocations);
        }
        InvocationsCommand::Describe(target) => {
            let client = AdminClient::from_env(remote.admin.as_deref());
            let path = format!("/invocations/{}", admin::component(&target.id));
            return answer(remote, client.get(&path).await, show::invocation);
        }
        InvocationsCommand::Cancel(target) => (target, "cancel"),
        InvocationsCommand::Kill(target) => (target, "kill"),
        InvocationsCommand::Resume(target) => (target, "resume"),
        InvocationsCommand::Purge(target) => (target, "purge"),
    };
    let client = AdminClient::from_env(remote.admin.as_deref());
    let path = format!("/invocations/{}/{action}", admin::component(&target.id));
    let done = client.patch(&path).await.map(|answer| {
        serde_json::json!({
            "invocationId": target.id,
            "action": action,
            "answer": answer,
        })
    });
    answer(remote, done, show::action)
}

/// Prints what the admin API answered, as JSON or through `table`; the exit status says
/// whether it was done.
fn answer(
    remote: &Remote,
    answered: Result<serde_json::Value, admin::AdminError>,
    table: fn(&serde_json::Value) -> String,
) -> ExitCode {
    match answered {
        Ok(value) => {
            let shown = match remote.json {
                true => format!("{value}\n"),
                false => table(&value),
            };
            // A reader that stopped early (`| head`) is no failure: what it read was done.
            use std::io::Write as _;
            let _ = std::io::stdout().lock().write_all(shown.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            match e {
                admin::AdminError::Refused { .. } => ExitCode::from(BREAKS),
                admin::AdminError::Unreachable { .. } => ExitCode::from(FAILED),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(args: &[&str]) -> Result<Cli, clap::Error> {
        parse(args.iter().map(|a| (*a).to_owned()))
    }

    #[test]
    fn arguments_name_a_command_or_serve() {
        assert!(parsed(&[]).unwrap().command.is_none());
        match parsed(&["check-replay", "--data-dir", "/b", "--include-completed"]) {
            Ok(Cli {
                command:
                    Some(Command::CheckReplay {
                        data_dir: Some(dir),
                        database_url: None,
                        include_completed: true,
                    }),
                ..
            }) => assert_eq!(dir, PathBuf::from("/b")),
            other => panic!("{other:?}"),
        }
        assert!(parsed(&["check-replay", "--database-url", "postgres://h/db"]).is_ok());
        assert!(parsed(&["check-replay"]).is_ok());
        assert!(parsed(&["check-replay", "--data-dir", "/a", "--database-url", "u"]).is_err());
        assert!(parsed(&["check-replay", "--data-dir"]).is_err());
        assert!(parsed(&["check-replay", "--bogus"]).is_err());
        assert!(parsed(&["serve-please"]).is_err());
    }

    #[test]
    fn invocation_commands_take_filters_an_id_and_json() {
        match parsed(&[
            "invocations",
            "list",
            "--status",
            "paused",
            "--limit",
            "5",
            "--json",
        ]) {
            Ok(Cli {
                command:
                    Some(Command::Invocations {
                        command: InvocationsCommand::List { status, limit, .. },
                    }),
                remote,
            }) => {
                assert_eq!((status.as_deref(), limit), (Some("paused"), Some(5)));
                assert!(remote.json);
            }
            other => panic!("{other:?}"),
        }
        for action in ["describe", "cancel", "kill", "resume", "purge"] {
            assert!(parsed(&["invocations", action, "inv_1", "--admin", "h:1"]).is_ok());
            assert!(
                parsed(&["invocations", action]).is_err(),
                "{action} needs an id"
            );
        }
        // The options go before or after the command.
        for args in [
            &["services", "--json", "--admin", "h:1"][..],
            &["--json", "--admin", "h:1", "services"],
            &["--json", "invocations", "describe", "inv_1"],
            &["invocations", "--admin", "h:1", "list", "--json"],
        ] {
            let cli = parsed(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert!(cli.command.is_some() && cli.remote.json, "{args:?}");
        }
        assert_eq!(
            parsed(&["--admin", "h:2", "services"])
                .unwrap()
                .remote
                .admin
                .as_deref(),
            Some("h:2")
        );
        assert!(parsed(&["invocations", "explode", "inv_1"]).is_err());
        assert!(parsed(&["invocations", "list", "--limit", "many"]).is_err());
    }
}
