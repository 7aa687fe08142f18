//! The GraphQL schema of CONTRACT.md: queries, mutations and subscriptions, each a thin
//! translation to one service call.
mod limits;
mod loader;
mod parse_cache;
mod types;

use std::sync::Arc;

use async_graphql::dataloader::DataLoader;
use async_graphql::{Context, Data, ID, Object, Schema, Subscription};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use library_platform::CancellationToken;
use library_proto::book::{
    CreateBookRequest, DeleteBookRequest, GetBookRequest, ListBooksRequest, UpdateBookRequest, WatchBookRequest,
};
use library_proto::borrow::{BorrowRequest, ChangeDueDateRequest, GetLoanRequest, ListLoansRequest, ReturnRequest};
use library_proto::dashboard::{GetDashboardRequest, WatchDashboardRequest};
use library_proto::time::to_timestamp;

pub use loader::BookLoader;
pub use types::{
    Book, BookConnection, CreateBookInput, Dashboard, Loan, LoanConnection, LoanStatus, PageInfo, ReturnResult,
    UpdateBookInput,
};

use crate::auth::Auth;
use crate::downstream::Downstreams;
use crate::error::GatewayError;

/// The schema served at `/graphql`.
pub type LibrarySchema = Schema<Query, Mutation, Subscription>;

pub use limits::MAX_DEPTH;

/// Most complex query accepted (each field counts 1, lists as asked).
pub const MAX_COMPLEXITY: usize = 500;

/// Builds the schema over `downstreams`; `shutdown` ends subscriptions when the gateway stops.
pub fn build(downstreams: Arc<Downstreams>, shutdown: CancellationToken) -> LibrarySchema {
    Schema::build(Query, Mutation, Subscription)
        .data(downstreams)
        .data(Shutdown(shutdown))
        // Ordinary queries are held to MAX_DEPTH by the parse extension; the engine's bound
        // also covers the standard introspection query's deeper nesting.
        .limit_depth(limits::MAX_INTROSPECTION_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .extension(parse_cache::ParseCache::new())
        .finish()
}

/// The schema in SDL (GraphQL's schema language), with every description: what
/// `GET /graphql/schema.graphql` serves and `graphql-gateway/schema.graphql` holds.
pub fn sdl() -> String {
    Schema::build(Query, Mutation, Subscription).finish().sdl()
}

/// What each request (or WebSocket connection) carries: who asks, and its own book loader.
pub fn request_data(downstreams: &Arc<Downstreams>, auth: Auth) -> Data {
    let mut data = Data::default();
    data.insert(auth);
    data.insert(DataLoader::new(
        BookLoader {
            downstreams: downstreams.clone(),
        },
        // A batch of loads runs in a task of its own: in the span of the request that asked.
        |batch| tokio::spawn(tracing::Instrument::instrument(batch, tracing::Span::current())),
    ));
    data
}

struct Shutdown(CancellationToken);

fn auth<'a>(ctx: &'a Context<'_>) -> &'a Auth {
    static ANONYMOUS: Auth = Auth::Anonymous;
    ctx.data_opt::<Auth>().unwrap_or(&ANONYMOUS)
}

fn downstreams<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<&'a Downstreams> {
    ctx.data::<Arc<Downstreams>>().map(Arc::as_ref)
}

fn page_size(first: i32) -> Result<i32, GatewayError> {
    if (1..=100).contains(&first) {
        Ok(first)
    } else {
        Err(GatewayError::BadUserInput("first: must be between 1 and 100".into()))
    }
}

/// An id argument, checked here so the message names the argument as the client wrote it.
fn id_arg(argument: &str, id: &ID) -> Result<String, GatewayError> {
    uuid::Uuid::parse_str(id.trim()).map(|id| id.to_string()).map_err(|_| {
        GatewayError::BadUserInput(format!(
            "{argument}: `{}` is not a valid id",
            library_platform::text::excerpt(id)
        ))
    })
}

pub struct Query;

/// Reads: the catalogue for anyone, loans and dashboards for their reader.
#[Object]
impl Query {
    /// The catalogue: books whose title or author contains `search`, by title.
    async fn books(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Words the title or author contains (case-insensitive), at most 200 characters.")]
        search: Option<String>,
        #[graphql(default = 20, desc = "Page size, 1 to 100.")] first: i32,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> async_graphql::Result<BookConnection> {
        let first = page_size(first)?;
        let book = &downstreams(ctx)?.book;
        // book-svc bounds `search`; its refusal names the field, as the client wrote it.
        let request = book.request(ListBooksRequest {
            search: search.unwrap_or_default(),
            page_size: first,
            page_token: after.unwrap_or_default(),
        });
        let page = book
            .call("ListBooks", |mut c| async move { c.list_books(request).await })
            .await?;
        Ok(BookConnection {
            nodes: page.books.into_iter().map(Book::from).collect(),
            page_info: PageInfo::from_token(page.next_page_token),
            total_count: i32::try_from(page.total_count).unwrap_or(i32::MAX),
        })
    }

    /// One book.
    async fn book(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The book's id.")] id: ID,
    ) -> async_graphql::Result<Option<Book>> {
        let book = &downstreams(ctx)?.book;
        let request = book.request(GetBookRequest { id: id_arg("id", &id)? });
        let found = book
            .call("GetBook", |mut c| async move { c.get_book(request).await })
            .await?;
        Ok(Some(Book::from(found)))
    }

    /// The viewer's loans, newest first.
    async fn my_loans(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only loans in this status; all when omitted.")] status: Option<LoanStatus>,
        #[graphql(default = 20, desc = "Page size, 1 to 100.")] first: i32,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> async_graphql::Result<LoanConnection> {
        let viewer = auth(ctx).viewer()?;
        let first = page_size(first)?;
        let borrow = &downstreams(ctx)?.borrow;
        let request = borrow.request(ListLoansRequest {
            user_id: viewer.user_id.clone(),
            status: status.map(|s| s.to_proto() as i32),
            page_size: first,
            page_token: after.unwrap_or_default(),
        });
        let page = borrow
            .call("ListLoans", |mut c| async move { c.list_loans(request).await })
            .await?;
        Ok(LoanConnection {
            nodes: page.loans.into_iter().map(Loan::from).collect(),
            page_info: PageInfo::from_token(page.next_page_token),
            total_count: i32::try_from(page.total_count).unwrap_or(i32::MAX),
        })
    }

    /// One of the viewer's loans (administrators: any loan).
    async fn loan(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The loan's id.")] id: ID,
    ) -> async_graphql::Result<Option<Loan>> {
        let viewer = auth(ctx).viewer()?;
        let borrow = &downstreams(ctx)?.borrow;
        let request = borrow.request(GetLoanRequest {
            loan_id: id_arg("id", &id)?,
            user_id: (!viewer.admin).then(|| viewer.user_id.clone()),
        });
        let loan = borrow
            .call("GetLoan", |mut c| async move { c.get_loan(request).await })
            .await?;
        Ok(Some(Loan::from(loan)))
    }

    /// The viewer's copies on loan and accumulated late fee.
    async fn my_dashboard(&self, ctx: &Context<'_>) -> async_graphql::Result<Dashboard> {
        let viewer = auth(ctx).viewer()?;
        let dashboard = &downstreams(ctx)?.dashboard;
        let request = dashboard.request(GetDashboardRequest {
            user_id: viewer.user_id.clone(),
        });
        let found = dashboard
            .call("GetDashboard", |mut c| async move { c.get_dashboard(request).await })
            .await?;
        Ok(Dashboard::from(found))
    }
}

pub struct Mutation;

/// Writes: borrowing and returning for readers, the catalogue and due dates for administrators.
#[Object]
impl Mutation {
    /// Borrows copies of a book. The same `idempotencyKey` by the same reader returns the first
    /// loan again.
    async fn borrow_book(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The book to borrow.")] book_id: ID,
        #[graphql(default = 1, desc = "Copies, 1 to the reader's limit (LIBRARY_MAX_COPIES_PER_USER).")] quantity: i32,
        #[graphql(
            desc = "Any text up to 200 characters, unique per intended borrow: a retry with the same key returns the first loan instead of borrowing again."
        )]
        idempotency_key: Option<String>,
    ) -> async_graphql::Result<Loan> {
        let viewer = auth(ctx).viewer()?;
        if quantity < 1 {
            return Err(GatewayError::BadUserInput("quantity: must be at least 1".into()).into());
        }
        let borrow = &downstreams(ctx)?.borrow;
        let request = borrow.request(BorrowRequest {
            user_id: viewer.user_id.clone(),
            book_id: id_arg("bookId", &book_id)?,
            quantity,
            idempotency_key,
        });
        let loan = borrow
            .call("Borrow", |mut c| async move { c.borrow(request).await })
            .await?;
        metrics::counter!("library_borrows_total").increment(1);
        Ok(Loan::from(loan))
    }

    /// Returns copies of a loan (all outstanding when `quantity` is omitted).
    async fn return_book(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The loan.")] loan_id: ID,
        #[graphql(desc = "Copies to return; every outstanding copy when omitted.")] quantity: Option<i32>,
    ) -> async_graphql::Result<ReturnResult> {
        let viewer = auth(ctx).viewer()?;
        if quantity.is_some_and(|q| q < 1) {
            return Err(GatewayError::BadUserInput("quantity: must be at least 1".into()).into());
        }
        let borrow = &downstreams(ctx)?.borrow;
        let request = borrow.request(ReturnRequest {
            user_id: viewer.user_id.clone(),
            loan_id: id_arg("loanId", &loan_id)?,
            quantity,
        });
        let reply = borrow
            .call("Return", |mut c| async move { c.r#return(request).await })
            .await?;
        let loan = reply.loan.ok_or(GatewayError::ServiceUnavailable("borrow"))?;
        metrics::counter!("library_returns_total").increment(1);
        metrics::counter!("library_late_fees_won_total").increment(u64::try_from(reply.late_fee).unwrap_or(0));
        Ok(ReturnResult {
            loan: Loan::from(loan),
            days_late: reply.days_late,
            late_fee: reply.late_fee,
        })
    }

    /// Registers a book (administrators).
    async fn create_book(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The new book.")] input: CreateBookInput,
    ) -> async_graphql::Result<Book> {
        auth(ctx).admin()?;
        let book = &downstreams(ctx)?.book;
        let request = book.request(CreateBookRequest {
            isbn: input.isbn,
            title: input.title,
            author: input.author,
            total_copies: input.total_copies,
        });
        let created = book
            .call("CreateBook", |mut c| async move { c.create_book(request).await })
            .await?;
        Ok(Book::from(created))
    }

    /// Edits a book (administrators).
    async fn update_book(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The book.")] id: ID,
        #[graphql(desc = "The fields to change.")] input: UpdateBookInput,
    ) -> async_graphql::Result<Book> {
        auth(ctx).admin()?;
        let book = &downstreams(ctx)?.book;
        let request = book.request(UpdateBookRequest {
            id: id_arg("id", &id)?,
            isbn: input.isbn,
            title: input.title,
            author: input.author,
            total_copies: input.total_copies,
        });
        let updated = book
            .call("UpdateBook", |mut c| async move { c.update_book(request).await })
            .await?;
        Ok(Book::from(updated))
    }

    /// Removes a book with no copy on loan (administrators).
    async fn delete_book(&self, ctx: &Context<'_>, #[graphql(desc = "The book.")] id: ID) -> async_graphql::Result<ID> {
        auth(ctx).admin()?;
        let book = &downstreams(ctx)?.book;
        let request = book.request(DeleteBookRequest { id: id_arg("id", &id)? });
        let deleted = book
            .call("DeleteBook", |mut c| async move { c.delete_book(request).await })
            .await?;
        Ok(ID(deleted.id))
    }

    /// Moves the due date of an open loan (administrators).
    async fn change_due_date(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The loan.")] loan_id: ID,
        #[graphql(desc = "The new due date.")] due_at: DateTime<Utc>,
    ) -> async_graphql::Result<Loan> {
        auth(ctx).admin()?;
        let borrow = &downstreams(ctx)?.borrow;
        let request = borrow.request(ChangeDueDateRequest {
            loan_id: id_arg("loanId", &loan_id)?,
            due_at: Some(to_timestamp(due_at)),
        });
        let loan = borrow
            .call("ChangeDueDate", |mut c| async move { c.change_due_date(request).await })
            .await?;
        Ok(Loan::from(loan))
    }
}

pub struct Subscription;

/// Live views over WebSocket (`graphql-transport-ws` at `/graphql/ws`).
#[Subscription]
impl Subscription {
    /// The book now, then again each time its stock changes.
    async fn book_stock(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The book to watch.")] book_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Book>> + use<>> {
        let book = &downstreams(ctx)?.book;
        let shutdown = ctx.data::<Shutdown>()?.0.clone();
        let request = tonic::Request::new(WatchBookRequest {
            id: id_arg("bookId", &book_id)?,
        });
        let stream = book
            .open_stream(|mut c| async move { c.watch_book(request).await })
            .await?;
        let name = book.name();
        Ok(stream
            .map(move |item| {
                item.map(Book::from)
                    .map_err(|status| async_graphql::Error::from(GatewayError::from_status(name, &status)))
            })
            .take_until(shutdown.cancelled_owned()))
    }

    /// The viewer's dashboard now, then after each change.
    async fn my_dashboard(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Dashboard>> + use<>> {
        let viewer = auth(ctx).viewer()?;
        let dashboard = &downstreams(ctx)?.dashboard;
        let shutdown = ctx.data::<Shutdown>()?.0.clone();
        let request = tonic::Request::new(WatchDashboardRequest {
            user_id: viewer.user_id.clone(),
        });
        let stream = dashboard
            .open_stream(|mut c| async move { c.watch_dashboard(request).await })
            .await?;
        let name = dashboard.name();
        Ok(stream
            .map(move |item| {
                item.map(Dashboard::from)
                    .map_err(|status| async_graphql::Error::from(GatewayError::from_status(name, &status)))
            })
            .take_until(shutdown.cancelled_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `UPDATE_SCHEMA=1 cargo test -p graphql-gateway committed_sdl` rewrites the file.
    #[test]
    fn the_committed_sdl_is_the_schema_served() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
        let served = sdl();
        if std::env::var_os("UPDATE_SCHEMA").is_some() {
            std::fs::write(path, &served).expect("write schema.graphql");
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == served,
            "graphql-gateway/schema.graphql differs from the schema; run \
             `UPDATE_SCHEMA=1 cargo test -p graphql-gateway committed_sdl` and commit the file"
        );
    }

    #[tokio::test]
    async fn every_type_field_argument_and_value_is_described() {
        let schema = Schema::build(Query, Mutation, Subscription).finish();
        let query = "{ __schema { types { name description \
            fields { name description args { name description } } \
            inputFields { name description } enumValues { name description } } } }";
        let response = schema.execute(query).await;
        assert!(response.errors.is_empty(), "{:?}", response.errors);
        let data = response.data.into_json().expect("json");
        let builtin = ["String", "Int", "Float", "Boolean", "ID"];
        let mut missing = Vec::new();
        let described = |v: &serde_json::Value| v["description"].as_str().is_some_and(|d| !d.trim().is_empty());
        for ty in data["__schema"]["types"].as_array().expect("types") {
            let name = ty["name"].as_str().unwrap_or_default();
            if name.starts_with("__") || builtin.contains(&name) {
                continue;
            }
            if !described(ty) {
                missing.push(name.to_owned());
            }
            for list in ["fields", "inputFields", "enumValues"] {
                for item in ty[list].as_array().into_iter().flatten() {
                    let item_name = format!("{name}.{}", item["name"].as_str().unwrap_or_default());
                    if !described(item) {
                        missing.push(item_name.clone());
                    }
                    for arg in item["args"].as_array().into_iter().flatten() {
                        if !described(arg) {
                            missing.push(format!("{item_name}({})", arg["name"].as_str().unwrap_or_default()));
                        }
                    }
                }
            }
        }
        assert!(missing.is_empty(), "without a description: {missing:?}");
    }
}
