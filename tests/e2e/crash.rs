//! borrow-svc killed with SIGKILL while borrows flow, then restarted: no confirmed loan is lost,
//! no event is lost or applied twice — stock, loans and dashboards agree once the system is quiet.
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Gql, LogsOnPanic, System, eventually, id_of, unique};

const TOTAL: i64 = 500;

/// Each reader borrows one copy at a time until told to stop; returns the loans it was told about.
async fn borrow_until(reader: &Gql, book: &str, stop: &tokio::sync::watch::Receiver<bool>) -> Vec<String> {
    let mut confirmed = Vec::new();
    while !*stop.borrow() && confirmed.len() < 10 {
        let reply = reader.borrow(book, 1).await;
        if let Some(id) = reply.body.pointer("/data/borrowBook/id").and_then(Value::as_str) {
            confirmed.push(id.to_owned());
        }
    }
    confirmed
}

/// (loans by status, copies outstanding) of a reader, from `myLoans`; a borrow that was killed
/// after book-svc held its copies and before its loan was stored shows as CANCELED, with the
/// status `NEVER_STORED` here.
/// `Err` while the gateway cannot reach borrow-svc yet (its circuit breaker stays open for a
/// few seconds after the crash).
async fn loans_of(reader: &Gql) -> Result<Vec<(String, String, i64)>, String> {
    let reply = reader
        .post(
            "{ myLoans(first: 100) { nodes { id status quantity returnedQuantity cancelReason } } }",
            json!({}),
        )
        .await;
    if reply.code().is_some() {
        return Err(format!("myLoans refused: {}", reply.body));
    }
    Ok(reply.data()["myLoans"]["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .map(|n| {
                    let outstanding = n["quantity"].as_i64().unwrap_or(0) - n["returnedQuantity"].as_i64().unwrap_or(0);
                    let never_stored = n["cancelReason"]
                        .as_str()
                        .is_some_and(|reason| reason.contains("before its loan was stored"));
                    let status = if never_stored {
                        "NEVER_STORED"
                    } else {
                        n["status"].as_str().unwrap_or_default()
                    };
                    (id_of(n), status.to_owned(), outstanding)
                })
                .collect()
        })
        .unwrap_or_default())
}

#[tokio::test]
async fn killing_borrow_svc_mid_flight_loses_and_doubles_nothing() {
    let system = System::distributed().await;
    let _logs = LogsOnPanic(&system);
    let book = id_of(&system.admin().create_book(&unique("Crash"), TOTAL as i32).await);
    let readers: Vec<Gql> = (0..6).map(|i| system.reader(&format!("crash-{i}"))).collect();

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers = readers.iter().map(|reader| borrow_until(reader, &book, &stopped));
    let crash = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        system.stop_service("borrow-svc").await;
        let _ = stop.send(true);
    };
    let (confirmed, ()) = tokio::join!(futures::future::join_all(workers), crash);
    system.start_service("borrow-svc").await;

    let mut active_copies = 0;
    for (reader, confirmed) in readers.iter().zip(&confirmed) {
        // Quiet: nothing left PENDING.
        let loans = eventually("every loan settled", Duration::from_secs(30), || async {
            let loans = loans_of(reader).await?;
            if loans.iter().any(|(_, status, _)| status == "PENDING") {
                Err(format!("still pending: {loans:?}"))
            } else {
                Ok(loans)
            }
        })
        .await;
        for id in confirmed {
            assert!(
                loans.iter().any(|(loan, _, _)| loan == id),
                "confirmed loan {id} was lost"
            );
        }
        // Each transition of each loan is in the audit log once, whatever the crash interrupted.
        for (id, status, _) in &loans {
            match status.as_str() {
                "ACTIVE" => system.wait_audited(id, &["borrowed", "activated"]).await,
                "NEVER_STORED" => system.wait_audited(id, &["canceled"]).await,
                _ => system.wait_audited(id, &["borrowed", "canceled"]).await,
            }
        }
        let outstanding: i64 = loans.iter().filter(|(_, s, _)| s == "ACTIVE").map(|(_, _, n)| n).sum();
        reader.wait_dashboard(outstanding, 0).await;
        active_copies += outstanding;
    }
    assert!(
        confirmed.iter().map(Vec::len).sum::<usize>() > 0,
        "some borrows went through before the crash"
    );
    system.admin().wait_available(&book, TOTAL - active_copies).await;
}
