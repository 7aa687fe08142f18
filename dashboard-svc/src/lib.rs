//! dashboard-svc: each reader's live dashboard — copies on loan and accumulated late fee — as a
//! read model (CQRS) fed only by events, served over gRPC
//! (`library.dashboard.v1.DashboardService`).
//!
//! `BookBorrowed` adds the copies, `LoanCanceled` and `BookReturned` subtract them,
//! `LateFeeCharged` adds the fee; each event counts once. After each change it publishes
//! `DashboardUpdated`, which every replica listens to for its watch streams.
//!
//! # Layout
//! - `store`: the table and its migrations.
//! - `projection`: applying events, once each.
//! - `events`: what it consumes and the watch feed.
//! - `grpc`: the tonic service.
mod events;
mod grpc;
mod projection;
mod store;

use std::net::SocketAddr;

use anyhow::Context;
use library_platform::bus::{EventBus, Outbox, Relay};
use library_platform::config::{BusArgs, DatabaseArgs, ShutdownArgs, TelemetryArgs};
use library_platform::metrics::MetricsArgs;
use library_platform::service::{Background, serve_grpc};
use library_platform::{CancellationToken, TaskTracker};
use library_proto::dashboard::dashboard_service_server::DashboardServiceServer;
use tokio::net::TcpListener;

pub use events::subscriptions;
pub use projection::{Change, Dashboards};
pub use store::Migrator;

/// dashboard-svc's settings.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "dashboard-svc",
    version,
    about = "Each reader's live dashboard (CQRS read model), over gRPC"
)]
pub struct Config {
    /// Where the gRPC server listens.
    #[arg(
        long = "dashboard-grpc-addr",
        env = "DASHBOARD_GRPC_ADDR",
        default_value = "0.0.0.0:50053"
    )]
    pub grpc_addr: SocketAddr,
    /// dashboard-svc's own log level (e.g. DEBUG); wins over RUST_LOG's default level.
    #[arg(long = "dashboard-log-level", env = "DASHBOARD_LOG_LEVEL")]
    pub log_level: Option<String>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub bus: BusArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    #[command(flatten)]
    pub shutdown: ShutdownArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// A built dashboard-svc: database migrated, port bound, consumers subscribed; not yet serving.
pub struct Application {
    listener: TcpListener,
    dashboards: Dashboards,
    feed: events::DashboardFeed,
    /// The relay, consumers and listeners, and the token that stops them.
    background: Background,
}

impl Application {
    /// Connects and migrates the database, binds the gRPC port and subscribes to the bus.
    ///
    /// # Errors
    /// The database cannot be opened or migrated, or the port cannot be bound.
    pub async fn build(config: &Config, bus: EventBus, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let url = config.database.url_or_default("dashboard");
        let db = library_platform::database::connect_and_migrate::<Migrator>(&url).await?;
        let listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("DASHBOARD_GRPC_ADDR: cannot listen on {}", config.grpc_addr))?;
        let outbox = Outbox::default();
        let dashboards = Dashboards::new(db.clone(), outbox.clone());
        let tracker = TaskTracker::new();
        bus.consume(
            events::PROJECTION_QUEUE,
            events::subscriptions(dashboards.clone()),
            &tracker,
            shutdown.clone(),
        );
        let feed = events::DashboardFeed::start(&bus, &tracker, shutdown.clone());
        let background = Background {
            relay: Relay::new(db, bus, &outbox),
            tracker,
            shutdown,
            shutdown_delay: config.shutdown.shutdown_delay,
            metrics: config.metrics.bind().await?,
        };
        Ok(Self {
            listener,
            dashboards,
            feed,
            background,
        })
    }

    /// The bound port (useful with port 0 in tests).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    /// The read model, for tests that drive it directly.
    pub fn dashboards(&self) -> Dashboards {
        self.dashboards.clone()
    }

    /// Serves until the shutdown token is cancelled, then drains.
    ///
    /// # Errors
    /// The gRPC server failed.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            listener,
            dashboards,
            feed,
            background,
        } = self;
        let service = grpc::DashboardGrpc {
            dashboards,
            feed,
            shutdown: background.shutdown.clone(),
        };
        let server = library_platform::grpc::server().add_service(DashboardServiceServer::new(service));
        serve_grpc("dashboard-svc", listener, server, background).await
    }
}

/// Runs dashboard-svc standalone: RabbitMQ is required.
///
/// # Errors
/// A missing or bad setting, or a failure to start.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let bus_args = config.bus.clone();
    library_platform::service::run_standalone(&bus_args, |bus| async move {
        Application::build(&config, bus, shutdown)
            .await?
            .run_until_stopped()
            .await
    })
    .await
}
