//! The webhook example end to end: the built `webhooks` binary on a temp folder, signed Stripe
//! events (some delivered twice, by header key or by event id, some through `/send`), the
//! process SIGKILLed during the load and restarted, senders retrying what failed, and at the end
//! every tracker holds each acknowledged event exactly once, with reminders fired once each.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use restate_runtime::webhook::stripe_signature;
use serde_json::{Value, json};
use support::{App, example_bin, free_port, now_secs, poll, quiet};

const SECRET: &str = "whsec_e2e";

fn event(id: &str, kind: &str, invoice: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"id": id, "type": kind, "data": {"object": {"id": invoice, "amount": 1}}, "livemode": false}))
        .unwrap()
}

/// Delivers until acknowledged, as Stripe does: the same event again after any failure or 429,
/// to the next of `bases` (the processes behind a load balancer).
async fn deliver(client: &reqwest::Client, bases: &[String], body: &[u8], variant: usize) {
    for attempt in 0.. {
        let base = &bases[(variant + attempt) % bases.len()];
        let path = if variant % 3 == 2 {
            "/WebhookCallbackRouter/onStripeEvent/send"
        } else {
            "/WebhookCallbackRouter/onStripeEvent"
        };
        let mut req = client
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .header(
                "stripe-signature",
                stripe_signature(SECRET, now_secs(), body),
            )
            .body(body.to_vec());
        if variant % 3 == 1 {
            let id: Value = serde_json::from_slice(body).unwrap();
            req = req.header("idempotency-key", id["id"].as_str().unwrap());
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => return,
            // Too many at once (the in-flight cap): retried, as Stripe does.
            Ok(r) if r.status() == 429 => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok(r) if r.status().is_client_error() => panic!("refused: {}", r.text().await.unwrap()),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test]
async fn events_survive_kills_and_are_processed_once() {
    survive_kills(Vec::new(), 1000, 1).await;
}

/// The same on PostgreSQL (a private cluster, a fresh database): the data folder is not used.
#[tokio::test]
async fn events_survive_kills_and_are_processed_once_on_postgres() {
    let Some(cluster) = restate_runtime::testing::PostgresCluster::for_tests() else {
        return;
    };
    let url = cluster.fresh_database().unwrap();
    survive_kills(vec![("RESTATE_DATABASE_URL", url)], 500, 1).await;
}

/// Three processes on one database, each event's two deliveries sent to two different ones,
/// random processes SIGKILLed and restarted during the load and the last one killed for good:
/// every event once, every reminder once.
#[tokio::test]
async fn events_spread_over_three_processes_survive_kills_and_are_processed_once() {
    let Some(cluster) = restate_runtime::testing::PostgresCluster::for_tests() else {
        return;
    };
    let url = cluster.fresh_database().unwrap();
    survive_kills(vec![("RESTATE_DATABASE_URL", url)], 600, 3).await;
}

/// `invoices` x 2 events x 2 deliveries over `processes` processes, a process SIGKILLed three
/// times during the load (a random one, restarted; with more than one, the last stays dead).
async fn survive_kills(store: Vec<(&'static str, String)>, invoices: usize, processes: usize) {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<_> = (0..processes)
        .map(|p| dir.path().join(format!("data-{p}")))
        .collect();
    let ports: Vec<_> = (0..processes).map(|_| (free_port(), free_port())).collect();
    let mut env = vec![
        ("STRIPE_WEBHOOK_SECRET", SECRET.to_owned()),
        ("PAYMENT_REMINDER_DELAY", "1s".to_owned()),
    ];
    let database = store.first().map(|(_, url)| url.clone());
    env.extend(store);
    let bin = example_bin("webhooks");
    let mut apps = Vec::new();
    for p in 0..processes {
        apps.push(Some(App::start_on(&bin, &data[p], &env, ports[p]).await));
    }
    let bases: Arc<Vec<String>> = Arc::new(
        apps.iter()
            .map(|app| app.as_ref().unwrap().ingress.clone())
            .collect(),
    );
    let client = reqwest::Client::new();
    let acked = Arc::new(AtomicUsize::new(0));
    // Per invoice: two events of one kind, each delivered twice.
    let senders: Vec<_> = (0..invoices)
        .map(|i| {
            let (client, bases, acked) = (client.clone(), bases.clone(), acked.clone());
            tokio::spawn(async move {
                let kind = if i % 2 == 0 {
                    "invoice.payment_failed"
                } else {
                    "invoice.payment_succeeded"
                };
                for e in 0..2 {
                    let body = event(&format!("evt_{i}_{e}"), kind, &format!("in_{i}"));
                    deliver(&client, &bases, &body, i + e).await;
                    deliver(&client, &bases, &body, i + e + 1).await;
                    acked.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let events = invoices * 2;
    // `KILL_SEED=<n>` replays which processes are killed.
    let seed = std::env::var("KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(support::now_secs() as usize);
    println!("kill seed {seed} (KILL_SEED={seed} replays it)");
    let thresholds = [events / 4, events / 2, 3 * events / 4];
    for (round, threshold) in thresholds.into_iter().enumerate() {
        poll(Duration::from_secs(120), || {
            let acked = acked.clone();
            async move { acked.load(Ordering::SeqCst) >= threshold }
        })
        .await;
        let alive: Vec<usize> = (0..processes).filter(|p| apps[*p].is_some()).collect();
        // The first kill hits the first process started, the owner: its work is taken over.
        let victim = match round {
            0 => 0,
            _ => alive[(seed / (round + 1)) % alive.len()],
        };
        apps[victim].take().unwrap().kill();
        let for_good = processes > 1 && round == thresholds.len() - 1;
        if !for_good {
            apps[victim] = Some(App::start_on(&bin, &data[victim], &env, ports[victim]).await);
        }
    }
    for s in senders {
        s.await.unwrap();
    }
    let alive: Vec<&App> = apps.iter().flatten().collect();
    let base = alive[0].ingress.clone();
    let mut statuses = HashMap::new();
    for i in 0..invoices {
        let url = format!("{base}/PaymentTracker/in_{i}/status");
        let expected_reminders = if i % 2 == 0 { 2 } else { 0 };
        poll(Duration::from_secs(60), || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let v: Value = client.get(url).send().await.unwrap().json().await.unwrap();
                v["events"].as_array().map(Vec::len) == Some(2)
                    && v["reminders"] == expected_reminders
            }
        })
        .await;
        let v: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
        assert_eq!(
            v["events"],
            json!([format!("evt_{i}_0"), format!("evt_{i}_1")]),
            "in_{i}: {v}"
        );
        statuses.insert(i, v);
    }
    // Reminders fire once: once no timer is armed and nothing runs, no late duplicate can come.
    for app in &alive {
        poll(Duration::from_secs(60), || {
            let (client, admin) = (client.clone(), app.admin.clone());
            async move { quiet(&client, &admin).await }
        })
        .await;
    }
    for i in (0..invoices).step_by(2) {
        let v: Value = client
            .get(format!("{base}/PaymentTracker/in_{i}/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v, statuses[&i]);
        assert_eq!(
            (
                v["status"].as_str(),
                v["failures"].as_u64(),
                v["reminders"].as_u64()
            ),
            (Some("failed"), Some(2), Some(2))
        );
    }
    assert_eq!(statuses[&1]["status"], "paid");
    if let Some(url) = database {
        assert!(
            data.iter().all(|data| !data.exists()),
            "with a database the data folder is not used"
        );
        let cluster = restate_runtime::testing::PostgresCluster::shared().unwrap();
        let left = cluster.query(&url, "SELECT count(*)::text FROM restate_inbox");
        assert_eq!(
            left.unwrap(),
            vec![vec![Some("0".to_owned())]],
            "inbox applied"
        );
        // The dead process's partitions are the survivors' now, spread over all of them.
        let spread = "SELECT count(*)::text || ' ' || count(DISTINCT owner_pid)::text \
             FROM restate_partitions p WHERE expires_at > clock_timestamp() \
             AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = p.owner_pid)";
        let want = format!("256 {}", alive.len());
        poll(Duration::from_secs(60), || {
            let found = cluster.query(&url, spread).unwrap();
            std::future::ready(found == vec![vec![Some(want.clone())]])
        })
        .await;
        // Each process says its share, and the shares add up.
        poll(Duration::from_secs(60), || {
            let admins: Vec<String> = alive.iter().map(|app| app.admin.clone()).collect();
            async move {
                let mut shares = Vec::new();
                for admin in admins {
                    let text = reqwest::get(format!("{admin}/metrics")).await.unwrap();
                    let text = text.text().await.unwrap();
                    let share = text
                        .lines()
                        .find_map(|l| l.strip_prefix("restate_partitions_running "))
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    shares.push(share.unwrap_or(0));
                }
                shares.iter().all(|s| *s > 0) && shares.iter().sum::<u64>() == 256
            }
        })
        .await;
    }
}

#[tokio::test]
async fn bad_signatures_leave_no_trace_and_private_handlers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("STRIPE_WEBHOOK_SECRET", SECRET.to_owned()),
        ("PAYMENT_REMINDER_DELAY", "1h".to_owned()),
    ];
    let app = App::start(&example_bin("webhooks"), &dir.path().join("data"), &env).await;
    let client = reqwest::Client::new();
    let url = format!("{}/WebhookCallbackRouter/onStripeEvent", app.ingress);
    let body = event("evt_real", "invoice.payment_succeeded", "in_sig");
    let tampered = event("evt_real", "invoice.payment_failed", "in_sig");
    let forged = [
        Some(stripe_signature(SECRET, now_secs(), &tampered)),
        Some(stripe_signature("whsec_other", now_secs(), &body)),
        Some(stripe_signature(SECRET, now_secs() - 3600, &body)),
        None,
    ];
    for sig in forged {
        let mut req = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(sig) = sig {
            req = req.header("stripe-signature", sig);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["source"], "ingress");
    }
    let r = client
        .get(format!(
            "{}/restate/invocation/WebhookCallbackRouter/onStripeEvent/evt_real/output",
            app.ingress
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "the forged requests created nothing");
    // The real event is not blocked by the forgeries.
    deliver(&client, std::slice::from_ref(&app.ingress), &body, 0).await;
    let status_url = format!("{}/PaymentTracker/in_sig/status", app.ingress);
    poll(Duration::from_secs(30), || {
        let (client, status_url) = (client.clone(), status_url.clone());
        async move {
            let v: Value = client
                .get(status_url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["status"] == "paid"
        }
    })
    .await;
    let r = client
        .post(format!(
            "{}/PaymentTracker/in_sig/onPaymentFailed",
            app.ingress
        ))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("the invoked service is not public")
    );
}
