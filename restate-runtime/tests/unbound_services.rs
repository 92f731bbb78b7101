//! A service type without `Default` that is not bound: a `Runtime` refuses to build (it must
//! serve everything its binary declares), while a test runtime builds, serves the others, and
//! fails that service's calls with an error that says to bind it (found from outside: one such
//! type in a test binary stopped every test runtime in it, also in tests of other services).

use std::sync::{Arc, Mutex};

use restate_runtime::prelude::*;
use restate_runtime::testing::TestRuntime;
use restate_runtime::{BuildError, RegistryError, Runtime};

/// Needs a value from its test: it has no `Default`.
pub struct Mailer {
    outbox: Arc<Mutex<Vec<String>>>,
}

#[service]
impl Mailer {
    #[handler]
    async fn send(&self, _ctx: Context<'_>, to: String) -> HandlerResult<()> {
        self.outbox.lock().unwrap().push(to);
        Ok(())
    }
}

#[derive(Default)]
pub struct Greeter;

#[service]
impl Greeter {
    #[handler]
    async fn greet(&self, _ctx: Context<'_>, name: String) -> HandlerResult<String> {
        Ok(format!("Hello {name}"))
    }

    /// Greets by mail.
    #[handler]
    async fn mail(&self, ctx: Context<'_>, to: String) -> HandlerResult<()> {
        ctx.client::<Mailer>().send(to).call().await?;
        Ok(())
    }
}

#[tokio::test]
async fn a_test_runtime_serves_the_rest_and_fails_the_unbound_services_calls_clearly() {
    let t = TestRuntime::builder().build().await;
    let greeter = t.handle().client::<Greeter>();
    assert_eq!(
        greeter.greet("Ada".into()).call().await.unwrap(),
        "Hello Ada"
    );
    for failed in [
        t.handle()
            .client::<Mailer>()
            .send("ada@example.com".into())
            .call()
            .await
            .unwrap_err(),
        greeter
            .mail("ada@example.com".into())
            .call()
            .await
            .unwrap_err(),
    ] {
        let message = failed.to_string();
        assert!(
            message.contains("service `Mailer` has no value in this test runtime")
                && message.contains("bind"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn a_bound_value_is_served() {
    let outbox = Arc::new(Mutex::new(Vec::new()));
    let mailer = Mailer {
        outbox: outbox.clone(),
    };
    let t = TestRuntime::builder().bind(mailer).build().await;
    let greeter = t.handle().client::<Greeter>();
    greeter.mail("ada@example.com".into()).call().await.unwrap();
    assert_eq!(*outbox.lock().unwrap(), ["ada@example.com"]);
}

#[tokio::test]
async fn a_runtime_refuses_to_build_without_a_value() {
    let dir = tempfile::tempdir().unwrap();
    let built = Runtime::builder()
        .data_dir(dir.path())
        .without_env()
        .build();
    match built {
        Err(BuildError::Registry(RegistryError::Unbound(service))) => {
            assert_eq!(service, "Mailer")
        }
        Err(other) => panic!("another error: {other}"),
        Ok(_) => panic!("built without a value for Mailer"),
    }
}
