//! The outbox relay: publishes committed outbox rows in batches and deletes them only after the
//! transport confirmed them. A crash in between publishes them again; consumers de-duplicate.
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType, Order, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, TransactionTrait};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::outbox::{ENVELOPE_COLUMNS, OutboxEvents};
use super::{BusError, EventBus, EventEnvelope, Outbox};

/// How long the relay sleeps when nothing woke it: the bound on how late a row written by a
/// crashed process (or another replica's missed wake-up) is published.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Relay passes at once on PostgreSQL.
const WORKERS: usize = 2;
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the relay also prunes the processed-events table, and what it keeps.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const PROCESSED_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What one pass of the relay did.
#[derive(Debug, PartialEq, Eq)]
pub enum Relayed {
    /// This many events were published and removed from the outbox.
    Published(usize),
    /// The outbox was empty.
    Empty,
}

/// Why a pass failed; the rows stay in the outbox for the next pass.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("reading or clearing the outbox failed: {0}")]
    Database(#[from] DbErr),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Publishes one service's outbox.
pub struct Relay {
    db: DatabaseConnection,
    bus: EventBus,
    wake: Arc<Notify>,
    batch_size: u64,
}

impl Relay {
    /// A relay for `outbox`'s rows in `db`.
    pub fn new(db: DatabaseConnection, bus: EventBus, outbox: &Outbox) -> Self {
        Self {
            db,
            bus,
            wake: outbox.waker(),
            batch_size: 256,
        }
    }

    /// One pass: publish up to one batch.
    ///
    /// On PostgreSQL the rows are locked with `FOR UPDATE SKIP LOCKED` inside a transaction held
    /// until they are deleted, so several replicas never publish the same row at once. SQLite has
    /// a single process and a single writer: the rows are read, published, then deleted.
    ///
    /// # Errors
    /// The database or the transport failed; nothing was removed.
    pub async fn relay_once(&self) -> Result<Relayed, RelayError> {
        if self.db.get_database_backend() == DbBackend::Postgres {
            let txn = self.db.begin().await?;
            // The commit only deletes rows already published: if a database crash loses it, the
            // rows are published again and consumers skip them by event id. So it need not wait
            // for the disk, which takes a flush off the path of every event.
            txn.execute_unprepared("SET LOCAL synchronous_commit = off").await?;
            let published = self.publish_batch(&txn, true).await?;
            txn.commit().await?;
            Ok(published)
        } else {
            self.publish_batch(&self.db, false).await
        }
    }

    async fn publish_batch(&self, conn: &impl ConnectionTrait, lock: bool) -> Result<Relayed, RelayError> {
        let mut select = Query::select();
        select
            .column(OutboxEvents::Id)
            .columns(ENVELOPE_COLUMNS)
            .from(OutboxEvents::Table)
            .order_by(OutboxEvents::Id, Order::Asc)
            .limit(self.batch_size);
        if lock {
            select.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        let rows = conn.query_all(&select).await?;
        if rows.is_empty() {
            return Ok(Relayed::Empty);
        }
        let mut ids = Vec::with_capacity(rows.len());
        let mut batch = Vec::with_capacity(rows.len());
        for row in rows {
            ids.push(row.try_get::<i64>("", "id")?);
            batch.push(EventEnvelope {
                event_id: row.try_get("", "event_id")?,
                event_type: row.try_get("", "event_type")?,
                routing_key: row.try_get("", "routing_key")?,
                payload: row.try_get("", "payload")?,
                traceparent: row.try_get("", "traceparent")?,
                occurred_at: row.try_get::<DateTime<Utc>>("", "occurred_at")?,
            });
        }
        self.bus.publish(&batch).await?;
        let delete = Query::delete()
            .from_table(OutboxEvents::Table)
            .and_where(Expr::col(OutboxEvents::Id).is_in(ids))
            .to_owned();
        conn.execute(&delete).await?;
        tracing::debug!(count = batch.len(), "published an outbox batch");
        Ok(Relayed::Published(batch.len()))
    }

    /// Relays until `shutdown`, then makes one last pass so events committed by requests that
    /// finished during the drain still leave.
    ///
    /// On PostgreSQL [`WORKERS`] passes run at once, each over rows the others have not locked:
    /// a pass waits for the broker to write its batch to disk, and the next batch need not wait
    /// for that. Consumers are indifferent to the order between batches (they already are
    /// between replicas). On SQLite one pass runs at a time: it has no row locks to share work.
    pub async fn run(self, shutdown: CancellationToken) {
        let workers = if self.db.get_database_backend() == DbBackend::Postgres {
            WORKERS
        } else {
            1
        };
        futures::future::join_all((0..workers).map(|worker| self.work(worker == 0, &shutdown))).await;
        let last = tokio::time::timeout(Duration::from_secs(5), self.relay_once()).await;
        if let Ok(Err(error)) = last {
            tracing::warn!(%error, "last outbox pass failed; the events leave at the next start");
        }
    }

    /// One relaying loop until `shutdown`; `prunes` also forgets old processed events now and
    /// then.
    async fn work(&self, prunes: bool, shutdown: &CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut pruned_at: Option<tokio::time::Instant> = None;
        loop {
            if prunes && pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                pruned_at = Some(tokio::time::Instant::now());
                match super::prune_processed_events(&self.db, PROCESSED_RETENTION).await {
                    Ok(pruned) => tracing::debug!(pruned, "pruned processed events"),
                    Err(error) => tracing::warn!(%error, "cannot prune processed events"),
                }
            }
            match self.relay_once().await {
                Ok(Relayed::Published(_)) => {
                    backoff = Duration::from_millis(100);
                    continue;
                }
                Ok(Relayed::Empty) => {
                    backoff = Duration::from_millis(100);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = self.wake.notified() => {},
                        _ = tokio::time::sleep(POLL_INTERVAL) => {},
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "outbox relay pass failed; events stay in the outbox");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {},
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
