//! The all-in-one `library`: every service and the gateway in one process, for a laptop or a
//! demo. Embedded defaults — one SQLite file per service under `./data/` and the in-process event
//! bus — or PostgreSQL and RabbitMQ when `DATABASE_URL` and `AMQP_URL` are set. The services
//! still talk gRPC to each other on loopback, exactly as they do when deployed apart.
//!
//! # Layout
//! - [`Config`]: the settings the all-in-one reads itself; every service also reads its own
//!   variables (see the README).
//! - [`run`]: builds every service, then serves until the shutdown token is cancelled.
//! - [`token`]: the `library token` subcommand's token.
//! - the development key: without `LIBRARY_JWT_SECRET`, one made once and kept in
//!   `./data/dev-jwt-secret`, so tokens survive a restart.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use graphql_gateway::TokenArgs;
use library_platform::bus::{BusNames, EventBus};
use library_platform::config::{DATA_DIR, Secret, TelemetryArgs};
use library_platform::{CancellationToken, database};

/// The development key's file, beside the SQLite files.
const DEV_KEY_FILE: &str = "dev-jwt-secret";

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
    /// HS256 key for bearer tokens; unset: a development key, made once and kept in
    /// ./data/dev-jwt-secret (tokens survive a restart); a reader token and an admin token are
    /// logged at start.
    #[arg(long = "jwt-secret", env = "LIBRARY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    #[command(subcommand)]
    pub command: Option<graphql_gateway::Command>,
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

async fn service_configs(config: &Config, jwt_secret: &Secret) -> anyhow::Result<ServiceConfigs> {
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
    gateway.jwt_secret = Some(jwt_secret.clone());
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
    let (jwt_secret, development_key) = match &config.jwt_secret {
        Some(secret) if !secret.is_blank() => (secret.clone(), None),
        _ => {
            let key = development_key(&development_key_path());
            (key.secret.clone(), Some(key))
        }
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

    announce(
        &config,
        &configs.gateway,
        development_key.as_ref(),
        gateway.port(),
        bus.is_in_process(),
    );
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

/// The `library token` subcommand's token: signed with `LIBRARY_JWT_SECRET`, or else with the
/// development key of `./data/` (made if there is none yet, so that a `library` started here
/// later accepts it), and the gateway's issuer and audience settings.
///
/// # Errors
/// A bad gateway setting, or the key cannot be read or made.
pub fn token(config: &Config, args: &TokenArgs) -> anyhow::Result<String> {
    let secret = match &config.jwt_secret {
        Some(secret) if !secret.is_blank() => secret.clone(),
        _ => {
            let path = development_key_path();
            let key = load_or_make_development_key(&path)?;
            if key.made {
                let _ = writeln!(
                    std::io::stderr(),
                    "no development key here yet: made {}; a `library` started in this directory accepts the token",
                    path.display()
                );
            }
            key.secret
        }
    };
    let mut gateway: graphql_gateway::Config = from_env("graphql-gateway")?;
    gateway.jwt_secret = Some(secret);
    graphql_gateway::token(&gateway, args)
}

/// The development key and where it came from.
struct DevelopmentKey {
    secret: Secret,
    /// Where it is kept; `None` when it could not be written (tokens end with the process).
    path: Option<PathBuf>,
    /// Made by this process (not read from an earlier run).
    made: bool,
}

fn development_key_path() -> PathBuf {
    Path::new(".").join(DATA_DIR).join(DEV_KEY_FILE)
}

/// The kept development key, or a new one kept at `path`; if it cannot be kept (a read-only
/// directory), one for this run only.
fn development_key(path: &Path) -> DevelopmentKey {
    match load_or_make_development_key(path) {
        Ok(key) => key,
        Err(error) => {
            tracing::warn!(
                error = format!("{error:#}"),
                "cannot keep a development JWT secret; tokens stop working when the process stops \
                 (set LIBRARY_JWT_SECRET to choose one)"
            );
            DevelopmentKey {
                secret: Secret::from(new_development_secret()),
                path: None,
                made: true,
            }
        }
    }
}

/// Reads the key at `path`, or makes it (readable by its owner only).
fn load_or_make_development_key(path: &Path) -> anyhow::Result<DevelopmentKey> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => {
            return Ok(DevelopmentKey {
                secret: Secret::from(text.trim()),
                path: Some(path.to_owned()),
                made: false,
            });
        }
        // An empty file (a crash while it was written) is replaced below.
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let secret = new_development_secret();
    // Written under another name and renamed into place: a reader never sees half a key.
    let partial = path.with_extension(format!("partial-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options
        .open(&partial)
        .and_then(|mut file| file.write_all(format!("{secret}\n").as_bytes()))
        .and_then(|()| std::fs::rename(&partial, path));
    if let Err(error) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(error).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(DevelopmentKey {
        secret: Secret::from(secret),
        path: Some(path.to_owned()),
        made: true,
    })
}

fn new_development_secret() -> String {
    format!("dev-{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

fn announce(
    config: &Config,
    gateway: &graphql_gateway::Config,
    development_key: Option<&DevelopmentKey>,
    port: u16,
    in_process: bool,
) {
    let day = Duration::from_secs(24 * 3600);
    let issue = |sub: &str, admin: bool| {
        let args = TokenArgs {
            sub: sub.to_owned(),
            admin,
            ttl: day,
        };
        graphql_gateway::token(gateway, &args).unwrap_or_default()
    };
    let user = issue("reader-1", false);
    let admin = issue("librarian", true);
    let storage = config
        .database_url
        .as_deref()
        .map(database::redact)
        .unwrap_or_else(|| "SQLite files under ./data/".into());
    let events = if in_process { "in-process event bus" } else { "RabbitMQ" };
    tracing::info!(graphiql = %format!("http://localhost:{port}/graphiql"), %storage, %events, "library is running");
    match development_key {
        Some(DevelopmentKey {
            path: Some(path), made, ..
        }) => tracing::info!(
            made,
            "development JWT secret kept in {}; tokens survive a restart; `library token --sub NAME` makes more \
             (set LIBRARY_JWT_SECRET to choose one)",
            path.display()
        ),
        Some(DevelopmentKey { path: None, .. }) => {
            tracing::info!("development JWT secret for this run only (set LIBRARY_JWT_SECRET to choose one)")
        }
        None => {}
    }
    tracing::info!(token = %user, "reader token (sub=reader-1), header: Authorization: Bearer <token>");
    tracing::info!(token = %admin, "admin token (sub=librarian, roles=[admin])");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_development_key_is_made_once_and_kept_private() {
        let dir = std::env::temp_dir().join(format!("library-dev-key-{}", uuid::Uuid::new_v4().simple()));
        let path = dir.join(DATA_DIR).join(DEV_KEY_FILE);
        let first = load_or_make_development_key(&path).unwrap();
        assert!(first.made);
        let again = load_or_make_development_key(&path).unwrap();
        assert!(!again.made);
        assert_eq!(first.secret, again.secret);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "").unwrap();
        let remade = load_or_make_development_key(&path).unwrap();
        assert!(remade.made);
        assert_ne!(remade.secret, first.secret);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
