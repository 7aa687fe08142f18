//! The GraphQL types of CONTRACT.md, and their mapping from the services' messages.
use async_graphql::dataloader::DataLoader;
use async_graphql::{ComplexObject, Context, Enum, ID, InputObject, SimpleObject};
use chrono::{DateTime, Utc};
use library_proto::time::from_timestamp;
use library_proto::{book as book_pb, borrow as borrow_pb, dashboard as dashboard_pb};

use super::loader::BookLoader;

fn time(ts: Option<&prost_types::Timestamp>) -> DateTime<Utc> {
    ts.and_then(from_timestamp).unwrap_or_default()
}

/// A title in the catalogue and its copies.
#[derive(SimpleObject, Clone, Debug)]
pub struct Book {
    /// The book's id (a UUID).
    pub id: ID,
    /// ISBN-10 or ISBN-13, digits only; null when the book has none.
    pub isbn: Option<String>,
    /// The title, trimmed.
    pub title: String,
    /// The author, trimmed.
    pub author: String,
    /// Copies the library owns.
    pub total_copies: i32,
    /// Copies on the shelf now: total minus those lent or held for borrows.
    pub available_copies: i32,
}

impl From<book_pb::Book> for Book {
    fn from(b: book_pb::Book) -> Self {
        Self {
            id: ID(b.id),
            isbn: b.isbn,
            title: b.title,
            author: b.author,
            total_copies: b.total_copies,
            available_copies: b.available_copies,
        }
    }
}

/// Where a page ends, for asking the next one.
#[derive(SimpleObject, Clone, Debug)]
pub struct PageInfo {
    /// Whether another page follows.
    pub has_next_page: bool,
    /// Pass it as `after` to get the next page; null on the last page.
    pub end_cursor: Option<String>,
}

impl PageInfo {
    pub fn from_token(next_page_token: String) -> Self {
        Self {
            has_next_page: !next_page_token.is_empty(),
            end_cursor: Some(next_page_token).filter(|t| !t.is_empty()),
        }
    }
}

/// One page of books.
#[derive(SimpleObject, Clone, Debug)]
pub struct BookConnection {
    /// The books of this page.
    pub nodes: Vec<Book>,
    /// How to get the next page.
    pub page_info: PageInfo,
    /// Books matching the search, over all pages.
    pub total_count: i32,
}

/// Where a loan is in its life.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum LoanStatus {
    /// Accepted; its copies are not confirmed yet (the catalogue was unreachable at the borrow).
    Pending,
    /// The copies are lent.
    Active,
    /// Every copy came back.
    Returned,
    /// Nothing was lent (too few copies once the catalogue answered); see `cancelReason`.
    Canceled,
}

impl LoanStatus {
    pub fn to_proto(self) -> borrow_pb::LoanStatus {
        match self {
            LoanStatus::Pending => borrow_pb::LoanStatus::Pending,
            LoanStatus::Active => borrow_pb::LoanStatus::Active,
            LoanStatus::Returned => borrow_pb::LoanStatus::Returned,
            LoanStatus::Canceled => borrow_pb::LoanStatus::Canceled,
        }
    }

    fn from_proto(value: i32) -> Self {
        match borrow_pb::LoanStatus::try_from(value) {
            Ok(borrow_pb::LoanStatus::Active) => LoanStatus::Active,
            Ok(borrow_pb::LoanStatus::Returned) => LoanStatus::Returned,
            Ok(borrow_pb::LoanStatus::Canceled) => LoanStatus::Canceled,
            _ => LoanStatus::Pending,
        }
    }
}

/// Copies of one book lent to one reader.
#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct Loan {
    /// The loan's id (a UUID).
    pub id: ID,
    /// The reader (the token's `sub`).
    pub user_id: ID,
    /// The borrowed book's id.
    pub book_id: ID,
    /// Copies borrowed.
    pub quantity: i32,
    /// Copies returned so far.
    pub returned_quantity: i32,
    /// PENDING until the copies are confirmed; CANCELED when they could not be.
    pub status: LoanStatus,
    /// When the borrow was accepted.
    pub borrowed_at: DateTime<Utc>,
    /// When the copies are due back.
    pub due_at: DateTime<Utc>,
    /// Won charged on this loan so far (one tier fee per late return).
    pub late_fee: i64,
    /// Why a CANCELED loan was canceled; null otherwise.
    pub cancel_reason: Option<String>,
}

#[ComplexObject]
impl Loan {
    /// The borrowed book; null when the catalogue cannot be reached (or the book was removed).
    async fn book(&self, ctx: &Context<'_>) -> Option<Book> {
        let loader = ctx.data_opt::<DataLoader<BookLoader>>()?;
        loader.load_one(self.book_id.to_string()).await.ok().flatten()
    }
}

impl From<borrow_pb::Loan> for Loan {
    fn from(l: borrow_pb::Loan) -> Self {
        Self {
            borrowed_at: time(l.borrowed_at.as_ref()),
            due_at: time(l.due_at.as_ref()),
            status: LoanStatus::from_proto(l.status),
            id: ID(l.id),
            user_id: ID(l.user_id),
            book_id: ID(l.book_id),
            quantity: l.quantity,
            returned_quantity: l.returned_quantity,
            late_fee: l.late_fee,
            cancel_reason: l.cancel_reason,
        }
    }
}

/// One page of loans, newest first.
#[derive(SimpleObject, Clone, Debug)]
pub struct LoanConnection {
    /// The loans of this page.
    pub nodes: Vec<Loan>,
    /// How to get the next page.
    pub page_info: PageInfo,
    /// Loans matching the filter, over all pages.
    pub total_count: i32,
}

/// A reader's live summary, kept up to date from the circulation events.
#[derive(SimpleObject, Clone, Debug)]
pub struct Dashboard {
    /// The reader.
    pub user_id: ID,
    /// Copies the reader has outstanding (PENDING and ACTIVE loans).
    pub borrowed_count: i32,
    /// Won of late fees charged to the reader in total.
    pub late_fee_total: i64,
    /// When the last change was applied; null before the reader's first.
    pub updated_at: Option<DateTime<Utc>>,
}

impl From<dashboard_pb::Dashboard> for Dashboard {
    fn from(d: dashboard_pb::Dashboard) -> Self {
        Self {
            user_id: ID(d.user_id),
            borrowed_count: d.borrowed_count,
            late_fee_total: d.late_fee_total,
            updated_at: d.updated_at.as_ref().and_then(from_timestamp),
        }
    }
}

/// What a return did.
#[derive(SimpleObject, Clone, Debug)]
pub struct ReturnResult {
    /// The loan after the return.
    pub loan: Loan,
    /// Calendar days between the due date and this return, in the library's time zone (0 if on time).
    pub days_late: i32,
    /// Won charged for this return (0 if on time).
    pub late_fee: i64,
}

/// A book to register.
#[derive(InputObject, Debug)]
pub struct CreateBookInput {
    /// ISBN-10 or ISBN-13 (hyphens and spaces allowed; the check digit must match).
    pub isbn: Option<String>,
    /// 1 to 500 characters.
    pub title: String,
    /// 1 to 500 characters.
    pub author: String,
    /// 0 to 100,000.
    pub total_copies: i32,
}

/// Changes to a book; a field left out stays as it is.
#[derive(InputObject, Debug)]
pub struct UpdateBookInput {
    /// A new ISBN.
    pub isbn: Option<String>,
    /// A new title.
    pub title: Option<String>,
    /// A new author.
    pub author: Option<String>,
    /// A new number of copies, not below the copies on loan.
    pub total_copies: Option<i32>,
}
