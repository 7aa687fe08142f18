//! Copies held at the borrow: given back when the loan is not stored, kept when it is, and
//! settled when borrow-svc stopped in between.
use futures::future::join_all;
use library_platform::test_support::scrape_metrics;
use library_proto::book::HoldStockRequest;
use library_proto::borrow::LoanStatus;

use crate::helpers::{System, WAIT, borrow_at, eventually, holds_in, reason, start_cut_off_borrow};

/// book-svc's holds expire after 1 s; borrow-svc looks at expired ones every 0.1 s.
const SHORT_HOLDS: [&str; 2] = ["--stock-hold-ttl", "1"];
const FAST_SETTLING: [&str; 2] = ["--hold-settle-interval", "0.1"];

#[tokio::test]
async fn a_borrow_refused_by_the_readers_limit_gives_its_hold_back() {
    let system = System::start_with(&["--max-copies-per-user", "2"]).await;
    let book = system.create_book(5).await;
    let loan = system.borrow("lim", &book.id, 2).await.expect("borrowed");
    assert_eq!(loan.status(), LoanStatus::Active);
    let refused = system.borrow("lim", &book.id, 1).await.expect_err("over the limit");
    assert_eq!(reason(&refused), Some("LOAN_LIMIT_REACHED"));
    let back = eventually(WAIT, || async { system.book(&book.id).await.available_copies == 3 }).await;
    assert!(back, "the refused borrow's copy is back on the shelf");
    assert_eq!(holds_in(&system.book_db).await.len(), 1, "only the loan's hold is left");
}

#[tokio::test]
async fn ten_borrows_with_one_idempotency_key_hold_copies_for_one_loan() {
    let system = System::start().await;
    let book = system.create_book(20).await;
    let key = Some("checkout-7".to_owned());
    let replies = join_all((0..10).map(|_| system.borrow_with("kay".into(), book.id.clone(), 2, key.clone()))).await;
    let ids: std::collections::HashSet<String> = replies.into_iter().map(|reply| reply.expect("answered").id).collect();
    assert_eq!(ids.len(), 1, "one loan");
    let back = eventually(WAIT, || async { system.book(&book.id).await.available_copies == 18 }).await;
    assert!(back, "the repeats' holds are given back; the loan keeps its 2 copies");
    assert_eq!(holds_in(&system.book_db).await.len(), 1);
}

#[tokio::test]
async fn a_hold_whose_loan_was_never_stored_goes_back_and_the_borrow_shows_canceled() {
    let system = System::start_with_both(
        &SHORT_HOLDS,
        &["--hold-settle-interval", "0.1", "--metrics-addr", "127.0.0.1:0"],
    )
    .await;
    let book = system.create_book(5).await;
    // What a borrow-svc killed between the hold and storing its loan leaves behind.
    let loan_id = uuid::Uuid::now_v7().to_string();
    let hold = HoldStockRequest {
        loan_id: loan_id.clone(),
        user_id: "zed".into(),
        book_id: book.id.clone(),
        quantity: 2,
    };
    assert!(
        system
            .book_client()
            .await
            .hold_stock(hold)
            .await
            .unwrap()
            .into_inner()
            .held
    );
    assert_eq!(system.book(&book.id).await.available_copies, 3);

    let back = eventually(WAIT, || async { system.book(&book.id).await.available_copies == 5 }).await;
    assert!(back, "the expired hold went back on the shelf");
    let canceled = system.loan(&loan_id).await;
    assert_eq!(canceled.status(), LoanStatus::Canceled);
    assert!(
        canceled
            .cancel_reason
            .is_some_and(|reason| reason.contains("before its loan was stored"))
    );
    assert!(holds_in(&system.book_db).await.is_empty());
    let metrics = scrape_metrics(system.borrow.metrics_port.expect("metrics served")).await;
    assert!(
        metrics.contains("stock_holds_settled_total{outcome=\"never_stored\"}"),
        "{metrics}"
    );
    // Nothing counts against the reader.
    let again = system.borrow("zed", &book.id, 5).await.expect("borrowed");
    assert_eq!(again.status(), LoanStatus::Active);
}

#[tokio::test]
async fn a_hold_whose_loan_waits_for_the_broker_is_confirmed_not_given_back() {
    let system = System::start_with_both(&SHORT_HOLDS, &FAST_SETTLING).await;
    let book = system.create_book(3).await;
    // A borrow-svc whose broker is unreachable stores the loan; its event waits in the outbox
    // far longer than the hold's lifetime (the healthy borrow-svc of the system would publish
    // it, so it is stopped first and a second book-svc-less setup is not needed).
    let System {
        names,
        book_db,
        borrow_db,
        book: book_svc,
        borrow,
        book_port,
    } = system;
    borrow.stop().await;
    let cut_off = start_cut_off_borrow(&borrow_db, &names, book_port, &FAST_SETTLING).await;
    let loan = borrow_at(cut_off.port, "bea", &book.id, 2).await;
    assert_eq!(loan.status(), LoanStatus::Active);

    let confirmed = eventually(WAIT, || async {
        holds_in(&book_db).await.get(&loan.id) == Some(&(2, true))
    })
    .await;
    assert!(confirmed, "the settler confirmed the hold of a stored loan");
    let stock =
        library_proto::book::book_service_client::BookServiceClient::connect(format!("http://127.0.0.1:{book_port}"))
            .await
            .unwrap()
            .get_book(library_proto::book::GetBookRequest { id: book.id.clone() })
            .await
            .unwrap()
            .into_inner();
    assert_eq!(stock.available_copies, 1, "the loan's copies stay off the shelf");
    drop((cut_off, book_svc));
}
