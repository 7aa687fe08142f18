//! The circulation rules through the gateway: the per-reader limit, returns bounded by what was
//! borrowed, and idempotent borrows.
use futures::future::join_all;

use crate::helpers::{System, id_of, unique};

async fn the_loan_limit_counts_every_outstanding_copy(system: &System) {
    let admin = system.admin();
    let reader = system.reader("reader");
    let book_id = id_of(&admin.create_book("Popular", 30).await);

    let six = id_of(&reader.borrow_ok(&book_id, 6).await);
    let refused = reader.borrow(&book_id, 5).await;
    refused.error("LOAN_LIMIT_REACHED");
    let four = id_of(&reader.borrow_ok(&book_id, 4).await);
    reader.borrow(&book_id, 1).await.error("LOAN_LIMIT_REACHED");
    let loans = reader.my_loans(None).await;
    assert_eq!(loans.data()["myLoans"]["totalCount"], 2, "{}", loans.body);

    // Returned copies free the limit again.
    reader.wait_loan_status(&six, "ACTIVE").await;
    reader.return_book(&six, None).await.data();
    let five = id_of(&reader.borrow_ok(&book_id, 5).await);
    reader.wait_loan_status(&four, "ACTIVE").await;
    reader.wait_loan_status(&five, "ACTIVE").await;
    reader.wait_dashboard(9, 0).await;
    admin.wait_available(&book_id, 21).await;
}

async fn a_return_cannot_exceed_what_is_outstanding(system: &System) {
    let admin = system.admin();
    let reader = system.reader("reader");
    let book_id = id_of(&admin.create_book("Returnable", 5).await);
    let loan_id = id_of(&reader.borrow_ok(&book_id, 3).await);
    reader.wait_loan_status(&loan_id, "ACTIVE").await;

    reader.return_book(&loan_id, Some(4)).await.error("RETURN_EXCEEDS_LOAN");
    let unchanged = reader.loan(&loan_id).await;
    assert_eq!(unchanged.data()["loan"]["returnedQuantity"], 0, "{}", unchanged.body);

    let two = reader.return_book(&loan_id, Some(2)).await;
    let loan = &two.data()["returnBook"]["loan"];
    assert_eq!(loan["returnedQuantity"], 2, "{loan}");
    assert_eq!(loan["status"], "ACTIVE", "{loan}");
    assert_eq!(two.data()["returnBook"]["daysLate"], 0);
    assert_eq!(two.data()["returnBook"]["lateFee"], 0);

    reader.return_book(&loan_id, Some(2)).await.error("RETURN_EXCEEDS_LOAN");

    let rest = reader.return_book(&loan_id, None).await;
    let loan = &rest.data()["returnBook"]["loan"];
    assert_eq!(loan["returnedQuantity"], 3, "all outstanding copies: {loan}");
    assert_eq!(loan["status"], "RETURNED", "{loan}");

    let again = reader.return_book(&loan_id, Some(1)).await;
    assert!(
        matches!(again.code(), Some("RETURN_EXCEEDS_LOAN") | Some("CONFLICT")),
        "nothing is left to return: {}",
        again.body
    );
    reader.wait_dashboard(0, 0).await;
    admin.wait_available(&book_id, 5).await;
}

async fn the_same_idempotency_key_gives_the_same_loan(system: &System) {
    let admin = system.admin();
    let reader = system.reader("reader");
    let other = system.reader("other");
    let book_id = id_of(&admin.create_book("Idempotent", 10).await);
    let key = unique("key");

    let first = reader.borrow_with_key(&book_id, 3, &key).await;
    let first = first.data()["borrowBook"].clone();
    let again = reader.borrow_with_key(&book_id, 3, &key).await;
    let again = &again.data()["borrowBook"];
    assert_eq!(again["id"], first["id"], "same key, same loan: {first} / {again}");
    let loans = reader.my_loans(None).await;
    assert_eq!(loans.data()["myLoans"]["totalCount"], 1, "{}", loans.body);

    let fresh = reader.borrow_with_key(&book_id, 3, &unique("key")).await;
    assert_ne!(
        fresh.data()["borrowBook"]["id"],
        first["id"],
        "another key, another loan"
    );

    // The key belongs to the reader: another reader's same key is their own loan.
    let theirs = other.borrow_with_key(&book_id, 1, &key).await;
    let theirs = &theirs.data()["borrowBook"];
    assert_ne!(theirs["id"], first["id"]);
    assert_eq!(theirs["userId"], other.user.as_str());

    // The repeat was not counted twice anywhere.
    reader.wait_dashboard(6, 0).await;
    other.wait_dashboard(1, 0).await;
    admin.wait_available(&book_id, 3).await;
}

/// The limit and the idempotency key hold under concurrent requests of one reader too (a client
/// that retries while its first request is still in flight).
async fn concurrent_borrows_of_one_reader_keep_the_limit_and_the_key(system: &System) {
    let admin = system.admin();
    let book_id = id_of(&admin.create_book("Contended", 50).await);

    let reader = system.reader("retrier");
    let key = unique("key");
    let replies = join_all((0..5).map(|_| reader.borrow_with_key(&book_id, 2, &key))).await;
    let ids: Vec<String> = replies.iter().map(|r| id_of(&r.data()["borrowBook"])).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "one key, one loan: {ids:?}");
    let loans = reader.my_loans(None).await;
    assert_eq!(loans.data()["myLoans"]["totalCount"], 1, "{}", loans.body);
    reader.wait_dashboard(2, 0).await;

    let greedy = system.reader("greedy");
    let replies = join_all((0..3).map(|_| greedy.borrow(&book_id, 6))).await;
    let accepted = replies.iter().filter(|r| r.code().is_none()).count();
    for reply in replies.iter().filter(|r| r.code().is_some()) {
        reply.error("LOAN_LIMIT_REACHED");
    }
    assert_eq!(accepted, 1, "6 + 6 copies exceed the limit of 10: {replies:?}");
    let loans = greedy.my_loans(None).await;
    assert_eq!(loans.data()["myLoans"]["totalCount"], 1, "{}", loans.body);
    greedy.wait_dashboard(6, 0).await;
    admin.wait_available(&book_id, 42).await;
}

in_both_modes!(
    concurrent_borrows_of_one_reader_keep_the_limit_and_the_key,
    the_loan_limit_counts_every_outstanding_copy,
    a_return_cannot_exceed_what_is_outstanding,
    the_same_idempotency_key_gives_the_same_loan,
);
