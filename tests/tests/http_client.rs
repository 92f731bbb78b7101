//! `HttpIngress`: a second program calls the `webhooks` example's typed services over its
//! ingress: call, send and attach, errors mapped to their source, the bearer token, and a
//! keyed request retried across the app being down that still runs once.

mod support;

use std::process::Stdio;
use std::time::Duration;

use restate_runtime::prelude::*;
use restate_runtime::{HttpIngress, IngressError};
use support::{App, example_bin, free_port, poll};

// The client's view of the services the `webhooks` binary hosts: the same names and
// signatures (a client crate would share the declaring crate; this test declares them
// again). Their bodies never run here: this process runs no runtime.

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StripeEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub data: EventData,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventData {
    pub object: EventObject,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventObject {
    pub id: String,
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TrackerStatus {
    pub status: Option<String>,
    pub events: Vec<String>,
    pub failures: u32,
    pub reminders: u32,
}

fn elsewhere() -> HandlerError {
    TerminalError::new("hosted by the webhooks binary").into()
}

#[derive(Default)]
pub struct WebhookCallbackRouter;

#[service]
impl WebhookCallbackRouter {
    #[handler(name = "onStripeEvent")]
    async fn on_stripe_event(&self, _ctx: Context<'_>, _event: StripeEvent) -> HandlerResult<()> {
        Err(elsewhere())
    }
}

#[derive(Default)]
pub struct PaymentTracker;

#[object]
impl PaymentTracker {
    #[handler]
    async fn remind(&self, _ctx: ObjectContext<'_>) -> HandlerResult<()> {
        Err(elsewhere())
    }

    #[handler]
    async fn status(&self, _ctx: SharedObjectContext<'_>) -> HandlerResult<TrackerStatus> {
        Err(elsewhere())
    }
}

fn failed(event: &str, invoice: &str) -> StripeEvent {
    StripeEvent {
        id: event.into(),
        kind: "invoice.payment_failed".into(),
        data: EventData {
            object: EventObject { id: invoice.into() },
        },
    }
}

async fn status(remote: &HttpIngress, invoice: &str) -> TrackerStatus {
    remote
        .object::<PaymentTracker>(invoice)
        .status()
        .call()
        .await
        .unwrap()
}

/// Waits until the invoice's tracker holds `events`.
async fn wait_events(remote: &HttpIngress, invoice: &str, events: &[&str]) {
    poll(Duration::from_secs(30), || async {
        status(remote, invoice).await.events == events
    })
    .await;
}

#[tokio::test]
async fn typed_calls_sends_and_attach_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::start(&example_bin("webhooks"), dir.path(), &[]).await;
    let remote = HttpIngress::new(format!("{}/", app.ingress));
    let router = remote.client::<WebhookCallbackRouter>();

    // A call answers once the handler is done; a key makes a second delivery the same event.
    router
        .on_stripe_event(failed("evt_1", "in_1"))
        .call()
        .await
        .unwrap();
    let sent = router
        .on_stripe_event(failed("evt_2", "in_1"))
        .idempotency_key("evt_2")
        .send()
        .await
        .unwrap();
    sent.attach().await.unwrap();
    let again = router
        .on_stripe_event(failed("evt_2", "in_1"))
        .idempotency_key("evt_2")
        .send()
        .await
        .unwrap();
    assert_eq!(again.invocation_id(), sent.invocation_id());
    assert_eq!(again.output().await.unwrap(), Some(()));
    // By bare id, as a program that stored it would.
    remote
        .invocation(sent.invocation_id())
        .typed::<()>()
        .attach()
        .await
        .unwrap();
    wait_events(&remote, "in_1", &["evt_1", "evt_2"]).await;
    let tracker = status(&remote, "in_1").await;
    assert_eq!(
        (tracker.status.as_deref(), tracker.failures),
        (Some("failed"), 2)
    );

    // The ingress's own refusals are told apart from handlers' terminal errors.
    match remote
        .object::<PaymentTracker>("in_1")
        .remind()
        .call()
        .await
    {
        Err(IngressError::Refused { status, message }) => {
            assert!((400..500).contains(&status), "{status} {message}");
            assert!(!IngressError::Refused { status, message }.is_retryable());
        }
        other => panic!("expected the ingress to refuse a private handler, got {other:?}"),
    }
    let unknown: restate_runtime::InvocationId =
        format!("inv_1{}1", "0".repeat(32)).parse().unwrap();
    match remote.invocation(unknown).output().await {
        Err(IngressError::Refused { status: 404, .. }) => {}
        other => panic!("expected 404, got {other:?}"),
    }
    app.terminate();
}

#[tokio::test]
async fn the_bearer_token_is_sent_and_never_logged() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("RESTATE_INGRESS_TOKEN", "s3cret".to_owned()),
        ("RUST_LOG", "info".to_owned()),
    ];
    let log = dir.path().join("app.log");
    let app = App::spawn(
        &example_bin("webhooks"),
        &dir.path().join("data"),
        &env,
        (free_port(), free_port()),
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    app.wait_healthy().await;
    // The settings taken from the environment are logged once, the token masked.
    let said = std::fs::read_to_string(&log).unwrap();
    let line = said
        .lines()
        .find(|l| l.contains("settings from the environment"))
        .unwrap_or_else(|| panic!("no settings line in {said}"));
    assert!(line.contains("RESTATE_INGRESS_TOKEN=<set> "), "{line}");
    assert!(line.contains("RESTATE_INGRESS_ADDR="), "{line}");
    assert!(!said.contains("s3cret"), "the token leaked: {said}");
    assert_eq!(said.matches("settings from the environment").count(), 1);
    let without = HttpIngress::new(&app.ingress);
    match without
        .object::<PaymentTracker>("in_9")
        .status()
        .call()
        .await
    {
        Err(IngressError::Refused { status: 401, .. }) => {}
        other => panic!("expected 401 without the token, got {other:?}"),
    }
    let with = HttpIngress::new(&app.ingress).bearer_token("s3cret");
    assert_eq!(status(&with, "in_9").await, TrackerStatus::default());
    app.terminate();
}

#[tokio::test]
async fn a_keyed_request_is_retried_until_the_app_is_up_and_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let bin = example_bin("webhooks");
    let ports = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{}", ports.0);
    let remote = HttpIngress::new(&url).max_attempts(60);

    // Nobody listens yet: without a key the request fails at once, not retried.
    let router = remote.client::<WebhookCallbackRouter>();
    match router.on_stripe_event(failed("evt_x", "in_2")).call().await {
        Err(e @ IngressError::Transport(_)) => assert!(e.is_retryable()),
        other => panic!("expected no answer, got {other:?}"),
    }

    // With a key it is retried (backoff up to 2 s, 60 attempts) while the app starts.
    let keyed = {
        let remote = remote.clone();
        tokio::spawn(async move {
            remote
                .client::<WebhookCallbackRouter>()
                .on_stripe_event(failed("evt_3", "in_2"))
                .idempotency_key("evt_3")
                .call()
                .await
        })
    };
    // Started only once the request has failed at least once (nothing answers before).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let app = App::start_on(&bin, dir.path(), &[], ports).await;
    keyed.await.unwrap().expect("retried until answered");
    // Delivered again after the fact: still one event on the tracker.
    router
        .on_stripe_event(failed("evt_3", "in_2"))
        .idempotency_key("evt_3")
        .call()
        .await
        .unwrap();
    wait_events(&remote, "in_2", &["evt_3"]).await;
    app.terminate();
}
