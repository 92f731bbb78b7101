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

#[cfg(test)]
mod tests {
    //! The sign-up workflow on the test runtime: the click arrives after a crash.

    use super::*;
    use restate_runtime::storage::{JournalEntry, Outcome};
    use restate_runtime::testing::TestRuntime;

    #[tokio::test]
    async fn a_click_after_a_restart_verifies_the_address() {
        let t = TestRuntime::builder().build().await;
        let signup = t.handle().workflow::<Signup>("ada");
        let run = signup.run("ada@example.com".into()).send().await.unwrap();
        t.run_until_idle().await;
        // The link the e-mail carried: the journaled result of the step that sent it.
        let view = t.invocation(run.invocation_id()).unwrap();
        let link: String = view
            .journal
            .iter()
            .find_map(|(_, entry)| match entry {
                JournalEntry::Run {
                    outcome: Outcome::Success(bytes),
                    ..
                } => serde_json::from_slice(bytes).ok(),
                _ => None,
            })
            .expect("the e-mail was sent");
        let secret = link.split("secret=").nth(1).unwrap().to_owned();
        t.restart().await;
        let signup = t.handle().workflow::<Signup>("ada");
        assert_eq!(
            signup.status().call().await.unwrap().as_deref(),
            Some("waiting for click")
        );
        signup.click(secret).call().await.unwrap();
        assert_eq!(run.attach().await.unwrap(), "ada@example.com verified");
        assert_eq!(
            signup.status().call().await.unwrap().as_deref(),
            Some("verified")
        );
    }

    #[tokio::test]
    async fn a_wrong_secret_is_refused() {
        let t = TestRuntime::builder().build().await;
        let signup = t.handle().workflow::<Signup>("bob");
        let run = signup.run("bob@example.com".into()).send().await.unwrap();
        signup.click("guess".into()).call().await.unwrap();
        let refused = run.attach().await.unwrap_err();
        assert!(
            refused.to_string().contains("wrong verification secret"),
            "{refused}"
        );
    }
}
