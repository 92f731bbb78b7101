//! The OTLP exporter (feature `otel`): when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, spans are batched and sent over HTTP/protobuf,
//! honouring the standard `OTEL_*` variables (`OTEL_SERVICE_NAME`, `OTEL_BSP_SCHEDULE_DELAY`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_TRACES_EXPORTER=none`, `OTEL_SDK_DISABLED`...). The
//! requests go through reqwest on a thread of their own, so that exporting neither needs nor
//! slows the application's runtime, and the last spans are flushed after it has stopped.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{SpanExporter, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Level, Span, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

/// The provider the layer exports through, kept for [`flush`].
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// How long one export request may take: within the SDK's 5 s for a flush at shutdown.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(4);

/// An export is failing now: its first failure was logged, the next success will be.
static FAILING: AtomicBool = AtomicBool::new(false);

/// The endpoint traces go to, as configured.
fn endpoint() -> Option<String> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

/// Whether the environment asks for traces to be exported.
fn requested() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let is = |name: &str, value: &str| {
        std::env::var(name).is_ok_and(|v| v.trim().eq_ignore_ascii_case(value))
    };
    (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        && !is("OTEL_SDK_DISABLED", "true")
        && !is("OTEL_TRACES_EXPORTER", "none")
}

/// The layer that exports spans, when the environment asks for it: the runtime's trace spans
/// (attempts and their steps), the application's own spans and events at `INFO` and above
/// (they nest in the attempt they run in), and the runtime's warnings and errors as events.
/// The HTTP stack's own spans are left out: exporting them would trace the exporter.
pub(crate) fn layer<S>() -> Option<impl Layer<S>>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    // A second call (its subscriber is refused anyway) starts no second exporter.
    if !requested() || PROVIDER.get().is_some() {
        return None;
    }
    // Only http/protobuf is built in: another protocol asked for would send protobuf over
    // HTTP to a port that speaks something else, and every export would fail.
    let protocol = [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()));
    if let Some(protocol) = protocol.filter(|p| p.trim() != "http/protobuf") {
        eprintln!(
            "OpenTelemetry export is off: the OTLP protocol asked for is {protocol:?}, and this \
             build exports http/protobuf only (send to the collector's OTLP/HTTP port, 4318 by \
             default, with OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf or unset)"
        );
        return None;
    }
    let https = endpoint().is_some_and(|e| e.trim().to_ascii_lowercase().starts_with("https:"));
    if !cfg!(feature = "otel-tls") && https {
        eprintln!(
            "OpenTelemetry export is off: the OTLP endpoint is https://, and this build has no \
             TLS (enable the `otel-tls` feature of restate-runtime, or send to a collector over \
             http:// on the same host)"
        );
        return None;
    }
    let provider = match provider() {
        Ok(provider) => provider,
        Err(e) => {
            eprintln!("OpenTelemetry export is off: {e}");
            return None;
        }
    };
    let tracer = provider.tracer("restate-runtime");
    let _ = PROVIDER.set(provider);
    let filter = Targets::new()
        .with_default(Level::INFO)
        .with_target("restate_runtime", Level::WARN)
        .with_target(super::TARGET, Level::DEBUG)
        .with_target("hyper", LevelFilter::OFF)
        .with_target("h2", LevelFilter::OFF)
        .with_target("reqwest", LevelFilter::OFF)
        .with_target("tower", LevelFilter::OFF)
        .with_target("opentelemetry", LevelFilter::OFF);
    Some(
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(filter),
    )
}

fn provider() -> Result<SdkTracerProvider, Box<dyn std::error::Error>> {
    let exporter = SpanExporter::builder()
        .with_http()
        .with_http_client(Otlp::new()?)
        .build()?;
    // The resource detectors read `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`; a name
    // set in code would override them, so the binary's name is only the fallback.
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(binary_name());
    }
    Ok(SdkTracerProvider::builder()
        .with_resource(resource.build())
        .with_batch_exporter(exporter)
        .build())
}

fn binary_name() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|path| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "restate-runtime".to_owned())
}

/// Exports what is batched now (blocking, bounded by the exporter's timeout): at the end of
/// `serve`, so that the last attempts' spans are not lost with the process.
pub(crate) fn flush() {
    if let Some(provider) = PROVIDER.get()
        && let Err(e) = provider.force_flush()
    {
        tracing::warn!("flushing the last spans failed: {e}");
    }
}

/// Makes `span` a child of the W3C trace context `traceparent` (ignored when malformed), and
/// with `link` also links it to that context's span.
pub(super) fn set_parent(span: &Span, traceparent: &str, link: bool) {
    let carrier = HashMap::from([(super::TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let parent = context.span().span_context().clone();
    if !parent.is_valid() {
        return;
    }
    if link {
        span.add_link(parent);
    }
    // Refused only for a span already entered or one no layer records: nothing to link.
    let _ = span.set_parent(context);
}

/// `span`'s W3C trace context, when it is exported.
pub(super) fn traceparent(span: &Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(super::TRACEPARENT)
}

/// The exporter's HTTP client: reqwest, driven by a runtime thread of its own (the batch
/// processor exports from a plain thread, and spans may still be flushed after the
/// application's runtime has stopped).
#[derive(Debug, Clone)]
struct Otlp {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl Otlp {
    fn new() -> Result<Self, Box<dyn std::error::Error>> {
        static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
        let runtime = match RUNTIME.get() {
            Some(runtime) => runtime,
            None => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("restate-otlp")
                    .enable_all()
                    .build()?;
                RUNTIME.get_or_init(|| runtime)
            }
        };
        Ok(Self {
            client: reqwest::Client::builder().timeout(EXPORT_TIMEOUT).build()?,
            runtime: runtime.handle().clone(),
        })
    }
}

#[async_trait::async_trait]
impl HttpClient for Otlp {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, HttpError> {
        let client = self.client.clone();
        let request: reqwest::Request = request.try_into()?;
        // Logged without credentials or query.
        let mut url = request.url().clone();
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_query(None);
        // reqwest's errors name the whole URL, credentials and query included: not kept.
        let exchange = async move {
            let response = client.execute(request).await.map_err(|e| e.without_url())?;
            let (status, headers) = (response.status(), response.headers().clone());
            let body = response.bytes().await.map_err(|e| e.without_url())?;
            let mut answer = http::Response::builder().status(status).body(body)?;
            *answer.headers_mut() = headers;
            Ok::<_, HttpError>(answer)
        };
        let answer = self.runtime.spawn(exchange).await?;
        report(&url, &answer);
        answer
    }
}

/// Logs the first failed export of a streak and the success that ends it (the exporter's own
/// errors are not logged otherwise: spans would be dropped without a word).
fn report(url: &reqwest::Url, answer: &Result<http::Response<bytes::Bytes>, HttpError>) {
    let failure = match answer {
        Ok(response) if response.status().is_success() => None,
        Ok(response) => Some(format!("the collector answered {}", response.status())),
        Err(e) => Some(e.to_string()),
    };
    match failure {
        Some(reason) => {
            if !FAILING.swap(true, Ordering::Relaxed) {
                tracing::warn!(%url, %reason, "exporting spans failed; they are dropped until it works again");
            }
        }
        None => {
            if FAILING.swap(false, Ordering::Relaxed) {
                tracing::info!(%url, "exporting spans works again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed export's error (logged, and handed to the exporter) names neither the
    /// collector's credentials nor its query.
    #[tokio::test]
    async fn a_failed_export_keeps_the_collectors_credentials_out_of_its_error() {
        let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = unused.local_addr().unwrap().port();
        drop(unused);
        let request = http::Request::post(format!(
            "http://user:s3cretpw@127.0.0.1:{port}/v1/traces?token=s3cretq"
        ))
        .body(bytes::Bytes::from_static(b"spans"))
        .unwrap();
        let failed = Otlp::new().unwrap().send_bytes(request).await;
        let error = failed.expect_err("nothing listens there").to_string();
        assert!(!error.contains("s3cret"), "{error}");
    }
}
