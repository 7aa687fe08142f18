//! Draining a table of committed work in id order: rows are taken, handed to something outside
//! the database (the broker, a file) and deleted only once it took them. A crash in between
//! hands them over again, so whatever receives them must tolerate a repeat (the rows' ids tell).
//! The outbox relay and borrow-svc's audit writer are both drains.
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::sea_query::{
    ColumnDef, DeleteStatement, DynIden, Expr, ExprTrait, IntoIden, LockBehavior, LockType, Order, Query,
    SelectStatement,
};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, QueryResult, TransactionTrait};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;

/// How long a drain sleeps when nothing woke it: the bound on how late a row written by a
/// crashed process (or another replica's missed wake-up) is handed over.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a stage (a drain, a consumer) that became free at `free_since` and has just been
/// given work waits for more before it starts: `linger` when the work came within `linger`
/// (the stage is busy, more is coming), nothing after a quiet spell.
pub fn linger_if_busy(free_since: tokio::time::Instant, linger: Duration) -> Duration {
    if free_since.elapsed() < linger {
        linger
    } else {
        Duration::ZERO
    }
}

/// How long the last pass after shutdown may take.
const LAST_PASS: Duration = Duration::from_secs(5);

/// How a migration defines `name`, the integer key that numbers a table's rows in the order they
/// were written: what a [`TableDrain`] drains by, and what other append-only tables read by.
pub fn sequence_key(name: impl IntoIden) -> ColumnDef {
    ColumnDef::new(name)
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .to_owned()
}

/// One table drained in batches of its oldest rows.
pub struct TableDrain {
    table: DynIden,
    id: DynIden,
    columns: Vec<DynIden>,
    batch_size: u64,
}

impl TableDrain {
    /// Drains `table`, ordered by its integer primary key `id`, reading `columns` (the id is
    /// always read too), at most `batch_size` rows a pass.
    pub fn new<C: IntoIden>(
        table: impl IntoIden,
        id: impl IntoIden,
        columns: impl IntoIterator<Item = C>,
        batch_size: u64,
    ) -> Self {
        let id = id.into_iden();
        let columns = std::iter::once(id.clone())
            .chain(columns.into_iter().map(IntoIden::into_iden))
            .collect();
        Self {
            table: table.into_iden(),
            id,
            columns,
            batch_size,
        }
    }

    /// The most rows one pass takes.
    pub fn batch_size(&self) -> u64 {
        self.batch_size
    }

    /// One pass: hands up to one batch of the oldest rows, in id order, to `hand_over`, and
    /// deletes them once it succeeded ([`TableDrain::take`], then [`Taken::done`]); returns how
    /// many it handed over.
    ///
    /// # Errors
    /// The database failed, or `hand_over` did: nothing was removed.
    pub async fn once<E, F, Fut>(&self, db: &DatabaseConnection, hand_over: F) -> Result<usize, E>
    where
        E: From<DbErr>,
        F: FnOnce(Vec<QueryResult>) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        let Some(mut taken) = self.take(db).await? else {
            return Ok(0);
        };
        let count = taken.rows.len();
        hand_over(std::mem::take(&mut taken.rows)).await?;
        taken.done().await?;
        Ok(count)
    }

    /// Takes up to one batch of the oldest rows, in id order (none: the table is empty); they
    /// are removed only by [`Taken::done`], once handed over.
    ///
    /// On PostgreSQL this opens a transaction that deletes the oldest rows not locked by another
    /// pass (`FOR UPDATE SKIP LOCKED`, so passes of this or another replica never take the same
    /// row at once, and the next pass may take the next rows while these are handed over);
    /// `done` commits it, and dropping the [`Taken`] rolls the delete back. SQLite has a single
    /// process and a single writer: the rows are read, and `done` deletes them.
    ///
    /// # Errors
    /// The database failed; nothing was taken.
    pub async fn take(&self, db: &DatabaseConnection) -> Result<Option<Taken>, DbErr> {
        if db.get_database_backend() != DbBackend::Postgres {
            let select = self
                .oldest_ids()
                .columns(self.columns.iter().skip(1).cloned())
                .to_owned();
            let rows = db.query_all(&select).await?;
            if rows.is_empty() {
                return Ok(None);
            }
            let ids = rows.iter().map(|row| self.id_of(row)).collect::<Result<Vec<_>, _>>()?;
            let delete = Query::delete()
                .from_table(self.table.clone())
                .and_where(Expr::col(self.id.clone()).is_in(ids))
                .to_owned();
            return Ok(Some(Taken {
                rows,
                removal: Removal::Delete(db.clone(), Box::new(delete)),
            }));
        }
        let txn = db.begin().await?;
        // The commit only deletes rows already handed over: if a database crash loses it, they
        // are handed over again, which the receiver tolerates anyway. So it need not wait for the
        // disk, which takes a flush off the path of every row.
        txn.execute_unprepared("SET LOCAL synchronous_commit = off").await?;
        let rows = txn.query_all(&self.take_oldest()).await?;
        if rows.is_empty() {
            txn.commit().await?;
            return Ok(None);
        }
        // RETURNING follows no order; the table's is the ids'.
        let mut by_id = rows
            .into_iter()
            .map(|row| Ok((self.id_of(&row)?, row)))
            .collect::<Result<Vec<_>, DbErr>>()?;
        by_id.sort_unstable_by_key(|(id, _)| *id);
        Ok(Some(Taken {
            rows: by_id.into_iter().map(|(_, row)| row).collect(),
            removal: Removal::Commit(txn),
        }))
    }

    /// What a pass runs on PostgreSQL: deletes the oldest batch of rows that no other pass has
    /// locked, returning them.
    pub fn take_oldest(&self) -> DeleteStatement {
        let mut oldest = self.oldest_ids();
        oldest.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        // `= ANY(ARRAY(…))`, not `IN (…)`: the ids are taken first and the rows deleted through
        // the primary key. With `IN`, the planner may join against a scan of the whole table,
        // whose pages of deleted rows (a drained table is all churn) grow until a vacuum, so every
        // pass would cost more than the last.
        Query::delete()
            .from_table(self.table.clone())
            .and_where(Expr::cust_with_exprs(
                "$1 = ANY(ARRAY($2))",
                [
                    Expr::col(self.id.clone()),
                    Expr::SubQuery(None, Box::new(oldest.into())),
                ],
            ))
            .returning(Query::returning().columns(self.columns.clone()))
            .to_owned()
    }

    /// The ids of the oldest batch of rows.
    fn oldest_ids(&self) -> SelectStatement {
        Query::select()
            .column(self.id.clone())
            .from(self.table.clone())
            .order_by(self.id.clone(), Order::Asc)
            .limit(self.batch_size)
            .to_owned()
    }

    fn id_of(&self, row: &QueryResult) -> Result<i64, DbErr> {
        row.try_get("", &self.id.to_string())
    }
}

/// A batch [`TableDrain::take`] took: its rows, in id order, and how they are removed.
pub struct Taken {
    rows: Vec<QueryResult>,
    removal: Removal,
}

enum Removal {
    /// PostgreSQL: the transaction that deleted (and so locks) the rows.
    Commit(sea_orm::DatabaseTransaction),
    /// SQLite: the delete to run once they are handed over.
    Delete(DatabaseConnection, Box<DeleteStatement>),
}

impl Taken {
    /// The rows taken, oldest first.
    pub fn rows(&self) -> &[QueryResult] {
        &self.rows
    }

    /// True when the rows stay locked until [`Taken::done`] (PostgreSQL): the next pass may
    /// take the next rows meanwhile. On SQLite it would take these again.
    pub fn locks_rows(&self) -> bool {
        matches!(self.removal, Removal::Commit(_))
    }

    /// Removes the rows: they have been handed over.
    ///
    /// # Errors
    /// The database failed; the rows stay and are handed over again.
    pub async fn done(self) -> Result<(), DbErr> {
        match self.removal {
            Removal::Commit(txn) => txn.commit().await,
            Removal::Delete(db, delete) => db.execute(delete.as_ref()).await.map(|_| ()),
        }
    }
}

/// Runs `pass` (a [`TableDrain::once`] and what goes with it) until `shutdown`: again at once
/// after a full batch of `batch_size` rows, else when `wake` is rung by a commit, or after
/// [`POLL_INTERVAL`]; with a growing back-off after a failure. A commit that comes within
/// `linger` of the last pass finds the drain busy: the pass waits `linger` more, so that the
/// commits of that while leave in the same batch; after a quiet spell it runs at once. After
/// shutdown one last pass takes what requests that finished during the drain committed.
pub async fn run_passes<E, F, Fut>(
    what: &'static str,
    batch_size: u64,
    linger: Duration,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    mut pass: F,
) where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<usize, E>>,
{
    let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
    // When the last pass that handed rows over ended (a pass over nothing is no work).
    let mut free_since = tokio::time::Instant::now();
    loop {
        let outcome = pass().await;
        if matches!(outcome, Ok(count) if count > 0) {
            free_since = tokio::time::Instant::now();
        }
        match outcome {
            // A full batch: more may be waiting.
            Ok(count) if count as u64 >= batch_size => {
                backoff.reset();
                continue;
            }
            // Every row committed before this pass began is handed over (or locked by another
            // replica's pass); a commit since then has left a wake-up, so waiting loses nothing
            // and spares a pass over an empty table.
            Ok(_) => {
                backoff.reset();
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = wake.notified() => {
                        let wait = linger_if_busy(free_since, linger);
                        if !wait.is_zero() {
                            tokio::select! {
                                _ = shutdown.cancelled() => break,
                                _ = tokio::time::sleep(wait) => {},
                            }
                        }
                    },
                    _ = tokio::time::sleep(POLL_INTERVAL) => {},
                }
            }
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, drain = what, retry_in_ms = delay.as_millis() as u64, "a drain pass failed; its rows stay for the next");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {},
                }
            }
        }
    }
    match tokio::time::timeout(LAST_PASS, pass()).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, drain = what, "the last pass failed; its rows leave at the next start")
        }
        Err(_) => tracing::warn!(
            drain = what,
            "the last pass timed out; its rows leave at the next start"
        ),
    }
}
