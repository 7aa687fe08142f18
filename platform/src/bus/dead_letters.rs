//! The in-process transport's dead-letter queue: a table in the consuming service's own database.
//!
//! The in-process publish returns once every consumer is done with a message, and the relay then
//! deletes its outbox row; a message the consumer gave up on must therefore be stored somewhere
//! that outlives the process before the consumer says it is done, or a restart would lose it.
//! RabbitMQ keeps its dead letters in the `.dlq` queues instead.
use chrono::{DateTime, Utc};
use sea_orm::sea_query::{ColumnDef, DynIden, Expr, Index, IntoIden, OnConflict, Order, Query, Table};
use sea_orm::{ConnectionTrait, DbErr, DeriveIden};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager};

use super::EventEnvelope;
use super::outbox::{ENVELOPE_COLUMNS, OutboxEvents, envelope_column_defs, envelope_of, envelope_values};
use crate::drain::sequence_key;

/// A message a consumer gave up on, with why.
#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    /// The consumer's queue, e.g. `book-svc.saga`.
    pub queue: String,
    pub envelope: EventEnvelope,
    pub error: String,
    pub dead_lettered_at: DateTime<Utc>,
}

/// The table: an id, the queue, the envelope's columns (named as the outbox's), the error and
/// when.
#[derive(DeriveIden)]
enum DeadLetters {
    Table,
    Id,
    Queue,
    Error,
    DeadLetteredAt,
}

/// The table's name, for the migrations that change it.
pub(super) fn table() -> DynIden {
    DeadLetters::Table.into_iden()
}

fn columns() -> Vec<DynIden> {
    std::iter::once(DeadLetters::Queue.into_iden())
        .chain(ENVELOPE_COLUMNS.map(IntoIden::into_iden))
        .chain([DeadLetters::Error.into_iden(), DeadLetters::DeadLetteredAt.into_iden()])
        .collect()
}

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
        .columns(columns())
        .values_panic(
            std::iter::once(queue.into())
                .chain(envelope_values(envelope.clone()))
                .chain([error.into(), Utc::now().into()]),
        )
        .on_conflict(
            OnConflict::columns([DeadLetters::Queue.into_iden(), OutboxEvents::EventId.into_iden()])
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
        .columns(columns())
        .from(DeadLetters::Table)
        .order_by(DeadLetters::Id, Order::Asc)
        .to_owned();
    db.query_all(&select)
        .await?
        .iter()
        .map(|row| {
            Ok(DeadLetter {
                queue: row.try_get("", "queue")?,
                envelope: envelope_of(row)?,
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
        let mut table = Table::create();
        table
            .table(DeadLetters::Table)
            .if_not_exists()
            .col(sequence_key(DeadLetters::Id))
            .col(ColumnDef::new(DeadLetters::Queue).string_len(128).not_null());
        for column in envelope_column_defs() {
            table.col(column);
        }
        table
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
                    .col(OutboxEvents::EventId),
            );
        manager.create_table(table).await
    }
}
