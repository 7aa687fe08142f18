//! A dashboard-svc on port 0 over a fresh PostgreSQL database and fresh broker names.
use clap::Parser;
use library_platform::bus::{EventEnvelope, Subscriptions};
use library_platform::test_support::{fresh_bus_names, fresh_postgres_database, init_tracing, system_bus};
use library_platform::{CancellationToken, TaskTracker};
use library_proto::dashboard::dashboard_service_client::DashboardServiceClient;
use tonic::transport::Channel;

pub struct App {
    /// What the projection consumer applies: tests deliver events through it by hand.
    pub projection: Subscriptions,
    pub port: u16,
    shutdown: CancellationToken,
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl App {
    pub async fn client(&self) -> DashboardServiceClient<Channel> {
        DashboardServiceClient::connect(format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("reachable")
    }
}

pub async fn spawn_app() -> App {
    init_tracing();
    let url = fresh_postgres_database("dashboard").await;
    let config = dashboard_svc::Config::try_parse_from([
        "dashboard-svc",
        "--dashboard-grpc-addr",
        "127.0.0.1:0",
        "--database-url",
        &url,
    ])
    .expect("config");
    let bus = system_bus(&fresh_bus_names());
    let shutdown = CancellationToken::new();
    let app = dashboard_svc::Application::build(&config, bus, shutdown.clone())
        .await
        .expect("builds");
    let (projection, port) = (dashboard_svc::subscriptions(app.dashboards()), app.port());
    TaskTracker::new().spawn(async move { app.run_until_stopped().await.expect("runs") });
    App {
        projection,
        port,
        shutdown,
    }
}

impl App {
    /// Delivers `event` to the projection, as the bus would.
    pub async fn deliver<E: library_proto::DomainEvent>(&self, event: &E) {
        self.projection.apply(&EventEnvelope::of(event)).await.expect("applied");
    }
}

pub fn id() -> String {
    uuid::Uuid::now_v7().to_string()
}
