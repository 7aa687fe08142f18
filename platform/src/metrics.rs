//! Prometheus metrics: one recorder per process, the `/metrics` endpoint a service serves on
//! `METRICS_ADDR`, and a tower layer that counts and times every call a gRPC server answers
//! (`grpc_server_requests_total{method, code}`, `grpc_server_request_duration_seconds{method}`).
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Where a service serves `/metrics`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct MetricsArgs {
    /// Where a service serves Prometheus `/metrics` over HTTP (e.g. 0.0.0.0:9464); unset: not
    /// served (the gateway serves its own on its HTTP port).
    #[arg(long = "metrics-addr", env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl MetricsArgs {
    /// Binds the metrics port and installs the recorder, when a port is configured (without
    /// one, recording a metric costs nothing).
    ///
    /// # Errors
    /// The port cannot be bound.
    pub async fn bind(&self) -> anyhow::Result<Option<TcpListener>> {
        let Some(addr) = self.metrics_addr else {
            return Ok(None);
        };
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("METRICS_ADDR: cannot listen on {addr}"))?;
        prometheus();
        Ok(Some(listener))
    }
}

/// The latency buckets of every `*_duration_seconds` histogram, in seconds.
const BUCKETS: [f64; 11] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// The buckets of the event bus's histograms (a batch's publication until the broker confirmed
/// it, an event's lag until its consumer applied it), in seconds: finer where a saga hop's
/// latency lies (a few to a hundred milliseconds), and up to a minute for a backlog. Their names
/// must not end in `duration_seconds`: a name both matchers take gets either's buckets.
const EVENT_BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0,
];

/// The process's Prometheus recorder, installed on first use (one per process: the all-in-one's
/// services and gateway, and every service a test starts, share it).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Prefix("events_".into()), &EVENT_BUCKETS)
            .and_then(|builder| builder.set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), &BUCKETS))
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// `GET /metrics`: the process's metrics in Prometheus' text format (a service's own port, or a
/// route of the gateway's).
pub fn router<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    axum::Router::new().route("/metrics", axum::routing::get(|| async { prometheus().render() }))
}

/// Serves [`router`] on `listener` until `shutdown`.
///
/// # Errors
/// The HTTP server failed.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "serving metrics");
    axum::serve(listener, router::<()>())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Counts and times the calls of a gRPC server's own services (not health or reflection).
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcMetricsLayer;

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner }
    }
}

/// See [`GrpcMetricsLayer`].
#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if !counted(request.uri().path()) {
            return Box::pin(self.inner.call(request));
        }
        let method = request.uri().path().to_owned();
        let answered = self.inner.call(request);
        let started = Instant::now();
        Box::pin(async move {
            let response = answered.await;
            let code = match &response {
                Ok(response) => code_of(response.headers()),
                Err(_) => "Unknown".to_owned(),
            };
            metrics::counter!("grpc_server_requests_total", "method" => method.clone(), "code" => code).increment(1);
            metrics::histogram!("grpc_server_request_duration_seconds", "method" => method)
                .record(started.elapsed().as_secs_f64());
            response
        })
    }
}

fn counted(method: &str) -> bool {
    !(method.starts_with("/grpc.health.") || method.starts_with("/grpc.reflection."))
}

/// The call's status as the gateway's client metrics name it (`Ok`, `NotFound`, …). A refusal
/// comes back as a headers-only response carrying `grpc-status`; an answer's status is `OK` in
/// its trailers (a stream's, once it ends: a stream is counted, and timed, when it opens).
fn code_of(headers: &http::HeaderMap) -> String {
    let code = headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from);
    format!("{code:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_named_as_the_client_names_it() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(code_of(&headers), "Ok");
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(code_of(&headers), "NotFound");
        headers.insert("grpc-status", http::HeaderValue::from_static("9"));
        assert_eq!(code_of(&headers), "FailedPrecondition");
    }

    #[test]
    fn probes_and_reflection_are_not_counted() {
        assert!(!counted("/grpc.health.v1.Health/Check"));
        assert!(!counted("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"));
        assert!(counted("/library.borrow.v1.BorrowService/Borrow"));
    }
}
