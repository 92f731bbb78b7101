use restate_runtime::prelude::*;

pub struct Signup;

#[workflow]
impl Signup {
    #[handler]
    async fn status(&self, _ctx: SharedWorkflowContext<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}
