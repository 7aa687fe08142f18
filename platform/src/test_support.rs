//! For tests: a fresh PostgreSQL database and a fresh set of broker names per test, so runs
//! never collide and never depend on leftovers; tracing printed only when `TEST_LOG` is set.
use std::sync::Once;

use sea_orm::{ConnectionTrait, Database};

use crate::bus::BusNames;

/// The PostgreSQL server tests use (`TEST_POSTGRES_URL`, default the local trust-auth server).
pub fn postgres_server_url() -> String {
    std::env::var("TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// The RabbitMQ tests use (`TEST_AMQP_URL`, default the local guest account).
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The test broker as a service of the system uses it, under `names`.
///
/// # Panics
/// When [`amqp_url`] is not an AMQP URL.
pub fn system_bus(names: &BusNames) -> crate::bus::EventBus {
    crate::bus::EventBus::rabbitmq_for_system(&amqp_url(), names.clone()).expect("TEST_AMQP_URL is an AMQP URL")
}

/// Creates an empty database with a unique name and returns its URL.
///
/// # Panics
/// When the test server cannot be reached: the test cannot run.
pub async fn fresh_postgres_database(prefix: &str) -> String {
    let server = postgres_server_url();
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    let admin = Database::connect(format!("{server}/postgres"))
        .await
        .expect("test PostgreSQL reachable");
    admin
        .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
        .await
        .expect("create the test database");
    let _ = admin.close().await;
    format!("{server}/{name}")
}

/// A SQLite file in a fresh temporary directory.
pub fn fresh_sqlite_url(prefix: &str) -> String {
    let dir = std::env::temp_dir().join(format!("library-test-{}", uuid::Uuid::new_v4().simple()));
    format!("sqlite://{}/{prefix}.db", dir.display())
}

/// Exchange and queue names no other test uses; queues vanish 10 minutes after last use.
pub fn fresh_bus_names() -> BusNames {
    let id = uuid::Uuid::new_v4().simple().to_string();
    BusNames {
        exchange: format!("test.{id}.events"),
        queue_prefix: format!("test.{id}."),
        queue_expires_ms: Some(600_000),
    }
}

/// Prints tracing output when `TEST_LOG` is set; once per test binary.
pub fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
                ))
                .with_test_writer()
                .try_init();
        }
    });
}

/// Polls `check` every 20 ms until it holds or `timeout` passes; returns whether it held. Tests
/// wait on a condition this way instead of sleeping a fixed time.
pub async fn eventually<F, Fut>(timeout: std::time::Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
