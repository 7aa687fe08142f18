//! Faults: book-svc down, and a crash between a loan's commit and its event's publication.
use library_platform::test_support::system_bus;
use library_proto::borrow::LoanStatus;

use crate::helpers::{System, WAIT, borrow_at, eventually, holds_in, start_book, start_borrow, start_cut_off_borrow};

#[tokio::test]
async fn with_book_svc_stopped_an_over_borrow_is_accepted_then_canceled_by_the_saga() {
    let mut system = System::start().await;
    let book = system.create_book(4).await;
    system.book.take().expect("running").stop().await;

    let loan = system
        .borrow("max", &book.id, 5)
        .await
        .expect("accepted while book-svc is down");
    assert_eq!(loan.status(), LoanStatus::Pending);

    let book_svc = start_book(&system.book_db, &system.names).await;
    system.book_port = book_svc.port;
    let canceled = system.wait_for_status(&loan.id, LoanStatus::Canceled).await;
    assert!(canceled.cancel_reason.is_some_and(|r| r.contains("not enough copies")));
    assert!(eventually(WAIT, || async { system.book(&book.id).await.available_copies == 4 }).await);
    // The canceled copies no longer count against the reader, and the stock is whole again.
    let again = system.borrow("max", &book.id, 4).await.expect("limit restored");
    system.wait_for_status(&again.id, LoanStatus::Active).await;
}

#[tokio::test]
async fn a_crash_between_the_loans_commit_and_its_publication_still_delivers_the_event() {
    let system = System::start().await;
    let book = system.create_book(3).await;
    // A second borrow-svc whose broker is unreachable: the loan commits, its event waits.
    let crashing = start_cut_off_borrow(&system.borrow_db, &system.names, system.book_port, &[]).await;
    let loan = borrow_at(crashing.port, "ned", &book.id, 2).await;
    drop(crashing); // killed before its relay could publish

    // The loan is ACTIVE on its held copies, its event in the outbox, the hold unconfirmed; the
    // restarted service publishes the event, which confirms the hold.
    assert_eq!(system.loan(&loan.id).await.status(), LoanStatus::Active);
    assert_eq!(system.book(&book.id).await.available_copies, 1);
    let restarted = start_borrow(&system.borrow_db, system_bus(&system.names), system.book_port, &[]).await;
    let confirmed = eventually(WAIT, || async {
        holds_in(&system.book_db).await.get(&loan.id) == Some(&(2, true))
    })
    .await;
    assert!(confirmed, "BookBorrowed reached book-svc and confirmed the hold");
    assert_eq!(system.book(&book.id).await.available_copies, 1);
    drop(restarted);
}
