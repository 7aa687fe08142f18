//! Returning: who may, what may come back, and what it costs.
use library_proto::borrow::LoanStatus;
use tonic::Code;

use crate::helpers::{System, reason};

#[tokio::test]
async fn returns_are_refused_for_the_wrong_reader_state_or_quantity() {
    let system = System::start().await;
    let book = system.create_book(5).await;
    let loan = system.borrow("gil", &book.id, 2).await.expect("borrowed");
    system.wait_for_status(&loan.id, LoanStatus::Active).await;

    let other = system
        .return_copies("hal", &loan.id, None)
        .await
        .expect_err("not hal's loan");
    assert_eq!(other.code(), Code::PermissionDenied);
    let too_many = system
        .return_copies("gil", &loan.id, Some(3))
        .await
        .expect_err("only 2 out");
    assert_eq!(reason(&too_many), Some("RETURN_EXCEEDS_LOAN"));
    let zero = system.return_copies("gil", &loan.id, Some(0)).await.expect_err("zero");
    assert_eq!(zero.code(), Code::InvalidArgument);
    let unknown = system
        .return_copies("gil", &uuid::Uuid::new_v4().to_string(), None)
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);

    let on_time = system.return_copies("gil", &loan.id, None).await.expect("returned");
    assert_eq!((on_time.quantity, on_time.days_late, on_time.late_fee), (2, 0, 0));
    let again = system
        .return_copies("gil", &loan.id, None)
        .await
        .expect_err("already returned");
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(reason(&again), Some("LOAN_NOT_ACTIVE"));
}

#[tokio::test]
async fn fees_follow_the_configured_tiers() {
    let system = System::start_with(&["--late-fee-tiers", "3:100,*:900"]).await;
    let book = system.create_book(5).await;
    let loan = system.borrow("ivy", &book.id, 2).await.expect("borrowed");
    system.wait_for_status(&loan.id, LoanStatus::Active).await;
    system.move_due_date(&loan.id, 3).await;
    assert_eq!(
        system.return_copies("ivy", &loan.id, Some(1)).await.unwrap().late_fee,
        100
    );
    system.move_due_date(&loan.id, 4).await;
    assert_eq!(
        system.return_copies("ivy", &loan.id, Some(1)).await.unwrap().late_fee,
        900
    );
    assert_eq!(system.loan(&loan.id).await.late_fee, 1000);
}
