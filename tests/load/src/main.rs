//! library-load: load generator and benchmark for the library's services.
//!
//! Each subcommand sends load for a bounded time (or a bounded count of events) to the address
//! it is given — by default the local services — and prints what it measured: requests, errors
//! by kind, throughput, latency percentiles, and the lag of asynchronous effects where relevant;
//! as text, or as one JSON object with `--json`.
//!
//! # Layout
//! - `driver`: the timed concurrent loop every request scenario shares.
//! - `probe`: pollers that measure how long an asynchronous effect takes to become visible.
//! - `report`: histograms, error counts and the printed report.
//! - `grpc`, `graphql`, `events`: the scenarios.
mod driver;
mod events;
mod graphql;
mod grpc;
mod probe;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "library-load",
    version,
    about = "Load generator and benchmark for the library's services",
    long_about = "Load generator and benchmark for the library's services.\n\n\
        Every run is bounded (--duration, or --count for events) and stops by itself. Each \
        prints requests, errors by kind, throughput and latency p50/p90/p99/max; --json prints \
        one JSON object instead."
)]
struct Cli {
    /// Print the report as one JSON object.
    #[arg(long, global = true)]
    json: bool,
    /// Also write the report as one JSON object to this file.
    #[arg(long, global = true, value_name = "PATH")]
    json_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// book-svc CheckStock(book, 1) on a fresh book, from concurrent tasks over a few channels.
    #[command(mut_arg("concurrency", |a| a.default_value("32")))]
    CheckStock(grpc::CheckStockArgs),
    /// borrow-svc Borrow (one copy, a new reader each time), and the lag until the loan is ACTIVE.
    Borrow(grpc::BorrowArgs),
    /// GraphQL `books(first: 20)` without a token.
    GraphqlBooks(graphql::BooksArgs),
    /// GraphQL `borrowBook` as new readers, and the lag until `myDashboard` counts the copy.
    GraphqlBorrow(graphql::BorrowArgs),
    /// The seed's `siege -c20 -t40S`: each virtual user alternates `borrowBook` and `myLoans`.
    #[command(mut_arg("duration", |a| a.default_value("40s")))]
    Hpa(graphql::HpaArgs),
    /// Event platform throughput: outbox -> relay -> RabbitMQ -> idempotent consumer.
    Events(events::EventsArgs),
}

async fn run(command: &Command) -> anyhow::Result<report::Report> {
    match command {
        Command::CheckStock(args) => grpc::check_stock(args).await,
        Command::Borrow(args) => grpc::borrow(args).await,
        Command::GraphqlBooks(args) => graphql::books(args).await,
        Command::GraphqlBorrow(args) => graphql::borrow(args).await,
        Command::Hpa(args) => graphql::hpa(args).await,
        Command::Events(args) => events::events(args).await,
    }
}

/// The report as printed, after writing it to `json_file` if asked.
fn present(report: &report::Report, json: bool, json_file: Option<&std::path::Path>) -> anyhow::Result<String> {
    if let Some(path) = json_file {
        std::fs::write(path, report.render(true)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    report.render(json)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let printed = match run(&cli.command).await {
        Ok(report) => present(&report, cli.json, cli.json_file.as_deref()),
        Err(error) => Err(error),
    };
    match printed {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("library-load: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn subcommands_have_their_own_defaults() {
        let cli = Cli::parse_from(["library-load", "check-stock"]);
        let Command::CheckStock(args) = cli.command else {
            panic!("check-stock")
        };
        assert_eq!(args.load.concurrency, 32);
        let cli = Cli::parse_from(["library-load", "hpa", "--jwt-secret", "s"]);
        let Command::Hpa(args) = cli.command else { panic!("hpa") };
        assert_eq!(args.load.duration, std::time::Duration::from_secs(40));
        assert_eq!(args.load.concurrency, 20);
        let cli = Cli::parse_from(["library-load", "borrow", "--json"]);
        assert!(cli.json);
    }
}
