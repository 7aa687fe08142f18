//! Fault isolation and the compensating saga (distributed mode only): with book-svc down, a
//! borrow that cannot be checked is accepted as PENDING and returns keep working; once book-svc
//! is back, it finds too little stock and the loan is CANCELED, giving everything back.
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{LOAN_FIELDS, LogsOnPanic, System, id_of};

#[tokio::test]
async fn a_borrow_accepted_while_book_svc_is_down_is_canceled_by_the_saga() {
    let system = System::distributed().await;
    let _logs = LogsOnPanic(&system);
    let admin = system.admin();
    let reader = system.reader("reader");
    let other = system.reader("other");
    let book_id = id_of(&admin.create_book("Saga", 4).await);

    // Another reader holds one copy before the outage.
    let held = other.borrow_ok(&book_id, 1).await;
    let held_id = id_of(&held);
    other.wait_loan_status(&held_id, "ACTIVE").await;
    other.wait_available(&book_id, 3).await;

    system.stop_service("book-svc").await;

    // Returning keeps working without book-svc.
    let returned = other.return_book(&held_id, None).await;
    let returned = &returned.data()["returnBook"]["loan"];
    assert_eq!(returned["status"], "RETURNED", "{returned}");

    // The stock cannot be checked: the borrow is accepted and the saga will decide.
    let loan = reader.borrow(&book_id, 5).await.data()["borrowBook"].clone();
    let loan_id = id_of(&loan);
    assert_eq!(loan["status"], "PENDING", "{loan}");
    assert_eq!(loan["quantity"], 5, "{loan}");

    // The borrow is published meanwhile: the dashboard counts it.
    reader.wait_dashboard(5, 0).await;
    other.wait_dashboard(0, 0).await;

    // Nothing can decide the loan while book-svc is down; its book is null, not an error page.
    let reply = reader
        .post(
            &format!("query($id: ID!) {{ loan(id: $id) {{ {LOAN_FIELDS} book {{ id }} }} }}"),
            json!({ "id": loan_id }),
        )
        .await;
    let pending = &reply.body["data"]["loan"];
    assert_eq!(pending["status"], "PENDING", "{}", reply.body);
    assert!(
        pending["book"].is_null(),
        "book is null when the catalogue is down: {}",
        reply.body
    );

    // Catalogue reads fail with the contract's code, not an internal message.
    system.anonymous().book(&book_id).await.error("SERVICE_UNAVAILABLE");

    system.start_service("book-svc").await;

    let canceled = reader.wait_loan_status(&loan_id, "CANCELED").await;
    let reason = canceled["cancelReason"].as_str().unwrap_or_default();
    assert!(!reason.trim().is_empty(), "a canceled loan says why: {canceled}");
    assert_eq!(canceled["returnedQuantity"], 0, "{canceled}");
    reader.wait_dashboard(0, 0).await;
    // The queued return was applied and the canceled loan reserved nothing.
    reader.wait_available(&book_id, 4).await;

    let canceled_loans = reader.my_loans(Some("CANCELED")).await;
    let canceled_loans = &canceled_loans.data()["myLoans"];
    assert_eq!(canceled_loans["totalCount"], 1, "{canceled_loans}");
    assert_eq!(canceled_loans["nodes"][0]["id"], loan_id.as_str());
    let open = reader.my_loans(Some("ACTIVE")).await;
    assert_eq!(open.data()["myLoans"]["totalCount"], 0, "{}", open.body);

    // The canceled copies count against the reader's limit no more.
    let roomy = id_of(&admin.create_book("Roomy", 10).await);
    let full = reader.borrow_ok(&roomy, 10).await;
    reader.wait_loan_status(&id_of(&full), "ACTIVE").await;
}

/// Pods start in any order: on a first deployment borrow-svc may take a borrow before book-svc
/// has ever run. The catalogue cannot be asked, so the borrow is accepted as PENDING; once
/// book-svc is up, the saga must decide it (here: CANCELED, the book is not in the catalogue).
#[tokio::test]
async fn a_borrow_taken_before_book_svc_first_started_is_decided_once_it_is_up() {
    let system = System::distributed_except(&["book-svc"]).await;
    let _logs = LogsOnPanic(&system);
    let reader = system.reader("early");
    // No book can be registered without book-svc: any id will do, the saga finds it unknown.
    let book_id = Uuid::new_v4().to_string();

    let loan = reader.borrow(&book_id, 1).await.data()["borrowBook"].clone();
    let loan_id = id_of(&loan);
    assert_eq!(loan["status"], "PENDING", "{loan}");
    // The borrow was published (the dashboard saw it) before book-svc ever started.
    reader.wait_dashboard(1, 0).await;

    system.start_service("book-svc").await;

    let decided = reader.wait_loan_status(&loan_id, "CANCELED").await;
    let reason = decided["cancelReason"].as_str().unwrap_or_default();
    assert!(!reason.trim().is_empty(), "a canceled loan says why: {decided}");
    reader.wait_dashboard(0, 0).await;
}
