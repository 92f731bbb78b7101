use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Signup;

#[workflow]
impl Signup {
    #[handler]
    async fn run(&self, ctx: WorkflowContext<'_>, email: String) -> HandlerResult<String> {
        Ok(format!("{} signed up as {email}", ctx.key()))
    }

    #[handler]
    async fn status(&self, ctx: SharedWorkflowContext<'_>) -> HandlerResult<String> {
        Ok(ctx.key().to_owned())
    }
}
