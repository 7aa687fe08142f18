//! A busy relay or consumer (given work within the linger of its last batch) waits the linger
//! for more: events committed within it leave in one pass and are applied as one batch. After a
//! quiet spell, or without a linger, each goes at once, alone.
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use library_platform::bus::{EventBus, Outbox, Relay, Subscriptions};
use library_platform::test_support::{eventually, fresh_bus_names};
use library_platform::{CancellationToken, TaskTracker};
use library_proto::events::StockChanged;
use sea_orm::DatabaseConnection;

use crate::helpers::{postgres, produce, rabbit, sqlite};

const LINGER: Duration = Duration::from_millis(400);
/// Between the two commits: well inside the linger, well beyond a pass without one.
const GAP: Duration = Duration::from_millis(100);
/// Idle before the first commit: inside the linger (the relay and consumer count as busy)…
const BUSY: Duration = Duration::from_millis(250);
/// …or well beyond it.
const QUIET: Duration = Duration::from_millis(1200);
const WAIT: Duration = Duration::from_secs(20);

/// `idle` after the relay's first pass and the consumer's start, commits one event, then another
/// `GAP` later, and returns the sizes of the batches the consumer applied them in.
async fn batches_of_two_events(
    bus: EventBus,
    idle: Duration,
    producer: DatabaseConnection,
    consumer: DatabaseConnection,
) -> Vec<usize> {
    let outbox = Outbox::default();
    let batches: Arc<Mutex<Vec<usize>>> = Arc::default();
    let seen = batches.clone();
    let subscriptions =
        Subscriptions::new("linger", consumer, Outbox::default()).on_batch::<StockChanged, _>(move |run, _| {
            seen.lock().unwrap().push(run.len());
            Box::pin(async { Ok(()) })
        });
    let (shutdown, tracker) = (CancellationToken::new(), TaskTracker::new());
    bus.consume("linger", subscriptions, &tracker, shutdown.clone());
    tracker.spawn(Relay::new(producer.clone(), bus.clone(), &outbox).run(shutdown.clone()));
    // The relay's first pass (over an empty outbox) ends at once: the next waits for a commit.
    tokio::time::sleep(idle).await;

    produce(&producer, &outbox, 1, 1).await;
    tokio::time::sleep(GAP).await;
    produce(&producer, &outbox, 1, 1).await;
    let applied = eventually(WAIT, || async { batches.lock().unwrap().iter().sum::<usize>() >= 2 }).await;
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    bus.close().await;
    assert!(applied, "both events applied: {:?}", batches.lock().unwrap());
    batches.lock().unwrap().clone()
}

/// The three cases on the bus `bus_with(linger)` makes, over databases `database` makes.
async fn check_batches<D, F>(bus_with: impl Fn(Duration) -> EventBus, database: D)
where
    D: Fn() -> F,
    F: Future<Output = DatabaseConnection>,
{
    let cases = [
        (LINGER, BUSY, vec![2], "busy: the second event waits for the first"),
        (
            LINGER,
            QUIET,
            vec![1, 1],
            "after a quiet spell the first event goes at once",
        ),
        (Duration::ZERO, BUSY, vec![1, 1], "no linger: each goes at once"),
    ];
    for (linger, idle, expected, what) in cases {
        let batches = batches_of_two_events(bus_with(linger), idle, database().await, database().await).await;
        assert_eq!(batches, expected, "{what}");
    }
}

#[tokio::test]
async fn rabbitmq_events_within_the_linger_of_a_busy_hop_travel_and_apply_together() {
    check_batches(|linger| rabbit(&fresh_bus_names()).with_batch_linger(linger), postgres).await;
}

#[tokio::test]
async fn in_process_events_within_the_linger_of_a_busy_hop_travel_and_apply_together() {
    check_batches(|linger| EventBus::in_process().with_batch_linger(linger), sqlite).await;
}
