//! The transactional outbox: events are rows written in the same transaction as the change they
//! describe, so a change and its event commit or vanish together.
use std::sync::Arc;

use chrono::{DateTime, Utc};
use library_proto::DomainEvent;
use sea_orm::sea_query::{ColumnDef, Expr, Index, InsertStatement, IntoIden, Table};
use sea_orm::{ConnectionTrait, DatabaseTransaction, DbErr, DeriveIden, QueryResult};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager};
use tokio::sync::Notify;

use super::EventEnvelope;
use crate::database::insert_rows;
use crate::drain::sequence_key;

#[derive(DeriveIden)]
pub(super) enum OutboxEvents {
    Table,
    Id,
    EventId,
    EventType,
    RoutingKey,
    Payload,
    Traceparent,
    OccurredAt,
    Tracestate,
}

/// The columns that hold an [`EventEnvelope`], in the order of its fields; the dead-letter
/// table has them too, under the same names.
pub(super) const ENVELOPE_COLUMNS: [OutboxEvents; 7] = [
    OutboxEvents::EventId,
    OutboxEvents::EventType,
    OutboxEvents::RoutingKey,
    OutboxEvents::Payload,
    OutboxEvents::Traceparent,
    OutboxEvents::OccurredAt,
    OutboxEvents::Tracestate,
];

/// How the tables were first created with the [`ENVELOPE_COLUMNS`] but `tracestate`, which
/// [`AddTracestate`] adds.
pub(super) fn envelope_column_defs() -> [ColumnDef; 6] {
    [
        ColumnDef::new(OutboxEvents::EventId)
            .string_len(64)
            .not_null()
            .to_owned(),
        ColumnDef::new(OutboxEvents::EventType)
            .string_len(64)
            .not_null()
            .to_owned(),
        ColumnDef::new(OutboxEvents::RoutingKey)
            .string_len(128)
            .not_null()
            .to_owned(),
        ColumnDef::new(OutboxEvents::Payload).blob().not_null().to_owned(),
        ColumnDef::new(OutboxEvents::Traceparent)
            .string_len(64)
            .null()
            .to_owned(),
        ColumnDef::new(OutboxEvents::OccurredAt)
            .timestamp_with_time_zone()
            .not_null()
            .to_owned(),
    ]
}

/// `envelope`'s values for the [`ENVELOPE_COLUMNS`].
pub(super) fn envelope_values(envelope: EventEnvelope) -> [Expr; 7] {
    [
        envelope.event_id.into(),
        envelope.event_type.into(),
        envelope.routing_key.into(),
        envelope.payload.into(),
        envelope.traceparent.into(),
        envelope.occurred_at.into(),
        envelope.tracestate.into(),
    ]
}

/// The envelope in a row that has the [`ENVELOPE_COLUMNS`].
pub(super) fn envelope_of(row: &QueryResult) -> Result<EventEnvelope, DbErr> {
    Ok(EventEnvelope {
        event_id: row.try_get("", "event_id")?,
        event_type: row.try_get("", "event_type")?,
        routing_key: row.try_get("", "routing_key")?,
        payload: row.try_get("", "payload")?,
        traceparent: row.try_get("", "traceparent")?,
        tracestate: row.try_get("", "tracestate")?,
        occurred_at: row.try_get::<DateTime<Utc>>("", "occurred_at")?,
    })
}

#[derive(DeriveIden)]
pub(super) enum ProcessedEvents {
    Table,
    Consumer,
    EventId,
    ProcessedAt,
}

/// Writes events into the outbox and wakes the relay once they are committed.
#[derive(Clone, Default)]
pub struct Outbox {
    /// Rung after each commit so the relay publishes at once instead of at its next poll.
    wake: Arc<Notify>,
}

impl Outbox {
    /// Adds `event` to the outbox inside the caller's transaction.
    ///
    /// # Errors
    /// The insert failed; the caller's transaction must not commit.
    pub async fn enqueue<E: DomainEvent>(&self, txn: &impl ConnectionTrait, event: &E) -> Result<(), DbErr> {
        self.enqueue_all(txn, [EventEnvelope::of(event)]).await
    }

    /// Adds events (made with [`EventEnvelope::of`]) to the outbox inside the caller's
    /// transaction, in one statement; they are published in this order.
    ///
    /// # Errors
    /// The insert failed; the caller's transaction must not commit.
    pub async fn enqueue_all(
        &self,
        txn: &impl ConnectionTrait,
        envelopes: impl IntoIterator<Item = EventEnvelope>,
    ) -> Result<(), DbErr> {
        if let Some(insert) = Self::insert_of(envelopes) {
            txn.execute(&insert).await?;
        }
        Ok(())
    }

    /// The insert that adds `envelopes` to the outbox, in this order (none for no events): for
    /// a transaction that runs it with its own inserts in one round trip
    /// ([`crate::database::insert_together`]).
    pub fn insert_of(envelopes: impl IntoIterator<Item = EventEnvelope>) -> Option<InsertStatement> {
        insert_rows(
            OutboxEvents::Table,
            ENVELOPE_COLUMNS,
            envelopes.into_iter().map(envelope_values),
        )
    }

    /// Commits `txn` and wakes the relay.
    ///
    /// # Errors
    /// The commit failed: neither the change nor its events happened.
    pub async fn commit(&self, txn: DatabaseTransaction) -> Result<(), DbErr> {
        txn.commit().await?;
        self.wake.notify_one();
        Ok(())
    }

    pub(super) fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}

/// The migrations every service that publishes or consumes starts its list with: the outbox,
/// the processed-events table and the in-process transport's dead letters.
pub fn bus_migrations() -> Vec<Box<dyn MigrationTrait>> {
    vec![
        Box::new(CreateEventTables),
        Box::new(super::dead_letters::CreateDeadLetters),
        Box::new(AddTracestate),
    ]
}

/// Adds the W3C `tracestate` (vendor trace state, up to 512 characters) beside `traceparent`
/// in the outbox and the dead letters.
struct AddTracestate;

impl MigrationName for AddTracestate {
    fn name(&self) -> &str {
        "m20261220_000000_add_tracestate"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for AddTracestate {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [OutboxEvents::Table.into_iden(), super::dead_letters::table()] {
            manager
                .alter_table(
                    Table::alter()
                        .table(table)
                        .add_column(ColumnDef::new(OutboxEvents::Tracestate).text().null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

struct CreateEventTables;

impl MigrationName for CreateEventTables {
    fn name(&self) -> &str {
        "m20261125_000000_create_event_tables"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for CreateEventTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut outbox = Table::create();
        outbox
            .table(OutboxEvents::Table)
            .if_not_exists()
            .col(sequence_key(OutboxEvents::Id));
        let [mut event_id, others @ ..] = envelope_column_defs();
        outbox.col(event_id.unique_key());
        for column in others {
            outbox.col(column);
        }
        manager.create_table(outbox).await?;
        manager
            .create_table(
                Table::create()
                    .table(ProcessedEvents::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(ProcessedEvents::Consumer).string_len(64).not_null())
                    .col(ColumnDef::new(ProcessedEvents::EventId).string_len(64).not_null())
                    .col(
                        ColumnDef::new(ProcessedEvents::ProcessedAt)
                            .timestamp_with_time_zone()
                            .not_null()
                            .default(Expr::current_timestamp()),
                    )
                    .primary_key(
                        Index::create()
                            .col(ProcessedEvents::Consumer)
                            .col(ProcessedEvents::EventId),
                    )
                    .to_owned(),
            )
            .await
    }
}
