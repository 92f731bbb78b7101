//! A private PostgreSQL cluster for tests (feature `postgres`): `initdb` into a temporary
//! folder, a server on a free loopback port, stopped and deleted when the test process
//! ends, however it ends. No service manager, no container.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// Why a private cluster did not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No `initdb` found: on Debian, `apt-get install postgresql` (the repository's
    /// `scripts/test` does it).
    #[error(
        "PostgreSQL's initdb was not found on PATH nor in /usr/lib/postgresql/*/bin \
         (Debian: apt-get install postgresql)"
    )]
    NotInstalled,
    /// A command failed; the message carries its output.
    #[error("{0}")]
    Failed(String),
}

/// A PostgreSQL server of its own, for tests: its data in a temporary folder, listening on
/// 127.0.0.1 only, for user `restate` with a password drawn at start. It stops, and its folder is
/// deleted, when the value is dropped or the test process exits (a watchdog shell holds the
/// other end of a pipe from this process and stops the server when the pipe closes, even
/// after a SIGKILL).
///
/// Durability is off in a cluster from [`PostgresCluster::start`] (`fsync=off`): tests kill
/// the application, not the database, and run faster without it.
/// [`PostgresCluster::start_durable`] keeps PostgreSQL's defaults, for benchmarks.
///
/// ```no_run
/// use restate_runtime::testing::PostgresCluster;
/// let cluster = PostgresCluster::shared().expect("PostgreSQL is installed");
/// let url = cluster.fresh_database().unwrap(); // postgres://restate:…@127.0.0.1:…/test_1
/// assert!(url.starts_with("postgres://"));
/// ```
pub struct PostgresCluster {
    port: u16,
    /// User `restate`'s password, drawn at start: other users of the machine cannot connect.
    password: String,
    /// The watchdog's stdin: closing it stops the server.
    watchdog: Mutex<Option<(Child, ChildStdin)>>,
    databases: Mutex<u32>,
}

impl PostgresCluster {
    /// One cluster for the whole test process, started on first use.
    pub fn shared() -> Result<&'static PostgresCluster, ClusterError> {
        static SHARED: OnceLock<Result<PostgresCluster, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| Self::start().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| ClusterError::Failed(e.clone()))
    }

    /// The [`shared`](Self::shared) cluster for a test, or `None` (saying so on stderr) when
    /// PostgreSQL is not installed and `RESTATE_REQUIRE_POSTGRES` is not set, so that a test
    /// that needs it can return early on a machine without it. With the variable set (the
    /// repository's `scripts/test` sets it), a missing PostgreSQL fails the test.
    ///
    /// ```no_run
    /// let Some(cluster) = restate_runtime::testing::PostgresCluster::for_tests() else {
    ///     return;
    /// };
    /// let url = cluster.fresh_database().unwrap();
    /// # let _ = url;
    /// ```
    pub fn for_tests() -> Option<&'static PostgresCluster> {
        if bin_dir().is_none() && std::env::var_os("RESTATE_REQUIRE_POSTGRES").is_none() {
            eprintln!(
                "PostgreSQL is not installed: this test is skipped \
                 (RESTATE_REQUIRE_POSTGRES=1 makes it fail instead)"
            );
            return None;
        }
        Some(Self::shared().expect("a private PostgreSQL cluster"))
    }

    /// Starts a new cluster (about a second: `initdb`, then the server), without fsync.
    pub fn start() -> Result<Self, ClusterError> {
        Self::start_with("-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
    }

    /// Starts a new cluster with PostgreSQL's default durability (every commit flushed to
    /// disk): what a benchmark measures against.
    ///
    /// ```no_run
    /// let cluster = restate_runtime::testing::PostgresCluster::start_durable().unwrap();
    /// println!("{}", cluster.fresh_database().unwrap());
    /// ```
    pub fn start_durable() -> Result<Self, ClusterError> {
        Self::start_with("")
    }

    fn start_with(settings: &str) -> Result<Self, ClusterError> {
        let bin = bin_dir().ok_or(ClusterError::NotInstalled)?;
        let mut last = String::new();
        for _ in 0..5 {
            let port = super::free_loopback_port();
            match Self::start_on(&bin, port, settings) {
                Ok(cluster) => return Ok(cluster),
                Err(e) => last = e,
            }
        }
        Err(ClusterError::Failed(format!(
            "the private PostgreSQL cluster did not start: {last}"
        )))
    }

    fn start_on(bin: &Path, port: u16, settings: &str) -> Result<Self, String> {
        // Postgres refuses to run as root: then its folder belongs to, and it runs as, the
        // `postgres` user the distribution's package created.
        let as_root = unsafe { libc::geteuid() } == 0;
        let run_as = if as_root {
            "runuser -u postgres --"
        } else {
            ""
        };
        let dir = std::env::temp_dir().join(format!(
            "restate-pg-{}-{port}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let password = format!("{:032x}", rand::random::<u128>());
        let prepared = std::fs::write(dir.join("pwfile"), &password)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                if as_root {
                    chown_to_postgres(&dir)
                } else {
                    Ok(())
                }
            });
        if let Err(e) = prepared {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let script = format!(
            r#"
set -u
# Only the closed pipe stops this shell: not the terminal's Ctrl-C, not a write to that pipe.
trap '' INT TERM HUP PIPE
bin="{bin}"; dir="{dir}"; port={port}
cleanup() {{ {run_as} "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1; rm -rf "$dir"; }}
if ! {run_as} "$bin/initdb" -D "$dir/data" -U restate --auth-local=trust --auth-host=scram-sha-256 --pwfile="$dir/pwfile" --no-locale -E UTF8 >"$dir/initdb.log" 2>&1; then
  echo "failed: initdb: $(tail -n 5 "$dir/initdb.log")"; rm -rf "$dir"; exit 1
fi
if ! {run_as} "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 {settings}" \
  start >/dev/null 2>&1; then
  echo "failed: pg_ctl start: $(tail -n 5 "$dir/server.log")"; cleanup; exit 1
fi
echo ready
read -r _ || true
cleanup
"#,
            bin = bin.display(),
            dir = dir.display(),
        );
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run sh: {e}"))?;
        let stdin = child.stdin.take().expect("piped");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        if line.trim() != "ready" {
            let _ = child.wait();
            return Err(line.trim().to_owned());
        }
        Ok(Self {
            port,
            password,
            watchdog: Mutex::new(Some((child, stdin))),
            databases: Mutex::new(0),
        })
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://restate:{}@127.0.0.1:{}/{name}",
            self.password, self.port
        )
    }

    /// Creates a new, empty database and returns its URL: one per test keeps tests apart.
    pub fn fresh_database(&self) -> Result<String, ClusterError> {
        let name = {
            let mut n = self.databases.lock().expect("lock");
            *n += 1;
            format!("test_{}", *n)
        };
        self.execute(&self.url("postgres"), &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// Runs SQL statements (separated by `;`) on the database at `url`, from any thread or
    /// runtime: what a test uses to tamper with the tables.
    pub fn execute(&self, url: &str, sql: &str) -> Result<(), ClusterError> {
        self.query(url, sql).map(drop)
    }

    /// Runs SQL statements on the database at `url` and returns the rows they return, each
    /// value as text (`None` for NULL): what a test uses to look into the tables.
    ///
    /// ```no_run
    /// # let cluster = restate_runtime::testing::PostgresCluster::shared().unwrap();
    /// # let url = cluster.fresh_database().unwrap();
    /// let rows = cluster.query(&url, "SELECT epoch FROM restate_lease").unwrap();
    /// let epoch: i64 = rows[0][0].as_deref().unwrap().parse().unwrap();
    /// # let _ = epoch;
    /// ```
    pub fn query(&self, url: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, ClusterError> {
        let (url, sql) = (url.to_owned(), sql.to_owned());
        // Its own thread and runtime: callable from sync code and from inside any runtime.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| e.to_string())?;
                tokio::spawn(connection);
                let messages =
                    client
                        .simple_query(&sql)
                        .await
                        .map_err(|e| match e.as_db_error() {
                            Some(db) => db.message().to_owned(),
                            None => e.to_string(),
                        })?;
                Ok(messages
                    .iter()
                    .filter_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                            (0..row.len())
                                .map(|i| row.get(i).map(str::to_owned))
                                .collect(),
                        ),
                        _ => None,
                    })
                    .collect())
            })
        })
        .join()
        .map_err(|_| ClusterError::Failed("the SQL client panicked".into()))?
        .map_err(ClusterError::Failed)
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.watchdog.lock().expect("lock").take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// Where `initdb` and `pg_ctl` are: on PATH, or the newest of Debian's versioned folders.
fn bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).find(|dir| dir.join("initdb").is_file()));
    on_path.or_else(|| {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let version = entry.file_name().to_str()?.parse().ok()?;
                let bin = entry.path().join("bin");
                bin.join("initdb").is_file().then_some((version, bin))
            })
            .collect();
        versions.sort();
        versions.pop().map(|(_, bin)| bin)
    })
}

fn chown_to_postgres(dir: &Path) -> Result<(), String> {
    let id = |flag: &str| -> Result<u32, String> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .map_err(|e| e.to_string())?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| "there is no `postgres` user to run the server as".to_owned())
    };
    std::os::unix::fs::chown(dir, Some(id("-u")?), Some(id("-g")?)).map_err(|e| e.to_string())
}
