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

    /// One name, two versions switched by a feature: never compiled together.
    #[cfg(not(test))]
    #[handler]
    async fn flavor(&self, _ctx: Context<'_>) -> HandlerResult<String> {
        Ok("old".into())
    }

    #[cfg(test)]
    #[handler]
    async fn flavor(&self, _ctx: Context<'_>) -> HandlerResult<String> {
        Ok("new".into())
    }
}

#[test]
fn a_handler_switched_off_by_cfg_is_not_declared() {
    let names: Vec<_> = <Gated as restate_runtime::Service>::definition()
        .handlers
        .iter()
        .map(|h| h.name)
        .collect();
    assert_eq!(names, ["always", "kept", "flavor"]);
}

/// The client has the compiled version's methods only.
async fn calls_the_compiled_version(handle: restate_runtime::RuntimeHandle) {
    let gated = handle.client::<Gated>();
    let _: Result<u32, ClientError> = gated.kept().call().await;
    let _: Result<String, ClientError> = gated.flavor().call().await;
}
