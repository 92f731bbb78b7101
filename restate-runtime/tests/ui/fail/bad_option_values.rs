use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Shop;

#[service(name = 5, ingress_private = true)]
impl Shop {
    #[handler(name = "no spaces allowed", retention = "soon", retry(factor = 0.5, max_attempts = 0, on_max_attempts = "retry"))]
    async fn ping(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}

fn main() {}
