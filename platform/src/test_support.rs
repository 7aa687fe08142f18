//! For tests: a fresh PostgreSQL database and a fresh set of broker names per test, so runs
//! never collide and never depend on leftovers, and a janitor that removes what a test binary
//! made once it exits; tracing printed only when `TEST_LOG` is set.
use std::io::Write;
use std::process::Stdio;
use std::sync::{Mutex, Once, OnceLock};

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
    at_exit(&format!(
        "command -v psql >/dev/null && psql {} -qc {} >/dev/null 2>&1",
        sh_quote(&format!("{server}/postgres")),
        sh_quote(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
    ));
    format!("{server}/{name}")
}

/// A SQLite file in a fresh temporary directory.
pub fn fresh_sqlite_url(prefix: &str) -> String {
    let dir = std::env::temp_dir().join(format!("library-test-{}", uuid::Uuid::new_v4().simple()));
    at_exit(&format!("rm -rf {}", sh_quote(&dir.display().to_string())));
    format!("sqlite://{}/{prefix}.db", dir.display())
}

/// A shell that collects cleanup commands, one a line, on a pipe from this test binary, and runs
/// them (newest first) once the pipe closes: when its owner is dropped, or when the test binary
/// exits however it exits (statics are never dropped; a killed binary runs no destructor).
pub struct Janitor {
    stdin: Option<std::process::ChildStdin>,
    _process: std::process::Child,
}

const JANITOR: &str = r#"trap '' INT TERM HUP
todo=''
while IFS= read -r line; do todo="$line
$todo"; done
eval "$todo"
"#;

impl Janitor {
    /// Starts the cleanup shell.
    ///
    /// # Panics
    /// When `sh` cannot be started.
    pub fn start() -> Self {
        let mut process = std::process::Command::new("sh")
            .arg("-c")
            .arg(JANITOR)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the cleanup shell (sh)");
        Self {
            stdin: process.stdin.take(),
            _process: process,
        }
    }

    /// Registers a shell command to run at the end.
    pub fn at_end(&mut self, command: &str) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{command}");
            let _ = stdin.flush();
        }
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        // Closing the pipe starts the cleanup, in the background.
        self.stdin.take();
    }
}

/// Runs the shell command `command` once this test binary has exited, however it exits.
pub fn at_exit(command: &str) {
    static JANITOR: OnceLock<Mutex<Janitor>> = OnceLock::new();
    JANITOR
        .get_or_init(|| Mutex::new(Janitor::start()))
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .at_end(command);
}

/// `value` quoted for a POSIX shell.
pub fn sh_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
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

/// The body of `GET /metrics` on `127.0.0.1:port`, checking the answer is 200.
pub async fn scrape_metrics(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("the metrics port accepts");
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    response
}

pub mod reflection;
