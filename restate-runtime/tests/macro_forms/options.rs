use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Payments;

#[service(
    name = "payments-v1",
    ingress_private,
    retention = "1 day",
    retry(
        initial_interval = "100ms",
        factor = 2.0,
        max_interval = "10s",
        max_attempts = 5
    )
)]
impl Payments {
    #[handler(
        name = "onEvent",
        ingress_private,
        retention = "1 day",
        retry(
            initial_interval = "100ms",
            factor = 2.0,
            max_interval = "10s",
            max_attempts = 5
        )
    )]
    async fn on_event(&self, _ctx: Context<'_>, _event: String) -> HandlerResult<()> {
        Ok(())
    }

    #[handler]
    async fn inherits(&self, _ctx: Context<'_>) -> HandlerResult<()> {
        Ok(())
    }
}
