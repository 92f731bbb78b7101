//! Webhook setup fails closed: `build()` refuses a webhook on a service or handler that does
//! not exist (naming the closest registered names) and a verifying scheme without a secret.

use restate_runtime::prelude::*;
use restate_runtime::webhook::{EventId, Webhook};
use restate_runtime::{BuildError, Runtime};

#[derive(Default)]
pub struct PaymentEvents;

#[service]
impl PaymentEvents {
    #[handler]
    async fn on_event(&self, _ctx: Context<'_>, _event: RawInput) -> HandlerResult<()> {
        Ok(())
    }
}

#[derive(Default)]
pub struct Invoice;

#[object]
impl Invoice {
    #[handler]
    async fn on_event(&self, _ctx: ObjectContext<'_>, _event: RawInput) -> HandlerResult<()> {
        Ok(())
    }
}

/// `build()`'s error for one webhook registration.
fn build_error(service: &str, handler: &str, hook: Webhook) -> String {
    let dir = tempfile::tempdir().unwrap();
    let result = Runtime::builder()
        .data_dir(dir.path())
        .webhook(service, handler, hook)
        .build();
    match result {
        Err(BuildError::Webhook(message)) => message,
        Err(other) => panic!("another error: {other}"),
        Ok(_) => panic!("{service}/{handler} was accepted"),
    }
}

#[tokio::test]
async fn a_misspelt_target_names_the_closest_registered_ones() {
    let secret = || Webhook::stripe(Some("whsec_x".into()));
    let message = build_error("PaymentEvent", "on_event", secret());
    assert!(
        message.contains("no service named 'PaymentEvent'"),
        "{message}"
    );
    assert!(
        message.contains("did you mean 'PaymentEvents'"),
        "{message}"
    );
    let message = build_error("PaymentEvents", "on_evnt", secret());
    assert!(message.contains("has no handler 'on_evnt'"), "{message}");
    assert!(message.contains("did you mean 'on_event'"), "{message}");
}

#[tokio::test]
async fn a_verifying_scheme_without_a_secret_is_refused() {
    for hook in [
        Webhook::stripe(None),
        Webhook::stripe(Some(String::new())),
        Webhook::github(Some(" ".into())),
        Webhook::standard(None),
    ] {
        let message = build_error("PaymentEvents", "on_event", hook);
        assert!(message.contains("no signing secret"), "{message}");
        assert!(message.contains("Webhook::unverified"), "{message}");
    }
}

/// The key of an object is in the path, which no signature covers: a verified webhook there
/// would let one captured event become an invocation per key.
#[tokio::test]
async fn a_verified_webhook_on_a_keyed_handler_is_refused() {
    let message = build_error(
        "Invoice",
        "on_event",
        Webhook::stripe(Some("whsec_x".into())),
    );
    assert!(message.contains("signature does not cover"), "{message}");
}

#[tokio::test]
async fn explicit_unverified_and_signed_endpoints_build() {
    for hook in [
        Webhook::unverified(EventId::JsonField("id".into())),
        Webhook::stripe(Some("whsec_x".into())),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let runtime = Runtime::builder()
            .data_dir(dir.path())
            .webhook("PaymentEvents", "on_event", hook)
            .build();
        assert!(
            runtime.is_ok(),
            "{:?}",
            runtime.err().map(|e| e.to_string())
        );
    }
}

/// Outside a tokio runtime, a mistake in the setup is still what `build()` reports: a check in
/// a plain `#[test]` sees it. Only a sound setup is told it needs a runtime.
#[test]
fn setup_mistakes_are_reported_before_the_missing_async_runtime() {
    let message = build_error(
        "PaymentEvent",
        "on_event",
        Webhook::stripe(Some("whsec_x".into())),
    );
    assert!(message.contains("no service named"), "{message}");
    let dir = tempfile::tempdir().unwrap();
    let sound = Runtime::builder().data_dir(dir.path()).build();
    assert!(
        matches!(sound, Err(BuildError::NoAsyncRuntime)),
        "{:?}",
        sound.err()
    );
}
