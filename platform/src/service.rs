//! What every service binary does around its own work: telemetry first, a stop signal, one
//! clear log line and a non-zero exit when it cannot start.
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::bus::{BusNames, EventBus};
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

/// The RabbitMQ bus a standalone service requires.
///
/// # Errors
/// `AMQP_URL` is missing or not an AMQP URL.
pub fn required_bus(args: &BusArgs) -> anyhow::Result<EventBus> {
    let url = crate::config::required("AMQP_URL", &args.amqp_url).map_err(anyhow::Error::msg)?;
    Ok(EventBus::rabbitmq(url, BusNames::default())?.with_system_queues())
}

/// Waits for `tracker`'s tasks (closing it first), at most [`DRAIN_TIMEOUT`].
pub async fn drain(service: &str, tracker: &TaskTracker) {
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait()).await.is_err() {
        tracing::warn!(service, "background tasks did not finish in time");
    }
}
