//! The audit log (`--audit-dir`): each loan transition recorded in the transaction that makes
//! it, written to the pod's JSON-lines file once, by whichever replica drains it.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use library_platform::test_support::{at_exit, sh_quote, system_bus};
use library_proto::borrow::LoanStatus;
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;

use crate::helpers::{System, WAIT, eventually, reason, start_borrow};

/// A directory of its own, removed when the test binary exits.
fn fresh_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("borrow-audit-{}", uuid::Uuid::new_v4().simple()));
    at_exit(&format!("rm -rf {}", sh_quote(&dir.display().to_string())));
    dir
}

/// Every line of every `.jsonl` file in `dirs`, each parsed (a line that is not JSON fails).
fn lines_in(dirs: &[&Path]) -> Vec<Value> {
    let mut lines: Vec<Value> = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        for entry in entries.flatten() {
            let text = std::fs::read_to_string(entry.path()).expect("read an audit file");
            lines.extend(
                text.lines()
                    .map(|l| serde_json::from_str(l).expect("an audit line is JSON")),
            );
        }
    }
    lines.sort_by_key(|line| line["id"].as_i64());
    lines
}

/// The transitions recorded for `loan_id`, in order.
fn transitions_of(lines: &[Value], loan_id: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|line| line["loan_id"] == loan_id)
        .map(|line| line["transition"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn each_transition_of_a_loan_is_one_line_and_a_refused_borrow_none() {
    let dir = fresh_dir();
    let dir_arg = dir.display().to_string();
    let system = System::start_with(&["--audit-dir", &dir_arg, "--max-copies-per-user", "5"]).await;
    let book = system.create_book(10).await;

    let loan = system.borrow("ada", &book.id, 4).await.expect("borrowed");
    system.wait_for_status(&loan.id, LoanStatus::Active).await;
    let refused = system.borrow("ada", &book.id, 2).await.expect_err("over the limit");
    assert_eq!(reason(&refused), Some("LOAN_LIMIT_REACHED"));
    system.move_due_date(&loan.id, 7).await;
    system
        .return_copies("ada", &loan.id, Some(3))
        .await
        .expect("returned 3");
    system
        .return_copies("ada", &loan.id, None)
        .await
        .expect("returned the rest");

    let expected = ["borrowed", "activated", "due_date_changed", "returned", "returned"];
    let written = eventually(WAIT, || async {
        transitions_of(&lines_in(&[&dir]), &loan.id).len() >= expected.len()
    })
    .await;
    let lines = lines_in(&[&dir]);
    assert!(written, "not every transition was written: {lines:?}");
    assert_eq!(transitions_of(&lines, &loan.id), expected);
    // Nothing else: the refused borrow stored no loan and so left no line.
    assert_eq!(lines.len(), expected.len(), "{lines:?}");
    let returned = &lines[3];
    assert_eq!(returned["user_id"], "ada");
    assert_eq!(returned["detail"]["quantity"], 3);
    assert_eq!(returned["detail"]["late_fee"], 500);
    assert!(returned["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(chrono::DateTime::parse_from_rfc3339(returned["at"].as_str().unwrap_or_default()).is_ok());
}

#[tokio::test]
async fn a_transition_committed_before_a_crash_is_written_by_the_next_pod() {
    // No audit directory: nothing drains the table, as when a pod died after its commit.
    let system = System::start().await;
    let db = Database::connect(&system.borrow_db).await.expect("borrow database");
    db.execute_unprepared(
        "INSERT INTO loan_audit (at, host, transition, loan_id, user_id, detail) \
         VALUES (now(), 'borrow-svc-dead', 'borrowed', 'loan-1', 'ned', '{\"quantity\":1}')",
    )
    .await
    .expect("a recorded transition");

    let dir = fresh_dir();
    let dir_arg = dir.display().to_string();
    let next = start_borrow(
        &system.borrow_db,
        system_bus(&system.names),
        system.book_port,
        &["--audit-dir", &dir_arg],
    )
    .await;
    assert!(eventually(WAIT, || async { !lines_in(&[&dir]).is_empty() }).await);
    let lines = lines_in(&[&dir]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        lines[0]["host"], "borrow-svc-dead",
        "the line names the pod that made the transition"
    );
    assert_eq!(lines[0]["detail"]["quantity"], 1);
    // The rows are deleted once the line is on disk, so a crash in between repeats, never loses.
    let count = || async {
        db.query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT count(*) AS n FROM loan_audit",
        ))
        .await
        .expect("count")
        .and_then(|row| row.try_get::<i64>("", "n").ok())
    };
    assert!(
        eventually(WAIT, || async { count().await == Some(0) }).await,
        "a written transition leaves the table"
    );
    next.stop().await;
}

#[tokio::test]
async fn two_replicas_write_each_transition_once_between_them() {
    let (first_dir, second_dir) = (fresh_dir(), fresh_dir());
    let first_arg = first_dir.display().to_string();
    let second_arg = second_dir.display().to_string();
    let system = System::start_with(&["--audit-dir", &first_arg]).await;
    let second = start_borrow(
        &system.borrow_db,
        system_bus(&system.names),
        system.book_port,
        &["--audit-dir", &second_arg],
    )
    .await;
    let book = system.create_book(100).await;

    let borrows = (0..20).map(|i| system.borrow_with(format!("reader-{i}"), book.id.clone(), 1, None));
    let loans: Vec<_> = futures::future::join_all(borrows)
        .await
        .into_iter()
        .map(|loan| loan.expect("borrowed"))
        .collect();
    for loan in &loans {
        system.wait_for_status(&loan.id, LoanStatus::Active).await;
    }

    let dirs = [first_dir.as_path(), second_dir.as_path()];
    let all_written = eventually(WAIT, || async { lines_in(&dirs).len() >= 2 * loans.len() }).await;
    let lines = lines_in(&dirs);
    assert!(all_written, "{} of {} lines", lines.len(), 2 * loans.len());
    let mut per_id: HashMap<i64, usize> = HashMap::new();
    for line in &lines {
        *per_id.entry(line["id"].as_i64().expect("an id")).or_default() += 1;
    }
    assert!(per_id.values().all(|&n| n == 1), "a line was written twice: {lines:?}");
    for loan in &loans {
        assert_eq!(transitions_of(&lines, &loan.id), ["borrowed", "activated"]);
    }
    second.stop().await;
}
