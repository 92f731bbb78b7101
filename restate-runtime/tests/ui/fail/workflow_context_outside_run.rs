use restate_runtime::prelude::*;

pub struct Signup;

#[workflow]
impl Signup {
    #[handler]
    async fn run(&self, _ctx: WorkflowContext<'_>) -> HandlerResult<()> {
        Ok(())
    }

    #[handler]
    async fn status(&self, _ctx: WorkflowContext<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}
