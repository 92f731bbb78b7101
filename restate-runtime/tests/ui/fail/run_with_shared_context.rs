use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Signup;

#[workflow]
impl Signup {
    #[handler]
    async fn run(&self, _ctx: SharedWorkflowContext<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}
