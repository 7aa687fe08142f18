//! What every service binary does around its own work: telemetry first, a stop signal, one
//! clear log line and a non-zero exit when it cannot start.
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tokio::net::TcpListener;

use crate::bus::{BusNames, EventBus, Relay};
use crate::config::{BusArgs, LogFormat, Refused, TelemetryArgs};
use crate::grpc::GrpcServer;
use crate::telemetry::{self, ServiceLevel};

/// How long a stopping service waits for its background tasks.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs a service binary: initialises telemetry, cancels the token passed to `run` on SIGTERM or
/// SIGINT, and turns the outcome into an exit code (0 after a clean stop).
pub async fn run_main<F, Fut>(service: &str, telemetry: &TelemetryArgs, levels: &[ServiceLevel<'_>], run: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let _guard = match telemetry::init(service, telemetry, levels) {
        Ok(guard) => guard,
        Err(error) => {
            log_refusal(service, &error.to_string());
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::shutdown::cancel_on_signal(shutdown.clone()));
    match run(shutdown).await {
        Ok(()) => {
            tracing::info!(service, "stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(service, error = format!("{error:#}"), "cannot run");
            ExitCode::FAILURE
        }
    }
}

/// A binary's settings from its command line and environment; on a bad one, the exit code after
/// one log line that names it (a pod in CrashLoopBackOff shows why, not clap's usage text), or
/// after `--help` / `--version`.
pub fn settings<C: clap::Parser>(service: &str) -> Result<C, ExitCode> {
    crate::config::parse::<C>().map_err(|refused| match refused {
        Refused::Printed => ExitCode::SUCCESS,
        Refused::Bad(line) => {
            log_refusal(service, &line);
            ExitCode::from(2)
        }
    })
}

/// Logs why the process cannot start, before its own subscriber exists: one error line in the
/// format `LOG_FORMAT` asks for (text when it is itself unreadable), as the real subscriber
/// would write it.
fn log_refusal(service: &str, error: &str) {
    use clap::ValueEnum;
    use tracing_subscriber::layer::SubscriberExt;
    let format = std::env::var("LOG_FORMAT")
        .ok()
        .and_then(|format| LogFormat::from_str(format.trim(), true).ok())
        .unwrap_or(LogFormat::Text);
    let subscriber = tracing_subscriber::registry().with(telemetry::fmt_layer(format));
    tracing::subscriber::with_default(subscriber, || tracing::error!(service, error, "cannot start"));
}

/// A service binary's body: RabbitMQ is required; `run` gets the bus, and the bus is closed
/// cleanly after it returns.
///
/// # Errors
/// `AMQP_URL` is missing or bad, or `run` failed.
pub async fn run_standalone<F, Fut>(bus: &BusArgs, run: F) -> anyhow::Result<()>
where
    F: FnOnce(EventBus) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let bus = required_bus(bus)?;
    let result = run(bus.clone()).await;
    bus.close().await;
    result
}

/// What a built service runs beside its gRPC server.
pub struct Background {
    /// Publishes the service's outbox.
    pub relay: Relay,
    /// The consumers and listeners already started; waited for at the end.
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
    /// How long the server goes on serving, unready, after `shutdown` ([`crate::config::ShutdownArgs`]).
    pub shutdown_delay: Duration,
    /// Where `/metrics` is served, if anywhere ([`crate::metrics::MetricsArgs::bind`]).
    pub metrics: Option<TcpListener>,
}

impl Background {
    /// The port `/metrics` is served on, if any (useful with port 0 in tests).
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port())
    }
}

/// Serves a service's gRPC `server` (from [`crate::grpc::server`], its services added) until
/// shutdown (and its delay), with its relay running until the server has stopped, so that the
/// events of the last calls go out too; then drains the background tasks.
///
/// # Errors
/// The gRPC server failed.
pub async fn serve_grpc(
    name: &str,
    listener: TcpListener,
    server: GrpcServer,
    background: Background,
) -> anyhow::Result<()> {
    let Background {
        relay,
        tracker,
        shutdown,
        shutdown_delay,
        metrics,
    } = background;
    // The relay and /metrics outlive the gRPC server's drain.
    let relay_stop = CancellationToken::new();
    tracker.spawn(relay.run(relay_stop.clone()));
    if let Some(listener) = metrics {
        let stop = relay_stop.clone();
        tracker.spawn(async move {
            if let Err(error) = crate::metrics::serve(listener, stop).await {
                tracing::error!(%error, "the metrics endpoint failed");
            }
        });
    }
    tracing::info!(service = name, addr = %listener.local_addr()?, "serving gRPC");
    let served = crate::grpc::serve(server, listener, shutdown.clone(), shutdown_delay).await;
    relay_stop.cancel();
    shutdown.cancel();
    drain(name, &tracker).await;
    Ok(served?)
}

/// The RabbitMQ bus a standalone service requires.
///
/// # Errors
/// `AMQP_URL` is missing or not an AMQP URL.
pub fn required_bus(args: &BusArgs) -> anyhow::Result<EventBus> {
    let url = crate::config::required("AMQP_URL", &args.amqp_url).map_err(anyhow::Error::msg)?;
    Ok(EventBus::rabbitmq_for_system(url, BusNames::default())?.with_batch_linger(args.batch_linger))
}

/// Waits for `tracker`'s tasks (closing it first), at most [`DRAIN_TIMEOUT`].
pub async fn drain(service: &str, tracker: &TaskTracker) {
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait()).await.is_err() {
        tracing::warn!(service, "background tasks did not finish in time");
    }
}
