//! Runs an app binary as a child process on free loopback ports and a given data folder.

#![allow(dead_code)]

pub mod otlp;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Path of binary `name` of the `examples` package built with `features` (comma-separated,
/// empty for none), built on first use with the cargo running the tests and copied aside
/// (`<name>+<features>`): a build with other features writes the same file.
pub fn example_bin_with(name: &str, features: &str) -> String {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap();
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let label = if features.is_empty() {
        "default"
    } else {
        features
    };
    let copy = profile_dir.join(format!("{name}+{}", label.replace(',', "+")));
    if !built.iter().any(|b| *b == copy.display().to_string()) {
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "examples", "--bin", name]);
        if !features.is_empty() {
            cmd.args(["--features", features]);
        }
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo runs");
        assert!(
            status.success(),
            "building the {name} example ({label}) failed"
        );
        std::fs::copy(profile_dir.join(name), &copy).expect("the build copied aside");
        built.push(copy.display().to_string());
    }
    copy.display().to_string()
}

/// Path of a binary of the `examples` package, built on first use with the cargo running the
/// tests (same profile and target folder).
pub fn example_bin(name: &str) -> String {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap();
    // The test binary lives in <target>/<profile>/deps/.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let bin = profile_dir.join(name);
    if !built.iter().any(|b| b == name) {
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "examples", "--bin", name]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("cargo runs");
        assert!(status.success(), "building the {name} example failed");
        built.push(name.to_owned());
    }
    bin.display().to_string()
}

pub struct App {
    child: Child,
    pub ingress: String,
    pub admin: String,
}

/// A loopback port free now, for an app to bind later (and again after a restart).
pub fn free_port() -> u16 {
    restate_runtime::testing::free_loopback_port()
}

impl App {
    /// Starts `binary` on `data_dir` with extra environment, and waits until it answers.
    pub async fn start(binary: &str, data_dir: &Path, env: &[(&str, String)]) -> Self {
        Self::start_on(binary, data_dir, env, (free_port(), free_port())).await
    }

    /// Starts on given ports (a restart keeps the addresses clients use). Its log goes
    /// nowhere, or with `TEST_APP_LOG_DIR` set to `app-<ingress port>.log` there (appended
    /// across restarts), at the level `TEST_APP_RUST_LOG` says (`warn` by default): what a
    /// failed seeded run did can be read after it.
    pub async fn start_on(
        binary: &str,
        data_dir: &Path,
        env: &[(&str, String)],
        ports: (u16, u16),
    ) -> Self {
        let app = Self::launch(binary, data_dir, env, ports);
        app.wait_healthy().await;
        app
    }

    /// Starts as [`App::start_on`] does, without waiting for it to answer.
    pub fn launch(
        binary: &str,
        data_dir: &Path,
        env: &[(&str, String)],
        ports: (u16, u16),
    ) -> Self {
        let log = match std::env::var("TEST_APP_LOG_DIR") {
            Ok(dir) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(format!("{dir}/app-{}.log", ports.0))
                    .unwrap(),
            ),
            Err(_) => Stdio::null(),
        };
        Self::spawn(binary, data_dir, env, ports, log)
    }

    /// Starts the process without waiting for it to answer; its log (tracing writes to
    /// standard output) goes to `log`.
    pub fn spawn(
        binary: &str,
        data_dir: &Path,
        env: &[(&str, String)],
        (ingress_port, admin_port): (u16, u16),
        log: Stdio,
    ) -> Self {
        let mut cmd = Command::new(binary);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("TEST_APP_RUST_LOG").unwrap_or("warn".into()),
            )
            .env("RESTATE_DATA_DIR", data_dir)
            .env("RESTATE_INGRESS_ADDR", format!("127.0.0.1:{ingress_port}"))
            .env("RESTATE_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
            .stdout(log)
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self {
            child: cmd.spawn().expect("app starts"),
            ingress: format!("http://127.0.0.1:{ingress_port}"),
            admin: format!("http://127.0.0.1:{admin_port}"),
        }
    }

    /// Whether the ingress answers its health check now.
    pub async fn healthy(&self) -> bool {
        reqwest::get(format!("{}/restate/health", self.ingress))
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// Waits (up to 60 s) until the ingress answers its health check.
    pub async fn wait_healthy(&self) {
        poll(Duration::from_secs(60), || self.healthy()).await;
    }

    /// Waits (up to 60 s) until the ingress answers its health check, or the process exits:
    /// how it ended then.
    pub async fn healthy_or_exited(&mut self) -> Result<(), std::process::ExitStatus> {
        let start = Instant::now();
        while !self.healthy().await {
            if let Some(status) = self.exited() {
                return Err(status);
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "not healthy within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Ok(())
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.exited().is_none()
    }

    /// How the process ended, if it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// SIGTERM, then waits for the process to exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        self.child.wait().expect("reap")
    }

    /// Waits up to `within` for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory of the process so far, in bytes (`VmHWM`).
    pub fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/<pid>/status");
        kib * 1024
    }

    /// Sends it a signal by name (`-STOP`, `-CONT`, `-KILL`), as `kill` does.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([name, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name} {}", self.pid());
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("reap");
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// From the admin API's `/metrics`: (unfinished invocations held in memory, timers in the
/// store's due index, however far ahead).
pub async fn gauges(client: &reqwest::Client, admin: &str) -> (u64, u64) {
    let [in_memory, timers] = metrics(
        client,
        admin,
        ["restate_invocations_in_memory", "restate_timers_stored"],
    )
    .await;
    (in_memory, timers)
}

/// Whether nothing runs or waits: no unfinished invocation in memory, no timer armed or
/// stored, and none found at start still waiting to be restored (those wait on disk, outside
/// the first count). A process that does not answer is not known to be quiet.
pub async fn quiet(client: &reqwest::Client, admin: &str) -> bool {
    let counts = try_metrics(
        client,
        admin,
        [
            "restate_invocations_in_memory",
            "restate_timers_pending",
            "restate_timers_stored",
            "restate_recovery_pending",
        ],
    )
    .await;
    counts == Some([0, 0, 0, 0])
}

/// `POST {ingress}/Waits/busy/send` (the crash app) with an idempotency key: the invocation
/// id once acknowledged (`202`), `None` for any other answer or a transport error.
pub async fn send_busy(client: &reqwest::Client, ingress: &str, key: &str) -> Option<String> {
    let r = client
        .post(format!("{ingress}/Waits/busy/send"))
        .header("idempotency-key", key)
        .json(&1u64)
        .send()
        .await
        .ok()?;
    if r.status() != 202 {
        return None;
    }
    let body: serde_json::Value = r.json().await.ok()?;
    Some(body["invocationId"].as_str()?.to_owned())
}

/// Batches of 8 concurrent [`send_busy`]s (keys `k-{batch}-{i}`), `before(batch)` running
/// ahead of each, until one is refused: the ids acknowledged and when the first refusal came.
pub async fn send_busy_until_refused(
    client: &reqwest::Client,
    ingress: &str,
    mut before: impl FnMut(usize),
) -> (Vec<String>, Option<std::time::Instant>) {
    let mut acknowledged = Vec::new();
    for batch in 0..2000 {
        before(batch);
        let sends: Vec<_> = (0..8)
            .map(|i| {
                let (client, ingress) = (client.clone(), ingress.to_owned());
                tokio::spawn(async move {
                    send_busy(&client, &ingress, &format!("k-{batch}-{i}")).await
                })
            })
            .collect();
        let mut refused = None;
        for sent in sends {
            match sent.await.unwrap() {
                Some(id) => acknowledged.push(id),
                None => {
                    refused.get_or_insert_with(std::time::Instant::now);
                }
            }
        }
        if refused.is_some() {
            return (acknowledged, refused);
        }
    }
    (acknowledged, None)
}

/// `POST {ingress}{path}/send` with a JSON body: the invocation id of the `202`.
pub async fn send_json(
    client: &reqwest::Client,
    ingress: &str,
    path: &str,
    body: &impl serde::Serialize,
) -> String {
    let r = client
        .post(format!("{ingress}{path}/send"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{path}");
    r.json::<serde_json::Value>().await.unwrap()["invocationId"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The invocations the admin API lists (up to 1,000).
pub async fn invocations(client: &reqwest::Client, admin: &str) -> Vec<serde_json::Value> {
    invocations_where(client, admin, "").await
}

/// The invocations the admin API lists (up to 1,000) with the filters of `query`
/// (`status=pending&service=S`; empty for all).
pub async fn invocations_where(
    client: &reqwest::Client,
    admin: &str,
    query: &str,
) -> Vec<serde_json::Value> {
    let v: serde_json::Value = client
        .get(format!("{admin}/invocations?limit=1000&{query}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["invocations"].as_array().unwrap().clone()
}

/// From the admin API's `/metrics`: each named metric, summed over its labels.
pub async fn metrics<const N: usize>(
    client: &reqwest::Client,
    admin: &str,
    names: [&str; N],
) -> [u64; N] {
    try_metrics(client, admin, names)
        .await
        .expect("the admin port answers /metrics")
}

/// As [`metrics`], or `None` when the process does not answer (it exited, say).
pub async fn try_metrics<const N: usize>(
    client: &reqwest::Client,
    admin: &str,
    names: [&str; N],
) -> Option<[u64; N]> {
    let text = client
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(names.map(|name| {
        text.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }))
}

/// An invocation's output, once it has one (within 30 s).
pub async fn output(app: &App, id: &str) -> serde_json::Value {
    let url = format!("{}/restate/invocation/{id}/output", app.ingress);
    poll(Duration::from_secs(30), || {
        let url = url.clone();
        async move { reqwest::get(url).await.unwrap().status() == 200 }
    })
    .await;
    reqwest::get(&url).await.unwrap().json().await.unwrap()
}

/// Polls until `cond` holds or fails the test after `deadline`.
pub async fn poll<F, Fut>(deadline: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(
            start.elapsed() < deadline,
            "condition not met within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn lines(path: &PathBuf) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Unix time in seconds, for webhook signatures.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `tool --version`, failing the test with a clear message when the tool is missing.
pub fn require_tool(tool: &str, why: &str) -> String {
    match Command::new(tool).arg("--version").output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Ok(out) => panic!(
            "`{tool} --version` failed ({}): {}. This test needs {tool} on PATH. {why}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "`{tool}` not found ({e}). This test needs {tool} on PATH and fails rather than \
             skips without it. {why}"
        ),
    }
}

/// `npm ci` in `dir` (a folder of this package with a lockfile), failing the test with
/// npm's output if it fails.
pub async fn npm_ci(dir: &Path) {
    let mut npm = Command::new("npm");
    npm.args(["ci", "--no-audit", "--no-fund"]).current_dir(dir);
    let result = run_for(npm, Duration::from_secs(300)).await;
    assert!(
        !result.1 && result.0.status.success(),
        "{}",
        describe_run(&format!("`npm ci` in {}", dir.display()), &result)
    );
}

/// Runs `cmd` to completion, killing it after `timeout`; returns its output and whether it
/// timed out.
pub async fn run_for(mut cmd: Command, timeout: Duration) -> (Output, bool) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let output = Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    (output, timed_out)
}

pub fn describe_run(what: &str, (out, timed_out): &(Output, bool)) -> String {
    format!(
        "{what} {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        if *timed_out {
            "timed out".to_owned()
        } else {
            format!("exited with {}", out.status)
        },
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Opens a connection to `base` (`http://host:port`) and sends `bytes` on it: a request head,
/// or part of one, written by hand.
pub async fn raw_request(base: &str, bytes: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// The start of the answer on `stream`, `HTTP/1.1 NNN`, read within 30 s.
pub async fn status_line(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut head))
        .await
        .expect("answered within 30 s")
        .unwrap();
    String::from_utf8_lossy(&head).into_owned()
}
