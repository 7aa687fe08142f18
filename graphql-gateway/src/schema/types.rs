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

#[derive(SimpleObject, Clone, Debug)]
pub struct Book {
    pub id: ID,
    pub isbn: Option<String>,
    pub title: String,
    pub author: String,
    pub total_copies: i32,
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

#[derive(SimpleObject, Clone, Debug)]
pub struct PageInfo {
    pub has_next_page: bool,
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

#[derive(SimpleObject, Clone, Debug)]
pub struct BookConnection {
    pub nodes: Vec<Book>,
    pub page_info: PageInfo,
    pub total_count: i32,
}

#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum LoanStatus {
    Pending,
    Active,
    Returned,
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

#[derive(SimpleObject, Clone, Debug)]
#[graphql(complex)]
pub struct Loan {
    pub id: ID,
    pub user_id: ID,
    pub book_id: ID,
    pub quantity: i32,
    pub returned_quantity: i32,
    pub status: LoanStatus,
    pub borrowed_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub late_fee: i64,
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

#[derive(SimpleObject, Clone, Debug)]
pub struct LoanConnection {
    pub nodes: Vec<Loan>,
    pub page_info: PageInfo,
    pub total_count: i32,
}

#[derive(SimpleObject, Clone, Debug)]
pub struct Dashboard {
    pub user_id: ID,
    pub borrowed_count: i32,
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

#[derive(SimpleObject, Clone, Debug)]
pub struct ReturnResult {
    pub loan: Loan,
    pub days_late: i32,
    pub late_fee: i64,
}

#[derive(InputObject, Debug)]
pub struct CreateBookInput {
    pub isbn: Option<String>,
    pub title: String,
    pub author: String,
    pub total_copies: i32,
}

#[derive(InputObject, Debug)]
pub struct UpdateBookInput {
    pub isbn: Option<String>,
    pub title: Option<String>,
    pub author: Option<String>,
    pub total_copies: Option<i32>,
}
