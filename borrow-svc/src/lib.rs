//! borrow-svc: loans, returns and late fees, served over gRPC
//! (`library.borrow.v1.BorrowService`).
//!
//! A borrow first has book-svc hold its copies synchronously (`HoldStock`, deadline + circuit
//! breaker), then is stored ACTIVE with its `BookBorrowed` event in one transaction (the event
//! confirms the hold). When book-svc cannot answer, it is stored PENDING and book-svc's answer to
//! the event (`StockReserved` / `OutOfStock`) makes it ACTIVE or CANCELED. A return never needs book-svc:
//! it updates the loan under a row lock, charges the fee of its tier once, and publishes
//! `BookReturned` (+ `LateFeeCharged`).
//!
//! # Layout
//! - `domain`: statuses, quantities, due dates, days late, fee tiers (no I/O).
//! - `store`: sea-orm entities and migrations.
//! - `circulation`: the use cases, each a transaction with its outbox events.
//! - `loan_writer`: stores the borrows that arrive together in one transaction.
//! - `stock`: the HoldStock / ReleaseHold client.
//! - `audit`: loan transitions, recorded in the transaction that makes them and appended to the
//!   JSON-lines file on the shared volume.
//! - `grpc`: the tonic service. `events`: what it consumes.
mod audit;
mod circulation;
pub mod domain;
mod events;
mod grpc;
mod loan_writer;
mod stock;
mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use library_platform::bus::{EventBus, Outbox, Relay};
use library_platform::config::{BusArgs, DatabaseArgs, ShutdownArgs, TelemetryArgs};
use library_platform::metrics::MetricsArgs;
use library_platform::service::{Background, serve_grpc};
use library_platform::{CancellationToken, TaskTracker};
use library_proto::borrow::borrow_service_server::BorrowServiceServer;
use tokio::net::TcpListener;

pub use circulation::{Circulation, CirculationError};
pub use store::Migrator;

use crate::domain::{FeeTiers, LoanPolicy};

/// borrow-svc's settings.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "borrow-svc",
    version,
    about = "Loans, returns and late fees of the library, over gRPC"
)]
pub struct Config {
    /// Where the gRPC server listens.
    #[arg(long = "borrow-grpc-addr", env = "BORROW_GRPC_ADDR", default_value = "0.0.0.0:50052")]
    pub grpc_addr: SocketAddr,
    /// Where book-svc answers HoldStock (the synchronous guard of every borrow).
    #[arg(
        long = "book-svc-url",
        env = "BOOK_SVC_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub book_svc_url: String,
    /// Deadline of the synchronous stock hold, in milliseconds.
    #[arg(
        long = "stock-check-timeout-ms",
        env = "LIBRARY_STOCK_CHECK_TIMEOUT_MS",
        default_value_t = 200
    )]
    pub stock_check_timeout_ms: u64,
    /// Seconds between two looks at the holds book-svc shows unconfirmed after their lifetime
    /// (`LIBRARY_STOCK_HOLD_TTL`), to give back or confirm.
    #[arg(
        long = "hold-settle-interval",
        env = "LIBRARY_HOLD_SETTLE_INTERVAL",
        default_value = "30",
        value_parser = library_platform::config::parse_seconds
    )]
    pub hold_settle_interval: Duration,
    /// Loan period in days.
    #[arg(long = "loan-days", env = "LIBRARY_LOAN_DAYS", default_value_t = 14)]
    pub loan_days: u32,
    /// Copies one reader may have outstanding (pending + active).
    #[arg(
        long = "max-copies-per-user",
        env = "LIBRARY_MAX_COPIES_PER_USER",
        default_value_t = 10
    )]
    pub max_copies_per_user: i32,
    /// Late-fee tiers as `days:fee` pairs, `*` for any more days.
    #[arg(
        long = "late-fee-tiers",
        env = "LIBRARY_LATE_FEE_TIERS",
        default_value = "7:500,14:1000,*:2000"
    )]
    pub late_fee_tiers: FeeTiers,
    /// The IANA time zone in which a "day late" is counted.
    #[arg(long = "timezone", env = "LIBRARY_TIMEZONE", default_value = "UTC")]
    pub timezone: String,
    /// A directory (the shared volume) where each pod appends every loan transition as JSON lines.
    #[arg(long = "audit-dir", env = "LIBRARY_AUDIT_DIR")]
    pub audit_dir: Option<PathBuf>,
    /// borrow-svc's own log level (e.g. DEBUG); wins over RUST_LOG's default level.
    #[arg(long = "borrow-log-level", env = "BORROW_LOG_LEVEL")]
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

impl Config {
    /// The lending policy these settings describe.
    ///
    /// # Errors
    /// A value out of range, naming its setting.
    pub fn policy(&self) -> Result<LoanPolicy, domain::PolicyError> {
        LoanPolicy::new(
            self.loan_days,
            self.max_copies_per_user,
            self.late_fee_tiers.clone(),
            &self.timezone,
        )
    }
}

/// A built borrow-svc: database migrated, port bound, consumers subscribed; not yet serving.
pub struct Application {
    listener: TcpListener,
    circulation: Circulation,
    /// The relay, consumers and listeners, and the token that stops them.
    background: Background,
}

impl Application {
    /// Checks the settings, connects and migrates the database, binds the gRPC port and
    /// subscribes to the bus. book-svc need not be up.
    ///
    /// # Errors
    /// A bad setting, a database that cannot be opened or migrated, or a port that cannot be bound.
    pub async fn build(config: &Config, bus: EventBus, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let policy = config.policy()?;
        let channel = library_platform::grpc::guarded_channel(
            "book-svc",
            "BOOK_SVC_URL",
            &config.book_svc_url,
            Duration::from_millis(config.stock_check_timeout_ms),
        )?;
        let stock = stock::StockGuard::new(channel, Duration::from_millis(config.stock_check_timeout_ms));
        let url = config.database.url_or_default("borrow");
        let db = library_platform::database::connect_and_migrate::<Migrator>(&url).await?;
        let (audit, audit_writer) = match &config.audit_dir {
            Some(dir) => {
                let writer = audit::AuditWriter::open(db.clone(), dir)
                    .with_context(|| format!("LIBRARY_AUDIT_DIR: cannot write to {}", dir.display()))?;
                (audit::AuditLog::recording(), Some(writer))
            }
            None => (audit::AuditLog::default(), None),
        };
        let listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("BORROW_GRPC_ADDR: cannot listen on {}", config.grpc_addr))?;
        let outbox = Outbox::default();
        let circulation = Circulation::new(db.clone(), outbox.clone(), policy, stock, audit);
        let tracker = TaskTracker::new();
        if let Some(writer) = audit_writer {
            tracker.spawn(writer.run(shutdown.clone()));
        }
        bus.consume(
            events::SAGA_QUEUE,
            events::subscriptions(circulation.clone()),
            &tracker,
            shutdown.clone(),
        );
        tracker.spawn(settle_expired_holds(
            circulation.clone(),
            config.hold_settle_interval,
            shutdown.clone(),
        ));
        let background = Background {
            relay: Relay::new(db, bus, &outbox),
            tracker,
            shutdown,
            shutdown_delay: config.shutdown.shutdown_delay,
            metrics: config.metrics.bind().await?,
        };
        Ok(Self {
            listener,
            circulation,
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

    /// The circulation desk, for tests that drive it directly.
    pub fn circulation(&self) -> Circulation {
        self.circulation.clone()
    }

    /// Serves until the shutdown token is cancelled, then drains.
    ///
    /// # Errors
    /// The gRPC server failed.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            listener,
            circulation,
            background,
        } = self;
        let server =
            library_platform::grpc::server().add_service(BorrowServiceServer::new(grpc::BorrowGrpc { circulation }));
        serve_grpc("borrow-svc", listener, server, background).await
    }
}

/// Runs borrow-svc standalone: RabbitMQ is required.
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

/// Settles the holds left unconfirmed after their lifetime ([`Circulation::settle_expired_holds`]),
/// every `interval` until `shutdown`; the first pass an interval after start, so that starting
/// asks nothing of book-svc (a hold lives far longer than the interval).
async fn settle_expired_holds(circulation: Circulation, interval: Duration, shutdown: CancellationToken) {
    const BATCH: i32 = 100;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        // A full batch: more may be waiting.
        while settle_pass(&circulation, BATCH).await == BATCH as usize {}
    }
}

/// One pass of [`Circulation::settle_expired_holds`]: the holds it looked at (none when it failed).
async fn settle_pass(circulation: &Circulation, batch: i32) -> usize {
    circulation.settle_expired_holds(batch).await.unwrap_or_else(|error| {
        tracing::warn!(%error, "cannot settle expired holds; trying again later");
        0
    })
}
