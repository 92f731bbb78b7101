//! An input type of the user's own named like a context, from another module, is an input.

use restate_runtime::prelude::*;

mod audit {
    #[derive(serde::Serialize, serde::Deserialize)]
    pub struct Context {
        pub actor: String,
    }
}

#[derive(Default)]
pub struct Audits;

#[service]
impl Audits {
    #[handler]
    async fn record(&self, _ctx: Context<'_>, entry: audit::Context) -> HandlerResult<String> {
        Ok(entry.actor)
    }
}

/// The client takes the user's type.
async fn records(handle: restate_runtime::RuntimeHandle) -> Result<String, ClientError> {
    let entry = audit::Context {
        actor: "ops".into(),
    };
    handle.client::<Audits>().record(entry).call().await
}
