use std::process::ExitCode;

use library_platform::telemetry::ServiceLevel;

#[global_allocator]
static GLOBAL: library_platform::Allocator = library_platform::Allocator;

#[tokio::main]
async fn main() -> ExitCode {
    let config: library::Config = match library_platform::service::settings("library") {
        Ok(config) => config,
        Err(exit) => return exit,
    };
    if let Some(graphql_gateway::Command::Token(args)) = &config.command {
        return graphql_gateway::print_token(library::token(&config, args));
    }
    let var = |name: &str| std::env::var(name).ok();
    let (book, borrow, dashboard, gateway) = (
        var("BOOK_LOG_LEVEL"),
        var("BORROW_LOG_LEVEL"),
        var("DASHBOARD_LOG_LEVEL"),
        var("GATEWAY_LOG_LEVEL"),
    );
    let levels = [
        ServiceLevel {
            setting: "BOOK_LOG_LEVEL",
            target: "book_svc",
            level: book.as_deref(),
        },
        ServiceLevel {
            setting: "BORROW_LOG_LEVEL",
            target: "borrow_svc",
            level: borrow.as_deref(),
        },
        ServiceLevel {
            setting: "DASHBOARD_LOG_LEVEL",
            target: "dashboard_svc",
            level: dashboard.as_deref(),
        },
        ServiceLevel {
            setting: "GATEWAY_LOG_LEVEL",
            target: "graphql_gateway",
            level: gateway.as_deref(),
        },
    ];
    let telemetry = config.telemetry.clone();
    library_platform::service::run_main("library", &telemetry, &levels, |shutdown| {
        library::run(config, shutdown)
    })
    .await
}
