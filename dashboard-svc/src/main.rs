use std::process::ExitCode;

use library_platform::telemetry::ServiceLevel;

#[global_allocator]
static GLOBAL: library_platform::Allocator = library_platform::Allocator;

#[tokio::main]
async fn main() -> ExitCode {
    let config: dashboard_svc::Config = match library_platform::service::settings("dashboard-svc") {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    let (telemetry, log_level) = (config.telemetry.clone(), config.log_level.clone());
    let level = ServiceLevel {
        setting: "DASHBOARD_LOG_LEVEL",
        target: "dashboard_svc",
        level: log_level.as_deref(),
    };
    library_platform::service::run_main("dashboard-svc", &telemetry, &[level], |shutdown| {
        dashboard_svc::run(config, shutdown)
    })
    .await
}
