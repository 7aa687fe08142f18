//! Invariants under concurrent requests.
use std::collections::HashSet;

use futures::future::join_all;
use library_proto::borrow::{BorrowRequest, ListLoansRequest, LoanStatus};

use crate::helpers::{System, WAIT, eventually, reason};

#[tokio::test]
async fn twenty_readers_racing_for_the_last_copy_leave_exactly_one_active_loan() {
    let system = System::start().await;
    let book = system.create_book(1).await;
    let attempts = join_all((0..20).map(|i| {
        let system = &system;
        let book_id = book.id.clone();
        async move { system.borrow(&format!("racer-{i}"), &book_id, 1).await }
    }))
    .await;
    let accepted: Vec<_> = attempts.iter().filter_map(|a| a.as_ref().ok()).collect();
    for refused in attempts.iter().filter_map(|a| a.as_ref().err()) {
        assert_eq!(reason(refused), Some("OUT_OF_STOCK"), "{refused:?}");
    }
    assert!(!accepted.is_empty());

    // Quiet: every accepted loan is settled one way or the other.
    let settled = eventually(WAIT, || async {
        let mut open = 0;
        for loan in &accepted {
            if system.loan(&loan.id).await.status() == LoanStatus::Pending {
                open += 1;
            }
        }
        open == 0
    })
    .await;
    assert!(settled, "some loans stayed PENDING");
    let mut active = 0;
    for loan in &accepted {
        match system.loan(&loan.id).await.status() {
            LoanStatus::Active => active += 1,
            LoanStatus::Canceled => {}
            other => panic!("unexpected status {other:?}"),
        }
    }
    assert_eq!(active, 1, "exactly one reader got the copy");
    let stock = system.book(&book.id).await;
    assert_eq!(
        (stock.available_copies, stock.total_copies),
        (0, 1),
        "available + reserved == total"
    );
}

#[tokio::test]
async fn ten_concurrent_returns_of_one_copy_on_a_loan_of_three_let_exactly_three_through() {
    let system = System::start().await;
    let book = system.create_book(3).await;
    let loan = system.borrow("jo", &book.id, 3).await.expect("borrowed");
    system.wait_for_status(&loan.id, LoanStatus::Active).await;
    let attempts = join_all((0..10).map(|_| system.return_copies("jo", &loan.id, Some(1)))).await;
    let returned = attempts.iter().filter(|a| a.is_ok()).count();
    assert_eq!(returned, 3);
    for refused in attempts.iter().filter_map(|a| a.as_ref().err()) {
        assert!(
            matches!(reason(refused), Some("RETURN_EXCEEDS_LOAN" | "LOAN_NOT_ACTIVE")),
            "{refused:?}"
        );
    }
    let loan = system.loan(&loan.id).await;
    assert_eq!((loan.returned_quantity, loan.status()), (3, LoanStatus::Returned));
    assert!(eventually(WAIT, || async { system.book(&book.id).await.available_copies == 3 }).await);
}

#[tokio::test]
async fn twenty_simultaneous_borrows_by_one_reader_cannot_pass_a_limit_of_fifteen() {
    let system = System::start_with(&["--max-copies-per-user", "15"]).await;
    let book = system.create_book(100).await;
    let attempts = join_all((0..20).map(|_| system.borrow("kit", &book.id, 1))).await;
    let granted = attempts.iter().filter(|a| a.is_ok()).count();
    assert_eq!(granted, 15);
    for refused in attempts.iter().filter_map(|a| a.as_ref().err()) {
        assert_eq!(reason(refused), Some("LOAN_LIMIT_REACHED"), "{refused:?}");
    }
}

#[tokio::test]
async fn ten_simultaneous_borrows_with_one_idempotency_key_make_one_loan() {
    let system = System::start().await;
    let book = system.create_book(50).await;
    let attempts = join_all((0..10).map(|_| {
        let system = &system;
        let book_id = book.id.clone();
        async move {
            let request = BorrowRequest {
                user_id: "lou".into(),
                book_id,
                quantity: 1,
                idempotency_key: Some("retry-me".into()),
            };
            system
                .borrow_client()
                .await
                .borrow(request)
                .await
                .map(|r| r.into_inner().id)
        }
    }))
    .await;
    let ids: HashSet<String> = attempts.into_iter().map(|a| a.expect("every retry answers")).collect();
    assert_eq!(ids.len(), 1);
    let loans = system
        .borrow_client()
        .await
        .list_loans(ListLoansRequest {
            user_id: "lou".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(loans.total_count, 1);
}

/// Borrows that arrive together are stored together; each must still be answered as if alone:
/// a reader at the limit refused, a repeated key given the first loan, the others stored once.
#[tokio::test]
async fn borrows_arriving_together_are_each_answered_as_if_alone() {
    let system = System::start_with(&["--max-copies-per-user", "3"]).await;
    let book = system.create_book(1000).await;
    let book_id = || book.id.clone();
    let mut first_loans = Vec::new();
    for i in 0..10 {
        system
            .borrow(&format!("full-{i}"), &book.id, 3)
            .await
            .expect("within the limit");
        let first = system
            .borrow_with(format!("retry-{i}"), book_id(), 1, Some(format!("key-{i}")))
            .await
            .expect("first try");
        first_loans.push(first.id);
    }

    let at_limit = join_all((0..10).map(|i| system.borrow_with(format!("full-{i}"), book_id(), 1, None)));
    let retried =
        join_all((0..10).map(|i| system.borrow_with(format!("retry-{i}"), book_id(), 1, Some(format!("key-{i}")))));
    let fresh = join_all((0..10).map(|i| system.borrow_with(format!("fresh-{i}"), book_id(), 2, None)));
    let (at_limit, retried, fresh) = tokio::join!(at_limit, retried, fresh);

    for refused in &at_limit {
        let status = refused.as_ref().expect_err("the reader is at the limit");
        assert_eq!(reason(status), Some("LOAN_LIMIT_REACHED"), "{status:?}");
    }
    for (i, retry) in retried.into_iter().enumerate() {
        assert_eq!(retry.expect("a retry answers").id, first_loans[i], "retry-{i}");
    }
    for (i, loan) in fresh.into_iter().enumerate() {
        let loan = loan.expect("a fresh reader may borrow");
        assert_eq!(
            (loan.user_id.as_str(), loan.quantity),
            (format!("fresh-{i}").as_str(), 2)
        );
    }
    for (prefix, copies) in [("full", 3), ("retry", 1), ("fresh", 2)] {
        for i in 0..10 {
            let user = format!("{prefix}-{i}");
            let loans = system.loans_of(&user).await;
            assert_eq!(loans.len(), 1, "{user} has exactly one loan: {loans:?}");
            assert_eq!(loans[0].quantity, copies, "{user}");
        }
    }
    // The refused readers' counts were left as they were: one more copy each still fits
    // nowhere, and a fresh reader's two copies leave room for exactly one.
    let status = system
        .borrow("full-0", &book.id, 1)
        .await
        .expect_err("still at the limit");
    assert_eq!(reason(&status), Some("LOAN_LIMIT_REACHED"));
    system
        .borrow("fresh-0", &book.id, 1)
        .await
        .expect("one copy still fits");
    let status = system
        .borrow("fresh-0", &book.id, 1)
        .await
        .expect_err("now at the limit");
    assert_eq!(reason(&status), Some("LOAN_LIMIT_REACHED"));
}
