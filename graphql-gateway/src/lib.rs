//! graphql-gateway: the single entry point. One GraphQL schema (CONTRACT.md) over the book,
//! borrow and dashboard services, with bearer-token authentication, a deadline, a circuit
//! breaker and a concurrency budget for every downstream, and live subscriptions.
//!
//! # Layout
//! - `auth`: JWT verification and issuing.
//! - `downstream`: the gRPC clients with their budgets.
//! - `error`: every error and its `extensions.code`, mapped once.
//! - `schema`: queries, mutations, subscriptions, the book DataLoader.
//! - `graphql_http`: GraphQL over HTTP (media types, GET and POST, status codes, body bound).
//! - `cors`: which browser origins may call the API (`GATEWAY_CORS_ORIGINS`).
//! - `graphiql`: GraphiQL and its pinned assets, embedded in the binary.
//! - `http`: axum routes (GraphQL, WebSocket, SDL, GraphiQL, probes, metrics).
mod auth;
mod cors;
mod downstream;
mod error;
mod graphiql;
mod graphql_http;
mod http;
mod schema;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use library_platform::CancellationToken;
use library_platform::config::{ShutdownArgs, TelemetryArgs};
use library_platform::grpc::guarded_channel;
use library_proto::book::book_service_client::BookServiceClient;
use library_proto::borrow::borrow_service_client::BorrowServiceClient;
use library_proto::dashboard::dashboard_service_client::DashboardServiceClient;
use tokio::net::TcpListener;

pub use auth::{Claims, JwtKeys};
pub use cors::{CorsError, CorsPolicy};
pub use error::GatewayError;
pub use schema::{LibrarySchema, MAX_COMPLEXITY, MAX_DEPTH, sdl};

use crate::downstream::{Downstream, Downstreams};

/// The gateway's settings.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "graphql-gateway",
    version,
    about = "The library's single entry point: GraphQL over HTTP and WebSocket"
)]
pub struct Config {
    /// Where the HTTP server listens.
    #[arg(
        long = "gateway-http-addr",
        env = "GATEWAY_HTTP_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    pub http_addr: SocketAddr,
    /// Where book-svc answers.
    #[arg(
        long = "book-svc-url",
        env = "BOOK_SVC_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub book_svc_url: String,
    /// Where borrow-svc answers.
    #[arg(
        long = "borrow-svc-url",
        env = "BORROW_SVC_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub borrow_svc_url: String,
    /// Where dashboard-svc answers.
    #[arg(
        long = "dashboard-svc-url",
        env = "DASHBOARD_SVC_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    pub dashboard_svc_url: String,
    /// HS256 key that signs and checks bearer tokens (required).
    #[arg(long = "jwt-secret", env = "LIBRARY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Deadline of every downstream call, in milliseconds.
    #[arg(
        long = "downstream-timeout-ms",
        env = "GATEWAY_DOWNSTREAM_TIMEOUT_MS",
        default_value_t = 3000
    )]
    pub downstream_timeout_ms: u64,
    /// borrow-svc calls in flight at most (borrow, return, loans); more are shed with SERVICE_BUSY.
    #[arg(
        long = "borrow-concurrency",
        env = "GATEWAY_BORROW_CONCURRENCY",
        default_value_t = 64
    )]
    pub borrow_concurrency: usize,
    /// book-svc and dashboard-svc calls in flight at most, each.
    #[arg(long = "read-concurrency", env = "GATEWAY_READ_CONCURRENCY", default_value_t = 256)]
    pub read_concurrency: usize,
    /// Browser origins allowed to call the API, comma-separated: `https://app.example.org`,
    /// `http://localhost:*` (any port), or `*` alone (any origin, no credentials); unset: none.
    #[arg(long = "cors-origins", env = "GATEWAY_CORS_ORIGINS")]
    pub cors_origins: Option<String>,
    /// The gateway's own log level (e.g. DEBUG); wins over RUST_LOG's default level.
    #[arg(long = "gateway-log-level", env = "GATEWAY_LOG_LEVEL")]
    pub log_level: Option<String>,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    #[command(flatten)]
    pub shutdown: ShutdownArgs,
}

/// A built gateway: port bound, clients ready (they connect on first use).
pub struct Application {
    listener: TcpListener,
    state: http::AppState,
    shutdown: CancellationToken,
    shutdown_delay: Duration,
}

impl Application {
    /// Checks the settings and binds the HTTP port. The services need not be up yet.
    ///
    /// # Errors
    /// A missing secret, a bad URL, or a port that cannot be bound.
    pub async fn build(config: &Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let secret =
            library_platform::config::required("LIBRARY_JWT_SECRET", &config.jwt_secret).map_err(anyhow::Error::msg)?;
        let cors = CorsPolicy::parse(config.cors_origins.as_deref())?;
        let deadline = Duration::from_millis(config.downstream_timeout_ms);
        let downstreams = Arc::new(Downstreams {
            book: Downstream::new(
                "book",
                BookServiceClient::new(guarded_channel(
                    "book-svc",
                    "BOOK_SVC_URL",
                    &config.book_svc_url,
                    deadline,
                )?),
                config.read_concurrency,
                deadline,
            ),
            borrow: Downstream::new(
                "borrow",
                BorrowServiceClient::new(guarded_channel(
                    "borrow-svc",
                    "BORROW_SVC_URL",
                    &config.borrow_svc_url,
                    deadline,
                )?),
                config.borrow_concurrency,
                deadline,
            ),
            dashboard: Downstream::new(
                "dashboard",
                DashboardServiceClient::new(guarded_channel(
                    "dashboard-svc",
                    "DASHBOARD_SVC_URL",
                    &config.dashboard_svc_url,
                    deadline,
                )?),
                config.read_concurrency,
                deadline,
            ),
        });
        let listener = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("GATEWAY_HTTP_ADDR: cannot listen on {}", config.http_addr))?;
        library_platform::metrics::prometheus();
        let state = http::AppState {
            schema: schema::build(downstreams.clone(), shutdown.clone()),
            sdl: schema::sdl().into(),
            cors,
            keys: JwtKeys::new(secret),
            downstreams,
            ready: Arc::new(AtomicBool::new(false)),
        };
        Ok(Self {
            listener,
            state,
            shutdown,
            shutdown_delay: config.shutdown.shutdown_delay,
        })
    }

    /// The bound port (useful with port 0 in tests).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    /// Serves until the shutdown token is cancelled: readiness goes false and subscriptions end,
    /// requests are still served for the shutdown delay, then the listener closes and in-flight
    /// requests finish.
    ///
    /// # Errors
    /// The HTTP server failed.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            listener,
            state,
            shutdown,
            shutdown_delay,
        } = self;
        let ready = state.ready.clone();
        ready.store(true, Ordering::SeqCst);
        tracing::info!(addr = %listener.local_addr()?, "graphql-gateway serving HTTP");
        // Without TCP_NODELAY a response written in two parts waits for the client's delayed
        // ACK: 40 ms.
        let listener = listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(listener, http::router(state))
            .with_graceful_shutdown(async move {
                shutdown.cancelled().await;
                ready.store(false, Ordering::SeqCst);
                library_platform::shutdown::lame_duck(shutdown_delay).await;
            })
            .await?;
        Ok(())
    }
}

/// Runs the gateway standalone.
///
/// # Errors
/// A missing or bad setting, or a failure to start.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    Application::build(&config, shutdown).await?.run_until_stopped().await
}
