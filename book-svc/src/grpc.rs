//! The `library.book.v1.BookService` server: requests parsed into domain values, the catalogue
//! called, results mapped back; errors mapped to status codes here and nowhere else.
use std::pin::Pin;

use futures::{Stream, StreamExt};
use library_platform::CancellationToken;
use library_platform::grpc::{Reason, internal, invalid_field, parse_id, refused};
use library_platform::text::{copies, is_are};
use library_proto::book::book_service_server::BookService;
use library_proto::book::{
    BatchGetBooksRequest, BatchGetBooksResponse, Book as BookMessage, CheckStockRequest, CheckStockResponse,
    ConfirmHoldsRequest, ConfirmHoldsResponse, CreateBookRequest, DeleteBookRequest, DeleteBookResponse,
    GetBookRequest, Hold, HoldStockRequest, HoldStockResponse, ListBooksRequest, ListBooksResponse,
    ListExpiredHoldsRequest, ListExpiredHoldsResponse, ReleaseHoldRequest, ReleaseHoldResponse, UpdateBookRequest,
    WatchBookRequest,
};
use library_proto::time::to_timestamp;
use tokio_stream::wrappers::BroadcastStream;
use tonic::{Code, Request, Response, Status};

use crate::catalog::{Book, Catalog, CatalogError};
use crate::domain::{BookDraft, BookEdit};
use crate::events::StockWatch;

impl From<CatalogError> for Status {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::Invalid(e) => invalid_field(e.field, e.message),
            CatalogError::Paging(e) => e.to_status(),
            CatalogError::NotFound => Status::not_found("book not found"),
            CatalogError::CopiesOnLoan { on_loan } => refused(
                Code::FailedPrecondition,
                Reason::CopiesOnLoan,
                format!(
                    "{} {} on loan; they must come back first",
                    copies(on_loan),
                    is_are(on_loan)
                ),
            ),
            CatalogError::Database(e) => internal("catalogue database failure", &e),
        }
    }
}

fn to_message(book: Book) -> BookMessage {
    BookMessage {
        id: book.id,
        isbn: book.isbn,
        title: book.title,
        author: book.author,
        total_copies: book.total_copies,
        available_copies: book.available_copies,
        created_at: Some(to_timestamp(book.created_at)),
        updated_at: Some(to_timestamp(book.updated_at)),
    }
}

/// The longest search text: a catalogue search is a few words, and a longer one would only make
/// the database scan with a huge pattern.
const MAX_SEARCH_LEN: usize = 200;

/// The gRPC face of the catalogue.
pub struct BookGrpc {
    pub catalog: Catalog,
    pub watch: StockWatch,
    /// Ends open watch streams when the server stops, so the drain does not wait on them.
    pub shutdown: CancellationToken,
}

type BookStream = Pin<Box<dyn Stream<Item = Result<BookMessage, Status>> + Send>>;

#[tonic::async_trait]
impl BookService for BookGrpc {
    #[tracing::instrument(skip_all, fields(book_id = %request.get_ref().book_id, quantity = request.get_ref().quantity))]
    async fn check_stock(&self, request: Request<CheckStockRequest>) -> Result<Response<CheckStockResponse>, Status> {
        let request = request.into_inner();
        let id = parse_id("book_id", &request.book_id)?;
        if request.quantity <= 0 {
            return Err(invalid_field("quantity", "must be at least 1"));
        }
        let (available, sufficient) = self.catalog.check_stock(&id, request.quantity).await?;
        Ok(Response::new(CheckStockResponse { available, sufficient }))
    }

    #[tracing::instrument(skip_all, fields(loan_id = %request.get_ref().loan_id, book_id = %request.get_ref().book_id, quantity = request.get_ref().quantity))]
    async fn hold_stock(&self, request: Request<HoldStockRequest>) -> Result<Response<HoldStockResponse>, Status> {
        let request = request.into_inner();
        let loan_id = parse_id("loan_id", &request.loan_id)?;
        let book_id = parse_id("book_id", &request.book_id)?;
        if request.quantity <= 0 {
            return Err(invalid_field("quantity", "must be at least 1"));
        }
        if request.user_id.is_empty() || request.user_id.len() > 128 {
            return Err(invalid_field("user_id", "must be 1 to 128 characters"));
        }
        let (held, available) = self
            .catalog
            .hold_stock(&loan_id, &request.user_id, &book_id, request.quantity)
            .await?;
        Ok(Response::new(HoldStockResponse { held, available }))
    }

    #[tracing::instrument(skip_all, fields(loan_id = %request.get_ref().loan_id))]
    async fn release_hold(
        &self,
        request: Request<ReleaseHoldRequest>,
    ) -> Result<Response<ReleaseHoldResponse>, Status> {
        let loan_id = parse_id("loan_id", &request.get_ref().loan_id)?;
        let released = self.catalog.release_hold(&loan_id).await?;
        Ok(Response::new(ReleaseHoldResponse { released }))
    }

    #[tracing::instrument(skip_all, fields(limit = request.get_ref().limit))]
    async fn list_expired_holds(
        &self,
        request: Request<ListExpiredHoldsRequest>,
    ) -> Result<Response<ListExpiredHoldsResponse>, Status> {
        let limit = match request.get_ref().limit {
            0 => 100,
            limit @ 1..=1000 => limit,
            _ => return Err(invalid_field("limit", "must be between 1 and 1000")),
        };
        let holds = self.catalog.expired_holds(limit as u64).await?;
        Ok(Response::new(ListExpiredHoldsResponse {
            holds: holds
                .into_iter()
                .map(|hold| Hold {
                    loan_id: hold.loan_id,
                    user_id: hold.user_id.unwrap_or_default(),
                    book_id: hold.book_id,
                    quantity: hold.quantity,
                })
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(count = request.get_ref().loan_ids.len()))]
    async fn confirm_holds(
        &self,
        request: Request<ConfirmHoldsRequest>,
    ) -> Result<Response<ConfirmHoldsResponse>, Status> {
        let ids = &request.get_ref().loan_ids;
        if ids.len() > 1000 {
            return Err(invalid_field("loan_ids", "at most 1000 per call"));
        }
        let ids: Vec<String> = ids
            .iter()
            .map(|id| parse_id("loan_ids", id))
            .collect::<Result<_, _>>()?;
        self.catalog.confirm_holds(&ids).await?;
        Ok(Response::new(ConfirmHoldsResponse {}))
    }

    #[tracing::instrument(skip_all, fields(book_id = %request.get_ref().id))]
    async fn get_book(&self, request: Request<GetBookRequest>) -> Result<Response<BookMessage>, Status> {
        let id = parse_id("id", &request.get_ref().id)?;
        Ok(Response::new(to_message(self.catalog.get(&id).await?)))
    }

    #[tracing::instrument(skip_all, fields(count = request.get_ref().ids.len()))]
    async fn batch_get_books(
        &self,
        request: Request<BatchGetBooksRequest>,
    ) -> Result<Response<BatchGetBooksResponse>, Status> {
        let ids = request.into_inner().ids;
        if ids.len() > 1000 {
            return Err(invalid_field("ids", "at most 1000 per call"));
        }
        // Ids that are not UUIDs cannot name a book: they are simply not found.
        let ids: Vec<String> = ids.iter().filter_map(|id| parse_id("ids", id).ok()).collect();
        let books = self.catalog.get_many(&ids).await?;
        Ok(Response::new(BatchGetBooksResponse {
            books: books.into_iter().map(to_message).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_books(&self, request: Request<ListBooksRequest>) -> Result<Response<ListBooksResponse>, Status> {
        let request = request.into_inner();
        if request.search.chars().count() > MAX_SEARCH_LEN {
            return Err(invalid_field(
                "search",
                format!("must be at most {MAX_SEARCH_LEN} characters"),
            ));
        }
        let page = self
            .catalog
            .list(&request.search, request.page_size, &request.page_token)
            .await?;
        Ok(Response::new(ListBooksResponse {
            books: page.books.into_iter().map(to_message).collect(),
            next_page_token: page.next_page_token,
            total_count: page.total_count as i64,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn create_book(&self, request: Request<CreateBookRequest>) -> Result<Response<BookMessage>, Status> {
        let r = request.into_inner();
        let draft =
            BookDraft::parse(r.isbn.as_deref(), &r.title, &r.author, r.total_copies).map_err(CatalogError::from)?;
        Ok(Response::new(to_message(self.catalog.register(draft).await?)))
    }

    #[tracing::instrument(skip_all, fields(book_id = %request.get_ref().id))]
    async fn update_book(&self, request: Request<UpdateBookRequest>) -> Result<Response<BookMessage>, Status> {
        let r = request.into_inner();
        let id = parse_id("id", &r.id)?;
        let edit = BookEdit::parse(
            r.isbn.as_deref(),
            r.title.as_deref(),
            r.author.as_deref(),
            r.total_copies,
        )
        .map_err(CatalogError::from)?;
        Ok(Response::new(to_message(self.catalog.edit(&id, edit).await?)))
    }

    #[tracing::instrument(skip_all, fields(book_id = %request.get_ref().id))]
    async fn delete_book(&self, request: Request<DeleteBookRequest>) -> Result<Response<DeleteBookResponse>, Status> {
        let id = parse_id("id", &request.get_ref().id)?;
        self.catalog.remove(&id).await?;
        Ok(Response::new(DeleteBookResponse { id }))
    }

    type WatchBookStream = BookStream;

    #[tracing::instrument(skip_all, fields(book_id = %request.get_ref().id))]
    async fn watch_book(&self, request: Request<WatchBookRequest>) -> Result<Response<Self::WatchBookStream>, Status> {
        let id = parse_id("id", &request.get_ref().id)?;
        // Subscribe before reading, so no change between the read and the subscription is missed.
        let changes = BroadcastStream::new(self.watch.subscribe());
        let current = self.catalog.get(&id).await?;
        let catalog = self.catalog.clone();
        let watched = id.clone();
        let updates = changes
            .filter(move |changed| {
                // A lagging receiver re-reads: it may have missed this book's change.
                let relevant = changed.as_ref().map(|c| *c == watched).unwrap_or(true);
                futures::future::ready(relevant)
            })
            .then(move |_| {
                let catalog = catalog.clone();
                let id = id.clone();
                async move { catalog.get(&id).await }
            })
            .take_while(|book| futures::future::ready(!matches!(book, Err(CatalogError::NotFound))))
            .map(|book| book.map(to_message).map_err(Status::from));
        let stream = futures::stream::once(futures::future::ready(Ok(to_message(current))))
            .chain(updates)
            .take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }
}
