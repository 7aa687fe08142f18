//! A book-svc on port 0 over a fresh PostgreSQL database and fresh broker names.
use clap::Parser;
use library_platform::bus::{EventEnvelope, Subscriptions};
use library_platform::test_support::{fresh_bus_names, fresh_postgres_database, init_tracing, system_bus};
use library_platform::{CancellationToken, TaskTracker};
use library_proto::book::book_service_client::BookServiceClient;
use tonic::transport::Channel;

pub struct App {
    /// What the saga consumer applies: tests deliver events through it by hand.
    pub saga: Subscriptions,
    pub port: u16,
    /// Where `/metrics` is served (every test's book-svc serves it on a port of its own).
    pub metrics_port: u16,
    shutdown: CancellationToken,
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl App {
    pub async fn client(&self) -> BookServiceClient<Channel> {
        BookServiceClient::connect(format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("book-svc reachable")
    }
}

pub async fn spawn_app() -> App {
    spawn(system_bus(&fresh_bus_names()), &[]).await
}

/// A book-svc on `bus` (e.g. an in-process bus a test listens on).
pub async fn spawn_app_on(bus: library_platform::bus::EventBus) -> App {
    spawn(bus, &[]).await
}

/// A book-svc with more flags, e.g. `["--stock-hold-ttl", "0"]`.
pub async fn spawn_app_with(extra: &[&str]) -> App {
    spawn(system_bus(&fresh_bus_names()), extra).await
}

async fn spawn(bus: library_platform::bus::EventBus, extra: &[&str]) -> App {
    init_tracing();
    let url = fresh_postgres_database("book").await;
    let mut args = vec![
        "book-svc",
        "--book-grpc-addr",
        "127.0.0.1:0",
        "--metrics-addr",
        "127.0.0.1:0",
        "--database-url",
        &url,
    ];
    args.extend_from_slice(extra);
    let config = book_svc::Config::try_parse_from(args).expect("config");
    let shutdown = CancellationToken::new();
    let app = book_svc::Application::build(&config, bus, shutdown.clone())
        .await
        .expect("book-svc builds");
    let (saga, port) = (app.subscriptions(), app.port());
    let metrics_port = app.metrics_port().expect("METRICS_ADDR was given");
    TaskTracker::new().spawn(async move { app.run_until_stopped().await.expect("book-svc runs") });
    App {
        saga,
        port,
        metrics_port,
        shutdown,
    }
}

impl App {
    /// The body of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        library_platform::test_support::scrape_metrics(self.metrics_port).await
    }

    /// Delivers `event` to the saga consumer, as the bus would.
    pub async fn deliver<E: library_proto::DomainEvent>(&self, event: &E) -> Result<(), String> {
        self.saga.apply(&EventEnvelope::of(event)).await
    }
}
