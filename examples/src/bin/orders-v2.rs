//! The orders app, release `v2` (see `orders_app.rs`).

#[path = "../orders_app.rs"]
mod orders_app;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    orders_app::main(orders_app::Release::V2).await
}
