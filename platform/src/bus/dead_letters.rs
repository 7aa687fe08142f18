//! The in-process transport's dead-letter queue: a table in the consuming service's own database.
//!
//! The in-process publish returns once every consumer is done with a message, and the relay then
//! deletes its outbox row; a message the consumer gave up on must therefore be stored somewhere
//! that outlives the process before the consumer says it is done, or a restart would lose it.
//! RabbitMQ keeps its dead letters in the `.dlq` queues instead.
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{ColumnDef, Expr, Index, OnConflict, Order, Query, Table};
use sea_orm::{ConnectionTrait, DbErr, DeriveIden};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager};

use super::EventEnvelope;

/// A message a consumer gave up on, with why.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    /// The consumer's queue, e.g. `book-svc.saga`.
    pub queue: String,
    pub envelope: EventEnvelope,
    pub error: String,
    pub dead_lettered_at: DateTime<Utc>,
}

#[derive(DeriveIden)]
enum DeadLetters {
    Table,
    Id,
    Queue,
    EventId,
    EventType,
    RoutingKey,
    Payload,
    Traceparent,
    OccurredAt,
    Error,
    DeadLetteredAt,
}

const COLUMNS: [DeadLetters; 9] = [
    DeadLetters::Queue,
    DeadLetters::EventId,
    DeadLetters::EventType,
    DeadLetters::RoutingKey,
    DeadLetters::Payload,
    DeadLetters::Traceparent,
    DeadLetters::OccurredAt,
    DeadLetters::Error,
    DeadLetters::DeadLetteredAt,
];

/// Keeps `envelope`, which `queue`'s consumer gave up on with `error`. A message dead-lettered
/// again (its outbox row was published again after a crash) is kept once.
///
/// # Errors
/// The insert failed: the message is not kept yet.
pub(super) async fn keep(
    db: &impl ConnectionTrait,
    queue: &str,
    envelope: &EventEnvelope,
    error: &str,
) -> Result<(), DbErr> {
    let insert = Query::insert()
        .into_table(DeadLetters::Table)
        .columns(COLUMNS)
        .values_panic([
            queue.into(),
            envelope.event_id.as_str().into(),
            envelope.event_type.as_str().into(),
            envelope.routing_key.as_str().into(),
            envelope.payload.clone().into(),
            envelope.traceparent.clone().into(),
            envelope.occurred_at.into(),
            error.into(),
            Utc::now().into(),
        ])
        .on_conflict(
            OnConflict::columns([DeadLetters::Queue, DeadLetters::EventId])
                .do_nothing()
                .to_owned(),
        )
        .to_owned();
    db.execute(&insert).await?;
    Ok(())
}

/// The messages the consumers of the in-process transport gave up on and kept in `db` (their
/// service's database), oldest first. RabbitMQ keeps its own in the `.dlq` queues.
///
/// # Errors
/// The query failed.
pub async fn dead_letters(db: &impl ConnectionTrait) -> Result<Vec<DeadLetter>, DbErr> {
    let select = Query::select()
        .columns(COLUMNS)
        .from(DeadLetters::Table)
        .order_by(DeadLetters::Id, Order::Asc)
        .to_owned();
    db.query_all(&select)
        .await?
        .iter()
        .map(|row| {
            Ok(DeadLetter {
                queue: row.try_get("", "queue")?,
                envelope: EventEnvelope {
                    event_id: row.try_get("", "event_id")?,
                    event_type: row.try_get("", "event_type")?,
                    routing_key: row.try_get("", "routing_key")?,
                    payload: row.try_get("", "payload")?,
                    traceparent: row.try_get("", "traceparent")?,
                    occurred_at: row.try_get("", "occurred_at")?,
                },
                error: row.try_get("", "error")?,
                dead_lettered_at: row.try_get("", "dead_lettered_at")?,
            })
        })
        .collect()
}

pub(super) struct CreateDeadLetters;

impl MigrationName for CreateDeadLetters {
    fn name(&self) -> &str {
        "m20261126_000000_create_dead_letters"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for CreateDeadLetters {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DeadLetters::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(DeadLetters::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(DeadLetters::Queue).string_len(128).not_null())
                    .col(ColumnDef::new(DeadLetters::EventId).string_len(64).not_null())
                    .col(ColumnDef::new(DeadLetters::EventType).string_len(64).not_null())
                    .col(ColumnDef::new(DeadLetters::RoutingKey).string_len(128).not_null())
                    .col(ColumnDef::new(DeadLetters::Payload).blob().not_null())
                    .col(ColumnDef::new(DeadLetters::Traceparent).string_len(64).null())
                    .col(
                        ColumnDef::new(DeadLetters::OccurredAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(ColumnDef::new(DeadLetters::Error).text().not_null())
                    .col(
                        ColumnDef::new(DeadLetters::DeadLetteredAt)
                            .timestamp_with_time_zone()
                            .not_null()
                            .default(Expr::current_timestamp()),
                    )
                    .index(
                        Index::create()
                            .name("dead_letters_queue_event_id")
                            .unique()
                            .col(DeadLetters::Queue)
                            .col(DeadLetters::EventId),
                    )
                    .to_owned(),
            )
            .await
    }
}
