//! Logs and traces. One subscriber per process: text or JSON lines on standard output, filtered
//! by `RUST_LOG` plus each service's own level variable (`BORROW_LOG_LEVEL`, …), and an
//! OpenTelemetry layer whose trace context travels in gRPC metadata and AMQP headers.
use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetryArgs};

/// A bad telemetry setting.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{setting}: `{value}` is not a valid log filter")]
    BadFilter { setting: String, value: String },
    #[error("OTEL_EXPORTER_OTLP_ENDPOINT: cannot build the exporter: {0}")]
    Exporter(String),
}

/// One service's own log level, e.g. `BORROW_LOG_LEVEL=DEBUG` for the `borrow_svc` crate.
pub struct ServiceLevel<'a> {
    /// The environment variable, for error messages.
    pub setting: &'a str,
    /// The crate (tracing target) it applies to.
    pub target: &'a str,
    /// The level, when set.
    pub level: Option<&'a str>,
}

/// Flushes pending spans when dropped; keep it alive until the process ends.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

/// How long a stopping process waits for its last spans to be exported: a collector that is
/// down must not hold the exit past the pod's grace period.
const TRACE_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown_with_timeout(TRACE_FLUSH_TIMEOUT) {
            tracing::warn!(%error, "trace export did not shut down cleanly");
        }
    }
}

/// Builds the log filter: `RUST_LOG`, then each service's level for its own crate and the
/// platform, which wins over `RUST_LOG`'s default level.
pub fn build_filter(rust_log: &str, levels: &[ServiceLevel<'_>]) -> Result<EnvFilter, TelemetryError> {
    let mut filter = EnvFilter::builder()
        .parse(rust_log)
        .map_err(|_| TelemetryError::BadFilter {
            setting: "RUST_LOG".into(),
            value: rust_log.into(),
        })?;
    for service in levels {
        let Some(level) = service.level.filter(|l| !l.trim().is_empty()) else {
            continue;
        };
        let parsed: tracing::level_filters::LevelFilter =
            level
                .trim()
                .to_ascii_lowercase()
                .parse()
                .map_err(|_| TelemetryError::BadFilter {
                    setting: service.setting.into(),
                    value: level.into(),
                })?;
        for target in [service.target, "library_platform"] {
            let directive = format!("{target}={parsed}")
                .parse()
                .map_err(|_| TelemetryError::BadFilter {
                    setting: service.setting.into(),
                    value: level.into(),
                })?;
            filter = filter.add_directive(directive);
        }
    }
    Ok(filter)
}

/// Installs the process's subscriber. Call once, first thing in `main`.
///
/// # Errors
/// A bad filter or an exporter that cannot be built: the process should exit with the message.
pub fn init(
    service_name: &str,
    args: &TelemetryArgs,
    levels: &[ServiceLevel<'_>],
) -> Result<TelemetryGuard, TelemetryError> {
    let filter = build_filter(&args.rust_log, levels)?;
    let provider = tracer_provider(service_name, args.otel_endpoint.as_deref())?;
    let tracer = provider.tracer(service_name.to_owned());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    // A second init (tests start many services in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer(args.log_format))
        .with(tracing_opentelemetry::layer().with_tracer(tracer))
        .try_init();
    Ok(TelemetryGuard { provider })
}

/// How log lines are written to standard output: JSON objects (Loki), or text with colours only
/// on a terminal, not in a file or a pipe.
pub fn fmt_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use std::io::IsTerminal;
    match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
    }
}

fn tracer_provider(service_name: &str, endpoint: Option<&str>) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let Some(endpoint) = endpoint.filter(|e| !e.trim().is_empty()) else {
        // Without an exporter spans still get ids, so trace context still propagates.
        return Ok(builder.build());
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    Ok(builder.with_batch_exporter(exporter).build())
}

/// The W3C `traceparent` of the current span, to put on an outgoing message.
pub fn current_traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the trace named by `traceparent` (from an incoming message).
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let mut carrier = HashMap::new();
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}

/// Copies the current trace context into outgoing gRPC metadata.
pub fn inject_grpc(metadata: &mut tonic::metadata::MetadataMap) {
    if let Some(tp) = current_traceparent()
        && let Ok(value) = tp.parse()
    {
        metadata.insert("traceparent", value);
    }
}

/// The `traceparent` of incoming gRPC or HTTP headers.
pub fn traceparent_of(headers: &http::HeaderMap) -> Option<&str> {
    headers.get("traceparent").and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_level_is_accepted_in_any_case() {
        let levels = [ServiceLevel {
            setting: "BORROW_LOG_LEVEL",
            target: "borrow_svc",
            level: Some("DEBUG"),
        }];
        let filter = build_filter("info", &levels).unwrap().to_string();
        assert!(filter.contains("borrow_svc=debug"), "{filter}");
    }

    #[test]
    fn a_bad_service_level_names_its_variable() {
        let levels = [ServiceLevel {
            setting: "BORROW_LOG_LEVEL",
            target: "borrow_svc",
            level: Some("loud"),
        }];
        let err = build_filter("info", &levels).unwrap_err().to_string();
        assert!(err.contains("BORROW_LOG_LEVEL"), "{err}");
    }
}
