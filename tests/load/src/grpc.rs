//! gRPC scenarios: book-svc's `CheckStock` (the synchronous guard of every borrow) and
//! borrow-svc's `Borrow`, with the lag until the saga makes the loan ACTIVE.
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow};
use library_proto::book::book_service_client::BookServiceClient;
use library_proto::book::{CheckStockRequest, CreateBookRequest};
use library_proto::borrow::borrow_service_client::BorrowServiceClient;
use library_proto::borrow::{BorrowRequest, GetLoanRequest, Loan, LoanStatus};
use tonic::transport::{Channel, Endpoint};

use crate::driver::{Failure, LoadArgs, drive, run_tag};
use crate::probe::{Poll, ProbeArgs, Probes};
use crate::report::Report;

/// Tasks that share one HTTP/2 connection.
const TASKS_PER_CHANNEL: usize = 8;
/// Copies of the book a run creates: more than a run can borrow.
const COPIES: i32 = 100_000;
/// The metadata entry in which the services name a refusal's reason.
const REASON_KEY: &str = "x-library-reason";

/// `check-stock`: the settings.
#[derive(clap::Args, Clone, Debug)]
pub struct CheckStockArgs {
    /// book-svc's gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub book_url: String,
    #[command(flatten)]
    pub load: LoadArgs,
}

/// `borrow`: the settings.
#[derive(clap::Args, Clone, Debug)]
pub struct BorrowArgs {
    /// borrow-svc's gRPC endpoint.
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    pub borrow_url: String,
    /// book-svc's gRPC endpoint (to create the book the readers borrow).
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub book_url: String,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub probes: ProbeArgs,
}

/// Creates a book with plenty of copies, then sends `CheckStock(book, 1)` from every task.
pub async fn check_stock(args: &CheckStockArgs) -> anyhow::Result<Report> {
    let book_id: Arc<str> = create_book(&args.book_url, "check-stock").await?.into();
    let clients: Arc<[_]> = pool(&args.book_url, args.load.concurrency)
        .await?
        .into_iter()
        .map(BookServiceClient::new)
        .collect();
    let run = drive(&args.load, move |slot| {
        let mut client = clients[slot.task / TASKS_PER_CHANNEL].clone();
        let request = CheckStockRequest {
            book_id: book_id.to_string(),
            quantity: 1,
        };
        async move {
            let reply = client.check_stock(request).await.map_err(|s| failure(&s))?;
            if reply.into_inner().sufficient {
                Ok(())
            } else {
                Err(Failure::new("insufficient"))
            }
        }
    })
    .await?;
    Ok(run.report("check-stock", &args.book_url, &args.load))
}

/// Creates a book with plenty of copies, then borrows one copy per request, each for a new
/// reader (a reader may hold only a few copies). A sample of the loans is polled with `GetLoan`
/// until ACTIVE.
pub async fn borrow(args: &BorrowArgs) -> anyhow::Result<Report> {
    let book_id: Arc<str> = create_book(&args.book_url, "borrow").await?.into();
    let clients: Arc<[_]> = pool(&args.borrow_url, args.load.concurrency)
        .await?
        .into_iter()
        .map(BorrowServiceClient::new)
        .collect();
    let poller = BorrowServiceClient::new(channel(&args.borrow_url).await?);
    let probes = Probes::new(args.probes.clone());
    let tag = run_tag();
    let sampler = probes.clone();
    let run = drive(&args.load, move |slot| {
        let mut client = clients[slot.task / TASKS_PER_CHANNEL].clone();
        let user_id = format!("load-{tag}-{}-{}", slot.task, slot.n);
        let request = BorrowRequest {
            user_id: user_id.clone(),
            book_id: book_id.to_string(),
            quantity: 1,
            idempotency_key: None,
        };
        let (probes, poller) = (sampler.clone(), poller.clone());
        async move {
            let loan = client.borrow(request).await.map_err(|s| failure(&s))?.into_inner();
            let (replied, replied_at) = (Instant::now(), SystemTime::now());
            if !slot.warm_up && probes.sample() {
                let request = GetLoanRequest {
                    loan_id: loan.id,
                    user_id: Some(user_id),
                };
                probes.spawn(replied, move || {
                    let (mut poller, request) = (poller.clone(), request.clone());
                    async move {
                        match poller.get_loan(request).await {
                            Ok(loan) => loan_poll(&loan.into_inner(), replied_at),
                            Err(status) => Poll::Failed(failure(&status).0),
                        }
                    }
                });
            }
            Ok(())
        }
    })
    .await?;
    let mut report = run.report("borrow", &args.borrow_url, &args.load);
    report.lags.push(probes.finish("reply -> ACTIVE").await);
    Ok(report)
}

/// Whether the loan is ACTIVE; if so, how long after the reply it became so: its `updated_at`
/// is the activation's time.
fn loan_poll(loan: &Loan, replied_at: SystemTime) -> Poll {
    match LoanStatus::try_from(loan.status) {
        Ok(LoanStatus::Active) => {
            let activated_at = loan.updated_at.as_ref().and_then(|t| SystemTime::try_from(*t).ok());
            Poll::reached_at(activated_at, replied_at)
        }
        Ok(LoanStatus::Pending) => Poll::Pending,
        Ok(other) => Poll::Ended(other.as_str_name().to_owned()),
        Err(_) => Poll::Ended(format!("unknown status {}", loan.status)),
    }
}

/// Creates the book a run works on, named after the scenario and the run.
async fn create_book(book_url: &str, scenario: &str) -> anyhow::Result<String> {
    let mut client = BookServiceClient::new(channel(book_url).await?);
    let request = CreateBookRequest {
        isbn: None,
        title: format!("library-load {scenario} {}", run_tag()),
        author: "library-load".into(),
        total_copies: COPIES,
    };
    let book = client.create_book(request).await.map_err(|status| {
        anyhow!(
            "CreateBook on {book_url} failed: {} ({})",
            failure(&status).0,
            status.message()
        )
    })?;
    Ok(book.into_inner().id)
}

/// One channel per `TASKS_PER_CHANNEL` tasks.
async fn pool(url: &str, concurrency: usize) -> anyhow::Result<Vec<Channel>> {
    let size = concurrency.div_ceil(TASKS_PER_CHANNEL).max(1);
    futures::future::try_join_all((0..size).map(|_| channel(url))).await
}

/// A connected channel (connecting now, so a wrong address fails before the run).
async fn channel(url: &str) -> anyhow::Result<Channel> {
    Endpoint::from_shared(url.to_owned())
        .with_context(|| format!("`{url}` is not a valid URL"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {url}"))
}

/// The failure as counted: the gRPC code, and the service's reason when it gave one
/// (e.g. `FailedPrecondition/OUT_OF_STOCK`).
fn failure(status: &tonic::Status) -> Failure {
    let code = format!("{:?}", status.code());
    match status.metadata().get(REASON_KEY).and_then(|v| v.to_str().ok()) {
        Some(reason) => Failure(format!("{code}/{reason}")),
        None => Failure(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_counted_with_its_reason() {
        let mut status = tonic::Status::failed_precondition("no");
        status
            .metadata_mut()
            .insert(REASON_KEY, "LOAN_LIMIT_REACHED".parse().expect("ASCII"));
        assert_eq!(failure(&status).0, "FailedPrecondition/LOAN_LIMIT_REACHED");
        assert_eq!(failure(&tonic::Status::unavailable("x")).0, "Unavailable");
    }

    fn loan(status: LoanStatus, updated_at: Option<SystemTime>) -> Loan {
        Loan {
            status: status as i32,
            updated_at: updated_at.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn only_active_ends_a_probe_successfully() {
        let replied_at = SystemTime::now();
        assert!(matches!(
            loan_poll(&loan(LoanStatus::Active, None), replied_at),
            Poll::Reached
        ));
        assert!(matches!(
            loan_poll(&loan(LoanStatus::Pending, None), replied_at),
            Poll::Pending
        ));
        assert!(matches!(
            loan_poll(&loan(LoanStatus::Canceled, None), replied_at),
            Poll::Ended(s) if s == "LOAN_STATUS_CANCELED"
        ));
    }

    #[test]
    fn the_lag_to_active_is_read_from_the_activation_time() {
        let replied_at = SystemTime::now();
        let activated = loan(LoanStatus::Active, Some(replied_at + Duration::from_millis(42)));
        assert!(matches!(
            loan_poll(&activated, replied_at),
            Poll::ReachedAfter(lag) if lag == Duration::from_millis(42)
        ));
        // A clock that read earlier on the server than here counts as no lag, not a panic.
        let early = loan(LoanStatus::Active, Some(replied_at - Duration::from_millis(3)));
        assert!(matches!(loan_poll(&early, replied_at), Poll::ReachedAfter(lag) if lag.is_zero()));
    }
}
