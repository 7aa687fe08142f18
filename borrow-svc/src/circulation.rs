//! The circulation desk's use cases. Each change is one transaction that also writes its events
//! to the outbox; the reader's row is locked by every borrow, so per-reader limits and
//! idempotency keys hold under concurrent requests.
use library_platform::text::{copies, is_are};
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use library_platform::bus::{HandleError, Outbox, Subscriptions};
use library_platform::paging::{self, PagingError};
use library_proto::book::Hold;
use library_proto::events::{BookReturned, LateFeeCharged, LoanCanceled, OutOfStock, StockReserved};
use library_proto::time::to_timestamp;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr,
    EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use serde_json::json;
use uuid::Uuid;

use crate::audit::{AuditLog, Transition};
use crate::domain::{LoanPolicy, LoanStatus, ReturnError, copies_to_return};
use crate::loan_writer::{LoanWriter, NewLoan, find_by_key};
use crate::stock::{StockGuard, StockHold};
use crate::store::{loan_returns, loans, readers};

pub use loans::Model as Loan;

/// Why a circulation request did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CirculationError {
    #[error("quantity: must be between 1 and {max}")]
    InvalidQuantity { max: i32 },
    #[error(transparent)]
    Paging(#[from] PagingError),
    #[error("only {} {} available", copies(*.available), is_are(*.available))]
    OutOfStock { available: i32 },
    #[error("book not found")]
    BookNotFound,
    #[error("a reader may have at most {} outstanding; this reader has {}", copies(*.max), copies(*.outstanding))]
    LimitReached { outstanding: i32, max: i32 },
    #[error("loan not found")]
    LoanNotFound,
    #[error("this loan belongs to another reader")]
    NotYourLoan,
    #[error(transparent)]
    Return(#[from] ReturnError),
    #[error("only a PENDING or ACTIVE loan has a due date to change; this one is {}", .0.as_str())]
    Closed(LoanStatus),
    #[error("database failure: {0}")]
    Database(#[from] DbErr),
}

/// Why expired holds could not be settled; they are again at the next pass.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("book-svc did not answer: {0}")]
    BookService(#[from] tonic::Status),
    #[error("database failure: {0}")]
    Database(#[from] DbErr),
}

/// A return as it happened.
pub struct ReturnOutcome {
    pub loan: Loan,
    pub quantity: i32,
    pub days_late: i64,
    pub late_fee: i64,
}

/// One page of a reader's loans.
pub struct LoanPage {
    pub loans: Vec<Loan>,
    pub next_page_token: String,
    pub total_count: u64,
}

/// The status of a stored loan.
pub fn status_of(loan: &Loan) -> LoanStatus {
    loan.status.parse().unwrap_or(LoanStatus::Pending)
}

pub(crate) fn new_id() -> String {
    Uuid::now_v7().to_string()
}

/// Loans, returns and fees.
#[derive(Clone)]
pub struct Circulation {
    db: DatabaseConnection,
    outbox: Outbox,
    policy: LoanPolicy,
    stock: StockGuard,
    audit: AuditLog,
    writer: LoanWriter,
}

impl Circulation {
    pub fn new(db: DatabaseConnection, outbox: Outbox, policy: LoanPolicy, stock: StockGuard, audit: AuditLog) -> Self {
        let writer = LoanWriter::start(db.clone(), outbox.clone(), policy.clone(), audit.clone());
        Self {
            db,
            outbox,
            policy,
            stock,
            audit,
            writer,
        }
    }

    /// An empty set of subscriptions applying events to the circulation database.
    pub(crate) fn subscriptions(&self, consumer: &str) -> Subscriptions {
        Subscriptions::new(consumer, self.db.clone(), self.outbox.clone())
    }

    /// Borrows `requested` copies of `book_id` for `user_id`.
    ///
    /// With an idempotency key, a repeat by the same reader returns the first loan. book-svc
    /// holds the copies first: the loan is stored ACTIVE on them, and too little stock is
    /// refused at once; when book-svc cannot answer, the loan is accepted as PENDING and the
    /// saga decides.
    ///
    /// # Errors
    /// A quantity out of range, too little stock, an unknown book, the reader's limit, or a
    /// database failure.
    pub async fn borrow(
        &self,
        user_id: &str,
        book_id: &str,
        requested: i32,
        idempotency_key: Option<String>,
    ) -> Result<Loan, CirculationError> {
        let max = self.policy.max_copies();
        let quantity = self
            .policy
            .quantity(requested)
            .ok_or(CirculationError::InvalidQuantity { max })?
            .get();
        if let Some(key) = &idempotency_key
            && let Some(loan) = find_by_key(&self.db, user_id, key).await?
        {
            return Ok(loan);
        }
        let loan_id = new_id();
        let stock_held = match self.stock.hold(&loan_id, user_id, book_id, quantity).await {
            StockHold::Held => true,
            StockHold::Unavailable => false,
            StockHold::Insufficient { available } => {
                return Err(CirculationError::OutOfStock { available });
            }
            StockHold::UnknownBook => return Err(CirculationError::BookNotFound),
        };
        let stored = self
            .writer
            .write(NewLoan {
                id: loan_id.clone(),
                user_id: user_id.to_owned(),
                book_id: book_id.to_owned(),
                quantity,
                idempotency_key,
                stock_held,
                cause: tracing::Span::current(),
            })
            .await;
        // Refused, or answered with the loan a repeated key made first: this loan will never
        // be stored, so its hold goes back now. After a database failure it may have been
        // stored: its BookBorrowed confirms the hold, or the hold expires.
        let never_stored = match &stored {
            Ok(loan) => loan.id != loan_id,
            Err(error) => !matches!(error, CirculationError::Database(_)),
        };
        if stock_held && never_stored {
            self.stock.release_in_background(loan_id);
        }
        stored
    }

    /// Settles up to `limit` holds book-svc still shows unconfirmed after their lifetime, and
    /// says how many it looked at. A hold whose loan is PENDING or ACTIVE is confirmed (its
    /// `BookBorrowed` is on its way: the broker may be down); one whose loan is closed, or was
    /// never stored, goes back on the shelf. A loan never stored gets a CANCELED loan under its
    /// id first, so that a borrow still storing it fails on the id instead of being stored
    /// without its copies.
    ///
    /// # Errors
    /// book-svc did not answer, or a database failure.
    pub async fn settle_expired_holds(&self, limit: i32) -> Result<usize, SettleError> {
        let holds = self.stock.expired_holds(limit).await?;
        if holds.is_empty() {
            return Ok(0);
        }
        let statuses: HashMap<String, String> = loans::Entity::find()
            .select_only()
            .columns([loans::Column::Id, loans::Column::Status])
            .filter(loans::Column::Id.is_in(holds.iter().map(|hold| hold.loan_id.as_str())))
            .into_tuple::<(String, String)>()
            .all(&self.db)
            .await?
            .into_iter()
            .collect();
        let mut confirmed = Vec::new();
        for hold in &holds {
            let outcome = match statuses.get(&hold.loan_id) {
                Some(status) if matches!(status.parse(), Ok(LoanStatus::Pending | LoanStatus::Active)) => {
                    confirmed.push(hold.loan_id.clone());
                    continue;
                }
                Some(_) => "released",
                None if self.cancel_unstored(hold).await? => "never_stored",
                // Stored since the list was read: settled at the next pass.
                None => continue,
            };
            self.stock.release(&hold.loan_id).await?;
            tracing::info!(loan_id = %hold.loan_id, "an expired hold went back on the shelf");
            metrics::counter!("stock_holds_settled_total", "outcome" => outcome).increment(1);
        }
        let count = confirmed.len() as u64;
        self.stock.confirm(confirmed).await?;
        metrics::counter!("stock_holds_settled_total", "outcome" => "confirmed").increment(count);
        Ok(holds.len())
    }

    /// Stores a CANCELED loan under the id of a hold whose loan was never stored; `false` when a
    /// loan has that id after all.
    async fn cancel_unstored(&self, hold: &Hold) -> Result<bool, DbErr> {
        let now = Utc::now();
        let reason = "the borrow stopped before its loan was stored; nothing was lent";
        let canceled = loans::ActiveModel {
            id: Set(hold.loan_id.clone()),
            user_id: Set(hold.user_id.clone()),
            book_id: Set(hold.book_id.clone()),
            quantity: Set(hold.quantity),
            returned_quantity: Set(0),
            status: Set(LoanStatus::Canceled.as_str().to_owned()),
            borrowed_at: Set(now),
            due_at: Set(now),
            late_fee: Set(0),
            cancel_reason: Set(Some(reason.to_owned())),
            idempotency_key: Set(None),
            updated_at: Set(now),
        };
        let txn = self.db.begin().await?;
        let inserted = loans::Entity::insert(canceled)
            .on_conflict(OnConflict::column(loans::Column::Id).do_nothing().to_owned())
            .exec_without_returning(&txn)
            .await?;
        if inserted == 0 {
            txn.rollback().await?;
            return Ok(false);
        }
        let transition = Transition {
            kind: "canceled",
            loan_id: &hold.loan_id,
            user_id: &hold.user_id,
            detail: json!({"reason": reason}),
        };
        self.audit.record(&txn, [transition]).await?;
        txn.commit().await?;
        tracing::warn!(loan_id = %hold.loan_id, user_id = %hold.user_id, "a borrow stopped before its loan was stored; canceled");
        Ok(true)
    }

    /// Returns `requested` copies (all outstanding when `None`) of `loan_id` for `user_id`,
    /// charging the late fee of this return.
    ///
    /// # Errors
    /// Unknown loan, another reader's loan, a loan not ACTIVE, more than outstanding, or a
    /// database failure.
    pub async fn return_loan(
        &self,
        user_id: &str,
        loan_id: &str,
        requested: Option<i32>,
    ) -> Result<ReturnOutcome, CirculationError> {
        let txn = self.db.begin().await?;
        let loan = lock_loan(&txn, loan_id).await?.ok_or(CirculationError::LoanNotFound)?;
        if loan.user_id != user_id {
            return Err(CirculationError::NotYourLoan);
        }
        let quantity = copies_to_return(status_of(&loan), loan.quantity, loan.returned_quantity, requested)?;
        let now = Utc::now();
        let days_late = self.policy.days_late(loan.due_at, now);
        let fee = self.policy.late_fee_for(days_late);
        let closes = loan.returned_quantity + quantity == loan.quantity;
        let mut update = loans::Entity::update_many()
            .col_expr(
                loans::Column::ReturnedQuantity,
                Expr::col(loans::Column::ReturnedQuantity).add(quantity),
            )
            .col_expr(loans::Column::LateFee, Expr::col(loans::Column::LateFee).add(fee))
            .col_expr(loans::Column::UpdatedAt, Expr::val(now))
            .filter(loans::Column::Id.eq(loan_id))
            .filter(loans::Column::Status.eq(LoanStatus::Active.as_str()))
            .filter(
                Expr::col(loans::Column::ReturnedQuantity)
                    .add(quantity)
                    .lte(Expr::col(loans::Column::Quantity)),
            );
        if closes {
            update = update.col_expr(loans::Column::Status, Expr::val(LoanStatus::Returned.as_str()));
        }
        if update.exec(&txn).await?.rows_affected == 0 {
            // The lock makes this unreachable on PostgreSQL; the condition is the last word anyway.
            return Err(ReturnError::ExceedsOutstanding {
                outstanding: loan.quantity - loan.returned_quantity,
            }
            .into());
        }
        add_outstanding(&txn, user_id, -quantity).await?;
        loan_returns::ActiveModel {
            id: Set(new_id()),
            loan_id: Set(loan_id.to_owned()),
            quantity: Set(quantity),
            days_late: Set(i32::try_from(days_late).unwrap_or(i32::MAX)),
            late_fee: Set(fee),
            returned_at: Set(now),
        }
        .insert(&txn)
        .await?;
        let returned = BookReturned {
            event_id: new_id(),
            occurred_at: Some(to_timestamp(now)),
            loan_id: loan.id.clone(),
            user_id: loan.user_id.clone(),
            book_id: loan.book_id.clone(),
            quantity,
            days_late: i32::try_from(days_late).unwrap_or(i32::MAX),
            late_fee: fee,
            loan_closed: closes,
        };
        self.outbox.enqueue(&txn, &returned).await?;
        if fee > 0 {
            let charged = LateFeeCharged {
                event_id: new_id(),
                occurred_at: Some(to_timestamp(now)),
                loan_id: loan.id.clone(),
                user_id: loan.user_id.clone(),
                book_id: loan.book_id.clone(),
                days_late: returned.days_late,
                amount: fee,
            };
            self.outbox.enqueue(&txn, &charged).await?;
        }
        let transition = Transition {
            kind: "returned",
            loan_id,
            user_id,
            detail: json!({"quantity": quantity, "days_late": days_late, "late_fee": fee}),
        };
        self.audit.record(&txn, [transition]).await?;
        let loan = loans::Entity::find_by_id(loan_id)
            .one(&txn)
            .await?
            .ok_or(CirculationError::LoanNotFound)?;
        self.outbox.commit(txn).await?;
        tracing::info!(%loan_id, quantity, days_late, fee, "copies returned");
        Ok(ReturnOutcome {
            loan,
            quantity,
            days_late,
            late_fee: fee,
        })
    }

    /// One loan; with `user_id`, only that reader's.
    ///
    /// # Errors
    /// Unknown (or another reader's) loan, or a database failure.
    pub async fn get_loan(&self, loan_id: &str, user_id: Option<&str>) -> Result<Loan, CirculationError> {
        let loan = loans::Entity::find_by_id(loan_id)
            .one(&self.db)
            .await?
            .ok_or(CirculationError::LoanNotFound)?;
        match user_id {
            Some(user) if user != loan.user_id => Err(CirculationError::LoanNotFound),
            _ => Ok(loan),
        }
    }

    /// A reader's loans, newest first.
    ///
    /// # Errors
    /// A bad page size or token, or a database failure.
    pub async fn list_loans(
        &self,
        user_id: &str,
        status: Option<LoanStatus>,
        page_size: i32,
        page_token: &str,
    ) -> Result<LoanPage, CirculationError> {
        let limit = paging::page_size(page_size)?;
        let after = paging::decode_cursor(page_token, 1)?;
        let mut query = loans::Entity::find().filter(loans::Column::UserId.eq(user_id));
        if let Some(status) = status {
            query = query.filter(loans::Column::Status.eq(status.as_str()));
        }
        let total_count = query.clone().count(&self.db).await?;
        if let Some(after) = after {
            query = query.filter(loans::Column::Id.lt(after[0].clone()));
        }
        let mut loans = query
            .order_by_desc(loans::Column::Id)
            .limit(limit + 1)
            .all(&self.db)
            .await?;
        let has_more = loans.len() as u64 > limit;
        loans.truncate(limit as usize);
        let next_page_token = match (has_more, loans.last()) {
            (true, Some(last)) => paging::encode_cursor(&[&last.id]),
            _ => String::new(),
        };
        Ok(LoanPage {
            loans,
            next_page_token,
            total_count,
        })
    }

    /// Moves the due date of an open loan (a circulation-desk operation).
    ///
    /// # Errors
    /// Unknown loan, a closed loan, or a database failure.
    pub async fn change_due_date(&self, loan_id: &str, due_at: DateTime<Utc>) -> Result<Loan, CirculationError> {
        let txn = self.db.begin().await?;
        let loan = lock_loan(&txn, loan_id).await?.ok_or(CirculationError::LoanNotFound)?;
        let status = status_of(&loan);
        if !status.is_open() {
            return Err(CirculationError::Closed(status));
        }
        let mut active: loans::ActiveModel = loan.into();
        active.due_at = Set(due_at);
        active.updated_at = Set(Utc::now());
        let loan = active.update(&txn).await?;
        let transition = Transition {
            kind: "due_date_changed",
            loan_id,
            user_id: &loan.user_id,
            detail: json!({"due_at": due_at.to_rfc3339()}),
        };
        self.audit.record(&txn, [transition]).await?;
        txn.commit().await?;
        tracing::info!(%loan_id, %due_at, "due date changed");
        Ok(loan)
    }

    /// Saga: the copies are reserved, the loans become ACTIVE (a run of them in one statement;
    /// a loan no longer PENDING stays as it is).
    ///
    /// # Errors
    /// A database failure: the deliveries are retried.
    pub async fn activate(&self, txn: &DatabaseTransaction, reserved: &[StockReserved]) -> Result<(), HandleError> {
        let activated = loans::Entity::update_many()
            .col_expr(loans::Column::Status, Expr::val(LoanStatus::Active.as_str()))
            .col_expr(loans::Column::UpdatedAt, Expr::val(Utc::now()))
            .filter(loans::Column::Id.is_in(reserved.iter().map(|r| r.loan_id.as_str())))
            .filter(loans::Column::Status.eq(LoanStatus::Pending.as_str()))
            .exec_with_returning(txn)
            .await?;
        let transitions = activated.iter().map(|loan| {
            tracing::info!(loan_id = %loan.id, "loan active");
            Transition {
                kind: "activated",
                loan_id: &loan.id,
                user_id: &loan.user_id,
                detail: json!({"quantity": loan.quantity}),
            }
        });
        self.audit.record(txn, transitions).await?;
        Ok(())
    }

    /// Saga compensation: too little stock, the PENDING loan is CANCELED and `LoanCanceled`
    /// gives its copies back to the reader's count.
    ///
    /// # Errors
    /// A database failure: the delivery is retried.
    pub async fn cancel(&self, txn: &DatabaseTransaction, refused: OutOfStock) -> Result<(), HandleError> {
        let Some(loan) = lock_loan(txn, &refused.loan_id).await? else {
            return Ok(());
        };
        if status_of(&loan) != LoanStatus::Pending {
            return Ok(());
        }
        let reason = format!(
            "{} (requested {}, available {})",
            refused.reason, refused.requested, refused.available_copies
        );
        let now = Utc::now();
        let mut active: loans::ActiveModel = loan.clone().into();
        active.status = Set(LoanStatus::Canceled.as_str().to_owned());
        active.cancel_reason = Set(Some(reason.clone()));
        active.updated_at = Set(now);
        active.update(txn).await?;
        add_outstanding(txn, &loan.user_id, -loan.quantity).await?;
        let canceled = LoanCanceled {
            event_id: new_id(),
            occurred_at: Some(to_timestamp(now)),
            loan_id: loan.id.clone(),
            user_id: loan.user_id.clone(),
            book_id: loan.book_id.clone(),
            quantity: loan.quantity,
            reason: reason.clone(),
        };
        self.outbox.enqueue(txn, &canceled).await?;
        let transition = Transition {
            kind: "canceled",
            loan_id: &loan.id,
            user_id: &loan.user_id,
            detail: json!({"reason": reason}),
        };
        self.audit.record(txn, [transition]).await?;
        tracing::info!(loan_id = %loan.id, %reason, "loan canceled");
        Ok(())
    }
}

async fn add_outstanding(txn: &DatabaseTransaction, user_id: &str, delta: i32) -> Result<(), DbErr> {
    readers::Entity::update_many()
        .col_expr(
            readers::Column::Outstanding,
            Expr::col(readers::Column::Outstanding).add(delta),
        )
        .filter(readers::Column::UserId.eq(user_id))
        .exec(txn)
        .await?;
    Ok(())
}

/// Reads a loan for update: on PostgreSQL the row stays locked until the transaction ends, so
/// concurrent returns of one loan take turns.
async fn lock_loan(txn: &DatabaseTransaction, loan_id: &str) -> Result<Option<Loan>, DbErr> {
    let mut select = loans::Entity::find_by_id(loan_id);
    if txn.get_database_backend() == DbBackend::Postgres {
        select = select.lock_exclusive();
    }
    select.one(txn).await
}
