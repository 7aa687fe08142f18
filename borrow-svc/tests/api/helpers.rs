//! book-svc and borrow-svc started in-process on port 0, each on a fresh PostgreSQL database,
//! sharing fresh broker names; gRPC clients to both.
use std::time::Duration;

use clap::Parser;
use library_platform::bus::{BusNames, EventBus};
pub use library_platform::test_support::eventually;
use library_platform::test_support::{fresh_bus_names, fresh_postgres_database, init_tracing, system_bus};
use library_platform::{CancellationToken, TaskTracker};
use library_proto::book::book_service_client::BookServiceClient;
use library_proto::book::{Book, CreateBookRequest, GetBookRequest};
use library_proto::borrow::borrow_service_client::BorrowServiceClient;
use library_proto::borrow::{
    BorrowRequest, ChangeDueDateRequest, GetLoanRequest, ListLoansRequest, Loan, LoanStatus, ReturnRequest,
};
use tonic::transport::Channel;

pub const WAIT: Duration = Duration::from_secs(20);

/// One running service: its port and how to stop it.
pub struct Running {
    pub port: u16,
    /// Where `/metrics` is served, when the service was given `--metrics-addr`.
    pub metrics_port: Option<u16>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Running {
    /// Stops the service and waits until it has drained.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn start_book(database_url: &str, names: &BusNames) -> Running {
    start_book_with(database_url, names, &[]).await
}

/// `extra`: book-svc flags, e.g. `["--stock-hold-ttl", "0.5"]`.
pub async fn start_book_with(database_url: &str, names: &BusNames, extra: &[&str]) -> Running {
    let mut args = vec![
        "book-svc",
        "--book-grpc-addr",
        "127.0.0.1:0",
        "--database-url",
        database_url,
    ];
    args.extend_from_slice(extra);
    let config = book_svc::Config::try_parse_from(args).expect("config");
    let shutdown = CancellationToken::new();
    let app = book_svc::Application::build(&config, system_bus(names), shutdown.clone())
        .await
        .expect("book-svc builds");
    let (port, metrics_port) = (app.port(), app.metrics_port());
    let tracker = TaskTracker::new();
    tracker.spawn(async move { app.run_until_stopped().await.expect("book-svc runs") });
    Running {
        port,
        metrics_port,
        shutdown,
        tracker,
    }
}

pub async fn start_borrow(database_url: &str, bus: EventBus, book_port: u16, extra: &[&str]) -> Running {
    let book_url = format!("http://127.0.0.1:{book_port}");
    let mut args = vec![
        "borrow-svc",
        "--borrow-grpc-addr",
        "127.0.0.1:0",
        "--database-url",
        database_url,
        "--book-svc-url",
        &book_url,
    ];
    args.extend_from_slice(extra);
    let config = borrow_svc::Config::try_parse_from(args).expect("config");
    let shutdown = CancellationToken::new();
    let app = borrow_svc::Application::build(&config, bus, shutdown.clone())
        .await
        .expect("borrow-svc builds");
    let (port, metrics_port) = (app.port(), app.metrics_port());
    let tracker = TaskTracker::new();
    tracker.spawn(async move { app.run_until_stopped().await.expect("borrow-svc runs") });
    Running {
        port,
        metrics_port,
        shutdown,
        tracker,
    }
}

/// book-svc + borrow-svc on fresh databases.
pub struct System {
    pub names: BusNames,
    pub book_db: String,
    pub borrow_db: String,
    pub book: Option<Running>,
    pub borrow: Running,
    pub book_port: u16,
}

impl System {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// `extra`: borrow-svc flags, e.g. `["--max-copies-per-user", "15"]`.
    pub async fn start_with(extra: &[&str]) -> Self {
        Self::start_with_both(&[], extra).await
    }

    /// `book_extra`: book-svc flags; `extra`: borrow-svc flags.
    pub async fn start_with_both(book_extra: &[&str], extra: &[&str]) -> Self {
        init_tracing();
        let names = fresh_bus_names();
        let book_db = fresh_postgres_database("book").await;
        let borrow_db = fresh_postgres_database("borrow").await;
        let book = start_book_with(&book_db, &names, book_extra).await;
        let borrow = start_borrow(&borrow_db, system_bus(&names), book.port, extra).await;
        Self {
            book_port: book.port,
            names,
            book_db,
            borrow_db,
            book: Some(book),
            borrow,
        }
    }

    pub async fn book_client(&self) -> BookServiceClient<Channel> {
        BookServiceClient::connect(format!("http://127.0.0.1:{}", self.book_port))
            .await
            .expect("book-svc reachable")
    }

    pub async fn borrow_client(&self) -> BorrowServiceClient<Channel> {
        BorrowServiceClient::connect(format!("http://127.0.0.1:{}", self.borrow.port))
            .await
            .expect("borrow-svc reachable")
    }

    pub async fn create_book(&self, copies: i32) -> Book {
        let request = CreateBookRequest {
            isbn: None,
            title: "Dune".into(),
            author: "Frank Herbert".into(),
            total_copies: copies,
        };
        self.book_client()
            .await
            .create_book(request)
            .await
            .expect("book created")
            .into_inner()
    }

    pub async fn book(&self, id: &str) -> Book {
        self.book_client()
            .await
            .get_book(GetBookRequest { id: id.into() })
            .await
            .expect("book")
            .into_inner()
    }

    pub async fn borrow(&self, user: &str, book_id: &str, quantity: i32) -> Result<Loan, tonic::Status> {
        self.borrow_with(user.into(), book_id.into(), quantity, None).await
    }

    pub async fn borrow_with(
        &self,
        user: String,
        book_id: String,
        quantity: i32,
        idempotency_key: Option<String>,
    ) -> Result<Loan, tonic::Status> {
        let request = BorrowRequest {
            user_id: user,
            book_id,
            quantity,
            idempotency_key,
        };
        self.borrow_client().await.borrow(request).await.map(|r| r.into_inner())
    }

    /// Every loan of `user`, newest first.
    pub async fn loans_of(&self, user: &str) -> Vec<Loan> {
        let request = ListLoansRequest {
            user_id: user.into(),
            page_size: 100,
            ..Default::default()
        };
        self.borrow_client()
            .await
            .list_loans(request)
            .await
            .expect("loans")
            .into_inner()
            .loans
    }

    pub async fn return_copies(
        &self,
        user: &str,
        loan_id: &str,
        quantity: Option<i32>,
    ) -> Result<library_proto::borrow::ReturnResponse, tonic::Status> {
        let request = ReturnRequest {
            user_id: user.into(),
            loan_id: loan_id.into(),
            quantity,
        };
        self.borrow_client()
            .await
            .r#return(request)
            .await
            .map(|r| r.into_inner())
    }

    pub async fn loan(&self, id: &str) -> Loan {
        let request = GetLoanRequest {
            loan_id: id.into(),
            user_id: None,
        };
        self.borrow_client()
            .await
            .get_loan(request)
            .await
            .expect("loan")
            .into_inner()
    }

    pub async fn wait_for_status(&self, id: &str, status: LoanStatus) -> Loan {
        let reached = eventually(WAIT, || async { self.loan(id).await.status == status as i32 }).await;
        let loan = self.loan(id).await;
        assert!(reached, "loan {id} never became {status:?}; it is {:?}", loan.status());
        loan
    }

    pub async fn move_due_date(&self, loan_id: &str, days_ago: i64) {
        let due = chrono::Utc::now() - chrono::Duration::days(days_ago);
        let request = ChangeDueDateRequest {
            loan_id: loan_id.into(),
            due_at: Some(library_proto::time::to_timestamp(due)),
        };
        self.borrow_client()
            .await
            .change_due_date(request)
            .await
            .expect("due date moved");
    }
}

pub fn reason(status: &tonic::Status) -> Option<&'static str> {
    library_platform::grpc::reason_of(status).map(library_platform::grpc::Reason::as_str)
}

/// The holds of book-svc's database: loan id -> (copies, confirmed).
pub async fn holds_in(book_db: &str) -> std::collections::HashMap<String, (i32, bool)> {
    use sea_orm::{ConnectionTrait, Database, Statement};
    let db = Database::connect(book_db).await.expect("book database");
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT loan_id, quantity, held_until IS NULL AS confirmed FROM reservations",
        ))
        .await
        .expect("reservations");
    rows.iter()
        .map(|row| {
            let loan: String = row.try_get("", "loan_id").expect("loan_id");
            let quantity: i32 = row.try_get("", "quantity").expect("quantity");
            let confirmed: bool = row.try_get("", "confirmed").expect("confirmed");
            (loan, (quantity, confirmed))
        })
        .collect()
}

/// A borrow-svc on `borrow_db` whose broker is unreachable: its loans commit, their events wait
/// in the outbox.
pub async fn start_cut_off_borrow(borrow_db: &str, names: &BusNames, book_port: u16, extra: &[&str]) -> Running {
    let down = EventBus::rabbitmq("amqp://guest:guest@127.0.0.1:1/%2f", names.clone()).expect("bus");
    start_borrow(borrow_db, down, book_port, extra).await
}

/// Borrows through the borrow-svc on `port`.
pub async fn borrow_at(port: u16, user: &str, book_id: &str, quantity: i32) -> Loan {
    let request = BorrowRequest {
        user_id: user.into(),
        book_id: book_id.into(),
        quantity,
        idempotency_key: None,
    };
    BorrowServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("borrow-svc reachable")
        .borrow(request)
        .await
        .expect("borrowed")
        .into_inner()
}
