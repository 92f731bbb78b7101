//! A sign-up workflow with e-mail verification: `run` sends a link with a secret (journaled, so
//! a retry sends the same one) and waits on a durable promise that the `click` handler resolves.
//!
//! ```sh
//! cargo run --release --bin signup
//! curl localhost:8080/Signup/ada/run/send --json '"ada@example.com"'
//! curl localhost:8080/Signup/ada/status                       # "waiting for click"
//! curl localhost:8080/Signup/ada/click --json '"<secret from the log>"'
//! curl localhost:8080/restate/workflow/Signup/ada/output      # "ada@example.com verified"
//! ```

use restate_runtime::prelude::*;

/// One sign-up per user key.
#[derive(Default)]
pub struct Signup;

#[workflow]
impl Signup {
    /// Runs once per key: sends the link, waits for the click, checks the secret.
    #[handler]
    async fn run(&self, ctx: WorkflowContext<'_>, email: String) -> HandlerResult<String> {
        let secret = ctx.rand_uuid();
        ctx.set("status", "waiting for click");
        let (to, link) = (
            email.clone(),
            format!("/Signup/{}/click?secret={secret}", ctx.key()),
        );
        // The sent link is the step's journaled result (visible in the admin API's journal).
        let _sent: String = ctx
            .run(|| {
                let (to, link) = (to.clone(), link.clone());
                async move {
                    tracing::info!(%to, %link, "sending verification e-mail");
                    Ok(link)
                }
            })
            .name("send verification e-mail")
            .await?;
        // Suspends while waiting (no memory held); survives restarts.
        let clicked: String = ctx.promise("email.clicked").await?;
        if clicked != secret {
            ctx.set("status", "rejected");
            return Err(TerminalError::new_with_code(403, "wrong verification secret").into());
        }
        ctx.set("status", "verified");
        Ok(format!("{email} verified"))
    }

    /// The link in the e-mail lands here.
    #[handler]
    async fn click(&self, ctx: SharedWorkflowContext<'_>, secret: String) -> HandlerResult<()> {
        ctx.resolve_promise("email.clicked", secret).await?;
        Ok(())
    }

    /// Where the sign-up stands.
    #[handler]
    async fn status(&self, ctx: SharedWorkflowContext<'_>) -> HandlerResult<Option<String>> {
        Ok(ctx.get("status").await?)
    }
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
