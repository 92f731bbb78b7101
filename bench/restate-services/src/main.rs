//! The Restate-side bench app: exactly the services of `examples/src/bin/bench-services.rs`
//! (`Noop/echo`, `Steps/three`, `Counter/{key}/add|get`, `Fanout/send`) on `restate-sdk` 0.13.
//!
//! Serves the SDK endpoint over HTTP/2 on `127.0.0.1:$PORT` (argument 1, default 9080). The
//! accept loop is the SDK's own `HttpServer` loop, plus `set_nodelay(true)` on every accepted
//! socket: without it the server's small HTTP/2 frames meet Nagle's algorithm and delayed ACKs
//! and some round trips stall for 40 ms.

use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use restate_sdk::hyper::HyperEndpoint;
use restate_sdk::prelude::*;
use tokio::net::TcpListener;

struct Noop;

#[service]
impl Noop {
    /// Returns its JSON input.
    #[handler]
    async fn echo(
        &self,
        _ctx: Context<'_>,
        input: Json<serde_json::Value>,
    ) -> HandlerResult<Json<serde_json::Value>> {
        Ok(input)
    }
}

struct Steps;

#[service]
impl Steps {
    /// Three journaled steps returning 1, 2 and 3; returns their sum.
    #[handler]
    async fn three(&self, ctx: Context<'_>) -> HandlerResult<u64> {
        let mut sum = 0u64;
        for i in 1..=3u64 {
            sum += ctx
                .run(|| async move { Ok(i) })
                .name(format!("step-{i}"))
                .await?;
        }
        Ok(sum)
    }
}

struct Counter;

#[object]
impl Counter {
    /// Adds `n` to `count` and returns the new value.
    #[handler]
    async fn add(&self, ctx: ObjectContext<'_>, n: i64) -> HandlerResult<i64> {
        let count = ctx.get::<i64>("count").await?.unwrap_or(0) + n;
        ctx.set("count", count);
        Ok(count)
    }

    /// Returns `count` (shared: the `SharedObjectContext` makes it so).
    #[handler]
    async fn get(&self, ctx: SharedObjectContext<'_>) -> HandlerResult<i64> {
        Ok(ctx.get::<i64>("count").await?.unwrap_or(0))
    }
}

struct Fanout;

#[service]
impl Fanout {
    /// Sends `n` one-way `Counter/fan-{i}/add(1)` messages; returns `n`.
    #[handler]
    async fn send(&self, ctx: Context<'_>, n: u32) -> HandlerResult<u32> {
        for i in 0..n {
            ctx.object_client::<CounterClient>(format!("fan-{i}"))
                .add(1)
                .send();
        }
        Ok(n)
    }
}

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(9080);
    let endpoint = HyperEndpoint::new(
        Endpoint::builder()
            .bind(Noop)
            .bind(Steps)
            .bind(Counter)
            .bind(Fanout)
            .build(),
    );
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("listener binds");
    eprintln!("restate-bench-services listening on 127.0.0.1:{port}");
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        stream.set_nodelay(true).expect("TCP_NODELAY");
        let conn = http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), endpoint.clone());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                eprintln!("connection {remote}: {e:?}");
            }
        });
    }
}
