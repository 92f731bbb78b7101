//! The orders app (see `orders_app.rs`), in the release its build's features choose: version 1
//! by default, version 2 with `--features orders-v2` (its changes behind patch markers), or
//! with `--features orders-v2-unpatched` (without them).
//!
//! ```sh
//! cargo build -p examples --bin orders                          # version 1
//! cargo build -p examples --bin orders --features orders-v2     # version 2
//! ```

#[path = "../orders_app.rs"]
mod orders_app;

use orders_app::Release;

const RELEASE: Release = if cfg!(feature = "orders-v2-unpatched") {
    Release::V2Unpatched
} else if cfg!(feature = "orders-v2") {
    Release::V2
} else {
    Release::V1
};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    orders_app::main(RELEASE).await
}
