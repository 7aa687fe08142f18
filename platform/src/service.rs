//! What every service binary does around its own work: telemetry first, a stop signal, one
//! clear log line and a non-zero exit when it cannot start.
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tokio::net::TcpListener;
use tonic::transport::server::Router;
use tonic_health::server::HealthReporter;

use crate::bus::{BusNames, EventBus, Relay};
use crate::config::{BusArgs, TelemetryArgs};
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
            eprintln!("{service}: {error}");
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
}

/// Serves a service's gRPC `router` (from [`crate::grpc::server`]) until shutdown, with its
/// relay running; then drains the background tasks.
///
/// # Errors
/// The gRPC server failed.
pub async fn serve_grpc(
    name: &str,
    listener: TcpListener,
    (reporter, router): (HealthReporter, Router),
    grpc_service: &str,
    background: Background,
) -> anyhow::Result<()> {
    let Background {
        relay,
        tracker,
        shutdown,
    } = background;
    tracker.spawn(relay.run(shutdown.clone()));
    tracing::info!(service = name, addr = %listener.local_addr()?, "serving gRPC");
    let served = crate::grpc::serve(router, listener, reporter, &[grpc_service], shutdown.clone()).await;
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
    Ok(EventBus::rabbitmq_for_system(url, BusNames::default())?)
}

/// Waits for `tracker`'s tasks (closing it first), at most [`DRAIN_TIMEOUT`].
pub async fn drain(service: &str, tracker: &TaskTracker) {
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait()).await.is_err() {
        tracing::warn!(service, "background tasks did not finish in time");
    }
}
