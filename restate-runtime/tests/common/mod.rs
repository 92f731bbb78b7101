//! Shared test helpers: a runtime on a temp folder served on free loopback ports.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use restate_runtime::{Runtime, RuntimeBuilder, RuntimeHandle, ServeError};

/// A runtime serving its ingress on a free port, with a temp data folder.
pub struct TestServer {
    pub base: String,
    pub admin: String,
    pub handle: RuntimeHandle,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub fn free_addr() -> SocketAddr {
    (
        [127, 0, 0, 1],
        restate_runtime::testing::free_loopback_port(),
    )
        .into()
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(tempfile::tempdir().unwrap(), |b| b).await
    }

    /// Starts on free ports; when one was taken between picking and binding (another test's
    /// client socket can get it), tries again on new ones.
    pub async fn start_with(
        dir: tempfile::TempDir,
        configure: impl Fn(RuntimeBuilder) -> RuntimeBuilder,
    ) -> Self {
        for _ in 0..5 {
            let ingress = free_addr();
            let admin = free_addr();
            // Bursts of up to a thousand requests at once: over the default in-flight cap
            // (128) a request waits a second for a slot, then gets 429, which on a slow
            // machine would make a test's answers depend on its speed. The cap has tests
            // of its own (`listener`, and `overload` on the example app).
            let builder = || {
                Runtime::builder()
                    .without_env()
                    .max_in_flight(4096)
                    .data_dir(dir.path())
                    .ingress_addr(ingress)
                    .admin_addr(admin)
            };
            let runtime = build_when_unlocked(|| configure(builder())).await;
            let handle = runtime.handle();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let mut task = tokio::spawn(async move {
                runtime
                    .serve_until(async {
                        let _ = rx.await;
                    })
                    .await
            });
            let base = format!("http://{ingress}");
            let healthy = wait_until(Duration::from_secs(20), || {
                let url = format!("{base}/restate/health");
                async move { reqwest::get(url).await.is_ok() }
            });
            tokio::select! {
                () = healthy => {}
                served = &mut task => match served.expect("serve task") {
                    Err(ServeError::Bind { .. }) => continue,
                    other => panic!("serve: {other:?}"),
                },
            }
            let task = tokio::spawn(async move {
                task.await.expect("serve task").expect("serve");
            });
            return Self {
                base,
                admin: format!("http://{admin}"),
                handle,
                dir,
                stop: Some(tx),
                task: Some(task),
            };
        }
        panic!("no free ports after 5 tries");
    }

    /// Stops serving and closes the data folder; returns it for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
        self.dir
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Waits for an invocation's result over the ingress: status and JSON body (null if none).
    pub async fn attach(&self, id: &str) -> (u16, serde_json::Value) {
        let r = reqwest::get(self.url(&format!("/restate/invocation/{id}/attach")))
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// `POST {path}` with a JSON body.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// `PATCH /invocations/{id}/{action}` on the admin API: its status.
    pub async fn act(&self, id: &str, action: &str) -> u16 {
        reqwest::Client::new()
            .patch(format!("{}/invocations/{id}/{action}", self.admin))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The admin API's view of an invocation.
    pub async fn inspect(&self, id: &str) -> serde_json::Value {
        reqwest::get(format!("{}/invocations/{id}", self.admin))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls the admin API until the invocation has `status`.
    pub async fn wait_status(&self, id: &str, status: &str) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            last = self.inspect(id).await;
            if last["status"] == status {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("invocation {id} never reached {status}: {last}");
    }
}

/// Builds a runtime, waiting while the data folder is still held: a runtime stopped just now
/// releases it once the last of its tasks has ended.
async fn build_when_unlocked(builder: impl Fn() -> RuntimeBuilder) -> Runtime {
    let start = std::time::Instant::now();
    loop {
        match builder().build() {
            Err(restate_runtime::BuildError::Storage(
                restate_runtime::storage::OpenError::Locked { .. },
            )) if start.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            built => return built.expect("runtime builds"),
        }
    }
}

/// The invocation id of a `/send` answer, which must be `202 Accepted`.
pub async fn accepted_id(r: reqwest::Response) -> String {
    assert_eq!(r.status(), 202);
    r.json::<serde_json::Value>().await.unwrap()["invocationId"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Polls `cond` until it holds, failing the test after `deadline`.
pub async fn wait_until<F, Fut>(deadline: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if cond().await {
            return;
        }
        assert!(
            start.elapsed() < deadline,
            "condition not met within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
