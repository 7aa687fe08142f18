//! Events committed within the bus's linger of each other leave in one relay pass and are
//! applied as one batch; without a linger each goes alone.
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
const WAIT: Duration = Duration::from_secs(20);

/// Commits one event, then another `GAP` later, and returns the sizes of the batches the
/// consumer applied them in.
async fn batches_of_two_events(
    bus: EventBus,
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
    // The relay's first pass (over an empty outbox) is over: the next waits for a commit.
    tokio::time::sleep(Duration::from_millis(300)).await;

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

#[tokio::test]
async fn rabbitmq_events_within_the_linger_travel_and_apply_together() {
    let bus = rabbit(&fresh_bus_names()).with_batch_linger(LINGER);
    assert_eq!(
        batches_of_two_events(bus, postgres().await, postgres().await).await,
        [2]
    );

    let alone = rabbit(&fresh_bus_names()).with_batch_linger(Duration::ZERO);
    assert_eq!(
        batches_of_two_events(alone, postgres().await, postgres().await).await,
        [1, 1]
    );
}

#[tokio::test]
async fn in_process_events_within_the_linger_travel_and_apply_together() {
    let bus = EventBus::in_process().with_batch_linger(LINGER);
    assert_eq!(batches_of_two_events(bus, sqlite().await, sqlite().await).await, [2]);

    let alone = EventBus::in_process().with_batch_linger(Duration::ZERO);
    assert_eq!(
        batches_of_two_events(alone, sqlite().await, sqlite().await).await,
        [1, 1]
    );
}
