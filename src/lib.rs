//! The all-in-one `library`: every service and the gateway in one process, for a laptop or a
//! demo. Embedded defaults — one SQLite file per service under `./data/` and the in-process event
//! bus — or PostgreSQL and RabbitMQ when `DATABASE_URL` and `AMQP_URL` are set. The services
//! still talk gRPC to each other on loopback, exactly as they do when deployed apart.
//!
//! # Layout
//! - [`Config`]: the settings the all-in-one reads itself; every service also reads its own
//!   variables (see the README).
//! - [`run`]: builds every service, then serves until the shutdown token is cancelled.

use std::net::SocketAddr;

use anyhow::Context;
use library_platform::bus::{BusNames, EventBus};
use library_platform::config::TelemetryArgs;
use library_platform::{CancellationToken, database};

/// The all-in-one's own settings. Each service also reads its own variables (loan policy, log
/// levels, …) from the environment, as its standalone binary does.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "library",
    version,
    about = "The whole library-circulation system in one process: book, borrow and dashboard services and the GraphQL gateway",
    after_help = "Every service's own variables apply too: LIBRARY_LOAN_DAYS, LIBRARY_MAX_COPIES_PER_USER, \
LIBRARY_LATE_FEE_TIERS, LIBRARY_TIMEZONE, LIBRARY_AUDIT_DIR, BOOK_/BORROW_/DASHBOARD_/GATEWAY_LOG_LEVEL, \
BOOK_/BORROW_/DASHBOARD_GRPC_ADDR, GATEWAY_* (see the README)."
)]
pub struct Config {
    /// Where the gateway listens.
    #[arg(
        long = "gateway-http-addr",
        env = "GATEWAY_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub http_addr: SocketAddr,
    /// `postgres://…/name` (databases name_book, name_borrow, name_dashboard are created) or
    /// `sqlite://dir/name.db` (one file per service); unset: ./data/{book,borrow,dashboard}.db.
    #[arg(long = "database-url", env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// RabbitMQ; unset: the in-process event bus.
    #[arg(long = "amqp-url", env = "AMQP_URL")]
    pub amqp_url: Option<String>,
    /// HS256 key for bearer tokens; unset: a development key made at start and printed with a
    /// user token and an admin token.
    #[arg(long = "jwt-secret", env = "LIBRARY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// The origins the all-in-one allows when `GATEWAY_CORS_ORIGINS` is unset.
pub const DEVELOPMENT_CORS_ORIGINS: &str = "http://localhost:*,http://127.0.0.1:*";

/// Each service's settings from the environment (as its own binary reads them), with the
/// all-in-one's database and internal addresses applied.
struct ServiceConfigs {
    book: book_svc::Config,
    borrow: borrow_svc::Config,
    dashboard: dashboard_svc::Config,
    gateway: graphql_gateway::Config,
}

fn from_env<T: clap::Parser>(name: &str) -> anyhow::Result<T> {
    library_platform::config::parse_from::<T>(&[name]).map_err(|refused| anyhow::anyhow!("{name}: {refused}"))
}

/// A setting's value when it was given in the environment; services inside the all-in-one
/// listen on loopback unless told otherwise.
fn internal_addr(variable: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let value = std::env::var(variable).unwrap_or_else(|_| format!("127.0.0.1:{port}"));
    library_platform::config::parse_listen_addr(variable, &value).map_err(anyhow::Error::msg)
}

async fn service_configs(config: &Config, jwt_secret: &str) -> anyhow::Result<ServiceConfigs> {
    let mut book: book_svc::Config = from_env("book-svc")?;
    let mut borrow: borrow_svc::Config = from_env("borrow-svc")?;
    let mut dashboard: dashboard_svc::Config = from_env("dashboard-svc")?;
    let mut gateway: graphql_gateway::Config = from_env("graphql-gateway")?;
    book.grpc_addr = internal_addr("BOOK_GRPC_ADDR", 50051)?;
    borrow.grpc_addr = internal_addr("BORROW_GRPC_ADDR", 50052)?;
    dashboard.grpc_addr = internal_addr("DASHBOARD_GRPC_ADDR", 50053)?;
    gateway.http_addr = config.http_addr;
    // Only the gateway is reached from outside: it alone waits out LIBRARY_SHUTDOWN_DELAY, and
    // its /metrics shows the whole process's metrics.
    for (delay, metrics) in [
        (&mut book.shutdown.shutdown_delay, &mut book.metrics.metrics_addr),
        (&mut borrow.shutdown.shutdown_delay, &mut borrow.metrics.metrics_addr),
        (
            &mut dashboard.shutdown.shutdown_delay,
            &mut dashboard.metrics.metrics_addr,
        ),
    ] {
        *delay = std::time::Duration::ZERO;
        *metrics = None;
    }
    gateway.jwt_secret = Some(jwt_secret.to_owned());
    // A laptop's front-end development servers (Vite, webpack) run on localhost ports of their
    // own; the all-in-one lets them call it unless told otherwise.
    if gateway.cors_origins.is_none() {
        gateway.cors_origins = Some(DEVELOPMENT_CORS_ORIGINS.to_owned());
    }
    if let Some(url) = &config.database_url {
        book.database.database_url = Some(database::service_database(url, "book").await?);
        borrow.database.database_url = Some(database::service_database(url, "borrow").await?);
        dashboard.database.database_url = Some(database::service_database(url, "dashboard").await?);
    }
    Ok(ServiceConfigs {
        book,
        borrow,
        dashboard,
        gateway,
    })
}

/// Starts every service and the gateway, and serves until `shutdown` is cancelled; then every
/// part drains and the broker connection closes.
///
/// # Errors
/// A bad setting, or a part that cannot start.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let jwt_secret = match &config.jwt_secret {
        Some(secret) if !secret.trim().is_empty() => secret.clone(),
        _ => development_secret(),
    };
    let mut configs = service_configs(&config, &jwt_secret).await?;
    let bus = match &config.amqp_url {
        Some(url) if !url.trim().is_empty() => EventBus::rabbitmq_for_system(url, BusNames::default())?,
        _ => EventBus::in_process(),
    }
    .with_batch_linger(configs.book.bus.batch_linger);

    // The gateway stops first and drains; only then the services behind it, so a request the
    // gateway accepted never meets a service that already stopped.
    let services_stop = CancellationToken::new();

    // Build everything first: with the in-process bus, every consumer must be subscribed before
    // any relay publishes.
    let book = book_svc::Application::build(&configs.book, bus.clone(), services_stop.clone())
        .await
        .context("book-svc")?;
    configs.borrow.book_svc_url = format!("http://127.0.0.1:{}", book.port());
    let borrow = borrow_svc::Application::build(&configs.borrow, bus.clone(), services_stop.clone())
        .await
        .context("borrow-svc")?;
    let dashboard = dashboard_svc::Application::build(&configs.dashboard, bus.clone(), services_stop.clone())
        .await
        .context("dashboard-svc")?;
    configs.gateway.book_svc_url = format!("http://127.0.0.1:{}", book.port());
    configs.gateway.borrow_svc_url = format!("http://127.0.0.1:{}", borrow.port());
    configs.gateway.dashboard_svc_url = format!("http://127.0.0.1:{}", dashboard.port());
    let gateway = graphql_gateway::Application::build(&configs.gateway, shutdown.clone())
        .await
        .context("gateway")?;

    announce(&config, &jwt_secret, gateway.port(), bus.is_in_process());
    let gateway_then_services = async {
        let served = gateway.run_until_stopped().await;
        services_stop.cancel();
        served
    };
    let outcome = tokio::try_join!(
        book.run_until_stopped(),
        borrow.run_until_stopped(),
        dashboard.run_until_stopped(),
        gateway_then_services,
    );
    // One part failing stops the others.
    shutdown.cancel();
    services_stop.cancel();
    bus.close().await;
    outcome.map(|_| ())
}

fn development_secret() -> String {
    format!("dev-{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

fn announce(config: &Config, jwt_secret: &str, port: u16, in_process: bool) {
    let keys = graphql_gateway::JwtKeys::new(jwt_secret);
    let day = 24 * 3600;
    let user = keys.issue("reader-1", &[], day).unwrap_or_default();
    let admin = keys.issue("librarian", &["admin"], day).unwrap_or_default();
    let storage = config
        .database_url
        .as_deref()
        .map(database::redact)
        .unwrap_or_else(|| "SQLite files under ./data/".into());
    let events = if in_process { "in-process event bus" } else { "RabbitMQ" };
    tracing::info!(graphiql = %format!("http://localhost:{port}/"), %storage, %events, "library is running");
    if config.jwt_secret.is_none() {
        tracing::info!(secret = %jwt_secret, "development JWT secret (set LIBRARY_JWT_SECRET to choose one)");
    }
    tracing::info!(token = %user, "reader token (sub=reader-1), header: Authorization: Bearer <token>");
    tracing::info!(token = %admin, "admin token (sub=librarian, roles=[admin])");
}
