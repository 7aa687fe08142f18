//! `HoldStock` takes copies off the shelf on every borrow's request path, and most borrows at
//! any moment want the same few books: one transaction per hold would make each wait for the
//! row lock and the commit of the one before. Holds that arrive together are made together: a
//! few writers each take whatever holds are waiting. On PostgreSQL a batch whose books have the
//! copies it wants is one statement (take the copies, insert the holds); the rest, and every
//! batch on SQLite, one transaction that locks the books and serves first come first served.
use std::time::Duration;

use chrono::Utc;
use library_platform::database::is_unique_violation;
use sea_orm::{DatabaseConnection, DbBackend, DbErr, TransactionTrait};

use crate::batches::{BatchHandler, Batches};
use crate::catalog::{HoldOutcome, Want, hold_for_loans, hold_where_all_fit};

/// Batches made at once: one commits while the next gathers its holds.
const WRITERS: usize = 2;
/// Holds one batch takes at most.
const MAX_BATCH: usize = 128;

/// Holds copies for borrows, in batches.
#[derive(Clone)]
pub struct StockHolds {
    batches: Batches<MakeHolds>,
}

impl StockHolds {
    pub fn new(db: DatabaseConnection, ttl: Duration) -> Self {
        Self {
            batches: Batches::new(MakeHolds { db, ttl }, WRITERS, MAX_BATCH),
        }
    }

    /// How long a hold waits for its loan's `BookBorrowed` before borrow-svc is shown it to settle.
    pub fn ttl(&self) -> Duration {
        self.batches.handler().ttl
    }

    /// Holds the copies `want` asks for, or says why not.
    ///
    /// # Errors
    /// The database failed: nothing is held.
    pub async fn hold(&self, want: Want) -> Result<HoldOutcome, DbErr> {
        self.batches.call(want).await
    }
}

#[derive(Clone)]
struct MakeHolds {
    db: DatabaseConnection,
    ttl: Duration,
}

impl BatchHandler for MakeHolds {
    type Request = Want;
    type Answer = HoldOutcome;

    async fn handle(&self, wants: &[Want]) -> Result<Vec<HoldOutcome>, DbErr> {
        self.hold_together(wants).await
    }
}

impl MakeHolds {
    async fn hold_together(&self, wants: &[Want]) -> Result<Vec<HoldOutcome>, DbErr> {
        let held_until = Utc::now() + self.ttl;
        if self.db.get_database_backend() != DbBackend::Postgres {
            return self.hold_in_transaction(wants, held_until).await;
        }
        let taken = match hold_where_all_fit(&self.db, wants, held_until).await {
            Ok(taken) => taken,
            // A repeated hold: the transaction answers it.
            Err(error) if is_unique_violation(&error) => return self.hold_in_transaction(wants, held_until).await,
            Err(error) => return Err(error),
        };
        let rest: Vec<Want> = wants
            .iter()
            .filter(|want| !taken.contains_key(&want.book_id))
            .cloned()
            .collect();
        let mut rest = if rest.is_empty() {
            Vec::new()
        } else {
            self.hold_in_transaction(&rest, held_until).await?
        }
        .into_iter();
        Ok(wants
            .iter()
            .map(|want| match taken.get(&want.book_id) {
                Some(&available) => HoldOutcome::Held { available },
                None => rest.next().unwrap_or(HoldOutcome::UnknownBook),
            })
            .collect())
    }

    /// Any batch of holds: the books' rows locked, each served first come first served.
    async fn hold_in_transaction(
        &self,
        wants: &[Want],
        held_until: chrono::DateTime<Utc>,
    ) -> Result<Vec<HoldOutcome>, DbErr> {
        let txn = self.db.begin().await?;
        let held = hold_for_loans(&txn, wants, held_until).await?;
        txn.commit().await?;
        Ok(held)
    }
}
