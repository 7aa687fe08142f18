//! Settings every service shares. Each binary flattens these into its own `clap` parser, so
//! every setting is both an environment variable (12-factor) and a flag, and `--help` lists them.
use std::net::SocketAddr;

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
            .unwrap_or_else(|| format!("sqlite://data/{name}.db"))
    }
}

/// The message broker.
#[derive(clap::Args, Clone, Debug)]
pub struct BusArgs {
    /// RabbitMQ, e.g. amqp://guest:guest@127.0.0.1:5672/%2f.
    #[arg(long = "amqp-url", env = "AMQP_URL")]
    pub amqp_url: Option<String>,
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

    #[test]
    fn default_database_is_one_sqlite_file_per_service() {
        let args = DatabaseArgs { database_url: None };
        assert_eq!(args.url_or_default("book"), "sqlite://data/book.db");
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
