//! How a drain pass reads its table.
use library_platform::drain::{TableDrain, Taken};
use sea_orm::sea_query::{Alias, PostgresQueryBuilder};
use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::helpers::{postgres, sqlite};

/// A drained table is all churn: every row written is deleted soon after, and until a vacuum
/// runs its pages fill with deleted rows. A pass must find its few live rows through the
/// primary key; a plan that scans the table costs a pass more with every row ever drained.
#[tokio::test]
async fn a_pass_over_a_table_full_of_deleted_rows_goes_through_the_key_not_the_pages() {
    let db = postgres().await;
    let sql = |s: &str| Statement::from_string(DbBackend::Postgres, s.to_owned());
    db.execute_raw(sql("ALTER TABLE outbox_events SET (autovacuum_enabled = false)"))
        .await
        .unwrap();
    let insert = |from: u32, to: u32| {
        format!(
            "INSERT INTO outbox_events (event_id, event_type, routing_key, payload, occurred_at) \
             SELECT 'e' || n, 'StockChanged', 'book.stock_changed', '\\x0a0b0c', now() \
             FROM generate_series({from}, {to}) AS n"
        )
    };
    db.execute_raw(sql(&insert(1, 20_000))).await.unwrap();
    db.execute_raw(sql("DELETE FROM outbox_events")).await.unwrap();
    db.execute_raw(sql(&insert(20_001, 20_010))).await.unwrap();

    let drain = TableDrain::new(
        Alias::new("outbox_events"),
        Alias::new("id"),
        [Alias::new("event_id")],
        256,
    );
    let pass = drain.take_oldest().to_string(PostgresQueryBuilder);
    let plan = db
        .query_one_raw(sql(&format!("EXPLAIN (FORMAT JSON) {pass}")))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<serde_json::Value>(0)
        .unwrap()
        .to_string();
    assert!(plan.contains("outbox_events_pkey"), "{plan}");
    assert!(!plan.contains("Seq Scan"), "the pass scans the table: {plan}");

    // And it takes the live rows, oldest first.
    let taken = db.query_all_raw(sql(&pass)).await.unwrap();
    let mut ids: Vec<String> = taken.iter().map(|row| row.try_get("", "event_id").unwrap()).collect();
    ids.sort();
    assert_eq!(ids.len(), 10);
    assert_eq!(ids.first().map(String::as_str), Some("e20001"));
}

/// A relay sends its next batch while the broker still confirms the last: on PostgreSQL a batch
/// taken meanwhile holds the next rows, never one of those in flight; a batch that was not
/// handed over (dropped, as when its confirmation fails) comes back first; a finished one is
/// gone. SQLite locks nothing, so there a batch must be finished before the next is taken.
#[tokio::test]
async fn batches_taken_while_others_are_in_flight_never_overlap() {
    let db = postgres().await;
    let sql = |s: &str| Statement::from_string(DbBackend::Postgres, s.to_owned());
    db.execute_raw(sql(
        "INSERT INTO outbox_events (event_id, event_type, routing_key, payload, occurred_at) \
         SELECT 'e' || lpad(n::text, 2, '0'), 'StockChanged', 'book.stock_changed', '\\x0a', now() \
         FROM generate_series(1, 10) AS n",
    ))
    .await
    .unwrap();
    let drain = TableDrain::new(
        Alias::new("outbox_events"),
        Alias::new("id"),
        [Alias::new("event_id")],
        4,
    );
    let ids = |taken: &Taken| -> Vec<String> {
        taken
            .rows()
            .iter()
            .map(|row| row.try_get("", "event_id").unwrap())
            .collect()
    };

    let first = drain.take(&db).await.unwrap().unwrap();
    let second = drain.take(&db).await.unwrap().unwrap();
    assert!(first.locks_rows());
    assert_eq!(ids(&first), ["e01", "e02", "e03", "e04"]);
    assert_eq!(ids(&second), ["e05", "e06", "e07", "e08"]);
    drop(first); // not handed over: its rows return
    second.done().await.unwrap();
    // A dropped batch's rollback runs when its connection is next used, not at the drop, so a
    // batch taken at once may still find those rows locked and take the next ones instead; the
    // rows must come back, first, soon after.
    let take_expecting = |expected: &'static [&'static str]| {
        let (drain, db) = (&drain, &db);
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let taken = drain.take(db).await.unwrap().unwrap();
                let got = ids(&taken);
                if got == expected {
                    return taken;
                }
                assert!(std::time::Instant::now() < deadline, "took {got:?}, never {expected:?}");
                drop(taken);
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    take_expecting(&["e01", "e02", "e03", "e04"])
        .await
        .done()
        .await
        .unwrap();
    take_expecting(&["e09", "e10"]).await.done().await.unwrap();
    assert!(drain.take(&db).await.unwrap().is_none());

    let lite = sqlite().await;
    lite.execute_unprepared(
        "INSERT INTO outbox_events (event_id, event_type, routing_key, payload, occurred_at) \
         VALUES ('s1', 'StockChanged', 'book.stock_changed', x'0a', '2026-11-26T00:00:00Z')",
    )
    .await
    .unwrap();
    let taken = drain.take(&lite).await.unwrap().unwrap();
    assert!(!taken.locks_rows());
    taken.done().await.unwrap();
    assert!(drain.take(&lite).await.unwrap().is_none());
}
