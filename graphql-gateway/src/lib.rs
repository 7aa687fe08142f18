//! graphql-gateway: the single entry point. One GraphQL schema (CONTRACT.md) over the book,
//! borrow and dashboard services, with bearer-token authentication, a deadline, a circuit
//! breaker and a concurrency budget for every downstream, and live subscriptions.
//!
//! # Layout
//! - `auth`: JWT verification (HS256 and the identity provider's JWKS) and issuing.
//! - `token`: the `token` subcommand.
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
mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use library_platform::CancellationToken;
use library_platform::config::{Secret, ShutdownArgs, TelemetryArgs};
use library_platform::grpc::guarded_channel;
use library_proto::book::book_service_client::BookServiceClient;
use library_proto::borrow::borrow_service_client::BorrowServiceClient;
use library_proto::dashboard::dashboard_service_client::DashboardServiceClient;
use tokio::net::TcpListener;

pub use auth::{AuthError, AuthSettings, Claims, JwksPolicy, JwtKeys};
pub use cors::{CorsError, CorsPolicy};
pub use error::GatewayError;
pub use schema::{LibrarySchema, MAX_COMPLEXITY, MAX_DEPTH, sdl};
pub use token::{Command, TokenArgs, parse_ttl, print as print_token};

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
    /// HS256 key that signs and checks bearer tokens (this, LIBRARY_JWT_JWKS_URL, or both).
    #[arg(long = "jwt-secret", env = "LIBRARY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// The identity provider's JWKS (e.g. https://idp/realms/library/protocol/openid-connect/certs):
    /// tokens it signs (RS256, ES256, …) are accepted; its keys are re-read every 10 minutes
    /// and when a token names an unknown key.
    #[arg(long = "jwt-jwks-url", env = "LIBRARY_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,
    /// When set, every token must carry this `iss`.
    #[arg(long = "jwt-issuer", env = "LIBRARY_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// When set, every token's `aud` (a string or an array) must hold one of these
    /// (comma-separated).
    #[arg(long = "jwt-audience", env = "LIBRARY_JWT_AUDIENCE", value_delimiter = ',')]
    pub jwt_audience: Vec<String>,
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
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Config {
    /// What token verification is configured with.
    pub fn auth_settings(&self) -> AuthSettings {
        AuthSettings {
            secret: self.jwt_secret.clone(),
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            jwks_url: self.jwt_jwks_url.clone(),
            jwks_policy: JwksPolicy::default(),
        }
    }
}

/// The `token` subcommand's token: HS256 with the configured secret, issuer and audience.
///
/// # Errors
/// No `LIBRARY_JWT_SECRET`, or signing failed.
pub fn token(config: &Config, args: &TokenArgs) -> anyhow::Result<String> {
    if config.jwt_secret.as_ref().is_none_or(Secret::is_blank) {
        return Err(AuthError::NoSecret.into());
    }
    let keys = JwtKeys::from_settings(&AuthSettings {
        jwks_url: None,
        ..config.auth_settings()
    })?;
    Ok(keys.issue(&args.sub, args.roles(), args.ttl.as_secs())?)
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
    /// No secret and no JWKS, a bad URL, or a port that cannot be bound.
    pub async fn build(config: &Config, shutdown: CancellationToken) -> anyhow::Result<Self> {
        let keys = JwtKeys::from_settings(&config.auth_settings())?;
        if keys.uses_jwks() && config.jwt_audience.is_empty() {
            tracing::warn!(
                "LIBRARY_JWT_JWKS_URL is set without LIBRARY_JWT_AUDIENCE: a token the identity provider \
                 issued for any of its applications is accepted"
            );
        }
        keys.load_jwks().await;
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
        let served_schema = schema::build(downstreams.clone(), shutdown.clone());
        let state = http::AppState {
            sdl: served_schema.sdl().into(),
            schema: served_schema,
            cors,
            keys,
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
        // Part of this future, so it stops with the server; nothing is left running.
        let (keys, stop) = (state.keys.clone(), shutdown.clone());
        let keys_fresh = async move { keys.keep_fresh(stop).await };
        ready.store(true, Ordering::SeqCst);
        tracing::info!(addr = %listener.local_addr()?, "graphql-gateway serving HTTP");
        // Without TCP_NODELAY a response written in two parts waits for the client's delayed
        // ACK.
        let listener = listener.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        });
        let served = axum::serve(listener, http::router(state)).with_graceful_shutdown(async move {
            shutdown.cancelled().await;
            ready.store(false, Ordering::SeqCst);
            library_platform::shutdown::lame_duck(shutdown_delay).await;
        });
        let (served, ()) = tokio::join!(served, keys_fresh);
        served?;
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
