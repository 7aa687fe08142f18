//! book-svc: the catalogue and its stock, served over gRPC (`library.book.v1.BookService`).
//!
//! It owns the books and the copies each loan holds. A borrow holds its copies synchronously
//! (`HoldStock`) before its loan is stored; the loan's `BookBorrowed` confirms the hold, and a
//! hold left unconfirmed is given back (`ReleaseHold`: borrow-svc settles the holds still
//! unconfirmed after `LIBRARY_STOCK_HOLD_TTL`). It
//! takes part in the borrow saga: on the `BookBorrowed` of a loan stored without a hold it
//! reserves the copies (`StockReserved`) or refuses (`OutOfStock`); on `BookReturned` and
//! `LoanCanceled` it releases them. Every stock change publishes
//! `StockChanged`. Invariant: `available + reserved copies of open loans == total`,
//! `0 <= available <= total`.
//!
//! # Layout
//! - `domain`: validation of books and the stock rules (no I/O).
//! - `store`: sea-orm entities and migrations.
//! - `catalog`: the use cases, each a transaction with its outbox events.
//! - `grpc`: the tonic service.
//! - `events`: what it consumes and the watch feed.
mod batches;
mod catalog;
pub mod domain;
mod events;
mod grpc;
mod holds;
mod stock_reads;
mod store;

use std::net::SocketAddr;

use anyhow::Context;
use library_platform::bus::{EventBus, Outbox, Relay};
use library_platform::config::{BusArgs, DatabaseArgs, ShutdownArgs, TelemetryArgs};
use library_platform::metrics::MetricsArgs;
use library_platform::service::{Background, serve_grpc};
use library_platform::{CancellationToken, TaskTracker};
use library_proto::book::book_service_server::BookServiceServer;
use tokio::net::TcpListener;

pub use catalog::{Catalog, CatalogError};
pub use store::Migrator;

/// book-svc's settings.
#[derive(clap::Parser, Clone, Debug)]
#[command(name = "book-svc", version, about = "Catalogue and stock of the library, over gRPC")]
pub struct Config {
    /// Where the gRPC server listens.
    #[arg(long = "book-grpc-addr", env = "BOOK_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,
    /// book-svc's own log level (e.g. DEBUG); wins over RUST_LOG's default level.
    #[arg(long = "book-log-level", env = "BOOK_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Seconds a borrow's hold on copies (`HoldStock`) waits for its loan's `BookBorrowed`
    /// before borrow-svc is shown it (`ListExpiredHolds`) to settle: only a borrow-svc stopped
    /// between the hold and storing the loan, or a broker that is down, leaves one that long.
    #[arg(
        long = "stock-hold-ttl",
        env = "LIBRARY_STOCK_HOLD_TTL",
        default_value = "300",
        value_parser = library_platform::config::parse_seconds
    )]
    pub stock_hold_ttl: std::time::Duration,
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

/// A built book-svc: database migrated, port bound, consumers subscribed; not yet serving.
pub struct Application {
    listener: TcpListener,
    catalog: Catalog,
    watch: events::StockWatch,
    /// The relay, consumers and listeners, and the token that stops them.
    background: Background,
}

impl Application {
    /// Connects and migrates the database, binds the gRPC port and subscribes to the bus.
    ///
    /// # Errors
    /// The database cannot be opened or migrated, or the port cannot be bound.
    pub async fn build(config: &Config, bus: EventBus, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let url = config.database.url_or_default("book");
        let db = library_platform::database::connect_and_migrate::<Migrator>(&url).await?;
        let listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("BOOK_GRPC_ADDR: cannot listen on {}", config.grpc_addr))?;
        let outbox = Outbox::default();
        let catalog = Catalog::new(db.clone(), outbox.clone()).with_hold_ttl(config.stock_hold_ttl);
        let tracker = TaskTracker::new();
        bus.consume(
            events::SAGA_QUEUE,
            events::subscriptions(catalog.clone()),
            &tracker,
            shutdown.clone(),
        );
        let watch = events::StockWatch::start(&bus, &tracker, shutdown.clone());
        let background = Background {
            relay: Relay::new(db, bus, &outbox),
            tracker,
            shutdown,
            shutdown_delay: config.shutdown.shutdown_delay,
            metrics: config.metrics.bind().await?,
        };
        Ok(Self {
            listener,
            catalog,
            watch,
            background,
        })
    }

    /// The bound port (useful with port 0 in tests).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    /// The port of `/metrics`, when `METRICS_ADDR` is set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.background.metrics_port()
    }

    /// The catalogue, for tests that drive it directly.
    pub fn catalog(&self) -> Catalog {
        self.catalog.clone()
    }

    /// What the saga consumer applies, for tests and tools that deliver an event by hand.
    pub fn subscriptions(&self) -> library_platform::bus::Subscriptions {
        events::subscriptions(self.catalog.clone())
    }

    /// Serves until the shutdown token is cancelled, then drains.
    ///
    /// # Errors
    /// The gRPC server failed.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            listener,
            catalog,
            watch,
            background,
        } = self;
        let service = grpc::BookGrpc {
            catalog,
            watch,
            shutdown: background.shutdown.clone(),
        };
        let server = library_platform::grpc::server().add_service(BookServiceServer::new(service));
        serve_grpc("book-svc", listener, server, background).await
    }
}

/// Runs book-svc standalone: RabbitMQ is required.
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
