//! Borrowing: the seed's examples and the refusals.
use library_proto::borrow::{BorrowRequest, ListLoansRequest, LoanStatus};
use tonic::Code;

use crate::helpers::{System, WAIT, eventually, reason};

#[tokio::test]
async fn the_seeds_worked_example_borrow_4_return_3_seven_days_late() {
    let system = System::start().await;
    let book = system.create_book(4).await;
    let loan = system.borrow("ana", &book.id, 4).await.expect("borrowed");
    // book-svc held the copies before the loan was stored: ACTIVE at the reply.
    assert_eq!(loan.status(), LoanStatus::Active);
    assert_eq!(system.book(&book.id).await.available_copies, 0);

    system.move_due_date(&loan.id, 7).await;
    let returned = system.return_copies("ana", &loan.id, Some(3)).await.expect("returned");
    assert_eq!((returned.quantity, returned.days_late, returned.late_fee), (3, 7, 500));
    let loan = returned.loan.expect("loan");
    assert_eq!(
        (loan.returned_quantity, loan.late_fee, loan.status()),
        (3, 500, LoanStatus::Active)
    );
    assert!(eventually(WAIT, || async { system.book(&book.id).await.available_copies == 3 }).await);

    // The last copy, 8 days late this time: the next tier, charged once more.
    system.move_due_date(&loan.id, 8).await;
    let last = system.return_copies("ana", &loan.id, None).await.expect("returned");
    assert_eq!((last.quantity, last.days_late, last.late_fee), (1, 8, 1000));
    assert_eq!(last.loan.expect("loan").status(), LoanStatus::Returned);
    assert!(eventually(WAIT, || async { system.book(&book.id).await.available_copies == 4 }).await);
}

#[tokio::test]
async fn borrowing_more_than_the_stock_is_refused_at_once_and_stores_nothing() {
    let system = System::start().await;
    let book = system.create_book(4).await;
    let refused = system.borrow("bo", &book.id, 5).await.expect_err("refused");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(reason(&refused), Some("OUT_OF_STOCK"));
    let loans = system
        .borrow_client()
        .await
        .list_loans(ListLoansRequest {
            user_id: "bo".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(loans.total_count, 0);
}

#[tokio::test]
async fn bad_borrows_are_refused_with_the_right_code() {
    let system = System::start().await;
    let book = system.create_book(4).await;
    for quantity in [0, -1, 11] {
        let refused = system.borrow("cy", &book.id, quantity).await.expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument, "quantity {quantity}");
        assert!(refused.message().contains("quantity"));
    }
    let unknown = system
        .borrow("cy", &uuid::Uuid::new_v4().to_string(), 1)
        .await
        .expect_err("unknown book");
    assert_eq!(unknown.code(), Code::NotFound);
    let malformed = system.borrow("cy", "not-an-id", 1).await.expect_err("malformed id");
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(malformed.message().contains("book_id"));
}

#[tokio::test]
async fn a_repeat_with_the_same_key_returns_the_first_loan() {
    let system = System::start().await;
    let book = system.create_book(10).await;
    let request = || BorrowRequest {
        user_id: "dee".into(),
        book_id: book.id.clone(),
        quantity: 2,
        idempotency_key: Some("checkout-42".into()),
    };
    let first = system
        .borrow_client()
        .await
        .borrow(request())
        .await
        .unwrap()
        .into_inner();
    let again = system
        .borrow_client()
        .await
        .borrow(request())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.id, again.id);
    // Another reader's key is theirs alone.
    let mut other = request();
    other.user_id = "eve".into();
    let theirs = system.borrow_client().await.borrow(other).await.unwrap().into_inner();
    assert_ne!(theirs.id, first.id);
}

#[tokio::test]
async fn the_reader_limit_counts_pending_and_active_copies() {
    let system = System::start().await;
    let book = system.create_book(100).await;
    system.borrow("fay", &book.id, 6).await.expect("6 borrowed");
    let refused = system
        .borrow("fay", &book.id, 5)
        .await
        .expect_err("over the limit of 10");
    assert_eq!(reason(&refused), Some("LOAN_LIMIT_REACHED"));
    system.borrow("fay", &book.id, 4).await.expect("exactly at the limit");
}
