use std::process::ExitCode;

use library_platform::telemetry::ServiceLevel;

#[global_allocator]
static GLOBAL: library_platform::Allocator = library_platform::Allocator;

#[tokio::main]
async fn main() -> ExitCode {
    let config: borrow_svc::Config = match library_platform::service::settings("borrow-svc") {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    let (telemetry, log_level) = (config.telemetry.clone(), config.log_level.clone());
    let level = ServiceLevel {
        setting: "BORROW_LOG_LEVEL",
        target: "borrow_svc",
        level: log_level.as_deref(),
    };
    library_platform::service::run_main("borrow-svc", &telemetry, &[level], |shutdown| {
        borrow_svc::run(config, shutdown)
    })
    .await
}
