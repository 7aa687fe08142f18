//! Trace context on events with no exporter configured and logs at `warn` (as the tests and
//! quiet deployments run): what is on the RabbitMQ message, and what the consumer's span joins.
use std::time::Duration;

use lapin::options::BasicGetOptions;
use lapin::types::AMQPValue;
use library_platform::bus::{EventBus, EventEnvelope, Outbox, Relay, Relayed, Subscriptions};
use library_platform::config::{LogFormat, TelemetryArgs};
use library_platform::telemetry::{self, TraceHeaders};
use library_platform::test_support::{amqp_url, fresh_bus_names};
use library_platform::{CancellationToken, TaskTracker};
use library_proto::events::StockChanged;
use sea_orm::DatabaseConnection;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::helpers::{event, postgres, rabbit, sqlite};

/// The subscriber a service installs, with no exporter and `RUST_LOG=warn`, as this thread's
/// default (the tests run on one thread, so every task sees it).
fn quiet_service_subscriber() -> (tracing::subscriber::DefaultGuard, telemetry::TelemetryGuard) {
    let args = TelemetryArgs {
        rust_log: "warn".into(),
        log_format: LogFormat::Text,
        otel_endpoint: None,
    };
    let (subscriber, guard) = telemetry::subscriber("bus-test", &args, &[]).expect("subscriber");
    (tracing::subscriber::set_default(subscriber), guard)
}

/// A W3C `traceparent`: version 00, a non-zero trace id and span id, flags.
fn assert_traceparent(value: &str) {
    let parts: Vec<&str> = value.split('-').collect();
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    assert!(
        parts.len() == 4
            && parts[0] == "00"
            && hex(parts[1], 32)
            && parts[1].bytes().any(|b| b != b'0')
            && hex(parts[2], 16)
            && parts[2].bytes().any(|b| b != b'0')
            && hex(parts[3], 2),
        "not a valid traceparent: {value:?}"
    );
}

fn text_header(headers: &lapin::types::FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name) {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// Events written through the outbox inside a request's span, and outside any span, reach
/// RabbitMQ with a valid `traceparent` header: the request's trace for the first (with its
/// `tracestate`), a new trace for the other.
#[tokio::test]
async fn events_on_rabbitmq_carry_traceparent_without_an_exporter() {
    let (_default, _guard) = quiet_service_subscriber();
    let db = postgres().await;
    let names = fresh_bus_names();
    let bus = rabbit(&names);
    bus.declare_queue("traced", &["book.stock_changed".to_owned()]);
    let outbox = Outbox::default();

    // A request whose caller sent a trace context with vendor state.
    let request = tracing::info_span!("request");
    telemetry::set_parent(
        &request,
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        Some("library=e2e"),
    );
    let in_request = event();
    async {
        outbox.enqueue(&db, &in_request).await.expect("enqueue");
    }
    .instrument(request.clone())
    .await;
    let outside = event();
    outbox.enqueue(&db, &outside).await.expect("enqueue");
    assert_eq!(
        Relay::new(db.clone(), bus.clone(), &outbox)
            .relay_once()
            .await
            .expect("relay"),
        Relayed::Published(2)
    );

    let connection = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let message = channel
            .basic_get(names.queue("traced").as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic_get")
            .expect("a message on the queue");
        let headers = message.properties.headers().clone().unwrap_or_default();
        let id = message.properties.message_id().as_ref().map(|s| s.as_str().to_owned());
        seen.push((
            id,
            text_header(&headers, "traceparent"),
            text_header(&headers, "tracestate"),
        ));
    }
    let (_, in_request_tp, in_request_state) = seen
        .iter()
        .find(|(id, _, _)| id.as_deref() == Some(in_request.event_id.as_str()))
        .expect("the request's event");
    let in_request_tp = in_request_tp.as_deref().expect("the request's event has a traceparent");
    assert_traceparent(in_request_tp);
    assert!(
        in_request_tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
        "the request's trace: {in_request_tp}"
    );
    assert_ne!(
        in_request_tp, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "the event's parent is the request's own span, not its caller's"
    );
    assert_eq!(in_request_state.as_deref(), Some("library=e2e"));
    let (_, outside_tp, _) = seen
        .iter()
        .find(|(id, _, _)| id.as_deref() == Some(outside.event_id.as_str()))
        .expect("the event written outside any span");
    assert_traceparent(
        outside_tp
            .as_deref()
            .expect("an event outside any span has a traceparent"),
    );
    let _ = connection.close(200, "done".into()).await;
    bus.close().await;
}

/// The trace each handled event's handler ran in, by event id.
fn tracing_subscriptions(db: DatabaseConnection) -> (Subscriptions, mpsc::UnboundedReceiver<(String, TraceHeaders)>) {
    let (sender, received) = mpsc::unbounded_channel();
    let subscriptions =
        Subscriptions::new("trace-test", db, Outbox::default()).on::<StockChanged, _>(move |event, _, _| {
            let sender = sender.clone();
            Box::pin(async move {
                let current = TraceHeaders::current().expect("the handler runs in a traced span");
                let _ = sender.send((event.event_id, current));
                Ok(())
            })
        });
    (subscriptions, received)
}

/// A published event in the span `span`.
fn published_in(span: &tracing::Span) -> (EventEnvelope, TraceHeaders) {
    let _entered = span.enter();
    let envelope = EventEnvelope::of(&event());
    let trace = TraceHeaders::current().expect("a traced span");
    (envelope, trace)
}

/// Several events of different traces applied in one transaction: each is handled in a span of
/// its own trace, a child of its publisher's span (not of the batch, not of another event).
#[tokio::test]
async fn each_event_of_a_batch_is_handled_in_its_publishers_trace() {
    let (_default, _guard) = quiet_service_subscriber();
    let (subscriptions, mut handled) = tracing_subscriptions(sqlite().await);
    let published: Vec<(EventEnvelope, TraceHeaders)> = (0..3)
        .map(|i| published_in(&tracing::info_span!("request", i)))
        .collect();
    let batch: Vec<EventEnvelope> = published.iter().map(|(envelope, _)| envelope.clone()).collect();
    let outcomes = subscriptions.apply_batch(&batch).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    for (envelope, publisher) in &published {
        assert_eq!(envelope.traceparent.as_deref(), Some(publisher.traceparent.as_str()));
        let (event_id, consumer) = handled.try_recv().expect("every event handled");
        let (_, publisher) = published
            .iter()
            .find(|(e, _)| e.event_id == event_id)
            .expect("a published event");
        assert_eq!(consumer.trace_id(), publisher.trace_id(), "consumer {consumer:?}");
        assert_ne!(
            consumer.traceparent, publisher.traceparent,
            "the consumer has a span of its own"
        );
    }
}

/// The in-process transport hands the consumer the publisher's context, and its handler runs in
/// the publisher's trace.
#[tokio::test]
async fn the_in_process_transport_carries_the_trace() {
    let (_default, _guard) = quiet_service_subscriber();
    let bus = EventBus::in_process();
    let (subscriptions, mut handled) = tracing_subscriptions(sqlite().await);
    let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
    bus.consume("traced", subscriptions, &tracker, shutdown.clone());
    let (envelope, publisher) = published_in(&tracing::info_span!("request"));
    tokio::time::timeout(Duration::from_secs(10), bus.publish(std::slice::from_ref(&envelope)))
        .await
        .expect("published in time")
        .expect("published");
    let (event_id, consumer) = handled.recv().await.expect("handled");
    assert_eq!(event_id, envelope.event_id);
    assert_traceparent(&consumer.traceparent);
    assert_eq!(consumer.trace_id(), publisher.trace_id());
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
}
