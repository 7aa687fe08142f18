//! Faults: a broker that is down or cuts connections, a consumer that dies between commit and
//! acknowledgement, and poison messages.
use std::process::Command;
use std::time::Duration;

use lapin::options::BasicGetOptions;
use lapin::types::AMQPValue;
use library_platform::bus::{BusNames, EventBus, EventEnvelope, Outbox, Relay, Relayed, dead_letters};
use library_platform::test_support::{amqp_url, fresh_bus_names, fresh_sqlite_url};
use library_platform::{CancellationToken, TaskTracker, database};
use sea_orm::{ConnectionTrait, TransactionTrait};

use library_platform::test_support::eventually;

use crate::helpers::{Consumer, TestMigrator, event, outbox_rows, postgres, produce, rabbit, sqlite, start};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn with_the_broker_down_writes_commit_and_leave_once_it_is_back() {
    let (producer, consumer_db) = (postgres().await, postgres().await);
    let names = fresh_bus_names();
    let outbox = Outbox::default();
    // Nothing listens on port 1: the broker is "down".
    let down = EventBus::rabbitmq("amqp://guest:guest@127.0.0.1:1/%2f", names.clone()).unwrap();
    produce(&producer, &outbox, 50, 5).await;
    assert!(Relay::new(producer.clone(), down, &outbox).relay_once().await.is_err());
    assert_eq!(
        outbox_rows(&producer).await,
        50,
        "the outbox keeps every event while the broker is down"
    );

    let consumer = Consumer::new(consumer_db);
    let _running = start(&rabbit(&names), &producer, &outbox, &consumer, "outage");
    assert!(eventually(WAIT, || async { consumer.applied().await.0 >= 50 }).await);
    assert_eq!(consumer.applied().await, (50, 50));
}

/// The broker's connections of this test (named after its exchange) are closed, as a broker
/// restart would.
fn cut_connections(names: &BusNames) -> usize {
    let listed = Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "pid", "client_properties"])
        .output()
        .expect("rabbitmqctl runs");
    let text = String::from_utf8_lossy(&listed.stdout);
    let mut cut = 0;
    for line in text.lines().filter(|l| l.contains(&names.exchange)) {
        if let Some(pid) = line.split_whitespace().next() {
            let closed = Command::new("rabbitmqctl")
                .args(["-q", "close_connection", pid, "test: connection cut"])
                .status()
                .expect("rabbitmqctl runs");
            cut += usize::from(closed.success());
        }
    }
    cut
}

#[tokio::test]
async fn cutting_the_broker_connection_while_events_flow_loses_and_doubles_nothing() {
    let (producer, consumer_db) = (postgres().await, postgres().await);
    let names = fresh_bus_names();
    let bus = rabbit(&names);
    let outbox = Outbox::default();
    let consumer = Consumer::new(consumer_db);
    let _running = start(&bus, &producer, &outbox, &consumer, "cut");

    let producing = {
        let (producer, outbox) = (producer.clone(), outbox.clone());
        tokio::spawn(async move { produce(&producer, &outbox, 600, 3).await })
    };
    assert!(
        eventually(WAIT, || async { consumer.applied().await.0 >= 50 }).await,
        "events flow first"
    );
    assert!(cut_connections(&names) >= 1, "the test's connection was found and cut");
    producing.await.unwrap();
    assert!(
        eventually(WAIT, || async { consumer.applied().await.0 >= 600 }).await,
        "{:?}",
        consumer.applied().await
    );
    assert_eq!(consumer.applied().await, (600, 600));
}

#[tokio::test]
async fn a_consumer_killed_between_commit_and_ack_applies_the_event_once_after_redelivery() {
    let consumer = Consumer::new(postgres().await);
    let names = fresh_bus_names();
    let bus = rabbit(&names);
    let envelope = EventEnvelope::of(&event());
    // The event is published and its effect committed, but the consumer "died" before it could
    // acknowledge: the message is still in the queue.
    bus.declare_queue("crash", &["book.stock_changed".to_owned()]);
    bus.publish(std::slice::from_ref(&envelope)).await.unwrap();
    consumer.subscriptions().apply(&envelope).await.unwrap();
    assert_eq!(consumer.applied().await, (1, 1));

    // The restarted consumer gets the message again and must not apply it twice.
    let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
    bus.consume("crash", consumer.subscriptions(), &tracker, shutdown.clone());
    let marker = EventEnvelope::of(&event());
    bus.publish(std::slice::from_ref(&marker)).await.unwrap();
    assert!(eventually(WAIT, || async { consumer.has_applied(&marker.event_id).await }).await);
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    assert_eq!(consumer.applied().await, (2, 2));
}

#[tokio::test]
async fn a_poison_message_lands_in_the_dead_letter_queue_and_the_consumer_goes_on() {
    let consumer_db = postgres().await;
    let names = fresh_bus_names();
    let bus = rabbit(&names);
    let consumer = Consumer::new(consumer_db);
    let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
    bus.consume("poison", consumer.subscriptions(), &tracker, shutdown.clone());
    let good = EventEnvelope::of(&event());
    assert!(
        eventually(WAIT, || async {
            bus.publish(std::slice::from_ref(&good)).await.is_ok() && consumer.applied().await.0 >= 1
        })
        .await
    );

    let mut poison = EventEnvelope::of(&event());
    poison.payload = vec![0xff, 0xff, 0xff, 0x01];
    let after = EventEnvelope::of(&event());
    bus.publish(&[poison.clone(), after]).await.unwrap();
    assert!(
        eventually(WAIT, || async { consumer.applied().await.0 >= 2 }).await,
        "the consumer goes on after poison"
    );

    let connection = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let dlq = format!("{}.dlq", names.queue("poison"));
    let mut found = None;
    for _ in 0..100 {
        if let Some(message) = channel
            .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            found = Some(message);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let message = found.expect("the poison message is in the dead-letter queue");
    assert_eq!(
        message
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned()),
        Some(poison.event_id)
    );
    let headers = message.delivery.properties.headers().clone().unwrap_or_default();
    match headers.inner().get("x-error") {
        Some(AMQPValue::LongString(error)) => assert!(String::from_utf8_lossy(error.as_bytes()).contains("decode")),
        other => panic!("x-error header missing: {other:?}"),
    }
    shutdown.cancel();
}

#[tokio::test]
async fn the_in_process_bus_dead_letters_poison_and_goes_on() {
    library_platform::metrics::prometheus();
    let consumer = Consumer::new(sqlite().await);
    let bus = EventBus::in_process();
    let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
    bus.consume("poison", consumer.subscriptions(), &tracker, shutdown.clone());
    let mut poison = EventEnvelope::of(&event());
    poison.payload = vec![0xff, 0xff];
    bus.publish(&[poison.clone(), EventEnvelope::of(&event())])
        .await
        .unwrap();
    assert_eq!(consumer.applied().await, (1, 1));
    let dead = dead_letters(&consumer.db).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].envelope.event_id, poison.event_id);
    assert!(dead[0].error.contains("decode"), "{}", dead[0].error);
    // Operators see both outcomes (the counters are the process's, shared by every test here).
    let metrics = library_platform::metrics::prometheus().render();
    for outcome in ["applied", "dead_lettered"] {
        let series = format!(r#"events_consumed_total{{consumer="test-consumer",outcome="{outcome}"}}"#);
        assert!(metrics.contains(&series), "no {series} in:\n{metrics}");
    }
    shutdown.cancel();
}

/// The in-process publish returns once the consumer is done, and the relay then forgets the
/// outbox row: a dead letter must already be on disk by then, or a restart would lose it.
#[tokio::test]
async fn the_in_process_bus_keeps_a_dead_letter_on_disk_before_the_outbox_forgets_it() {
    let producer = sqlite().await;
    let consumer_url = fresh_sqlite_url("consumer");
    let consumer = Consumer::new(
        database::connect_and_migrate::<TestMigrator>(&consumer_url)
            .await
            .unwrap(),
    );
    let bus = EventBus::in_process();
    let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
    bus.consume("poison", consumer.subscriptions(), &tracker, shutdown.clone());
    let outbox = Outbox::default();
    let mut poison = EventEnvelope::of(&event());
    poison.payload = vec![0xff, 0xff];
    let txn = producer.begin().await.unwrap();
    outbox.enqueue_all(&txn, [poison.clone()]).await.unwrap();
    outbox.commit(txn).await.unwrap();

    let relay = Relay::new(producer.clone(), bus.clone(), &outbox);
    assert_eq!(relay.relay_once().await.unwrap(), Relayed::Published(1));
    assert_eq!(outbox_rows(&producer).await, 0);
    assert_eq!(
        dead_letters(&consumer.db).await.unwrap().len(),
        1,
        "kept before the publish returned"
    );
    // Published again, as after a crash between the publish and the outbox's delete: kept once.
    bus.publish(std::slice::from_ref(&poison)).await.unwrap();

    // The process stops; the consumer's database, opened again, still holds it.
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    drop((bus, relay, consumer));
    let reopened = database::connect(&consumer_url).await.unwrap();
    let dead = dead_letters(&reopened).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].queue, "poison");
    assert_eq!(
        (
            &dead[0].envelope.event_id,
            &dead[0].envelope.routing_key,
            &dead[0].envelope.payload
        ),
        (&poison.event_id, &poison.routing_key, &poison.payload)
    );
    assert!(dead[0].error.contains("decode"), "{}", dead[0].error);
}

/// The runbook's replay of the all-in-one's dead letters of one queue, run in that consumer's
/// database: back into its own outbox, whose relay publishes them to every consumer of their
/// routing key (those that applied them already skip them by event id).
const REPLAY_DEAD_LETTERS: &str = "BEGIN;
INSERT INTO outbox_events (event_id, event_type, routing_key, payload, traceparent, tracestate, occurred_at)
  SELECT event_id, event_type, routing_key, payload, traceparent, tracestate, occurred_at
  FROM dead_letters WHERE queue = 'test.replay' ORDER BY id;
DELETE FROM dead_letters WHERE queue = 'test.replay';
COMMIT;";

#[tokio::test]
async fn a_kept_dead_letter_replayed_as_the_runbook_says_takes_effect_once_the_cause_is_fixed() {
    let consumer = Consumer::new(sqlite().await);
    // The handler's table is missing: every attempt fails, as in a database outage or a bug.
    consumer.db.execute_unprepared("DROP TABLE applied").await.unwrap();
    let bus = EventBus::in_process();
    let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
    bus.consume("test.replay", consumer.subscriptions(), &tracker, shutdown.clone());
    let lost = EventEnvelope::of(&event());
    bus.publish(std::slice::from_ref(&lost)).await.unwrap();
    let dead = dead_letters(&consumer.db).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].error.contains("failed 5 times"), "{}", dead[0].error);

    consumer
        .db
        .execute_unprepared("CREATE TABLE applied (event_id VARCHAR(64) NOT NULL)")
        .await
        .unwrap();
    consumer.db.execute_unprepared(REPLAY_DEAD_LETTERS).await.unwrap();
    let relay = Relay::new(consumer.db.clone(), bus.clone(), &Outbox::default());
    assert_eq!(relay.relay_once().await.unwrap(), Relayed::Published(1));
    assert!(consumer.has_applied(&lost.event_id).await);
    assert_eq!(consumer.applied().await, (1, 1));
    assert!(dead_letters(&consumer.db).await.unwrap().is_empty());
    shutdown.cancel();
}
