//! Settings every service shares. Each binary flattens these into its own `clap` parser, so
//! every setting is both an environment variable (12-factor) and a flag, and `--help` lists them.
use std::net::SocketAddr;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// How logs look.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line, for Loki.
    Json,
}

/// Logging and tracing.
#[derive(clap::Args, Clone, Debug)]
pub struct TelemetryArgs {
    /// Log filter for every service, in tracing's env-filter syntax.
    #[arg(long = "rust-log", env = "RUST_LOG", default_value = "info")]
    pub rust_log: String,
    /// `text` or `json` (one object a line, for Loki).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text", ignore_case = true)]
    pub log_format: LogFormat,
    /// OTLP/gRPC endpoint for traces (e.g. http://otel-collector:4317); unset: no export.
    #[arg(long = "otel-endpoint", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otel_endpoint: Option<String>,
}

/// Where the embedded defaults keep their files (the SQLite databases, the all-in-one's
/// development key), relative to the working directory.
pub const DATA_DIR: &str = "data";

/// A setting that must never appear in a log or a `{:?}` of the settings (a signing key, a
/// password): its `Debug` and `Display` print `[redacted]`; [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty or only whitespace (an unset variable in a manifest).
    pub fn is_blank(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The service's own database.
#[derive(clap::Args, Clone, Debug)]
pub struct DatabaseArgs {
    /// `postgres://…` or `sqlite://…`; unset: a SQLite file under ./data/.
    #[arg(long = "database-url", env = "DATABASE_URL")]
    pub database_url: Option<String>,
}

impl DatabaseArgs {
    /// The configured URL, or the embedded default `sqlite://data/<name>.db`.
    pub fn url_or_default(&self, name: &str) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{DATA_DIR}/{name}.db"))
    }
}

/// The message broker.
#[derive(clap::Args, Clone, Debug)]
pub struct BusArgs {
    /// RabbitMQ, e.g. amqp://guest:guest@127.0.0.1:5672/%2f.
    #[arg(long = "amqp-url", env = "AMQP_URL")]
    pub amqp_url: Option<String>,
    /// Seconds a busy consumer or outbox relay (given events within this long of its last
    /// batch) waits for more to take in the same batch ([`crate::bus::DEFAULT_BATCH_LINGER`]);
    /// 0 always takes what has arrived at once.
    #[arg(
        long = "event-batch-linger",
        env = "LIBRARY_EVENT_BATCH_LINGER",
        default_value = "0.01",
        value_parser = parse_seconds
    )]
    pub batch_linger: Duration,
}

/// How a server stops.
#[derive(clap::Args, Clone, Debug)]
pub struct ShutdownArgs {
    /// Seconds a server keeps serving after SIGTERM while already reporting itself not ready,
    /// so that load balancers stop sending to it before it stops listening.
    #[arg(
        long = "shutdown-delay",
        env = "LIBRARY_SHUTDOWN_DELAY",
        default_value = "0",
        value_parser = parse_seconds
    )]
    pub shutdown_delay: Duration,
}

/// Parses a number of seconds (`2`, `0.5`).
pub fn parse_seconds(value: &str) -> Result<Duration, String> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        .ok_or_else(|| "not a number of seconds".to_owned())
}

/// Parses `C` from the command line and the environment. A bad setting becomes one line that
/// names its environment variable (`Err(Refused::Bad(line))`); `--help` and `--version` come
/// back as `Err(Refused::Printed)` once clap printed them.
pub fn parse<C: clap::Parser>() -> Result<C, Refused> {
    C::try_parse().map_err(|error| refusal::<C>(&error))
}

/// Like [`parse`], from the given arguments (the all-in-one reads each service's settings
/// this way).
pub fn parse_from<C: clap::Parser>(args: &[&str]) -> Result<C, Refused> {
    C::try_parse_from(args).map_err(|error| refusal::<C>(&error))
}

/// Why settings gave no configuration.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `--help` or `--version`: printed, nothing to run.
    #[error("printed")]
    Printed,
    /// A bad or unknown setting, in one line that names it.
    #[error("{0}")]
    Bad(String),
}

fn refusal<C: clap::CommandFactory>(error: &clap::Error) -> Refused {
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            Refused::Printed
        }
        _ => Refused::Bad(describe(&C::command(), error)),
    }
}

/// One line for a clap error: the environment variable it is about (clap names a flag), the
/// value, and what is wrong with it; clap's own message is several lines of usage.
fn describe(command: &clap::Command, error: &clap::Error) -> String {
    let context = |kind| match error.get(kind) {
        Some(ContextValue::String(text)) => Some(text.clone()),
        _ => None,
    };
    let first_line = || {
        let rendered = error.render().to_string();
        let line = rendered.lines().next().unwrap_or_default();
        line.strip_prefix("error: ").unwrap_or(line).to_owned()
    };
    let Some(flag) = context(ContextKind::InvalidArg) else {
        return first_line();
    };
    // The flag as clap shows it: `--borrow-grpc-addr <GRPC_ADDR>`.
    let long = flag
        .split([' ', '='])
        .next()
        .unwrap_or_default()
        .trim_start_matches('-');
    let Some(setting) = command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))
        .and_then(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
    else {
        // An unknown flag, or one without a variable: clap's first line already names it.
        return first_line();
    };
    let Some(value) = context(ContextKind::InvalidValue) else {
        return format!("{setting}: {}", first_line());
    };
    let reason = match (error.kind(), error.get(ContextKind::ValidValue)) {
        (ErrorKind::InvalidValue, Some(ContextValue::Strings(valid))) => {
            format!("expected one of {}", valid.join(", "))
        }
        _ => std::error::Error::source(error).map_or_else(first_line, ToString::to_string),
    };
    format!("{setting}: `{value}` is not valid: {reason}")
}

/// Parses a listen address, naming the setting in the error.
pub fn parse_listen_addr(setting: &str, value: &str) -> Result<SocketAddr, String> {
    value
        .parse()
        .map_err(|_| format!("{setting}: `{value}` is not a host:port address"))
}

/// Checks that a required setting is present, naming it in the error.
pub fn required<'a>(setting: &str, value: &'a Option<String>) -> Result<&'a str, String> {
    match value.as_deref() {
        Some(v) if !v.trim().is_empty() => Ok(v),
        _ => Err(format!("{setting} is required")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser, Debug)]
    struct Settings {
        #[arg(long = "grpc-addr", env = "TEST_CONFIG_GRPC_ADDR", default_value = "0.0.0.0:1")]
        grpc_addr: SocketAddr,
        #[arg(long, env = "TEST_CONFIG_FORMAT", value_enum, default_value = "text")]
        format: LogFormat,
        #[command(flatten)]
        shutdown: ShutdownArgs,
    }

    fn refused(args: &[&str]) -> String {
        match parse_from::<Settings>(args) {
            Err(Refused::Bad(line)) => line,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_malformed_setting_is_one_line_naming_its_variable() {
        let line = refused(&["svc", "--grpc-addr", "nope"]);
        assert_eq!(
            line,
            "TEST_CONFIG_GRPC_ADDR: `nope` is not valid: invalid socket address syntax"
        );
        let line = refused(&["svc", "--format", "xml"]);
        assert_eq!(
            line,
            "TEST_CONFIG_FORMAT: `xml` is not valid: expected one of text, json"
        );
        let line = refused(&["svc", "--shutdown-delay", "soon"]);
        assert_eq!(
            line,
            "LIBRARY_SHUTDOWN_DELAY: `soon` is not valid: not a number of seconds"
        );
    }

    #[test]
    fn an_unknown_flag_is_one_line_too() {
        let line = refused(&["svc", "--bogus"]);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("--bogus"), "{line}");
    }

    #[test]
    fn the_shutdown_delay_is_in_seconds_and_zero_by_default() {
        let settings = parse_from::<Settings>(&["svc"]).expect("defaults");
        assert_eq!(settings.shutdown.shutdown_delay, Duration::ZERO);
        let settings = parse_from::<Settings>(&["svc", "--shutdown-delay", "2.5"]).expect("2.5");
        assert_eq!(settings.shutdown.shutdown_delay, Duration::from_millis(2500));
        assert!(parse_seconds("-1").is_err());
    }

    #[test]
    fn default_database_is_one_sqlite_file_per_service() {
        let args = DatabaseArgs { database_url: None };
        assert_eq!(args.url_or_default("book"), "sqlite://data/book.db");
    }

    #[test]
    fn a_secret_never_prints() {
        use clap::Parser;
        #[derive(clap::Parser, Debug)]
        struct WithSecret {
            #[arg(long)]
            key: Option<Secret>,
        }
        let settings = WithSecret::try_parse_from(["svc", "--key", "hunter2"]).expect("parsed");
        let key = settings.key.as_ref().expect("given");
        assert_eq!(key.expose(), "hunter2");
        let shown = format!("{settings:?} {key}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
        assert!(Secret::from("  ").is_blank());
    }

    #[test]
    fn a_bad_listen_address_names_the_setting() {
        let err = parse_listen_addr("BOOK_GRPC_ADDR", "nope").unwrap_err();
        assert!(err.contains("BOOK_GRPC_ADDR"));
    }

    #[test]
    fn an_empty_required_setting_is_missing() {
        assert!(required("AMQP_URL", &Some(" ".into())).is_err());
        assert!(required("AMQP_URL", &None).is_err());
        assert_eq!(required("AMQP_URL", &Some("amqp://x".into())), Ok("amqp://x"));
    }
}
