//! The smallest app: one durable service with a journaled step.
//!
//! ```sh
//! cargo run --release --bin greeter
//! curl localhost:8080/Greeter/greet --json '"Ada"'
//! ```

use restate_runtime::prelude::*;

/// Greets people; the lucky number is drawn once per invocation and journaled.
#[derive(Default)]
pub struct Greeter;

#[service]
impl Greeter {
    /// `POST /Greeter/greet` with a JSON string.
    #[handler]
    async fn greet(&self, ctx: Context<'_>, name: String) -> HandlerResult<String> {
        let lucky: u32 = ctx
            .run(|| async { Ok(rand_number()) })
            .name("draw lucky number")
            .await?;
        Ok(format!("Hello {name}, your lucky number is {lucky}"))
    }
}

fn rand_number() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 100)
        .unwrap_or(7)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    restate_runtime::init_tracing();
    Runtime::builder()
        .data_dir("./data")
        .build()?
        .serve()
        .await?;
    Ok(())
}
