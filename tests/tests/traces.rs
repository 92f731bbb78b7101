//! Traces over OTLP (http/protobuf) to a receiver in this test: an invocation started with a
//! W3C `traceparent` is one trace from the ingress through each attempt and every step it made,
//! across a suspension in a sleep, a SIGKILL with a restart, and a wait on an awakeable; its
//! callees (a call and a send) are in it too, each under the step that made it; later attempts
//! are also linked to their long-ended parent; steps replayed from the journal are not traced
//! twice.

mod support;

use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::Span;
use support::otlp::{Received, receiver, text};
use support::{App, lines, poll};

const BIN: &str = env!("CARGO_BIN_EXE_crash_app");
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
}

/// The spans received so far in trace `trace_id` (hex).
fn in_trace(received: &Received, trace_id: &str) -> Vec<Span> {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, s)| hex(&s.trace_id) == trace_id)
        .map(|(_, s)| s.clone())
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The awakeable id `Traced/journey("t1")` announced.
async fn announced(steps: &std::path::Path) -> String {
    let mut found = None;
    poll(Duration::from_secs(30), || {
        found = lines(&steps.to_path_buf())
            .iter()
            .find_map(|l| l.strip_prefix("traced t1 ").map(str::to_owned));
        std::future::ready(found.is_some())
    })
    .await;
    found.expect("announced")
}

/// The one span named `name` among `spans`.
fn one<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "spans named {name:?}: {}", names(spans));
    found[0]
}

fn names(spans: &[Span]) -> String {
    spans
        .iter()
        .map(|s| format!("{} ({})", s.name, hex(&s.span_id)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn children<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a str> {
    let mut names: Vec<_> = spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id)
        .map(|s| s.name.as_str())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_the_ingress_through_every_step_across_a_suspension_and_a_restart() {
    let (endpoint, received) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let steps = dir.path().join("steps");
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".to_owned()),
        ("OTEL_SERVICE_NAME", "traced-app".to_owned()),
        ("STEPS_FILE", steps.display().to_string()),
        ("RESTATE_SUSPEND_AFTER", "300ms".to_owned()),
        // The sleep outlasts the wait for the suspension's span and the kill, however slow
        // the machine.
        ("STEP_MS", "6000".to_owned()),
    ];
    let data = dir.path().join("data");
    let first = App::start(BIN, &data, &env).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let r = client
        .post(format!("{}/Traced/journey/send", first.ingress))
        .header("traceparent", format!("00-{TRACE_ID}-{CLIENT_SPAN}-01"))
        .json(&"t1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<serde_json::Value>().await.unwrap()["invocationId"]
        .as_str()
        .unwrap()
        .to_owned();
    // Suspended in its sleep (durably: the admin API says so), and the attempt's span,
    // ended, is exported.
    poll(Duration::from_secs(30), || {
        let (client, url) = (client.clone(), format!("{}/invocations/{id}", first.admin));
        async move {
            let view: serde_json::Value =
                client.get(url).send().await.unwrap().json().await.unwrap();
            view["status"] == "suspended"
        }
    })
    .await;
    poll(Duration::from_secs(30), || {
        let attempts = in_trace(&received, TRACE_ID);
        std::future::ready(attempts.iter().any(|s| {
            s.name == "Traced/journey"
                && attribute(s, "restate.outcome").as_deref() == Some("suspended")
        }))
    })
    .await;

    first.kill();
    let second = App::start(BIN, &data, &env).await;
    // The sleep ends after the restart; then the handler waits on its awakeable.
    let awakeable = announced(&steps).await;
    let r = client
        .post(format!(
            "{}/restate/awakeables/{awakeable}/resolve",
            second.ingress
        ))
        .json(&"resolved")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let r = client
        .get(format!("{}/restate/invocation/{id}/attach", second.ingress))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<String>().await.unwrap(), "resolved");
    poll(Duration::from_secs(30), || {
        let spans = in_trace(&received, TRACE_ID);
        std::future::ready(spans.iter().any(|s| {
            s.name == "Traced/journey"
                && attribute(s, "restate.outcome").as_deref() == Some("success")
        }))
    })
    .await;

    let spans = in_trace(&received, TRACE_ID);
    let ingress = one(&spans, "ingress Traced/journey");
    assert_eq!(
        hex(&ingress.parent_span_id),
        CLIENT_SPAN,
        "the client's span"
    );
    let mut attempts: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "Traced/journey")
        .collect();
    attempts.sort_by_key(|s| s.start_time_unix_nano);
    assert!(attempts.len() >= 2, "{}", names(&spans));
    for attempt in &attempts {
        assert_eq!(attempt.parent_span_id, ingress.span_id, "under the ingress");
        assert_eq!(
            attribute(attempt, "restate.invocation.id"),
            Some(id.clone())
        );
    }
    let (first_attempt, last) = (attempts[0], attempts[attempts.len() - 1]);
    assert_eq!(
        attribute(first_attempt, "restate.outcome").as_deref(),
        Some("suspended")
    );
    assert!(children(&spans, first_attempt).contains(&"sleep 6s"));
    // A later attempt is also linked to the span its parent names, long ended.
    for later in &attempts[1..] {
        assert!(
            later
                .links
                .iter()
                .any(|l| l.span_id == ingress.span_id && l.trace_id == ingress.trace_id),
            "{:?}",
            later.links
        );
    }
    assert_eq!(
        attribute(first_attempt, "restate.attempt").as_deref(),
        Some("1")
    );
    assert_eq!(
        attribute(last, "restate.outcome").as_deref(),
        Some("success")
    );
    // Each step once, in the attempt that made it (replays trace none again): "run after"
    // in the last attempt, the others before the kill.
    let mut steps: Vec<&str> = attempts.iter().flat_map(|a| children(&spans, a)).collect();
    steps.sort();
    let awakeable_step = steps
        .iter()
        .find(|s| s.starts_with("awakeable "))
        .copied()
        .expect("an awakeable step");
    let mut expected = vec![
        "run before",
        "call Waits/busy",
        "send Waits/busy",
        "sleep 6s",
        awakeable_step,
        "run announce",
        "run after",
    ];
    expected.sort();
    assert_eq!(steps, expected);
    assert!(children(&spans, last).contains(&"run after"));
    // The callees' attempts, under the call and the send.
    for step in ["call Waits/busy", "send Waits/busy"] {
        let step = one(&spans, step);
        assert_eq!(
            children(&spans, step),
            ["Waits/busy"],
            "under {}",
            step.name
        );
    }
    assert!(
        received
            .lock()
            .unwrap()
            .iter()
            .all(|(service, _)| service == "traced-app"),
        "OTEL_SERVICE_NAME names the service"
    );

    // A request without a trace context starts a trace of its own at the ingress.
    let r = client
        .post(format!("{}/Waits/busy", second.ingress))
        .json(&1u64)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut roots = Vec::new();
    poll(Duration::from_secs(30), || {
        roots = received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| s.name == "ingress Waits/busy" && s.parent_span_id.is_empty())
            .map(|(_, s)| s.clone())
            .collect();
        std::future::ready(
            roots.len() == 1 && {
                let trace = hex(&roots[0].trace_id);
                in_trace(&received, &trace)
                    .iter()
                    .any(|s| s.name == "Waits/busy" && s.parent_span_id == roots[0].span_id)
            },
        )
    })
    .await;
    assert_ne!(hex(&roots[0].trace_id), TRACE_ID);
}

/// What a binary built without TLS and without gRPC says at start when asked for either: export
/// is off, and why (a command that exits at once: its logging starts all the same).
#[test]
fn an_endpoint_this_build_cannot_reach_turns_export_off_with_a_message() {
    let webhooks = support::example_bin("webhooks");
    for (name, value, says) in [
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "grpc",
            "exports http/protobuf only",
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf", ""),
    ] {
        let out = std::process::Command::new(&webhooks)
            .arg("--help")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
            .env(name, value)
            .output()
            .unwrap();
        assert!(out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        match says {
            "" => assert!(!stderr.contains("export is off"), "{stderr}"),
            says => assert!(stderr.contains(says), "{value}: {stderr}"),
        }
    }
    let out = std::process::Command::new(&webhooks)
        .arg("--help")
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            " HTTPS://collector.example:4318",
        )
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no TLS"), "{stderr}");
}
