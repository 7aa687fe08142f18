//! Delivery guarantees in the normal course of things.
use std::time::Duration;

use library_platform::bus::{EventBus, EventEnvelope, Outbox, Relay, Relayed};
use library_platform::database::insert_together;
use library_platform::test_support::{amqp_url, fresh_bus_names};
use library_platform::{CancellationToken, TaskTracker};
use sea_orm::TransactionTrait;
use sea_orm::sea_query::{Alias, Query};

use library_platform::test_support::eventually;

use crate::helpers::{Consumer, event, outbox_rows, postgres, produce, rabbit, sqlite, start};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn every_committed_event_reaches_rabbitmq_consumers_once() {
    let (producer, consumer_db) = (postgres().await, postgres().await);
    let bus = rabbit(&fresh_bus_names());
    let outbox = Outbox::default();
    let consumer = Consumer::new(consumer_db);
    let _running = start(&bus, &producer, &outbox, &consumer, "delivery");

    // A rolled-back transaction's events never leave.
    let txn = producer.begin().await.unwrap();
    outbox.enqueue(&txn, &event()).await.unwrap();
    txn.rollback().await.unwrap();

    produce(&producer, &outbox, 300, 10).await;
    assert_each_applied_once_and_relayed(&consumer, &producer, 300).await;
}

/// Waits until `consumer` applied `count` events, checks each was applied once, and that the
/// producer's outbox empties.
async fn assert_each_applied_once_and_relayed(consumer: &Consumer, producer: &sea_orm::DatabaseConnection, count: i64) {
    assert!(
        eventually(WAIT, || async { consumer.applied().await.0 >= count }).await,
        "{:?}",
        consumer.applied().await
    );
    assert_eq!(consumer.applied().await, (count, count));
    assert!(eventually(WAIT, || async { outbox_rows(producer).await == 0 }).await);
}

#[tokio::test]
async fn a_backlog_of_full_batches_reaches_rabbitmq_consumers_once() {
    // Committed before the relay starts: its first passes take full batches (each confirmed
    // before the next is taken), the last a partial one (sent while others may be in flight).
    let (producer, consumer_db) = (postgres().await, postgres().await);
    let bus = rabbit(&fresh_bus_names());
    let outbox = Outbox::default();
    produce(&producer, &outbox, 600, 100).await;
    assert_eq!(outbox_rows(&producer).await, 600);
    let consumer = Consumer::new(consumer_db);
    let _running = start(&bus, &producer, &outbox, &consumer, "backlog");
    assert_each_applied_once_and_relayed(&consumer, &producer, 600).await;
}

#[tokio::test]
async fn every_committed_event_reaches_in_process_consumers_once() {
    library_platform::metrics::prometheus();
    let (producer, consumer_db) = (sqlite().await, sqlite().await);
    let bus = EventBus::in_process();
    let outbox = Outbox::default();
    let consumer = Consumer::new(consumer_db);
    let _running = start(&bus, &producer, &outbox, &consumer, "delivery");

    produce(&producer, &outbox, 200, 7).await;
    assert!(eventually(WAIT, || async { consumer.applied().await.0 >= 200 }).await);
    assert_eq!(consumer.applied().await, (200, 200));
    assert_eq!(outbox_rows(&producer).await, 0);
    let metrics = library_platform::metrics::prometheus().render();
    assert!(metrics.contains("events_published_total "), "{metrics}");
    // Each applied event's lag is recorded (other tests of this binary may add to the count),
    // and each batch's publication.
    let count = |series: &str| {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or_default()
    };
    assert!(
        count(r#"events_consumed_lag_seconds_count{consumer="test-consumer"}"#) >= 200.0,
        "{metrics}"
    );
    assert!(count("events_publish_seconds_count") >= 1.0, "{metrics}");
}

#[tokio::test]
async fn the_same_event_delivered_twice_takes_effect_once() {
    for bus in [EventBus::in_process(), rabbit(&fresh_bus_names())] {
        let consumer = Consumer::new(if bus.is_in_process() {
            sqlite().await
        } else {
            postgres().await
        });
        let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
        bus.consume("twice", consumer.subscriptions(), &tracker, shutdown.clone());
        let twice = EventEnvelope::of(&event());
        let marker = EventEnvelope::of(&event());
        bus.publish(&[twice.clone(), twice.clone()]).await.unwrap();
        bus.publish(std::slice::from_ref(&twice)).await.unwrap();
        bus.publish(std::slice::from_ref(&marker)).await.unwrap();
        assert!(eventually(WAIT, || async { consumer.has_applied(&marker.event_id).await }).await);
        // Stopping drains every delivery in flight: all four have been handled after this.
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
        assert_eq!(
            consumer.applied().await,
            (2, 2),
            "three deliveries of one event count once"
        );
    }
}

#[tokio::test]
async fn relays_of_several_replicas_publish_each_row_once() {
    let producer = postgres().await;
    let names = fresh_bus_names();
    let outbox = Outbox::default();
    // A queue with no consumer: what it holds is exactly what was published.
    let bus = rabbit(&names);
    bus.declare_queue("replicas", &["book.stock_changed".to_owned()]);

    produce(&producer, &outbox, 1000, 50).await;
    let relays: Vec<Relay> = (0..3)
        .map(|_| Relay::new(producer.clone(), bus.clone(), &outbox))
        .collect();
    let mut handles = Vec::new();
    for relay in relays {
        handles.push(tokio::spawn(async move {
            while let Ok(Relayed::Published(_)) = relay.relay_once().await {}
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    assert_eq!(outbox_rows(&producer).await, 0);

    let connection = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = channel
        .queue_declare(
            names.queue("replicas").as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        queue.message_count(),
        1000,
        "each outbox row was published exactly once"
    );
}

#[tokio::test]
async fn pruning_forgets_processed_events_older_than_the_retention_only() {
    let consumer = Consumer::new(sqlite().await);
    let bus = EventBus::in_process();
    let _running = start(&bus, &sqlite().await, &Outbox::default(), &consumer, "prune");
    let envelope = EventEnvelope::of(&event());
    bus.publish(std::slice::from_ref(&envelope)).await.unwrap();
    let pruned = library_platform::bus::prune_processed_events(&consumer.db, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(pruned, 0, "a fresh record is kept");
    bus.publish(std::slice::from_ref(&envelope)).await.unwrap();
    assert_eq!(consumer.applied().await, (1, 1));
    let pruned = library_platform::bus::prune_processed_events(&consumer.db, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(pruned, 1);
}

#[tokio::test]
async fn a_batch_reaches_handlers_as_runs_of_one_type_in_delivery_order_each_event_once() {
    use std::sync::{Arc, Mutex};

    use library_platform::bus::Subscriptions;
    use library_proto::events::{StockChanged, StockReleased};

    let db = sqlite().await;
    /// What each handler call got: the handler, and the book ids of its run.
    type Runs = Arc<Mutex<Vec<(&'static str, Vec<String>)>>>;
    let runs: Runs = Arc::default();
    let (changed, released) = (runs.clone(), runs.clone());
    let subscriptions = Subscriptions::new("runs", db, Outbox::default())
        .on_batch::<StockChanged, _>(move |run, _| {
            let ids = run.into_iter().map(|(event, _)| event.book_id).collect();
            changed.lock().unwrap().push(("changed", ids));
            Box::pin(async { Ok(()) })
        })
        .on::<StockReleased, _>(move |event, _, _| {
            released.lock().unwrap().push(("released", vec![event.book_id]));
            Box::pin(async { Ok(()) })
        });
    let changed = |book: &str| {
        EventEnvelope::of(&StockChanged {
            event_id: uuid::Uuid::now_v7().to_string(),
            book_id: book.into(),
            ..Default::default()
        })
    };
    let released = |book: &str| {
        EventEnvelope::of(&StockReleased {
            event_id: uuid::Uuid::now_v7().to_string(),
            book_id: book.into(),
            ..Default::default()
        })
    };
    let first = changed("a");
    let batch = vec![
        first.clone(),
        changed("b"),
        released("c"),
        released("d"),
        changed("e"),
        first,
        changed("f"),
    ];
    let outcomes = subscriptions.apply_batch(&batch).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    let owned = |ids: &[&str]| ids.iter().map(|id| (*id).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        *runs.lock().unwrap(),
        vec![
            ("changed", owned(&["a", "b"])),
            ("released", owned(&["c"])),
            ("released", owned(&["d"])),
            ("changed", owned(&["e", "f"])),
        ],
        "a per-event handler gets one event at a time; the redelivered `a` is skipped"
    );

    // Delivered again later, nothing reaches a handler.
    runs.lock().unwrap().clear();
    assert!(subscriptions.apply_batch(&batch).await.iter().all(Result::is_ok));
    assert!(runs.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_change_and_its_events_inserted_together_commit_or_vanish_together() {
    let applied = |id: &str| {
        Query::insert()
            .into_table(Alias::new("applied"))
            .columns([Alias::new("event_id")])
            .values_panic([id.into()])
            .to_owned()
    };
    let first = EventEnvelope::of(&event());
    for db in [postgres().await, sqlite().await] {
        let consumer = Consumer::new(db.clone());
        let txn = db.begin().await.unwrap();
        let inserts = vec![applied("a"), Outbox::insert_of([first.clone()]).unwrap()];
        insert_together(&txn, inserts).await.unwrap();
        txn.commit().await.unwrap();
        assert!(consumer.has_applied("a").await);
        assert_eq!(outbox_rows(&db).await, 1);

        // The same event id again breaks the outbox's unique key: the change goes with it.
        let txn = db.begin().await.unwrap();
        let inserts = vec![applied("b"), Outbox::insert_of([first.clone()]).unwrap()];
        assert!(insert_together(&txn, inserts).await.is_err());
        txn.rollback().await.unwrap();
        assert!(!consumer.has_applied("b").await);
        assert_eq!(outbox_rows(&db).await, 1);
    }

    // On PostgreSQL they are one statement, all or nothing even without a transaction.
    let db = postgres().await;
    let consumer = Consumer::new(db.clone());
    Outbox::default().enqueue_all(&db, [first.clone()]).await.unwrap();
    let inserts = vec![applied("c"), Outbox::insert_of([first]).unwrap()];
    assert!(insert_together(&db, inserts).await.is_err());
    assert!(!consumer.has_applied("c").await);
}

/// What a consumer reads of an event is what was published, on both transports: its id, type,
/// payload, trace context and when it occurred, to the microsecond (the AMQP timestamp has
/// whole seconds; the lag a consumer reports is measured from it).
#[tokio::test]
async fn an_event_arrives_as_it_was_published() {
    for bus in [EventBus::in_process(), rabbit(&fresh_bus_names())] {
        let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let (sender, mut received) = tokio::sync::mpsc::unbounded_channel();
        bus.listen(
            &["book.stock_changed"],
            move |envelope| {
                let _ = sender.send(envelope);
            },
            &tracker,
            shutdown.clone(),
        );
        let mut sent = EventEnvelope::of(&event());
        sent.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        sent.tracestate = Some("library=1,other=x".into());
        // Listening starts in the background: publish until it hears.
        let heard = tokio::time::timeout(WAIT, async {
            loop {
                bus.publish(std::slice::from_ref(&sent)).await.unwrap();
                if let Ok(Some(envelope)) = tokio::time::timeout(Duration::from_millis(200), received.recv()).await {
                    return envelope;
                }
            }
        })
        .await
        .expect("the listener heard nothing");
        assert_eq!(heard.event_id, sent.event_id);
        assert_eq!(heard.event_type, sent.event_type);
        assert_eq!(heard.routing_key, sent.routing_key);
        assert_eq!(heard.payload, sent.payload);
        assert_eq!(heard.traceparent, sent.traceparent);
        assert_eq!(heard.tracestate, sent.tracestate);
        assert_eq!(
            heard.occurred_at.timestamp_micros(),
            sent.occurred_at.timestamp_micros()
        );
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
        bus.close().await;
    }
}
