//! Durable Stripe webhooks: events arrive at `POST /WebhookCallbackRouter/onStripeEvent`, are
//! deduplicated by their event id, and are routed by one-way message to a per-invoice
//! `PaymentTracker` object that keeps state and schedules a reminder for failed payments.
//!
//! ```sh
//! cargo run --release --bin webhooks
//! curl localhost:8080/WebhookCallbackRouter/onStripeEvent --json \
//!   '{"id":"evt_1","type":"invoice.payment_failed","data":{"object":{"id":"in_1"}}}'
//! curl localhost:8080/PaymentTracker/in_1/status
//! ```
//!
//! `webhooks check-replay --data-dir <backup>` replays a backup's invocations against this
//! build instead of serving (exit status 1 when one would break).
//!
//! Environment: `RESTATE_DATA_DIR`, `RESTATE_INGRESS_ADDR`, `RESTATE_ADMIN_ADDR` (as every app),
//! `PAYMENT_REMINDER_DELAY` (default `1d`), `PAYMENT_EMAIL_RATE` (say `10/1s`: at most that
//! many reminder emails, a rate limit named `email`; unset, no limit), `STRIPE_WEBHOOK_SECRET` (when set, signatures are
//! required, and `RESTATE_WEBHOOK_ADDR` serves the endpoint to the internet; without it the
//! endpoint takes unsigned events on the ingress only).

use std::time::Duration;

use restate_runtime::prelude::*;
use restate_runtime::webhook::{EventId, Webhook};

/// A Stripe event; fields we do not use are ignored. Events of other types may carry an
/// object without an id (a balance) or no object at all: those parts default to empty.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StripeEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub data: EventData,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventData {
    #[serde(default)]
    pub object: EventObject,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventObject {
    /// The invoice's id in an invoice event; empty when the object has none.
    #[serde(default)]
    pub id: String,
}

/// Routes each Stripe event to the tracker of its invoice.
#[derive(Default)]
pub struct WebhookCallbackRouter;

#[service]
impl WebhookCallbackRouter {
    /// The Stripe webhook endpoint.
    #[handler(name = "onStripeEvent")]
    async fn on_stripe_event(&self, ctx: Context<'_>, event: StripeEvent) -> HandlerResult<()> {
        let invoice = event.data.object.id.clone();
        let routed = matches!(
            event.kind.as_str(),
            "invoice.payment_failed" | "invoice.payment_succeeded"
        );
        if routed && invoice.is_empty() {
            let message = format!(
                "{} {}: no invoice id in data.object.id",
                event.kind, event.id
            );
            return Err(TerminalError::new_with_code(400, message).into());
        }
        let tracker = ctx.object::<PaymentTracker>(invoice);
        match event.kind.as_str() {
            "invoice.payment_failed" => {
                tracker.on_payment_failed(event).send();
            }
            "invoice.payment_succeeded" => {
                tracker.on_payment_success(event).send();
            }
            other => tracing::info!(event = %event.id, kind = other, "ignoring event type"),
        }
        Ok(())
    }
}

/// What a tracker reports.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TrackerStatus {
    pub status: Option<String>,
    pub events: Vec<String>,
    pub failures: u32,
    pub reminders: u32,
}

/// The payment state of one invoice (keyed by invoice id).
pub struct PaymentTracker {
    reminder_delay: Duration,
}

#[object]
impl PaymentTracker {
    #[handler(name = "onPaymentFailed", ingress_private)]
    async fn on_payment_failed(
        &self,
        ctx: ObjectContext<'_>,
        event: StripeEvent,
    ) -> HandlerResult<()> {
        record_event(&ctx, &event).await?;
        let failures = ctx.get::<u32>("failures").await?.unwrap_or(0) + 1;
        ctx.set("failures", failures);
        // Stripe does not deliver events in order: a failure that arrives after the invoice
        // was paid is an earlier attempt's, and neither unpays it nor reminds anyone.
        if ctx.get::<String>("status").await?.as_deref() == Some("paid") {
            return Ok(());
        }
        ctx.set("status", "failed");
        ctx.object::<PaymentTracker>(ctx.key())
            .remind()
            .send_after(self.reminder_delay);
        Ok(())
    }

    #[handler(name = "onPaymentSuccess", ingress_private)]
    async fn on_payment_success(
        &self,
        ctx: ObjectContext<'_>,
        event: StripeEvent,
    ) -> HandlerResult<()> {
        record_event(&ctx, &event).await?;
        ctx.set("status", "paid");
        Ok(())
    }

    #[handler(ingress_private)]
    async fn remind(&self, ctx: ObjectContext<'_>) -> HandlerResult<()> {
        if ctx.get::<String>("status").await?.as_deref() != Some("failed") {
            return Ok(());
        }
        let reminders = ctx.get::<u32>("reminders").await?.unwrap_or(0) + 1;
        ctx.set("reminders", reminders);
        // Within the e-mail provider's limit when `PAYMENT_EMAIL_RATE` sets one: a reminder
        // waiting for its slot holds only its own invoice's key (a wait of a second or more
        // suspends). Its invoice's events queue behind it meanwhile: a payment that arrives
        // then is recorded once this reminder has gone out.
        let invoice = ctx.key();
        ctx.run(|| async {
            tracing::info!(%invoice, "sending payment reminder email");
            Ok(())
        })
        .name("send reminder email")
        .rate_limit("email")
        .await?;
        Ok(())
    }

    #[handler]
    async fn status(&self, ctx: SharedObjectContext<'_>) -> HandlerResult<TrackerStatus> {
        Ok(TrackerStatus {
            status: ctx.get("status").await?,
            events: ctx.get("events").await?.unwrap_or_default(),
            failures: ctx.get("failures").await?.unwrap_or(0),
            reminders: ctx.get("reminders").await?.unwrap_or(0),
        })
    }
}

/// Appends the event id, always: deduplicating deliveries is the framework's job.
async fn record_event(ctx: &ObjectContext<'_>, event: &StripeEvent) -> HandlerResult<()> {
    let mut events = ctx.get::<Vec<String>>("events").await?.unwrap_or_default();
    events.push(event.id.clone());
    ctx.set("events", events);
    Ok(())
}

/// Signed events (also on the public listener, `RESTATE_WEBHOOK_ADDR`) with a secret; without
/// one, unsigned events on the ingress only, for local testing with curl. Either way the
/// event's `id` is its idempotency key.
fn stripe_webhook(secret: Option<String>) -> Webhook {
    match secret {
        Some(secret) => Webhook::stripe(Some(secret)),
        None => Webhook::unverified(EventId::JsonField("id".into())),
    }
}

/// Serves; `webhooks check-replay --data-dir <backup>` checks a deploy instead.
#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    restate_runtime::init_tracing();
    let reminder_delay = match std::env::var("PAYMENT_REMINDER_DELAY") {
        Ok(v) => restate_runtime::parse_duration(&v)
            .map_err(|e| anyhow::anyhow!("PAYMENT_REMINDER_DELAY={v:?} is invalid: {e}"))?,
        Err(_) => Duration::from_secs(24 * 3600),
    };
    let secret = std::env::var("STRIPE_WEBHOOK_SECRET")
        .ok()
        .filter(|s| !s.is_empty());
    tracing::info!(
        ?reminder_delay,
        signatures = secret.is_some(),
        "webhook processor starting"
    );
    let mut app = Runtime::builder()
        .data_dir("./data")
        .bind(PaymentTracker { reminder_delay })
        .webhook(
            "WebhookCallbackRouter",
            "onStripeEvent",
            stripe_webhook(secret),
        );
    if let Ok(rate) = std::env::var("PAYMENT_EMAIL_RATE") {
        let limit = rate
            .parse::<restate_runtime::RateLimit>()
            .map_err(|e| anyhow::anyhow!("PAYMENT_EMAIL_RATE: {e}"))?;
        app = app.rate_limit("email", limit);
    }
    Ok(app.main().await)
}

#[cfg(test)]
mod tests {
    //! The app on the test runtime: a day's reminder delay passes in milliseconds, and a crash
    //! is a method call.

    use super::*;
    use restate_runtime::testing::TestRuntime;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn event(id: &str, kind: &str, invoice: &str) -> serde_json::Value {
        serde_json::json!({ "id": id, "type": kind, "data": { "object": { "id": invoice } } })
    }

    /// A test runtime whose trackers remind a day after a failed payment.
    fn with_a_days_reminder() -> restate_runtime::testing::TestRuntimeBuilder {
        TestRuntime::builder().bind(PaymentTracker {
            reminder_delay: DAY,
        })
    }

    /// The app as `main` builds it (unsigned events, a day's reminder), its ingress served:
    /// the runtime and the webhook's URL.
    async fn served() -> (TestRuntime, String) {
        let t = with_a_days_reminder()
            .webhook(
                "WebhookCallbackRouter",
                "onStripeEvent",
                stripe_webhook(None),
            )
            .serve_ingress()
            .build()
            .await;
        let url = format!(
            "{}/WebhookCallbackRouter/onStripeEvent",
            t.ingress_url().unwrap()
        );
        (t, url)
    }

    #[tokio::test]
    async fn a_failed_payment_is_reminded_once_after_a_day_even_across_a_crash() {
        let (t, url) = served().await;
        let http = reqwest::Client::new();
        // Stripe delivers the same event twice: one invocation, one recorded event.
        for _ in 0..2 {
            let r = http
                .post(&url)
                .json(&event("evt_1", "invoice.payment_failed", "in_1"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        t.advance(DAY - Duration::from_secs(1)).await;
        assert_eq!(t.state::<u32>("PaymentTracker", "in_1", "reminders"), None);
        t.restart().await;
        t.advance(Duration::from_secs(1)).await;
        let tracker = t.handle().object::<PaymentTracker>("in_1");
        let status = tracker.status().call().await.unwrap();
        assert_eq!(
            status,
            TrackerStatus {
                status: Some("failed".into()),
                events: vec!["evt_1".into()],
                failures: 1,
                reminders: 1,
            }
        );
        // No second reminder: the next day passes quietly.
        t.advance(DAY).await;
        assert_eq!(
            t.state::<u32>("PaymentTracker", "in_1", "reminders"),
            Some(1)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_crash_in_the_middle_of_on_payment_failed_still_reminds_once() {
        // Crash right after the 1st, 2nd, ... commit from the delivery on; Stripe redelivers
        // until it gets a 2xx, and the event id keeps it one invocation.
        for n in 1..=64 {
            let (t, url) = served().await;
            let http = reqwest::Client::new();
            t.crash_after_commits(n);
            let delivered = http
                .post(&url)
                .json(&event("evt_1", "invoice.payment_failed", "in_1"))
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            t.run_until_idle().await;
            // The crash may come at delivery, or later with the reminder.
            let mut crashed = t.crashed();
            if crashed {
                t.restart().await;
            }
            if !delivered {
                let r = http
                    .post(&url)
                    .json(&event("evt_1", "invoice.payment_failed", "in_1"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "crash after commit {n}");
            }
            t.advance(DAY).await;
            // Or with the reminder, or even with the status call (commit boundaries depend on
            // timing): one crash at most per run, and a restart recovers from it.
            let status = loop {
                if t.crashed() {
                    crashed = true;
                    t.restart().await;
                    t.advance(DAY).await;
                }
                let tracker = t.handle().object::<PaymentTracker>("in_1");
                match tracker.status().call().await {
                    Ok(status) => break status,
                    Err(e) => assert!(t.crashed(), "{e}"),
                }
            };
            assert_eq!(status.events, ["evt_1"], "crash after commit {n}");
            assert_eq!((status.failures, status.reminders), (1, 1), "{n}");
            if !crashed {
                assert!(n > 3, "the crashes covered only {} commits", n - 1);
                return;
            }
        }
        panic!("every run crashed");
    }

    #[tokio::test]
    async fn reminder_emails_go_out_at_the_email_rate_when_one_is_set() {
        use restate_runtime::testing::InvocationFilter;
        let t = with_a_days_reminder()
            .rate_limit("email", "1/1h".parse().unwrap())
            .build()
            .await;
        for invoice in ["in_1", "in_2", "in_3"] {
            let tracker = t.handle().object::<PaymentTracker>(invoice);
            let event = StripeEvent {
                id: format!("evt_{invoice}"),
                kind: "invoice.payment_failed".into(),
                data: serde_json::from_value(serde_json::json!({ "object": { "id": invoice } }))
                    .unwrap(),
            };
            tracker.on_payment_failed(event).call().await.unwrap();
        }
        let reminded = || {
            t.invocations(
                InvocationFilter::default()
                    .handler("remind")
                    .status("completed"),
            )
            .len()
        };
        t.advance(DAY).await;
        assert_eq!(reminded(), 1, "one email now, the others wait for the rate");
        t.advance(Duration::from_secs(3600)).await;
        assert_eq!(reminded(), 2);
        t.advance(Duration::from_secs(3600)).await;
        assert_eq!(reminded(), 3);
    }

    #[tokio::test]
    async fn other_event_types_are_acknowledged_with_or_without_an_object_id() {
        let t = with_a_days_reminder().build().await;
        let router = t.handle().client::<WebhookCallbackRouter>();
        let events = [
            serde_json::json!({"id": "evt_b", "type": "balance.available",
                "data": {"object": {"object": "balance"}}}),
            serde_json::json!({"id": "evt_p", "type": "ping"}),
            serde_json::json!({"id": "evt_c", "type": "customer.created",
                "data": {"object": {"id": "cus_1"}}}),
        ];
        for event in events {
            let event: StripeEvent = serde_json::from_value(event).unwrap();
            router.on_stripe_event(event).call().await.unwrap();
        }
        // An invoice event without its invoice cannot be routed: a terminal 400, no tracker.
        let bare = serde_json::json!({"id": "evt_i", "type": "invoice.payment_failed"});
        let refused = router
            .on_stripe_event(serde_json::from_value(bare).unwrap())
            .call()
            .await
            .unwrap_err();
        match refused {
            ClientError::Terminal(e) => assert_eq!(e.code(), 400, "{e}"),
            other => panic!("{other}"),
        }
        t.run_until_idle().await;
        let tracker = t.handle().object::<PaymentTracker>("").status().call();
        assert_eq!(tracker.await.unwrap(), TrackerStatus::default());
    }

    /// Delivered out of order (Stripe does not promise an order): a failure that arrives after
    /// the payment leaves the invoice paid and reminds nobody.
    #[tokio::test]
    async fn a_failure_delivered_after_the_payment_leaves_the_invoice_paid() {
        let t = with_a_days_reminder().build().await;
        let router = t.handle().client::<WebhookCallbackRouter>();
        for (id, kind) in [
            ("evt_2", "invoice.payment_succeeded"),
            ("evt_1", "invoice.payment_failed"),
        ] {
            let event = serde_json::from_value(event(id, kind, "in_3")).unwrap();
            router.on_stripe_event(event).call().await.unwrap();
        }
        t.advance(2 * DAY).await;
        let tracker = t.handle().object::<PaymentTracker>("in_3");
        let status = tracker.status().call().await.unwrap();
        assert_eq!(status.status.as_deref(), Some("paid"));
        assert_eq!((status.failures, status.reminders), (1, 0));
        assert_eq!(status.events, ["evt_2", "evt_1"]);
    }

    #[tokio::test]
    async fn a_payment_that_succeeds_before_the_reminder_is_not_reminded() {
        let t = with_a_days_reminder().build().await;
        let router = t.handle().client::<WebhookCallbackRouter>();
        let failed = serde_json::from_value(event("evt_1", "invoice.payment_failed", "in_2"));
        router
            .on_stripe_event(failed.unwrap())
            .call()
            .await
            .unwrap();
        t.advance(DAY / 2).await;
        let paid = serde_json::from_value(event("evt_2", "invoice.payment_succeeded", "in_2"));
        router.on_stripe_event(paid.unwrap()).call().await.unwrap();
        t.advance(DAY).await;
        let status = t
            .handle()
            .object::<PaymentTracker>("in_2")
            .status()
            .call()
            .await
            .unwrap();
        assert_eq!(status.status.as_deref(), Some("paid"));
        assert_eq!(status.reminders, 0);
        assert_eq!(status.events, ["evt_1", "evt_2"]);
    }
}
