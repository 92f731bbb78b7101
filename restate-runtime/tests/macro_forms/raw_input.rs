use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Webhook;

#[service]
impl Webhook {
    #[handler]
    async fn receive(&self, _ctx: Context<'_>, input: RawInput) -> HandlerResult<usize> {
        let _signature = input.header("x-signature");
        Ok(input.body().len())
    }
}
