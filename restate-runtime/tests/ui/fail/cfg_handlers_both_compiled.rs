use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Flavors;

#[service]
impl Flavors {
    #[cfg(unix)]
    #[handler]
    async fn flavor(&self, _ctx: Context<'_>) -> HandlerResult<u32> {
        Ok(1)
    }

    #[cfg(target_os = "linux")]
    #[handler(name = "flavor")]
    async fn other(&self, _ctx: Context<'_>) -> HandlerResult<u32> {
        Ok(2)
    }
}

#[derive(Default)]
pub struct Signup;

#[workflow]
impl Signup {
    #[cfg(windows)]
    #[handler]
    async fn run(&self, _ctx: WorkflowContext<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}
