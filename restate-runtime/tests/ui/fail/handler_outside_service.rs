use restate_runtime::prelude::*;

#[handler]
async fn greet(_ctx: Context<'_>) -> HandlerResult<()> {
    Ok(())
}

fn main() {}
