//! The catalogue's use cases: each one that changes state writes its events to the outbox in the
//! same transaction.
use std::collections::{HashMap, HashSet};

use chrono::Utc;
use library_platform::bus::{EventEnvelope, EventMeta, HandleError, Outbox, Subscriptions};
use library_platform::database::insert_together;
use library_platform::paging::{self, PagingError};
use library_platform::text::{copies, is_are};
use library_proto::events::{
    BookBorrowed, BookRegistered, BookRemoved, BookUpdated, OutOfStock, StockChanged, StockReleased, StockReserved,
};
use library_proto::time::to_timestamp;
use sea_orm::sea_query::{Asterisk, Expr, ExprTrait, Func, InsertStatement, LikeExpr, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr,
    EntityTrait, FromQueryResult, PaginatorTrait, QueryFilter, QueryOrder, QueryResult, QuerySelect, QueryTrait, Set,
    TransactionTrait,
};
use uuid::Uuid;

use crate::domain::{self, Allocation, BookDraft, BookEdit, ValidationError};
use crate::holds::StockHolds;
use crate::stock_reads::StockReads;
use crate::store::{books, reservations};

pub use books::Model as Book;

/// Why a catalogue operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    #[error(transparent)]
    Paging(#[from] PagingError),
    #[error("no book has this id")]
    NotFound,
    #[error("{} {} on loan", copies(*.on_loan), is_are(*.on_loan))]
    CopiesOnLoan { on_loan: i32 },
    #[error("database failure: {0}")]
    Database(#[from] DbErr),
}

/// One page of books.
pub struct BookPage {
    pub books: Vec<Book>,
    pub next_page_token: String,
    pub total_count: u64,
}

/// The catalogue: books, their stock, and the reservations of loans.
#[derive(Clone)]
pub struct Catalog {
    db: DatabaseConnection,
    outbox: Outbox,
    stock: StockReads,
    holds: StockHolds,
}

/// How long a hold waits for its loan's `BookBorrowed` before borrow-svc is shown it to settle
/// (`ListExpiredHolds`): far longer than a borrow takes to store its loan, so that only a
/// borrow-svc stopped in between, or a broker that is down, leaves one that long.
pub const DEFAULT_HOLD_TTL: std::time::Duration = std::time::Duration::from_secs(300);

fn new_event_id() -> String {
    Uuid::now_v7().to_string()
}

fn stock_changed(book: &Book) -> StockChanged {
    StockChanged {
        event_id: new_event_id(),
        occurred_at: Some(to_timestamp(Utc::now())),
        book_id: book.id.clone(),
        total_copies: book.total_copies,
        available_copies: book.available_copies,
    }
}

impl Catalog {
    pub fn new(db: DatabaseConnection, outbox: Outbox) -> Self {
        let stock = StockReads::new(db.clone());
        let holds = StockHolds::new(db.clone(), DEFAULT_HOLD_TTL);
        Self {
            db,
            outbox,
            stock,
            holds,
        }
    }

    /// The same catalogue, its holds shown to borrow-svc to settle after `ttl` unless confirmed.
    pub fn with_hold_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.holds = StockHolds::new(self.db.clone(), ttl);
        self
    }

    /// How long an unconfirmed hold keeps its copies.
    pub fn hold_ttl(&self) -> std::time::Duration {
        self.holds.ttl()
    }

    /// An empty set of subscriptions applying events to the catalogue's database.
    pub(crate) fn subscriptions(&self, consumer: &str) -> Subscriptions {
        Subscriptions::new(consumer, self.db.clone(), self.outbox.clone())
    }

    /// Registers a new book with all its copies on the shelf.
    ///
    /// # Errors
    /// A database failure.
    pub async fn register(&self, draft: BookDraft) -> Result<Book, CatalogError> {
        let now = Utc::now();
        let copies = draft.total_copies.get();
        let book = books::ActiveModel {
            id: Set(Uuid::now_v7().to_string()),
            isbn: Set(draft.isbn.map(|i| i.as_str().to_owned())),
            title: Set(draft.title.as_str().to_owned()),
            author: Set(draft.author.as_str().to_owned()),
            total_copies: Set(copies),
            available_copies: Set(copies),
            created_at: Set(now),
            updated_at: Set(now),
        };
        let txn = self.db.begin().await?;
        let book = book.insert(&txn).await?;
        let registered = BookRegistered {
            event_id: new_event_id(),
            occurred_at: Some(to_timestamp(now)),
            book_id: book.id.clone(),
            isbn: book.isbn.clone(),
            title: book.title.clone(),
            author: book.author.clone(),
            total_copies: book.total_copies,
        };
        self.outbox.enqueue(&txn, &registered).await?;
        self.outbox.enqueue(&txn, &stock_changed(&book)).await?;
        self.outbox.commit(txn).await?;
        tracing::info!(book_id = %book.id, copies, "book registered");
        Ok(book)
    }

    /// Applies `edit`. A new total keeps the copies on loan on loan.
    ///
    /// # Errors
    /// Unknown book, a total below the copies on loan, or a database failure.
    pub async fn edit(&self, id: &str, edit: BookEdit) -> Result<Book, CatalogError> {
        let txn = self.db.begin().await?;
        let current = books::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or(CatalogError::NotFound)?;
        let mut update = books::Entity::update_many()
            .col_expr(books::Column::UpdatedAt, Expr::val(Utc::now()))
            .filter(books::Column::Id.eq(id));
        if let Some(isbn) = &edit.isbn {
            update = update.col_expr(
                books::Column::Isbn,
                Expr::val(isbn.as_ref().map(|i| i.as_str().to_owned())),
            );
        }
        if let Some(title) = &edit.title {
            update = update.col_expr(books::Column::Title, Expr::val(title.as_str()));
        }
        if let Some(author) = &edit.author {
            update = update.col_expr(books::Column::Author, Expr::val(author.as_str()));
        }
        if let Some(total) = edit.total_copies {
            let new_total = total.get();
            // Checked again by the database: the copies on loan may have changed since the read.
            update = update
                .col_expr(
                    books::Column::AvailableCopies,
                    Expr::col(books::Column::AvailableCopies)
                        .add(new_total)
                        .sub(Expr::col(books::Column::TotalCopies)),
                )
                .col_expr(books::Column::TotalCopies, Expr::val(new_total))
                .filter(
                    Expr::col(books::Column::TotalCopies)
                        .sub(Expr::col(books::Column::AvailableCopies))
                        .lte(new_total),
                );
        }
        if update.exec(&txn).await?.rows_affected == 0 {
            let on_loan = current.total_copies - current.available_copies;
            let fresh = books::Entity::find_by_id(id)
                .one(&txn)
                .await?
                .ok_or(CatalogError::NotFound)?;
            return Err(CatalogError::CopiesOnLoan {
                on_loan: Ord::max(fresh.total_copies - fresh.available_copies, on_loan),
            });
        }
        let book = books::Entity::find_by_id(id)
            .one(&txn)
            .await?
            .ok_or(CatalogError::NotFound)?;
        let updated = BookUpdated {
            event_id: new_event_id(),
            occurred_at: Some(to_timestamp(Utc::now())),
            book_id: book.id.clone(),
            isbn: book.isbn.clone(),
            title: book.title.clone(),
            author: book.author.clone(),
            total_copies: book.total_copies,
            available_copies: book.available_copies,
        };
        self.outbox.enqueue(&txn, &updated).await?;
        if book.total_copies != current.total_copies {
            self.outbox.enqueue(&txn, &stock_changed(&book)).await?;
        }
        self.outbox.commit(txn).await?;
        tracing::info!(book_id = %book.id, "book edited");
        Ok(book)
    }

    /// Removes a book that has no copy on loan.
    ///
    /// # Errors
    /// Unknown book, copies on loan, or a database failure.
    pub async fn remove(&self, id: &str) -> Result<(), CatalogError> {
        let txn = self.db.begin().await?;
        let deleted = books::Entity::delete_many()
            .filter(books::Column::Id.eq(id))
            .filter(Expr::col(books::Column::AvailableCopies).eq(Expr::col(books::Column::TotalCopies)))
            .exec(&txn)
            .await?;
        if deleted.rows_affected == 0 {
            let book = books::Entity::find_by_id(id)
                .one(&txn)
                .await?
                .ok_or(CatalogError::NotFound)?;
            return Err(CatalogError::CopiesOnLoan {
                on_loan: book.total_copies - book.available_copies,
            });
        }
        let removed = BookRemoved {
            event_id: new_event_id(),
            occurred_at: Some(to_timestamp(Utc::now())),
            book_id: id.to_owned(),
        };
        self.outbox.enqueue(&txn, &removed).await?;
        self.outbox.commit(txn).await?;
        tracing::info!(book_id = %id, "book removed");
        Ok(())
    }

    /// # Errors
    /// Unknown book or a database failure.
    pub async fn get(&self, id: &str) -> Result<Book, CatalogError> {
        books::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .ok_or(CatalogError::NotFound)
    }

    /// The books among `ids` that exist.
    ///
    /// # Errors
    /// A database failure.
    pub async fn get_many(&self, ids: &[String]) -> Result<Vec<Book>, CatalogError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(books::Entity::find()
            .filter(books::Column::Id.is_in(ids.iter().cloned()))
            .all(&self.db)
            .await?)
    }

    /// Books whose title or author contains `search` (any case), by title.
    ///
    /// # Errors
    /// A bad page size or token, or a database failure.
    pub async fn list(&self, search: &str, page_size: i32, page_token: &str) -> Result<BookPage, CatalogError> {
        let limit = paging::page_size(page_size)?;
        let after = paging::decode_cursor(page_token, 2)?;
        let mut matching = Condition::all();
        let search = search.trim();
        if !search.is_empty() {
            let pattern = format!("%{}%", escape_like(&search.to_lowercase()));
            matching = matching.add(
                Condition::any()
                    .add(
                        Expr::expr(Func::lower(Expr::col(books::Column::Title)))
                            .like(LikeExpr::new(pattern.clone()).escape('\\')),
                    )
                    .add(
                        Expr::expr(Func::lower(Expr::col(books::Column::Author)))
                            .like(LikeExpr::new(pattern).escape('\\')),
                    ),
            );
        }
        // The total rides along with the page's rows, one query instead of two.
        let total = Query::select()
            .expr(Expr::col(Asterisk).count())
            .from(books::Entity)
            .cond_where(matching.clone())
            .to_owned();
        let mut page = matching.clone();
        if let Some(after) = &after {
            let (title, id) = (after[0].clone(), after[1].clone());
            page = page.add(
                Condition::any()
                    .add(books::Column::Title.gt(title.clone()))
                    .add(books::Column::Title.eq(title).and(books::Column::Id.gt(id))),
            );
        }
        let rows = books::Entity::find()
            .filter(page)
            .expr_as(Expr::SubQuery(None, Box::new(total.into())), "total_count")
            .order_by_asc(books::Column::Title)
            .order_by_asc(books::Column::Id)
            .limit(limit + 1)
            .into_model::<Listed>()
            .all(&self.db)
            .await?;
        let total_count = match rows.first() {
            Some(row) => u64::try_from(row.total_count).unwrap_or(0),
            // Nothing matches at all, or nothing after the cursor: only then a query of its own.
            None if after.is_none() => 0,
            None => books::Entity::find().filter(matching).count(&self.db).await?,
        };
        let mut books: Vec<Book> = rows.into_iter().map(|row| row.book).collect();
        let has_more = books.len() as u64 > limit;
        books.truncate(limit as usize);
        let next_page_token = match (has_more, books.last()) {
            (true, Some(last)) => paging::encode_cursor(&[&last.title, &last.id]),
            _ => String::new(),
        };
        Ok(BookPage {
            books,
            next_page_token,
            total_count,
        })
    }

    /// Copies available now, and whether that covers `quantity`.
    ///
    /// # Errors
    /// Unknown book or a database failure.
    pub async fn check_stock(&self, id: &str, quantity: i32) -> Result<(i32, bool), CatalogError> {
        let available = self.stock.available(id).await?.ok_or(CatalogError::NotFound)?;
        Ok((available, domain::can_reserve(available, quantity)))
    }

    /// The book side of the borrow saga, for a run of loans at once, inside the consumer's
    /// transaction. A loan whose copies were held at the borrow (`HoldStock`) has its hold
    /// confirmed; when borrow-svc did not hear of the hold (it stored the loan PENDING), it is
    /// told with `StockReserved`. A loan stored on a hold that is no longer there (settled after
    /// the loan closed) takes nothing. Every other loan's copies are reserved (`StockReserved`)
    /// or refused (`OutOfStock`), first come first served ([`take_for_loans`]). Each loan's
    /// answer continues its `BookBorrowed`'s trace.
    ///
    /// # Errors
    /// A database failure: the deliveries are retried.
    pub async fn reserve_for_loans(
        &self,
        txn: &DatabaseTransaction,
        borrowed: Vec<(BookBorrowed, EventMeta)>,
    ) -> Result<(), HandleError> {
        let causes: HashMap<String, tracing::Span> = borrowed
            .iter()
            .map(|(loan, meta)| (loan.loan_id.clone(), meta.span.clone()))
            .collect();
        let borrowed: Vec<BookBorrowed> = borrowed.into_iter().map(|(loan, _)| loan).collect();
        // Confirming a hold locks it, so a release (a refused borrow, a settled hold) either
        // went first (and the loan takes nothing: see below) or finds it confirmed.
        let held: HashSet<String> = confirming(borrowed.iter().map(|loan| loan.loan_id.as_str()))
            .exec_with_returning(txn)
            .await?
            .into_iter()
            .map(|reservation| reservation.loan_id)
            .collect();
        let (already, to_reserve): (Vec<BookBorrowed>, Vec<BookBorrowed>) =
            borrowed.into_iter().partition(|loan| held.contains(&loan.loan_id));
        // A loan stored on a hold that is gone: borrow-svc settled it because the loan had
        // closed before this event came (its copies are back, or were never to be taken again).
        let (settled, to_reserve): (Vec<BookBorrowed>, Vec<BookBorrowed>) =
            to_reserve.into_iter().partition(|loan| loan.stock_held);
        for loan in &settled {
            tracing::info!(loan_id = %loan.loan_id, "the loan's hold was settled before its BookBorrowed came; nothing to reserve");
        }
        let wants: Vec<Want> = to_reserve.iter().map(Want::of).collect();
        let taken = take_for_loans(txn, &wants).await?;
        // The books of confirmed holds, read without their row locks (the holds took the
        // copies already): their stock change is announced now, once a batch.
        let mut confirmed: Vec<&str> = already
            .iter()
            .map(|loan| loan.book_id.as_str())
            .filter(|id| !taken.shelves.contains_key(*id))
            .collect();
        confirmed.sort_unstable();
        confirmed.dedup();
        let confirmed: Vec<Book> = if confirmed.is_empty() {
            Vec::new()
        } else {
            books::Entity::find()
                .filter(books::Column::Id.is_in(confirmed))
                .all(txn)
                .await?
        };
        let shelf = |book_id: &str| {
            taken
                .shelves
                .get(book_id)
                .or_else(|| confirmed.iter().find(|book| book.id == book_id))
                .map_or(0, |book| book.available_copies)
        };
        let unheard: Vec<&BookBorrowed> = already.iter().filter(|loan| !loan.stock_held).collect();

        let now = Utc::now();
        let mut events = Vec::with_capacity(to_reserve.len() + unheard.len() + taken.changed.len());
        for (loan, allocation) in to_reserve.into_iter().zip(&taken.decided) {
            match allocation {
                Some(Allocation { served: true, left }) => {
                    tracing::debug!(loan_id = %loan.loan_id, book_id = %loan.book_id, quantity = loan.quantity, "copies reserved");
                    events.push(answering(&causes, &loan.loan_id, &stock_reserved(&loan, *left, now)));
                }
                refused => {
                    let (available, reason) = match refused {
                        Some(allocation) => (allocation.left, "not enough copies"),
                        None => (0, "book not in the catalogue"),
                    };
                    tracing::info!(loan_id = %loan.loan_id, book_id = %loan.book_id, quantity = loan.quantity, available, reason, "out of stock");
                    let refusal = OutOfStock {
                        event_id: new_event_id(),
                        occurred_at: Some(to_timestamp(now)),
                        loan_id: loan.loan_id,
                        book_id: loan.book_id,
                        requested: loan.quantity,
                        available_copies: available,
                        reason: reason.to_owned(),
                    };
                    events.push(answering(&causes, &refusal.loan_id, &refusal));
                }
            }
        }
        for loan in unheard {
            events.push(answering(
                &causes,
                &loan.loan_id,
                &stock_reserved(loan, shelf(&loan.book_id), now),
            ));
        }
        for book in taken.changed.iter().chain(&confirmed) {
            tracing::info!(book_id = %book.id, available = book.available_copies, "copies reserved");
            events.push(EventEnvelope::of(&stock_changed(book)));
        }
        let reservations = reservations_of(&wants, &taken.decided, now, None);
        // The reservations and the events in one round trip.
        let inserts = reservations.into_iter().chain(Outbox::insert_of(events)).collect();
        insert_together(txn, inserts).await?;
        Ok(())
    }

    /// Holds `quantity` copies of `book_id` for the loan `loan_id` about to be stored
    /// (`HoldStock`), with the holds that arrive together ([`StockHolds`]); answers whether they
    /// are held and the copies left on the shelf.
    ///
    /// # Errors
    /// Unknown book or a database failure.
    pub async fn hold_stock(
        &self,
        loan_id: &str,
        user_id: &str,
        book_id: &str,
        quantity: i32,
    ) -> Result<(bool, i32), CatalogError> {
        let want = Want {
            loan_id: loan_id.to_owned(),
            user_id: user_id.to_owned(),
            book_id: book_id.to_owned(),
            quantity,
        };
        match self.holds.hold(want).await? {
            HoldOutcome::Held { available } => Ok((true, available)),
            HoldOutcome::Short { available } => Ok((false, available)),
            HoldOutcome::UnknownBook => Err(CatalogError::NotFound),
        }
    }

    /// Gives back the copies of `loan_id`'s hold while it is unconfirmed (the loan will never be
    /// stored), returning how many; a confirmed hold, or none, is left alone.
    ///
    /// # Errors
    /// A database failure.
    pub async fn release_hold(&self, loan_id: &str) -> Result<i32, CatalogError> {
        let txn = self.db.begin().await?;
        let holds = reservations::Entity::find()
            .filter(reservations::Column::LoanId.eq(loan_id))
            .filter(reservations::Column::HeldUntil.is_not_null())
            .lock_exclusive()
            .all(&txn)
            .await?;
        let released = release_holds(&txn, &holds, "the borrow was not stored").await?;
        self.outbox.commit(txn).await?;
        Ok(released)
    }

    /// Up to `limit` holds whose time ran out unconfirmed, oldest first: their borrow was
    /// refused and the release did not arrive, their borrow-svc stopped between the hold and
    /// storing the loan, or the loan's `BookBorrowed` is still on its way.
    ///
    /// # Errors
    /// A database failure.
    pub(crate) async fn expired_holds(&self, limit: u64) -> Result<Vec<reservations::Model>, CatalogError> {
        Ok(reservations::Entity::find()
            .filter(reservations::Column::HeldUntil.lt(Utc::now()))
            .order_by_asc(reservations::Column::HeldUntil)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Confirms the holds of loans that exist (as their `BookBorrowed` will).
    ///
    /// # Errors
    /// A database failure.
    pub async fn confirm_holds(&self, loan_ids: &[String]) -> Result<(), CatalogError> {
        if loan_ids.is_empty() {
            return Ok(());
        }
        confirming(loan_ids.iter().map(String::as_str)).exec(&self.db).await?;
        Ok(())
    }

    /// Puts up to `quantity` copies held by `loan_id` back on the shelf (a return or a
    /// cancellation). A loan that holds nothing (canceled before any reservation) changes nothing.
    ///
    /// # Errors
    /// A database failure: the delivery is retried.
    pub async fn release_for_loan(
        &self,
        txn: &DatabaseTransaction,
        loan_id: &str,
        quantity: i32,
    ) -> Result<(), HandleError> {
        let Some(reservation) = reservations::Entity::find_by_id(loan_id).one(txn).await? else {
            return Ok(());
        };
        let released = Ord::min(quantity, reservation.quantity);
        if released <= 0 {
            return Ok(());
        }
        let held = reservations::Entity::update_many()
            .col_expr(
                reservations::Column::Quantity,
                Expr::col(reservations::Column::Quantity).sub(released),
            )
            .filter(reservations::Column::LoanId.eq(loan_id))
            .filter(reservations::Column::Quantity.gte(released))
            .exec(txn)
            .await?;
        if held.rows_affected == 0 {
            return Err(HandleError::Failed("the reservation changed under us".into()));
        }
        books::Entity::update_many()
            .col_expr(
                books::Column::AvailableCopies,
                Expr::col(books::Column::AvailableCopies).add(released),
            )
            .col_expr(books::Column::UpdatedAt, Expr::val(Utc::now()))
            .filter(books::Column::Id.eq(&reservation.book_id))
            .exec(txn)
            .await?;
        if let Some(book) = books::Entity::find_by_id(&reservation.book_id).one(txn).await? {
            let event = stock_released(loan_id, &book.id, released, book.available_copies, Utc::now());
            self.outbox.enqueue(txn, &event).await?;
            self.outbox.enqueue(txn, &stock_changed(&book)).await?;
        }
        tracing::info!(%loan_id, released, "copies released");
        Ok(())
    }
}

/// Copies a loan wants.
#[derive(Clone, Debug)]
pub(crate) struct Want {
    pub loan_id: String,
    pub user_id: String,
    pub book_id: String,
    pub quantity: i32,
}

impl Want {
    fn of(loan: &BookBorrowed) -> Self {
        Self {
            loan_id: loan.loan_id.clone(),
            user_id: loan.user_id.clone(),
            book_id: loan.book_id.clone(),
            quantity: loan.quantity,
        }
    }
}

/// What [`take_for_loans`] did.
struct Taken {
    /// Each want's allocation, in order; `None`: the book is not in the catalogue.
    decided: Vec<Option<Allocation>>,
    /// The books wanted, as they are now.
    shelves: HashMap<String, Book>,
    /// The books whose stock changed.
    changed: Vec<Book>,
}

/// Takes copies off the shelves for a run of loans, first come first served: each book is read
/// under its row lock and written once however many loans want it, so a popular book does not
/// make every loan wait for the one before it.
async fn take_for_loans(txn: &DatabaseTransaction, wants: &[Want]) -> Result<Taken, DbErr> {
    let mut book_ids: Vec<&str> = wants.iter().map(|want| want.book_id.as_str()).collect();
    book_ids.sort_unstable();
    book_ids.dedup();
    let mut shelves: HashMap<String, Book> = HashMap::new();
    if !book_ids.is_empty() {
        // Locked in id order, so two transactions over the same books cannot deadlock.
        shelves = books::Entity::find()
            .filter(books::Column::Id.is_in(book_ids))
            .order_by_asc(books::Column::Id)
            .lock_exclusive()
            .all(txn)
            .await?
            .into_iter()
            .map(|book| (book.id.clone(), book))
            .collect();
    }
    let mut decided: Vec<Option<Allocation>> = vec![None; wants.len()];
    let mut changed = Vec::new();
    for book in shelves.values_mut() {
        let wanting: Vec<usize> = (0..wants.len()).filter(|i| wants[*i].book_id == book.id).collect();
        if wanting.is_empty() {
            continue;
        }
        let allocations = domain::allocate(book.available_copies, wanting.iter().map(|i| wants[*i].quantity));
        let left = allocations.last().map_or(book.available_copies, |a| a.left);
        for (i, allocation) in wanting.into_iter().zip(allocations) {
            decided[i] = Some(allocation);
        }
        if left != book.available_copies {
            *book = take_copies(txn, book, book.available_copies - left).await?;
            changed.push(book.clone());
        }
    }
    Ok(Taken {
        decided,
        shelves,
        changed,
    })
}

/// The reservation rows of the wants served; `held_until`: a hold not yet confirmed.
fn reservations_of(
    wants: &[Want],
    decided: &[Option<Allocation>],
    now: chrono::DateTime<Utc>,
    held_until: Option<chrono::DateTime<Utc>>,
) -> Option<InsertStatement> {
    let served: Vec<reservations::ActiveModel> = wants
        .iter()
        .zip(decided)
        .filter(|(_, allocation)| matches!(allocation, Some(Allocation { served: true, .. })))
        .map(|(want, _)| reservations::ActiveModel {
            loan_id: Set(want.loan_id.clone()),
            book_id: Set(want.book_id.clone()),
            quantity: Set(want.quantity),
            created_at: Set(now),
            held_until: Set(held_until),
            user_id: Set(held_until.map(|_| want.user_id.clone())),
        })
        .collect();
    (!served.is_empty()).then(|| reservations::Entity::insert_many(served).into_query())
}

/// What a hold came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HoldOutcome {
    Held {
        available: i32,
    },
    /// Too few copies on the shelf: nothing held.
    Short {
        available: i32,
    },
    UnknownBook,
}

/// Holds copies for a run of borrows about to be stored, until `held_until` unless confirmed,
/// inside `txn`, first come first served; a loan that holds copies already (a repeated call) is
/// answered as held. The stock change is announced when the loans' `BookBorrowed` confirm the
/// holds (or when they go back).
pub(crate) async fn hold_for_loans(
    txn: &DatabaseTransaction,
    wants: &[Want],
    held_until: chrono::DateTime<Utc>,
) -> Result<Vec<HoldOutcome>, DbErr> {
    let existing: HashSet<String> = reservations::Entity::find()
        .select_only()
        .column(reservations::Column::LoanId)
        .filter(reservations::Column::LoanId.is_in(wants.iter().map(|want| want.loan_id.as_str())))
        .into_tuple::<String>()
        .all(txn)
        .await?
        .into_iter()
        .collect();
    let new: Vec<Want> = wants
        .iter()
        .filter(|want| !existing.contains(&want.loan_id))
        .cloned()
        .collect();
    let taken = take_for_loans(txn, &new).await?;
    if let Some(insert) = reservations_of(&new, &taken.decided, Utc::now(), Some(held_until)) {
        txn.execute(&insert).await?;
    }
    let mut decided = taken.decided.iter();
    let mut answers = Vec::with_capacity(wants.len());
    for want in wants {
        let answer = if existing.contains(&want.loan_id) {
            let available = match taken.shelves.get(&want.book_id) {
                Some(book) => book.available_copies,
                None => books::Entity::find_by_id(&want.book_id)
                    .one(txn)
                    .await?
                    .map_or(0, |book| book.available_copies),
            };
            HoldOutcome::Held { available }
        } else {
            match decided.next() {
                Some(Some(Allocation { served: true, left })) => HoldOutcome::Held { available: *left },
                Some(Some(Allocation { served: false, left })) => HoldOutcome::Short { available: *left },
                _ => HoldOutcome::UnknownBook,
            }
        };
        answers.push(answer);
    }
    Ok(answers)
}

/// PostgreSQL, the common case of [`hold_for_loans`] in one statement and no transaction
/// around it: for each book of `wants` whose shelf has the copies all its holds want, takes
/// them and inserts the holds. Returns the copies left of each book taken; the holds of a
/// book left out (too few copies, or unknown) took nothing. Fails whole on a loan that holds
/// copies already (its key is taken).
pub(crate) async fn hold_where_all_fit(
    db: &DatabaseConnection,
    wants: &[Want],
    held_until: chrono::DateTime<Utc>,
) -> Result<HashMap<String, i32>, DbErr> {
    let mut values: Vec<sea_orm::Value> = Vec::with_capacity(wants.len() * 4 + 2);
    let mut rows = Vec::with_capacity(wants.len());
    for want in wants {
        let n = values.len();
        rows.push(format!("(${}, ${}, ${}, ${}::integer)", n + 1, n + 2, n + 3, n + 4));
        values.extend([
            want.loan_id.clone().into(),
            want.user_id.clone().into(),
            want.book_id.clone().into(),
            want.quantity.into(),
        ]);
    }
    let (now, until) = (values.len() + 1, values.len() + 2);
    values.extend([Utc::now().into(), held_until.into()]);
    let sql = format!(
        "WITH want (loan_id, user_id, book_id, quantity) AS (VALUES {rows}), \
         total AS (SELECT book_id, SUM(quantity)::integer AS quantity FROM want GROUP BY book_id), \
         taken AS (UPDATE books SET available_copies = books.available_copies - total.quantity, updated_at = ${now} \
           FROM total WHERE books.id = total.book_id AND books.available_copies >= total.quantity \
           RETURNING books.id, books.available_copies), \
         held AS (INSERT INTO reservations (loan_id, book_id, quantity, created_at, held_until, user_id) \
           SELECT want.loan_id, want.book_id, want.quantity, ${now}, ${until}, want.user_id \
           FROM want JOIN taken ON taken.id = want.book_id) \
         SELECT id, available_copies FROM taken",
        rows = rows.join(", ")
    );
    let statement = sea_orm::Statement::from_sql_and_values(sea_orm::DbBackend::Postgres, sql, values);
    db.query_all_raw(statement)
        .await?
        .iter()
        .map(|row| {
            Ok((
                row.try_get::<String>("", "id")?,
                row.try_get::<i32>("", "available_copies")?,
            ))
        })
        .collect()
}

/// Gives back the copies of `holds` (locked by the caller) and deletes them, so that a loan
/// stored after all is reserved afresh by its `BookBorrowed`; says `StockReleased` for each and
/// `StockChanged` for each book. Returns the copies given back.
async fn release_holds(txn: &DatabaseTransaction, holds: &[reservations::Model], why: &str) -> Result<i32, DbErr> {
    if holds.is_empty() {
        return Ok(0);
    }
    reservations::Entity::delete_many()
        .filter(reservations::Column::LoanId.is_in(holds.iter().map(|hold| hold.loan_id.as_str())))
        .exec(txn)
        .await?;
    let mut per_book: HashMap<&str, i32> = HashMap::new();
    for hold in holds {
        *per_book.entry(hold.book_id.as_str()).or_default() += hold.quantity;
    }
    let now = Utc::now();
    let mut shelves = HashMap::new();
    for (book_id, copies) in per_book {
        let back = books::Entity::update_many()
            .col_expr(
                books::Column::AvailableCopies,
                Expr::col(books::Column::AvailableCopies).add(copies),
            )
            .col_expr(books::Column::UpdatedAt, Expr::val(now))
            .filter(books::Column::Id.eq(book_id))
            .exec_with_returning(txn)
            .await?;
        for book in back {
            shelves.insert(book.id.clone(), book);
        }
    }
    let mut events = Vec::with_capacity(holds.len() + shelves.len());
    for hold in holds {
        tracing::info!(loan_id = %hold.loan_id, book_id = %hold.book_id, quantity = hold.quantity, why, "hold released");
        let available = shelves.get(&hold.book_id).map_or(0, |book| book.available_copies);
        events.push(EventEnvelope::of(&stock_released(
            &hold.loan_id,
            &hold.book_id,
            hold.quantity,
            available,
            now,
        )));
    }
    events.extend(shelves.values().map(|book| EventEnvelope::of(&stock_changed(book))));
    if let Some(insert) = Outbox::insert_of(events) {
        txn.execute(&insert).await?;
    }
    Ok(holds.iter().map(|hold| hold.quantity).sum())
}

/// `event`, the answer to the loan `loan_id`, in the trace of that loan's `BookBorrowed`
/// (`causes`: each consumed event's span), or of the current span.
fn answering<E: library_proto::DomainEvent>(
    causes: &HashMap<String, tracing::Span>,
    loan_id: &str,
    event: &E,
) -> EventEnvelope {
    match causes.get(loan_id) {
        Some(span) => EventEnvelope::caused_by(event, span),
        None => EventEnvelope::of(event),
    }
}

fn stock_released(
    loan_id: &str,
    book_id: &str,
    quantity: i32,
    available: i32,
    now: chrono::DateTime<Utc>,
) -> StockReleased {
    StockReleased {
        event_id: new_event_id(),
        occurred_at: Some(to_timestamp(now)),
        loan_id: loan_id.to_owned(),
        book_id: book_id.to_owned(),
        quantity,
        available_copies: available,
    }
}

/// Confirms the holds of these loans (and finds any reservation of theirs): a confirmed hold is
/// never given back.
fn confirming<'a>(loan_ids: impl IntoIterator<Item = &'a str>) -> sea_orm::UpdateMany<reservations::Entity> {
    reservations::Entity::update_many()
        .col_expr(
            reservations::Column::HeldUntil,
            Expr::value(Option::<chrono::DateTime<Utc>>::None),
        )
        .filter(reservations::Column::LoanId.is_in(loan_ids))
}

fn stock_reserved(loan: &BookBorrowed, available: i32, now: chrono::DateTime<Utc>) -> StockReserved {
    StockReserved {
        event_id: new_event_id(),
        occurred_at: Some(to_timestamp(now)),
        loan_id: loan.loan_id.clone(),
        book_id: loan.book_id.clone(),
        quantity: loan.quantity,
        available_copies: available,
    }
}

/// Takes `quantity` copies of `book` off the shelf, returning the book as it is now. The
/// condition repeats what the row lock already guarantees, so the stock can never go below zero
/// even if a caller forgot the lock.
async fn take_copies(txn: &DatabaseTransaction, book: &Book, quantity: i32) -> Result<Book, DbErr> {
    books::Entity::update_many()
        .col_expr(
            books::Column::AvailableCopies,
            Expr::col(books::Column::AvailableCopies).sub(quantity),
        )
        .col_expr(books::Column::UpdatedAt, Expr::val(Utc::now()))
        .filter(books::Column::Id.eq(&book.id))
        .filter(books::Column::AvailableCopies.gte(quantity))
        .exec_with_returning(txn)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| DbErr::Custom(format!("the stock of book {} changed under its lock", book.id)))
}

/// A book of a listed page, with the count of all books matching the search.
struct Listed {
    book: Book,
    total_count: i64,
}

impl FromQueryResult for Listed {
    fn from_query_result(row: &QueryResult, prefix: &str) -> Result<Self, DbErr> {
        Ok(Self {
            book: Book::from_query_result(row, prefix)?,
            total_count: row.try_get(prefix, "total_count")?,
        })
    }
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}
