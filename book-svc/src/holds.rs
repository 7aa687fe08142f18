//! `HoldStock` takes copies off the shelf on every borrow's request path, and most borrows at
//! any moment want the same few books: one transaction per hold would make each wait for the
//! row lock and the commit of the one before. Holds that arrive together are made together: a
//! few writers each take whatever holds are waiting. On PostgreSQL a batch whose books have the
//! copies it wants is one statement (take the copies, insert the holds); the rest, and every
//! batch on SQLite, one transaction that locks the books and serves first come first served.
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::Utc;
use library_platform::database::is_unique_violation;
use sea_orm::{DatabaseConnection, DbBackend, DbErr, TransactionTrait};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::catalog::{HoldOutcome, Want, hold_for_loans, hold_where_all_fit};

/// Transactions that may run at once: one commits while the next gathers its holds.
const WRITERS: usize = 2;
/// Holds one transaction takes at most.
const MAX_BATCH: usize = 128;

type Answer = Result<HoldOutcome, Arc<DbErr>>;

struct Request {
    want: Want,
    reply: oneshot::Sender<Answer>,
}

/// Holds copies for borrows, in shared transactions.
#[derive(Clone)]
pub struct StockHolds {
    db: DatabaseConnection,
    ttl: Duration,
    /// Made on first use, when a runtime is sure to be there; the writers stop when the last
    /// clone is dropped.
    queue: Arc<OnceLock<mpsc::Sender<Request>>>,
}

impl StockHolds {
    pub fn new(db: DatabaseConnection, ttl: Duration) -> Self {
        Self {
            db,
            ttl,
            queue: Arc::default(),
        }
    }

    /// How long a hold keeps its copies unless its loan's `BookBorrowed` confirms it.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Holds the copies `want` asks for, or says why not.
    ///
    /// # Errors
    /// The transaction failed: nothing is held.
    pub async fn hold(&self, want: Want) -> Result<HoldOutcome, DbErr> {
        let (reply, answer) = oneshot::channel();
        let stopped = || DbErr::Custom("the stock holders stopped".into());
        self.queue()
            .send(Request { want, reply })
            .await
            .map_err(|_| stopped())?;
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(|shared| DbErr::Custom(shared.to_string()))
    }

    fn queue(&self) -> &mpsc::Sender<Request> {
        self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(MAX_BATCH * WRITERS);
            let receiver = Arc::new(Mutex::new(receiver));
            for _ in 0..WRITERS {
                tokio::spawn(hold_batches(self.clone(), receiver.clone()));
            }
            sender
        })
    }

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

/// One writer: takes every waiting hold (up to `MAX_BATCH`), makes them in one transaction,
/// again until the queue closes. A batch that fails is retried one hold at a time, so that one
/// bad hold fails alone.
async fn hold_batches(holds: StockHolds, queue: Arc<Mutex<mpsc::Receiver<Request>>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut queue = queue.lock().await;
            if queue.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
        }
        let wants: Vec<Want> = batch.iter().map(|request| request.want.clone()).collect();
        match holds.hold_together(&wants).await {
            Ok(held) => {
                for (request, held) in batch.drain(..).zip(held) {
                    let _ = request.reply.send(Ok(held));
                }
            }
            Err(error) if batch.len() > 1 => {
                tracing::warn!(%error, holds = batch.len(), "a batch of holds failed; holding each alone");
                for request in batch.drain(..) {
                    let alone = holds
                        .hold_together(std::slice::from_ref(&request.want))
                        .await
                        .and_then(|held| {
                            held.into_iter()
                                .next()
                                .ok_or_else(|| DbErr::Custom("a hold went unanswered".into()))
                        });
                    let _ = request.reply.send(alone.map_err(Arc::new));
                }
            }
            Err(error) => {
                let error = Arc::new(error);
                for request in batch.drain(..) {
                    let _ = request.reply.send(Err(error.clone()));
                }
            }
        }
    }
}
