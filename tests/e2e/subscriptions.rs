//! Live views over WebSocket (`graphql-transport-ws`): a book's stock and the reader's dashboard,
//! the current value first, then each change.
use serde_json::json;

use crate::helpers::{BOOK_STOCK, System, id_of};

async fn book_stock_shows_the_current_value_then_each_change(system: &System) {
    let admin = system.admin();
    let reader = system.reader("reader");
    let book_id = id_of(&admin.create_book("Watched", 5).await);

    let mut stock = system.subscribe(None, BOOK_STOCK, json!({ "bookId": book_id })).await;
    let first = stock.next_data().await;
    assert_eq!(first["bookStock"]["id"], book_id.as_str(), "{first}");
    assert_eq!(
        first["bookStock"]["availableCopies"], 5,
        "the current value first: {first}"
    );

    reader.borrow_ok(&book_id, 2).await;
    let (lower, before) = stock
        .until("availableCopies 3", |d| d["bookStock"]["availableCopies"] == 3)
        .await;
    assert_eq!(lower["bookStock"]["id"], book_id.as_str());
    for value in &before {
        assert_eq!(value["bookStock"]["availableCopies"], 5, "only 5, then 3: {before:?}");
    }
}

async fn my_dashboard_shows_the_current_value_then_each_change(system: &System) {
    let admin = system.admin();
    let reader = system.reader("reader");
    let book_id = id_of(&admin.create_book("Dashboard", 3).await);
    let query = "subscription { myDashboard { userId borrowedCount lateFeeTotal updatedAt } }";

    let mut dashboard = system.subscribe(reader.token(), query, json!({})).await;
    let first = dashboard.next_data().await;
    assert_eq!(first["myDashboard"]["userId"], reader.user.as_str(), "{first}");
    assert_eq!(first["myDashboard"]["borrowedCount"], 0, "{first}");
    assert_eq!(first["myDashboard"]["lateFeeTotal"], 0, "{first}");
    assert!(first["myDashboard"]["updatedAt"].is_null(), "never changed: {first}");

    let loan_id = id_of(&reader.borrow_ok(&book_id, 2).await);
    let (borrowed, before) = dashboard
        .until("borrowedCount 2", |d| d["myDashboard"]["borrowedCount"] == 2)
        .await;
    assert_eq!(borrowed["myDashboard"]["userId"], reader.user.as_str());
    assert_eq!(borrowed["myDashboard"]["lateFeeTotal"], 0);
    assert!(
        borrowed["myDashboard"]["updatedAt"].is_string(),
        "a change has a time: {borrowed}"
    );
    for value in &before {
        assert_eq!(value["myDashboard"]["borrowedCount"], 0, "only 0, then 2: {before:?}");
    }

    reader.wait_loan_status(&loan_id, "ACTIVE").await;
    reader.return_book(&loan_id, None).await.data();
    dashboard
        .until("borrowedCount back to 0", |d| d["myDashboard"]["borrowedCount"] == 0)
        .await;
}

in_both_modes!(
    book_stock_shows_the_current_value_then_each_change,
    my_dashboard_shows_the_current_value_then_each_change,
);

/// With two replicas of book-svc and dashboard-svc consuming the same queues, a subscription
/// served by one replica still sees every change, whichever replica applied it.
#[tokio::test]
async fn subscriptions_see_changes_applied_by_any_replica() {
    let system = System::distributed().await;
    let _logs = crate::helpers::LogsOnPanic(&system);
    system.start_replica("book-svc", "BOOK_GRPC_ADDR").await;
    system.start_replica("dashboard-svc", "DASHBOARD_GRPC_ADDR").await;
    let admin = system.admin();
    let reader = system.reader("replicated");
    let book_id = id_of(&admin.create_book("Replicated", 20).await);

    let query = "subscription { myDashboard { borrowedCount } }";
    let mut dashboard = system.subscribe(reader.token(), query, json!({})).await;
    assert_eq!(dashboard.next_data().await["myDashboard"]["borrowedCount"], 0);
    let mut stock = system.subscribe(None, BOOK_STOCK, json!({ "bookId": book_id })).await;
    assert_eq!(stock.next_data().await["bookStock"]["availableCopies"], 20);

    for n in 1..=6 {
        let loan = id_of(&reader.borrow_ok(&book_id, 1).await);
        reader.wait_loan_status(&loan, "ACTIVE").await;
        dashboard
            .until(&format!("borrowedCount {n}"), |d| {
                d["myDashboard"]["borrowedCount"] == n
            })
            .await;
        stock
            .until(&format!("availableCopies {}", 20 - n), |d| {
                d["bookStock"]["availableCopies"] == 20 - n
            })
            .await;
    }
}
