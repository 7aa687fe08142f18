//! SIGTERM while borrows are flowing: readiness goes first (and requests are still served for
//! the shutdown delay), in-flight requests finish with a complete answer, the process exits 0,
//! and every borrow it confirmed is there after a restart.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{System, id_of, unique};

const BORROW: &str = "mutation($book: ID!) { borrowBook(bookId: $book, quantity: 1) { id status } }";

/// What one request saw.
enum Outcome {
    /// A complete GraphQL answer with this loan.
    Borrowed(String),
    /// A complete GraphQL answer with an error code.
    Refused(String),
    /// No answer: the connection was refused or closed before a request was sent.
    NotServed,
    /// Anything else: a partial or malformed answer.
    Broken(String),
}

async fn borrow(http: &reqwest::Client, url: &str, token: &str, book: &str) -> Outcome {
    let body = json!({ "query": BORROW, "variables": { "book": book } });
    let sent = http.post(url).bearer_auth(token).json(&body).send().await;
    let response = match sent {
        Ok(response) => response,
        Err(e) if e.is_connect() || e.is_request() => return Outcome::NotServed,
        Err(e) => return Outcome::Broken(format!("send: {e}")),
    };
    let status = response.status().as_u16();
    let Ok(text) = response.text().await else {
        return Outcome::Broken(format!("HTTP {status} with a truncated body"));
    };
    let Ok(value) = serde_json::from_str::<Value>(&text) else {
        return Outcome::Broken(format!("HTTP {status}: {text}"));
    };
    if let Some(id) = value.pointer("/data/borrowBook/id").and_then(Value::as_str) {
        return Outcome::Borrowed(id.to_owned());
    }
    match value.pointer("/errors/0/extensions/code").and_then(Value::as_str) {
        Some(code) => Outcome::Refused(code.to_owned()),
        None => Outcome::Broken(format!("HTTP {status}: {text}")),
    }
}

/// When `/readyz` first answered 503 (not ready, yet still answering), polled until the
/// process stops answering.
async fn first_unready(url: String) -> Option<Instant> {
    let http = reqwest::Client::new();
    loop {
        match http.get(&url).send().await {
            Ok(response) if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                return Some(Instant::now());
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn sigterm_under_load_goes_unready_first_finishes_in_flight_requests_and_exits_zero() {
    let system = System::all_in_one_with(&[("LIBRARY_SHUTDOWN_DELAY", "1")]).await;
    let admin = system.admin();
    let book = id_of(&admin.create_book(&unique("Drain"), 10_000).await);
    let url = format!("{}/graphql", system.http_url);
    let stop = Arc::new(AtomicBool::new(false));

    let mut workers = Vec::new();
    for worker in 0..8 {
        let (url, book, stop) = (url.clone(), book.clone(), stop.clone());
        let tokens: Vec<String> = (0..400)
            .map(|i| system.token(&unique(&format!("drain-{worker}-{i}")), &[], 600))
            .collect();
        workers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut seen = Vec::new();
            for token in &tokens {
                let sent = Instant::now();
                let outcome = borrow(&http, &url, token, &book).await;
                let served = !matches!(outcome, Outcome::NotServed);
                seen.push((token.clone(), sent, outcome));
                if !served && stop.load(Ordering::SeqCst) {
                    break;
                }
            }
            seen
        }));
    }
    // Let the load run, then stop the process as Kubernetes would.
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::SeqCst);
    let unready = tokio::spawn(first_unready(format!("{}/readyz", system.http_url)));
    let status = system.terminate("library", Duration::from_secs(25)).await;
    assert!(status.success(), "exit status {status}");
    let unready = unready
        .await
        .expect("readiness poller")
        .expect("/readyz answered 503 before the process stopped answering");

    let mut borrowed = Vec::new();
    let mut served_while_unready = 0;
    for worker in workers {
        for (token, sent, outcome) in worker.await.expect("worker") {
            match outcome {
                Outcome::Borrowed(loan) => {
                    served_while_unready += usize::from(sent > unready);
                    borrowed.push((token, loan));
                }
                Outcome::Refused(code) => panic!("a borrow was refused with {code} during the drain"),
                Outcome::Broken(what) => panic!("a request got a broken answer: {what}"),
                Outcome::NotServed => {}
            }
        }
    }
    assert!(!borrowed.is_empty(), "some borrows were served before the stop");
    assert!(
        served_while_unready > 0,
        "borrows sent after /readyz went 503 are still served for the shutdown delay"
    );

    // Every confirmed borrow survived, and the saga finishes after the restart.
    system.start_service("library").await;
    for (token, loan) in borrowed.iter().step_by(7) {
        let reader = system.client("drain", Some(token.clone()));
        reader.wait_loan_status(loan, "ACTIVE").await;
    }
    system
        .admin()
        .wait_available(&book, 10_000 - borrowed.len() as i64)
        .await;
}
