use std::process::ExitCode;

use library_platform::telemetry::ServiceLevel;

#[global_allocator]
static GLOBAL: library_platform::Allocator = library_platform::Allocator;

#[tokio::main]
async fn main() -> ExitCode {
    let config: graphql_gateway::Config = match library_platform::service::settings("graphql-gateway") {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    if let Some(graphql_gateway::Command::Token(args)) = &config.command {
        return graphql_gateway::print_token(graphql_gateway::token(&config, args));
    }
    let (telemetry, log_level) = (config.telemetry.clone(), config.log_level.clone());
    let level = ServiceLevel {
        setting: "GATEWAY_LOG_LEVEL",
        target: "graphql_gateway",
        level: log_level.as_deref(),
    };
    library_platform::service::run_main("graphql-gateway", &telemetry, &[level], |shutdown| {
        graphql_gateway::run(config, shutdown)
    })
    .await
}
