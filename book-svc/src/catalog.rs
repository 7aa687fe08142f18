//! The catalogue's use cases: each one that changes state writes its events to the outbox in the
//! same transaction.
use std::collections::HashMap;

use chrono::Utc;
use library_platform::bus::{EventEnvelope, HandleError, Outbox, Subscriptions};
use library_platform::database::insert_together;
use library_platform::paging::{self, PagingError};
use library_proto::events::{
    BookBorrowed, BookRegistered, BookRemoved, BookUpdated, OutOfStock, StockChanged, StockReleased, StockReserved,
};
use library_proto::time::to_timestamp;
use sea_orm::sea_query::{Asterisk, Expr, ExprTrait, Func, LikeExpr, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait,
    FromQueryResult, PaginatorTrait, QueryFilter, QueryOrder, QueryResult, QuerySelect, QueryTrait, Set,
    TransactionTrait,
};
use uuid::Uuid;

use crate::domain::{self, Allocation, BookDraft, BookEdit, ValidationError};
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
    #[error("{on_loan} copies are on loan")]
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
}

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
        Self { db, outbox, stock }
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

    /// The book side of the borrow saga, for a run of loans at once: reserve each loan's copies
    /// (`StockReserved`) or say why not (`OutOfStock`), first come first served, inside the
    /// consumer's transaction. Each book is read under its row lock and written once however many
    /// loans want it, and says `StockChanged` once, so a popular book does not make every loan
    /// wait for the one before it.
    ///
    /// # Errors
    /// A database failure: the deliveries are retried.
    pub async fn reserve_for_loans(
        &self,
        txn: &DatabaseTransaction,
        borrowed: Vec<BookBorrowed>,
    ) -> Result<(), HandleError> {
        let mut book_ids: Vec<&str> = borrowed.iter().map(|loan| loan.book_id.as_str()).collect();
        book_ids.sort_unstable();
        book_ids.dedup();
        // Locked in id order, so two consumers' batches over the same books cannot deadlock.
        let shelves: HashMap<String, Book> = books::Entity::find()
            .filter(books::Column::Id.is_in(book_ids))
            .order_by_asc(books::Column::Id)
            .lock_exclusive()
            .all(txn)
            .await?
            .into_iter()
            .map(|book| (book.id.clone(), book))
            .collect();

        let mut decided: Vec<Option<Allocation>> = vec![None; borrowed.len()];
        let mut changed = Vec::new();
        for (book_id, book) in &shelves {
            let wanting: Vec<usize> = (0..borrowed.len())
                .filter(|i| borrowed[*i].book_id == *book_id)
                .collect();
            let allocations = domain::allocate(book.available_copies, wanting.iter().map(|i| borrowed[*i].quantity));
            let left = allocations.last().map_or(book.available_copies, |a| a.left);
            for (i, allocation) in wanting.into_iter().zip(allocations) {
                decided[i] = Some(allocation);
            }
            if left != book.available_copies {
                changed.push(take_copies(txn, book, book.available_copies - left).await?);
            }
        }

        let now = Utc::now();
        let mut reservations = Vec::new();
        let mut events = Vec::with_capacity(borrowed.len() + changed.len());
        for (loan, allocation) in borrowed.into_iter().zip(decided) {
            match allocation {
                Some(Allocation { served: true, left }) => {
                    tracing::debug!(loan_id = %loan.loan_id, book_id = %loan.book_id, quantity = loan.quantity, "copies reserved");
                    events.push(EventEnvelope::of(&StockReserved {
                        event_id: new_event_id(),
                        occurred_at: Some(to_timestamp(now)),
                        loan_id: loan.loan_id.clone(),
                        book_id: loan.book_id.clone(),
                        quantity: loan.quantity,
                        available_copies: left,
                    }));
                    reservations.push(reservations::ActiveModel {
                        loan_id: Set(loan.loan_id),
                        book_id: Set(loan.book_id),
                        quantity: Set(loan.quantity),
                        created_at: Set(now),
                    });
                }
                refused => {
                    let (available, reason) = match refused {
                        Some(allocation) => (allocation.left, "not enough copies"),
                        None => (0, "book not in the catalogue"),
                    };
                    tracing::info!(loan_id = %loan.loan_id, book_id = %loan.book_id, quantity = loan.quantity, available, reason, "out of stock");
                    events.push(EventEnvelope::of(&OutOfStock {
                        event_id: new_event_id(),
                        occurred_at: Some(to_timestamp(now)),
                        loan_id: loan.loan_id,
                        book_id: loan.book_id,
                        requested: loan.quantity,
                        available_copies: available,
                        reason: reason.to_owned(),
                    }));
                }
            }
        }
        for book in &changed {
            tracing::info!(book_id = %book.id, available = book.available_copies, "copies reserved");
            events.push(EventEnvelope::of(&stock_changed(book)));
        }
        // The reservations and the events in one round trip.
        let reserved = (!reservations.is_empty()).then(|| reservations::Entity::insert_many(reservations).into_query());
        let inserts = reserved.into_iter().chain(Outbox::insert_of(events)).collect();
        insert_together(txn, inserts).await?;
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
            let event = StockReleased {
                event_id: new_event_id(),
                occurred_at: Some(to_timestamp(Utc::now())),
                loan_id: loan_id.to_owned(),
                book_id: book.id.clone(),
                quantity: released,
                available_copies: book.available_copies,
            };
            self.outbox.enqueue(txn, &event).await?;
            self.outbox.enqueue(txn, &stock_changed(&book)).await?;
        }
        tracing::info!(%loan_id, released, "copies released");
        Ok(())
    }
}

/// Takes `quantity` copies of `book` off the shelf, returning the book as it is now. The
/// condition repeats what the row lock already guarantees, so the stock can never go below zero
/// even if a caller forgot the lock.
async fn take_copies(txn: &DatabaseTransaction, book: &Book, quantity: i32) -> Result<Book, HandleError> {
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
        .ok_or_else(|| HandleError::Failed(format!("the stock of book {} changed under its lock", book.id)))
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
