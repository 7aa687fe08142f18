//! A producer (outbox + relay) and a consumer (an `applied` table written in the handler's
//! transaction) over a fresh database and fresh broker names per test.

use library_platform::bus::{BusNames, EventBus, Outbox, Relay, Subscriptions, bus_migrations};
use library_platform::{CancellationToken, TaskTracker, database, test_support};
use library_proto::events::StockChanged;
use sea_orm::sea_query::{ColumnDef, Query, Table};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, DeriveIden, TransactionTrait};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};

#[derive(DeriveIden)]
enum Applied {
    Table,
    EventId,
}

pub struct TestMigrator;

impl MigratorTrait for TestMigrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut migrations = bus_migrations();
        migrations.push(Box::new(CreateApplied));
        migrations
    }
}

struct CreateApplied;

impl MigrationName for CreateApplied {
    fn name(&self) -> &str {
        "m20261125_000001_create_applied"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for CreateApplied {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // No unique key on purpose: a double application must show as two rows.
        manager
            .create_table(
                Table::create()
                    .table(Applied::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Applied::EventId).string_len(64).not_null())
                    .to_owned(),
            )
            .await
    }
}

pub async fn postgres() -> DatabaseConnection {
    test_support::init_tracing();
    let url = test_support::fresh_postgres_database("bus").await;
    database::connect_and_migrate::<TestMigrator>(&url)
        .await
        .expect("migrate")
}

pub async fn sqlite() -> DatabaseConnection {
    test_support::init_tracing();
    let url = test_support::fresh_sqlite_url("bus");
    database::connect_and_migrate::<TestMigrator>(&url)
        .await
        .expect("migrate")
}

pub fn rabbit(names: &BusNames) -> EventBus {
    EventBus::rabbitmq(&test_support::amqp_url(), names.clone()).expect("bus")
}

pub fn event() -> StockChanged {
    StockChanged {
        event_id: uuid::Uuid::now_v7().to_string(),
        book_id: "b".into(),
        ..Default::default()
    }
}

/// Writes `count` events through the outbox, `per_txn` to a transaction.
pub async fn produce(db: &DatabaseConnection, outbox: &Outbox, count: usize, per_txn: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in 0..count.div_ceil(per_txn) {
        let txn = db.begin().await.expect("begin");
        for _ in 0..per_txn.min(count - chunk * per_txn) {
            let e = event();
            outbox.enqueue(&txn, &e).await.expect("enqueue");
            ids.push(e.event_id);
        }
        outbox.commit(txn).await.expect("commit");
    }
    ids
}

/// The consuming side: every application recorded in `applied`, in the consumer's transaction.
#[derive(Clone)]
pub struct Consumer {
    pub db: DatabaseConnection,
}

impl Consumer {
    pub fn new(db: DatabaseConnection) -> Self {
        Self { db }
    }

    pub fn subscriptions(&self) -> Subscriptions {
        Subscriptions::new("test-consumer", self.db.clone(), Outbox::default()).on::<StockChanged, _>(
            |event, _, txn| {
                Box::pin(async move {
                    let insert = Query::insert()
                        .into_table(Applied::Table)
                        .columns([Applied::EventId])
                        .values_panic([event.event_id.as_str().into()])
                        .to_owned();
                    txn.execute(&insert).await?;
                    Ok(())
                })
            },
        )
    }

    /// (rows in `applied`, distinct event ids among them).
    pub async fn applied(&self) -> (i64, i64) {
        let row = self
            .db
            .query_one_raw(sea_orm::Statement::from_string(
                self.db.get_database_backend(),
                "SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS d FROM applied",
            ))
            .await
            .expect("count")
            .expect("a row");
        (row.try_get("", "n").expect("n"), row.try_get("", "d").expect("d"))
    }

    /// Whether `event_id` has been applied.
    pub async fn has_applied(&self, event_id: &str) -> bool {
        let row = self
            .db
            .query_one_raw(sea_orm::Statement::from_sql_and_values(
                self.db.get_database_backend(),
                match self.db.get_database_backend() {
                    sea_orm::DbBackend::Postgres => "SELECT COUNT(*) AS n FROM applied WHERE event_id = $1",
                    _ => "SELECT COUNT(*) AS n FROM applied WHERE event_id = ?",
                },
                [event_id.into()],
            ))
            .await
            .expect("count")
            .expect("a row");
        row.try_get::<i64>("", "n").expect("n") > 0
    }
}

/// Rows still waiting in the outbox.
pub async fn outbox_rows(db: &DatabaseConnection) -> i64 {
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT COUNT(*) AS n FROM outbox_events",
        ))
        .await
        .expect("count")
        .expect("a row");
    row.try_get("", "n").expect("n")
}

/// A running relay and consumer; stopped on drop.
pub struct Running {
    pub shutdown: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn start(
    bus: &EventBus,
    producer_db: &DatabaseConnection,
    outbox: &Outbox,
    consumer: &Consumer,
    queue: &str,
) -> Running {
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    bus.consume(queue, consumer.subscriptions(), &tracker, shutdown.clone());
    tracker.spawn(Relay::new(producer_db.clone(), bus.clone(), outbox).run(shutdown.clone()));
    Running { shutdown }
}
