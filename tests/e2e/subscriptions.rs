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
    let query = "subscription { myDashboard { userId borrowedCount lateFeeTotal } }";

    let mut dashboard = system.subscribe(reader.token(), query, json!({})).await;
    let first = dashboard.next_data().await;
    assert_eq!(first["myDashboard"]["userId"], reader.user.as_str(), "{first}");
    assert_eq!(first["myDashboard"]["borrowedCount"], 0, "{first}");
    assert_eq!(first["myDashboard"]["lateFeeTotal"], 0, "{first}");

    let loan_id = id_of(&reader.borrow_ok(&book_id, 2).await);
    let (borrowed, before) = dashboard
        .until("borrowedCount 2", |d| d["myDashboard"]["borrowedCount"] == 2)
        .await;
    assert_eq!(borrowed["myDashboard"]["userId"], reader.user.as_str());
    assert_eq!(borrowed["myDashboard"]["lateFeeTotal"], 0);
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
