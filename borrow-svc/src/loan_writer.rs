//! Borrows that passed their checks are stored in batches: one transaction takes the readers'
//! allowances, inserts the loans and their `BookBorrowed` events for every borrow waiting, so
//! twenty concurrent borrows cost a few commits instead of twenty (a commit, and its WAL flush,
//! is what a borrow costs the database most).
//!
//! A batch holds at most one borrow per reader (a reader's next borrow waits for the next
//! batch), takes the readers' rows in one order, and answers each borrow exactly as a borrow
//! stored alone would: a reader over the limit is refused, a repeated idempotency key returns
//! the first loan. When a batch cannot decide (a key already used, a database error), it rolls
//! back and every borrow in it is stored alone, which is always right, only slower.
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use chrono::Utc;
use library_platform::bus::{EventEnvelope, Outbox};
use library_platform::database::{insert_together, is_unique_violation};
use library_proto::events::BookBorrowed;
use library_proto::time::to_timestamp;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, InsertStatement, OnConflict, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryTrait,
    TransactionTrait,
};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::audit::{AuditLog, Transition};
use crate::circulation::{CirculationError, Loan, new_id};
use crate::domain::{LoanPolicy, LoanStatus};
use crate::store::{loans, readers};

/// Borrows one transaction stores at most.
const MAX_BATCH: usize = 64;
/// Batches in flight at once: one is committing while the next is being written.
const PARALLEL_BATCHES: usize = 2;
/// Borrows waiting for a batch before callers wait to hand theirs over.
const QUEUE: usize = 1024;

/// A borrow that passed its checks (quantity, stock), to be stored ACTIVE on the copies
/// book-svc holds for it, or PENDING when it could not hold them.
#[derive(Clone, Debug)]
pub struct NewLoan {
    /// The loan's id, chosen before the hold that names it.
    pub id: String,
    pub user_id: String,
    pub book_id: String,
    pub quantity: i32,
    pub idempotency_key: Option<String>,
    pub stock_held: bool,
    /// The span of the request that made the borrow: its `BookBorrowed`, written by the
    /// batching task, continues that request's trace.
    pub cause: tracing::Span,
}

type Reply = oneshot::Sender<Result<Loan, CirculationError>>;

struct Job {
    loan: NewLoan,
    reply: Reply,
}

/// Stores borrows, batching those that arrive together.
#[derive(Clone)]
pub struct LoanWriter {
    jobs: mpsc::Sender<Job>,
}

impl LoanWriter {
    /// Starts the task that batches; it ends when the last `LoanWriter` is dropped, after
    /// storing what was handed over.
    pub fn start(db: DatabaseConnection, outbox: Outbox, policy: LoanPolicy, audit: AuditLog) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let store = Arc::new(LoanStore {
            db,
            outbox,
            policy,
            audit,
        });
        tokio::spawn(batch_jobs(store, queue));
        Self { jobs }
    }

    /// Stores `loan` (ACTIVE when its copies are held, PENDING when not) with its
    /// `BookBorrowed` event, or says why not.
    ///
    /// # Errors
    /// The reader's limit, or a database failure.
    pub async fn write(&self, loan: NewLoan) -> Result<Loan, CirculationError> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job { loan, reply }).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> CirculationError {
    CirculationError::Database(DbErr::Custom("the loan writer has stopped".into()))
}

/// Gathers what is waiting into batches of distinct readers and stores them, at most
/// `PARALLEL_BATCHES` at a time.
async fn batch_jobs(store: Arc<LoanStore>, mut queue: mpsc::Receiver<Job>) {
    let slots = Arc::new(Semaphore::new(PARALLEL_BATCHES));
    // Borrows of a reader already in the batch being gathered, for the next one.
    let mut held_back: VecDeque<Job> = VecDeque::new();
    let mut open = true;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::new();
        let mut readers = HashSet::new();
        let mut later = VecDeque::new();
        for job in held_back.drain(..) {
            if batch.len() < MAX_BATCH && readers.insert(job.loan.user_id.clone()) {
                batch.push(job);
            } else {
                later.push_back(job);
            }
        }
        held_back = later;
        if batch.is_empty() {
            match queue.recv().await {
                Some(job) => {
                    readers.insert(job.loan.user_id.clone());
                    batch.push(job);
                }
                None => open = false,
            }
        }
        while open && batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) if readers.insert(job.loan.user_id.clone()) => batch.push(job),
                Ok(job) => held_back.push_back(job),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => open = false,
            }
        }
        if batch.is_empty() {
            if !open && held_back.is_empty() {
                return;
            }
            continue;
        }
        let store = store.clone();
        tokio::spawn(async move {
            store.store(batch).await;
            drop(slot);
        });
    }
}

/// What storing a borrow needs.
struct LoanStore {
    db: DatabaseConnection,
    outbox: Outbox,
    policy: LoanPolicy,
    audit: AuditLog,
}

/// Why a batch stored nothing and each of its borrows is stored alone.
enum Undecided {
    /// A reader repeats an idempotency key: the single path returns the first loan.
    KeyUsed,
    Database(DbErr),
}

impl From<DbErr> for Undecided {
    fn from(e: DbErr) -> Self {
        Self::Database(e)
    }
}

impl LoanStore {
    async fn store(&self, mut batch: Vec<Job>) {
        // One order of row locks in every batch, so two batches in flight never deadlock.
        batch.sort_by(|a, b| a.loan.user_id.cmp(&b.loan.user_id));
        let (loans, replies): (Vec<NewLoan>, Vec<Reply>) = batch.into_iter().map(|job| (job.loan, job.reply)).unzip();
        match self.store_together(&loans).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(undecided) => {
                if let Undecided::Database(e) = &undecided {
                    tracing::warn!(error = %e, borrows = loans.len(), "batch of borrows failed; storing each alone");
                }
                let alone = loans.iter().zip(replies).map(|(loan, reply)| async move {
                    let _ = reply.send(self.store_alone(loan).await);
                });
                futures::future::join_all(alone).await;
            }
        }
    }

    /// Stores every borrow of `loans` (distinct readers, sorted) in one transaction, or nothing.
    async fn store_together(&self, loans: &[NewLoan]) -> Result<Vec<Result<Loan, CirculationError>>, Undecided> {
        if loans.iter().all(|l| l.idempotency_key.is_none())
            && let Some(stored) = self.store_all_within_limit(loans).await?
        {
            return Ok(stored.into_iter().map(Ok).collect());
        }
        self.store_checked(loans).await
    }

    /// The common case in one statement: the allowances, loans, events and audit of borrows
    /// whose readers all stay within the limit. When one would not, nothing is stored (`None`).
    async fn store_all_within_limit(&self, new: &[NewLoan]) -> Result<Option<Vec<Loan>>, Undecided> {
        let now = Utc::now();
        let due_at = self.policy.due_at(now);
        let stored: Vec<Loan> = new.iter().map(|n| new_loan(n, now, due_at)).collect();
        let mut inserts = self.inserts_of(new, &stored);
        inserts.push(allowances(new, self.policy.max_copies()));
        let txn = self.db.begin().await?;
        let allowed = insert_together(&txn, inserts).await?;
        if allowed.len() < new.len() {
            txn.rollback().await?;
            return Ok(None);
        }
        self.outbox.commit(txn).await?;
        log_accepted(&stored);
        Ok(Some(stored))
    }

    /// Takes the allowances first and stores the borrows that fit; answers the others with the
    /// limit, and gives up on a batch with a used idempotency key.
    async fn store_checked(&self, loans: &[NewLoan]) -> Result<Vec<Result<Loan, CirculationError>>, Undecided> {
        let max = self.policy.max_copies();
        let txn = self.db.begin().await?;
        let allowed = txn.query_all(&allowances(loans, max)).await?;
        let allowed: HashSet<String> = allowed
            .iter()
            .map(|row| row.try_get::<String>("", "user_id"))
            .collect::<Result<_, _>>()?;
        let keyed: Vec<&NewLoan> = loans.iter().filter(|l| l.idempotency_key.is_some()).collect();
        if !keyed.is_empty() && any_key_used(&txn, &keyed).await? {
            txn.rollback().await?;
            return Err(Undecided::KeyUsed);
        }
        let refused: Vec<&str> = loans
            .iter()
            .filter(|l| !allowed.contains(&l.user_id))
            .map(|l| l.user_id.as_str())
            .collect();
        let outstanding = outstanding_of(&txn, &refused).await?;

        let now = Utc::now();
        let due_at = self.policy.due_at(now);
        let outcomes: Vec<Result<Loan, CirculationError>> = loans
            .iter()
            .map(|new| {
                if allowed.contains(&new.user_id) {
                    Ok(new_loan(new, now, due_at))
                } else {
                    Err(CirculationError::LimitReached {
                        outstanding: outstanding.get(&new.user_id).copied().unwrap_or_default(),
                        max,
                    })
                }
            })
            .collect();
        let stored: Vec<Loan> = outcomes.iter().flatten().cloned().collect();
        if !stored.is_empty() {
            match insert_together(&txn, self.inserts_of(loans, &stored)).await {
                Ok(_) => {}
                // A twin keyed borrow in the other batch in flight committed first.
                Err(e) if is_unique_violation(&e) => {
                    txn.rollback().await?;
                    return Err(Undecided::KeyUsed);
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.outbox.commit(txn).await?;
        log_accepted(&stored);
        Ok(outcomes)
    }

    /// What storing `loans` (made from borrows of `new`) inserts: the loans, their
    /// `BookBorrowed` events, each in its borrow's trace, and their audit.
    fn inserts_of(&self, new: &[NewLoan], loans: &[Loan]) -> Vec<InsertStatement> {
        let models = loans.iter().cloned().map(loans::ActiveModel::from);
        let events = loans.iter().map(|loan| {
            let event = borrowed_event(loan);
            match new.iter().find(|borrow| borrow.id == loan.id) {
                Some(borrow) => EventEnvelope::caused_by(&event, &borrow.cause),
                None => EventEnvelope::of(&event),
            }
        });
        std::iter::once(loans::Entity::insert_many(models).into_query())
            .chain(Outbox::insert_of(events))
            .chain(self.audit.insert_of(loans.iter().flat_map(stored_transitions)))
            .collect()
    }

    /// Stores one borrow in a transaction of its own: the path every batch falls back to. A key
    /// already used (found before the insert, or by the insert's unique index when a twin
    /// committed first) is answered with the loan made with it.
    async fn store_alone(&self, new: &NewLoan) -> Result<Loan, CirculationError> {
        match self.store_together(std::slice::from_ref(new)).await {
            Ok(outcomes) => outcomes
                .into_iter()
                .next()
                .expect("store_together answers each borrow it is given"),
            Err(Undecided::KeyUsed) => {
                let key = new.idempotency_key.as_deref().unwrap_or_default();
                find_by_key(&self.db, &new.user_id, key).await?.ok_or_else(|| {
                    CirculationError::Database(DbErr::Custom("the loan of a used idempotency key is gone".into()))
                })
            }
            Err(Undecided::Database(e)) => Err(e.into()),
        }
    }
}

fn new_loan(new: &NewLoan, now: chrono::DateTime<Utc>, due_at: chrono::DateTime<Utc>) -> Loan {
    let status = if new.stock_held {
        LoanStatus::Active
    } else {
        LoanStatus::Pending
    };
    Loan {
        id: new.id.clone(),
        user_id: new.user_id.clone(),
        book_id: new.book_id.clone(),
        quantity: new.quantity,
        returned_quantity: 0,
        status: status.as_str().to_owned(),
        borrowed_at: now,
        due_at,
        late_fee: 0,
        cancel_reason: None,
        idempotency_key: new.idempotency_key.clone(),
        updated_at: now,
    }
}

/// A loan stored ACTIVE (on copies held for it) is borrowed and activated at once.
fn stored_transitions(loan: &Loan) -> Vec<Transition<'_>> {
    let borrowed = Transition {
        kind: "borrowed",
        loan_id: &loan.id,
        user_id: &loan.user_id,
        detail: json!({"book_id": loan.book_id, "quantity": loan.quantity}),
    };
    if loan.status != LoanStatus::Active.as_str() {
        return vec![borrowed];
    }
    let activated = Transition {
        kind: "activated",
        loan_id: &loan.id,
        user_id: &loan.user_id,
        detail: json!({"quantity": loan.quantity}),
    };
    vec![borrowed, activated]
}

fn borrowed_event(loan: &Loan) -> BookBorrowed {
    BookBorrowed {
        event_id: new_id(),
        occurred_at: Some(to_timestamp(loan.borrowed_at)),
        loan_id: loan.id.clone(),
        user_id: loan.user_id.clone(),
        book_id: loan.book_id.clone(),
        quantity: loan.quantity,
        due_at: Some(to_timestamp(loan.due_at)),
        stock_held: loan.status == LoanStatus::Active.as_str(),
    }
}

/// The reader's loan made with `key`, if any.
pub(crate) async fn find_by_key(conn: &impl ConnectionTrait, user_id: &str, key: &str) -> Result<Option<Loan>, DbErr> {
    loans::Entity::find()
        .filter(loans::Column::UserId.eq(user_id))
        .filter(loans::Column::IdempotencyKey.eq(key))
        .one(conn)
        .await
}

/// Whether any of these readers already has a loan made with the key given.
async fn any_key_used(txn: &DatabaseTransaction, keyed: &[&NewLoan]) -> Result<bool, DbErr> {
    let found = loans::Entity::find()
        .filter(loans::Column::UserId.is_in(keyed.iter().map(|l| l.user_id.as_str())))
        .filter(loans::Column::IdempotencyKey.is_in(keyed.iter().filter_map(|l| l.idempotency_key.as_deref())))
        .all(txn)
        .await?;
    Ok(found.iter().any(|loan| {
        keyed
            .iter()
            .any(|l| l.user_id == loan.user_id && l.idempotency_key == loan.idempotency_key)
    }))
}

/// Adds each borrow's quantity to its reader's outstanding copies (creating the reader) unless
/// that would pass `max`, returning (`user_id`) the readers whose borrow fits. One statement,
/// which also locks the readers' rows until the transaction ends (PostgreSQL locks a conflicting
/// row even when the update's condition refuses it), so one reader's borrows take turns; SQLite
/// has a single writer anyway. The readers must be distinct.
fn allowances(loans: &[NewLoan], max: i32) -> InsertStatement {
    let outstanding = || Expr::col((readers::Entity, readers::Column::Outstanding));
    let wanted = || Expr::col((Alias::new("excluded"), readers::Column::Outstanding));
    let mut upsert = Query::insert();
    upsert
        .into_table(readers::Entity)
        .columns([readers::Column::UserId, readers::Column::Outstanding]);
    for loan in loans {
        upsert.values_panic([loan.user_id.clone().into(), loan.quantity.into()]);
    }
    upsert
        .on_conflict(
            OnConflict::column(readers::Column::UserId)
                .value(readers::Column::Outstanding, outstanding().add(wanted()))
                .action_and_where(outstanding().add(wanted()).lte(max))
                .to_owned(),
        )
        .returning_col(readers::Column::UserId);
    upsert
}

fn log_accepted(loans: &[Loan]) {
    for loan in loans {
        tracing::info!(loan_id = %loan.id, user_id = %loan.user_id, book_id = %loan.book_id, quantity = loan.quantity, "loan accepted");
    }
}

/// The outstanding copies of these readers.
async fn outstanding_of(conn: &impl ConnectionTrait, user_ids: &[&str]) -> Result<HashMap<String, i32>, DbErr> {
    if user_ids.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(readers::Entity::find()
        .filter(readers::Column::UserId.is_in(user_ids.iter().copied()))
        .all(conn)
        .await?
        .into_iter()
        .map(|reader| (reader.user_id, reader.outstanding))
        .collect())
}
