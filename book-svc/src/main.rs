use std::process::ExitCode;

use library_platform::telemetry::ServiceLevel;

#[global_allocator]
static GLOBAL: library_platform::Allocator = library_platform::Allocator;

#[tokio::main]
async fn main() -> ExitCode {
    let config: book_svc::Config = match library_platform::service::settings("book-svc") {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    let (telemetry, log_level) = (config.telemetry.clone(), config.log_level.clone());
    let level = ServiceLevel {
        setting: "BOOK_LOG_LEVEL",
        target: "book_svc",
        level: log_level.as_deref(),
    };
    library_platform::service::run_main("book-svc", &telemetry, &[level], |shutdown| {
        book_svc::run(config, shutdown)
    })
    .await
}
