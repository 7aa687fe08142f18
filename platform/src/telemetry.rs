//! Logs and traces. One subscriber per process: text or JSON lines on standard output, filtered
//! by `RUST_LOG` plus each service's own level variable (`BORROW_LOG_LEVEL`, …), and an
//! OpenTelemetry layer whose trace context travels in gRPC metadata and AMQP headers.
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
/// The log filter (`RUST_LOG`, the service levels) decides what is logged, not what is traced:
/// spans at INFO and above always reach the OpenTelemetry layer, so every request and every
/// consumed event has a trace context to propagate (in gRPC metadata, on published events) even
/// under `RUST_LOG=warn`, and with an exporter the trace is whole whatever is logged.
///
/// # Errors
/// A bad filter or an exporter that cannot be built: the process should exit with the message.
pub fn init(
    service_name: &str,
    args: &TelemetryArgs,
    levels: &[ServiceLevel<'_>],
) -> Result<TelemetryGuard, TelemetryError> {
    let (subscriber, guard) = subscriber(service_name, args, levels)?;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // A second init (tests start many services in one process) keeps the first subscriber.
    let _ = subscriber.try_init();
    Ok(guard)
}

/// The subscriber [`init`] installs, for a caller that installs it itself (a test, with
/// `tracing::subscriber::set_default`).
///
/// # Errors
/// A bad filter or an exporter that cannot be built.
pub fn subscriber(
    service_name: &str,
    args: &TelemetryArgs,
    levels: &[ServiceLevel<'_>],
) -> Result<(impl tracing::Subscriber + Send + Sync + 'static, TelemetryGuard), TelemetryError> {
    let log_filter = build_filter(&args.rust_log, levels)?;
    let trace_filter = trace_filter(build_filter(&args.rust_log, levels)?);
    let provider = tracer_provider(service_name, args.otel_endpoint.as_deref())?;
    let tracer = provider.tracer(service_name.to_owned());
    let subscriber = tracing_subscriber::registry()
        .with(fmt_layer(args.log_format).with_filter(log_filter))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(trace_filter),
        );
    Ok((subscriber, TelemetryGuard { provider }))
}

/// What the OpenTelemetry layer sees: every span at INFO or above, and whatever the log filter
/// lets through (a span or event logged at DEBUG is in the trace too).
pub fn trace_filter<S>(log_filter: EnvFilter) -> impl tracing_subscriber::layer::Filter<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    use tracing_subscriber::filter::{FilterExt, LevelFilter, filter_fn};
    let info_spans = filter_fn(|meta| meta.is_span() && *meta.level() <= tracing::Level::INFO)
        .with_max_level_hint(LevelFilter::INFO);
    log_filter.or(info_spans)
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

/// The W3C trace context of a message or a call: `traceparent`, and `tracestate` when the
/// trace carries vendor state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceHeaders {
    pub traceparent: String,
    pub tracestate: Option<String>,
}

impl TraceHeaders {
    /// The context of `span`, if it has a valid one (it is seen by the OpenTelemetry layer).
    pub fn of_span(span: &tracing::Span) -> Option<Self> {
        use opentelemetry::trace::TraceContextExt;
        let cx = span.context();
        let span_ref = cx.span();
        Self::of_span_context(span_ref.span_context())
    }

    /// The context of the current span, if any.
    pub fn current() -> Option<Self> {
        Self::of_span(&tracing::Span::current())
    }

    /// The context of the current span, or, outside any traced span, the start of a new trace:
    /// what every published event carries, so its consumers' spans always have a parent
    /// context to join.
    pub fn current_or_new() -> Self {
        Self::current().unwrap_or_else(Self::new_root)
    }

    /// A new trace, sampled, for work that runs outside any span.
    pub fn new_root() -> Self {
        use opentelemetry::trace::{SpanContext, TraceFlags, TraceState};
        use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
        let ids = RandomIdGenerator::default();
        let context = SpanContext::new(
            ids.new_trace_id(),
            ids.new_span_id(),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        );
        Self::of_span_context(&context).unwrap_or_else(|| Self {
            traceparent: String::new(),
            tracestate: None,
        })
    }

    fn of_span_context(context: &opentelemetry::trace::SpanContext) -> Option<Self> {
        if !context.is_valid() {
            return None;
        }
        // The propagator's format, written directly: no carrier map per call.
        let traceparent = format!(
            "00-{}-{}-{:02x}",
            context.trace_id(),
            context.span_id(),
            context.trace_flags().to_u8()
        );
        let tracestate = Some(context.trace_state().header()).filter(|state| !state.is_empty());
        Some(Self {
            traceparent,
            tracestate,
        })
    }

    /// The trace id (32 hex digits) of a `traceparent`.
    pub fn trace_id(&self) -> &str {
        self.traceparent.get(3..35).unwrap_or_default()
    }
}

/// Reads a `traceparent` and a `tracestate` for the propagator.
struct Carrier<'a> {
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
}

impl opentelemetry::propagation::Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => self.traceparent,
            "tracestate" => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent", "tracestate"]
    }
}

/// Makes `span` a child of the trace named by `traceparent` and `tracestate` (from an incoming
/// message or call); nothing when there is no valid `traceparent`.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    use opentelemetry::trace::TraceContextExt;
    if traceparent.is_none() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&Carrier {
        traceparent,
        tracestate,
    });
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Copies the current trace context into outgoing gRPC metadata.
pub fn inject_grpc(metadata: &mut tonic::metadata::MetadataMap) {
    let Some(headers) = TraceHeaders::current() else {
        return;
    };
    if let Ok(value) = headers.traceparent.parse() {
        metadata.insert("traceparent", value);
    }
    if let Some(value) = headers.tracestate.and_then(|state| state.parse().ok()) {
        metadata.insert("tracestate", value);
    }
}

/// The `traceparent` of incoming gRPC or HTTP headers.
fn traceparent_of(headers: &http::HeaderMap) -> Option<&str> {
    headers.get("traceparent").and_then(|v| v.to_str().ok())
}

/// The `tracestate` of incoming gRPC or HTTP headers.
fn tracestate_of(headers: &http::HeaderMap) -> Option<&str> {
    headers.get("tracestate").and_then(|v| v.to_str().ok())
}

/// Makes `span` a child of the trace named by incoming gRPC or HTTP headers, if they name one.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    set_parent(span, traceparent_of(headers), tracestate_of(headers));
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
    fn a_new_trace_is_a_valid_sampled_traceparent() {
        let root = TraceHeaders::new_root();
        let parts: Vec<&str> = root.traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{root:?}");
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len(), parts[3]),
            ("00", 32, 16, "01")
        );
        assert_eq!(root.trace_id(), parts[1]);
        assert_ne!(TraceHeaders::new_root().trace_id(), root.trace_id());
        assert_eq!(root.tracestate, None);
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
