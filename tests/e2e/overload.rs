//! Overload (all-in-one mode): beyond the gateway's borrow budget, requests are shed at once
//! with SERVICE_BUSY and a retry hint, and nothing is lost or half done.
use futures::future::join_all;

use crate::helpers::{Gql, System, TIMEOUT, eventually, id_of};

const READERS: usize = 40;
const COPIES: i64 = 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_the_borrow_budget_is_shed_and_nothing_is_half_done() {
    let system = System::all_in_one_with(&[("GATEWAY_BORROW_CONCURRENCY", "2")]).await;
    let admin = system.admin();
    let book_id = id_of(&admin.create_book("Bestseller", COPIES as i32).await);
    let readers: Vec<Gql> = (0..READERS).map(|_| system.reader("burst")).collect();

    let replies = join_all(readers.iter().map(|r| r.borrow(&book_id, 1))).await;

    let mut borrowed: Vec<(&Gql, String)> = Vec::new();
    let mut shed: Vec<&Gql> = Vec::new();
    for (reader, reply) in readers.iter().zip(&replies) {
        if reply.code() == Some("SERVICE_BUSY") {
            let error = reply.error("SERVICE_BUSY");
            let retry = &error["extensions"]["retryAfterSeconds"];
            assert!(
                retry.as_f64().is_some_and(|s| s > 0.0),
                "SERVICE_BUSY tells when to retry: {error}"
            );
            assert!(reply.body["data"].is_null(), "{}", reply.body);
            shed.push(reader);
        } else {
            let loan = &reply.data()["borrowBook"];
            assert_eq!(loan["userId"], reader.user.as_str());
            borrowed.push((reader, id_of(loan)));
        }
    }
    assert!(
        !shed.is_empty(),
        "{READERS} concurrent borrows against a budget of 2: expected at least one SERVICE_BUSY"
    );
    assert!(!borrowed.is_empty(), "some borrows of the burst get through");

    for (reader, loan_id) in &borrowed {
        reader.wait_loan_status(loan_id, "ACTIVE").await;
    }
    let expected = COPIES - borrowed.len() as i64;
    admin.wait_available(&book_id, expected).await;

    // A shed borrow left nothing behind.
    for reader in &shed {
        eventually(&format!("{} has no loan", reader.user), TIMEOUT, || async {
            let reply = reader.my_loans(None).await;
            match reply.body["data"]["myLoans"]["totalCount"].as_i64() {
                Some(0) => Ok(()),
                Some(n) => panic!("a shed borrow created {n} loan(s): {}", reply.body),
                // The listing itself may be shed while the system calms down.
                None => Err(reply.body.to_string()),
            }
        })
        .await;
    }
    println!(
        "burst of {READERS}: {} borrowed, {} shed with SERVICE_BUSY",
        borrowed.len(),
        shed.len()
    );
}
