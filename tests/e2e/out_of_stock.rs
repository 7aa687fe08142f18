//! The synchronous stock check: a borrow of more copies than are in stock is refused at once
//! and leaves nothing behind.
use futures::future::join_all;
use serde_json::json;

use crate::helpers::{Gql, System, TIMEOUT, eventually, id_of};

async fn borrowing_more_than_the_stock_is_refused(system: &System) {
    let admin = system.admin();
    let reader = system.reader("reader");
    let book_id = id_of(&admin.create_book("Scarce", 4).await);

    let refused = reader.borrow(&book_id, 5).await;
    let message = refused.error_message("OUT_OF_STOCK");
    assert!(
        refused.body["data"].is_null() || refused.body["data"]["borrowBook"].is_null(),
        "no loan comes back: {}",
        refused.body
    );
    assert!(!message.is_empty());

    let loans = reader.my_loans(None).await;
    assert_eq!(
        loans.data()["myLoans"]["totalCount"],
        0,
        "no loan was created: {}",
        loans.body
    );
    assert_eq!(loans.data()["myLoans"]["nodes"], json!([]));
    assert_eq!(reader.available_copies(&book_id).await, Ok(4));
    assert_eq!(reader.dashboard_counts().await, (0, 0));

    // The whole stock can be borrowed: the refusal was about the stock.
    let loan = reader.borrow_ok(&book_id, 4).await;
    reader.wait_loan_status(&id_of(&loan), "ACTIVE").await;
    reader.wait_available(&book_id, 0).await;
    reader.borrow(&book_id, 1).await.error("OUT_OF_STOCK");
    let loans = reader.my_loans(None).await;
    assert_eq!(loans.data()["myLoans"]["totalCount"], 1, "{}", loans.body);
}

/// SEED.md's decision: the saga also catches the race where several borrows passed the
/// synchronous check. Three readers ask for 3 of 4 copies at once: exactly one loan ends ACTIVE,
/// every other is refused at once (OUT_OF_STOCK) or CANCELED by the saga.
async fn racing_borrows_of_the_last_copies_leave_exactly_one_active(system: &System) {
    let admin = system.admin();
    let book_id = id_of(&admin.create_book("Last copies", 4).await);
    let readers: Vec<Gql> = (0..3).map(|_| system.reader("racer")).collect();

    let replies = join_all(readers.iter().map(|r| r.borrow(&book_id, 3))).await;

    let mut active = Vec::new();
    for (reader, reply) in readers.iter().zip(&replies) {
        if reply.code().is_some() {
            reply.error("OUT_OF_STOCK");
            reader.wait_dashboard(0, 0).await;
            continue;
        }
        let loan_id = id_of(&reply.data()["borrowBook"]);
        let settled = eventually(&format!("loan {loan_id} settles"), TIMEOUT, || async {
            let reply = reader.loan(&loan_id).await;
            let loan = &reply.body["data"]["loan"];
            match loan["status"].as_str() {
                Some("ACTIVE") | Some("CANCELED") => Ok(loan.clone()),
                _ => Err(reply.body.to_string()),
            }
        })
        .await;
        if settled["status"] == "ACTIVE" {
            active.push(loan_id);
            reader.wait_dashboard(3, 0).await;
        } else {
            let reason = settled["cancelReason"].as_str().unwrap_or_default();
            assert!(!reason.trim().is_empty(), "a canceled loan says why: {settled}");
            reader.wait_dashboard(0, 0).await;
        }
    }
    assert_eq!(
        active.len(),
        1,
        "exactly one borrow of 3 out of 4 copies wins: {replies:?}"
    );
    admin.wait_available(&book_id, 1).await;
}

in_both_modes!(
    borrowing_more_than_the_stock_is_refused,
    racing_borrows_of_the_last_copies_leave_exactly_one_active,
);
