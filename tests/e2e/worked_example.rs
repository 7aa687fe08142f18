//! SEED.md's worked example: a reader borrows 4 copies, returns 3 of them 7 days late, and the
//! dashboard shows 1 copy on loan and 500 won of late fees.
use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::helpers::{System, id_of};

/// The fee of SEED.md's default tiers for a return `days` late.
fn tier_fee(days: i64) -> i64 {
    match days {
        ..=0 => 0,
        1..=7 => 500,
        8..=14 => 1000,
        _ => 2000,
    }
}

async fn borrow_four_return_three_seven_days_late(system: &System) {
    let admin = system.admin();
    let reader = system.reader("reader");

    let book = admin.create_book("Worked Example", 4).await;
    let book_id = id_of(&book);
    assert_eq!(book["totalCopies"], 4, "{book}");
    assert_eq!(book["availableCopies"], 4, "{book}");

    let loan = reader.borrow_ok(&book_id, 4).await;
    let loan_id = id_of(&loan);
    let active = reader.wait_loan_status(&loan_id, "ACTIVE").await;
    assert_eq!(active["quantity"], 4);
    assert_eq!(active["returnedQuantity"], 0);
    assert_eq!(active["lateFee"], 0);
    reader.wait_available(&book_id, 0).await;

    let due = Utc::now() - Duration::days(7);
    let changed = admin
        .ok(
            "mutation($loanId: ID!, $dueAt: DateTime!) { changeDueDate(loanId: $loanId, dueAt: $dueAt) { id status dueAt } }",
            json!({ "loanId": loan_id, "dueAt": due.to_rfc3339() }),
        )
        .await;
    let changed = &changed["changeDueDate"];
    assert_eq!(changed["id"], loan_id.as_str());
    assert_eq!(changed["status"], "ACTIVE");
    let due_back: DateTime<Utc> = changed["dueAt"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&Utc))
        .unwrap_or_else(|| panic!("dueAt is RFC 3339: {changed}"));
    assert!(
        (due_back - due).num_milliseconds().abs() < 1000,
        "dueAt {due_back} is the one set ({due})"
    );

    let returned = reader.return_book(&loan_id, Some(3)).await;
    let returned_at = Utc::now();
    let result = &returned.data()["returnBook"];
    // 7 calendar days (UTC), unless this very test crossed midnight UTC since `due` was taken.
    let days = (returned_at.date_naive() - due.date_naive()).num_days();
    let fee = tier_fee(days);
    assert_eq!(result["daysLate"], days, "{result}");
    assert_eq!(result["lateFee"], fee, "{result}");
    if days == 7 {
        assert_eq!(result["lateFee"], 500, "SEED.md: 3 copies 7 days late cost 500 won");
    }
    let after = &result["loan"];
    assert_eq!(after["id"], loan_id.as_str());
    assert_eq!(after["quantity"], 4, "{after}");
    assert_eq!(after["returnedQuantity"], 3, "{after}");
    assert_eq!(after["status"], "ACTIVE", "one copy is still out: {after}");
    assert_eq!(after["lateFee"], fee, "{after}");

    reader.wait_dashboard(1, fee).await;
    reader.wait_available(&book_id, 3).await;
    system
        .wait_audited(&loan_id, &["borrowed", "activated", "due_date_changed", "returned"])
        .await;

    let loans = reader
        .ok(
            "{ myLoans { totalCount nodes { id returnedQuantity lateFee status } } }",
            json!({}),
        )
        .await;
    assert_eq!(loans["myLoans"]["totalCount"], 1, "{loans}");
    assert_eq!(loans["myLoans"]["nodes"][0]["id"], loan_id.as_str());
    assert_eq!(loans["myLoans"]["nodes"][0]["returnedQuantity"], 3);
    assert_eq!(loans["myLoans"]["nodes"][0]["lateFee"], fee);
}

in_both_modes!(borrow_four_return_three_seven_days_late);
