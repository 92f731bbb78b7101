//! `#[cfg]` on a handler switches its definition, dispatch and client method with it.

use restate_runtime::prelude::*;

#[derive(Default)]
pub struct Gated;

#[service]
impl Gated {
    #[handler]
    async fn always(&self, _ctx: Context<'_>) -> HandlerResult<u32> {
        Ok(1)
    }

    #[cfg(not(test))]
    #[handler]
    async fn never(&self, _ctx: Context<'_>) -> HandlerResult<u32> {
        Ok(2)
    }

    #[cfg(test)]
    #[handler]
    async fn kept(&self, _ctx: Context<'_>) -> HandlerResult<u32> {
        Ok(3)
    }
}

#[test]
fn a_handler_switched_off_by_cfg_is_not_declared() {
    let names: Vec<_> = <Gated as restate_runtime::Service>::definition()
        .handlers
        .iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(names, ["always", "kept"]);
}

/// The client has the compiled handlers' methods only (one by the same name in two versions
/// is in `testing.rs`, which runs it).
async fn calls_the_compiled_version(handle: restate_runtime::RuntimeHandle) {
    let gated = handle.client::<Gated>();
    let _: Result<u32, ClientError> = gated.kept().call().await;
}
