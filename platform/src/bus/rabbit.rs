//! The RabbitMQ transport (lapin). One connection per process, re-opened after a broker restart;
//! a publisher channel in confirm mode; one channel per consumer with a bounded prefetch.
//!
//! Topology, declared by whoever needs it first (all declarations are idempotent):
//! - `library.events`: durable topic exchange for every event;
//! - `library.events.dlx`: durable direct exchange for dead letters;
//! - `<queue>`: durable queue per consumer, bound to the routing keys it handles, dead-lettering
//!   to `library.events.dlx` with its own name as routing key;
//! - `<queue>.dlq`: durable queue bound to `library.events.dlx` under `<queue>`.
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use futures::{StreamExt, TryStreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind, PublisherConfirm};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::consumer::lingering_batches;
use super::{BusError, BusNames, EventEnvelope, Subscriptions};
use crate::backoff::Backoff;

/// Deliveries one consumer holds unacknowledged.
const PREFETCH: u16 = 128;
/// Batches one consumer applies at once. One: what arrives while a batch is applied becomes the
/// next, bigger batch, so the same events cost fewer transactions (two at once measured slower
/// on a saturated two-core machine). Well below the database pool (16) in any case: a batch
/// queued on one hot row (a popular book) holds a connection while it waits, and the service's
/// gRPC reads must still find one.
const BATCHES_IN_FLIGHT: usize = 1;
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(10);
const PERSISTENT: u8 = 2;
/// When the event occurred, in microseconds since the Unix epoch.
const OCCURRED_AT_HEADER: &str = "occurred-at-us";

/// A batch sent on the publisher channel, its confirmations still to come.
pub(super) struct Sent {
    channel: Channel,
    confirms: Vec<(String, PublisherConfirm)>,
}

pub(super) struct RabbitBus {
    url: String,
    names: BusNames,
    connection: Mutex<Option<Arc<Connection>>>,
    publisher: Mutex<Option<Channel>>,
    /// Consumer queues (unprefixed name, routing keys) the publisher declares before it
    /// publishes: an event published before its consumer ever started must wait in the queue,
    /// not vanish in an exchange with nothing bound.
    known_queues: std::sync::Mutex<Vec<(String, Vec<String>)>>,
}

impl RabbitBus {
    pub(super) fn new(url: &str, names: BusNames) -> Self {
        Self {
            url: url.to_owned(),
            names,
            connection: Mutex::new(None),
            publisher: Mutex::new(None),
            known_queues: std::sync::Mutex::new(Vec::new()),
        }
    }

    pub(super) fn know_queue(&self, queue: &str, keys: Vec<String>) {
        let mut known = self.known_queues.lock().unwrap_or_else(|p| p.into_inner());
        if !known.iter().any(|(q, _)| q == queue) {
            known.push((queue.to_owned(), keys));
        }
    }

    async fn connection(&self) -> Result<Arc<Connection>, lapin::Error> {
        let mut slot = self.connection.lock().await;
        if let Some(conn) = slot.as_ref()
            && conn.status().connected()
        {
            return Ok(conn.clone());
        }
        // Named after the exchange, so an operator (or a test) can tell this process's
        // connection apart in `rabbitmqctl list_connections client_properties`.
        let properties = ConnectionProperties::default().with_connection_name(self.names.exchange.as_str().into());
        let conn = Arc::new(Connection::connect(&self.url, properties).await?);
        tracing::info!("connected to RabbitMQ");
        *slot = Some(conn.clone());
        Ok(conn)
    }

    async fn open_channel(&self) -> Result<Channel, lapin::Error> {
        let channel = self.connection().await?.create_channel().await?;
        channel
            .exchange_declare(
                self.names.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(channel)
    }

    /// Sends `batch` on the publisher channel. The channel is held only while the batch is
    /// sent, not while the broker confirms it (it writes persistent messages to disk first), so
    /// batches sent one after the other are confirmed side by side.
    pub(super) async fn send(&self, batch: &[EventEnvelope]) -> Result<Sent, BusError> {
        let mut slot = self.publisher.lock().await;
        match self.send_on(&mut slot, batch).await {
            Ok((channel, confirms)) => Ok(Sent { channel, confirms }),
            Err(error) => {
                // A channel that failed once is not trusted again.
                *slot = None;
                Err(error)
            }
        }
    }

    /// Waits for the broker's confirmation of every message of `sent`.
    pub(super) async fn confirmed(&self, sent: Sent) -> Result<(), BusError> {
        for (event_id, confirm) in sent.confirms {
            let confirmed = match confirm.await {
                Ok(confirmation) if confirmation.is_ack() => Ok(()),
                Ok(_) => Err(BusError::Nacked(event_id)),
                Err(error) => Err(error.into()),
            };
            if confirmed.is_err() {
                let mut slot = self.publisher.lock().await;
                if slot.as_ref().is_some_and(|current| current.id() == sent.channel.id()) {
                    *slot = None;
                }
            }
            confirmed?;
        }
        Ok(())
    }

    /// Sends `batch` on the publisher channel (opened in confirm mode if there is none), returning
    /// the channel and the broker's confirmation to wait for, one per event.
    async fn send_on(
        &self,
        slot: &mut Option<Channel>,
        batch: &[EventEnvelope],
    ) -> Result<(Channel, Vec<(String, PublisherConfirm)>), BusError> {
        let channel = match slot.as_ref().filter(|c| c.status().connected()) {
            Some(channel) => channel.clone(),
            None => {
                let channel = self.open_channel().await?;
                let known = self.known_queues.lock().unwrap_or_else(|p| p.into_inner()).clone();
                for (queue, keys) in &known {
                    self.declare_consumer_queue(&channel, &self.names.queue(queue), keys)
                        .await?;
                }
                channel.confirm_select(ConfirmSelectOptions::default()).await?;
                *slot = Some(channel.clone());
                channel
            }
        };
        let mut confirms = Vec::with_capacity(batch.len());
        for envelope in batch {
            let confirm = channel
                .basic_publish(
                    self.names.exchange.as_str().into(),
                    envelope.routing_key.as_str().into(),
                    BasicPublishOptions::default(),
                    &envelope.payload,
                    properties_of(envelope),
                )
                .await?;
            confirms.push((envelope.event_id.clone(), confirm));
        }
        Ok((channel, confirms))
    }

    /// Declares `queue` with its bindings and its dead-letter queue.
    async fn declare_consumer_queue(
        &self,
        channel: &Channel,
        queue: &str,
        keys: &[String],
    ) -> Result<(), lapin::Error> {
        let dlx = self.names.dead_letter_exchange();
        channel
            .exchange_declare(
                dlx.as_str().into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let dlq = format!("{queue}.dlq");
        channel
            .queue_declare(dlq.as_str().into(), durable(), self.queue_arguments())
            .await?;
        channel
            .queue_bind(
                dlq.as_str().into(),
                dlx.as_str().into(),
                queue.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut arguments = self.queue_arguments();
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(dlx.as_str().into()),
        );
        arguments.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(queue.into()));
        channel.queue_declare(queue.into(), durable(), arguments).await?;
        for key in keys {
            channel
                .queue_bind(
                    queue.into(),
                    self.names.exchange.as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    fn queue_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        if let Some(ms) = self.names.queue_expires_ms {
            arguments.insert("x-expires".into(), AMQPValue::LongUInt(ms));
        }
        arguments
    }

    pub(super) async fn close(&self) {
        if let Some(channel) = self.publisher.lock().await.take() {
            let _ = channel.close(200, "shutting down".into()).await;
        }
        if let Some(conn) = self.connection.lock().await.take() {
            let _ = conn.close(200, "shutting down".into()).await;
        }
    }
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

fn properties_of(envelope: &EventEnvelope) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(tp) = &envelope.traceparent {
        headers.insert("traceparent".into(), AMQPValue::LongString(tp.as_str().into()));
    }
    if let Some(state) = &envelope.tracestate {
        headers.insert("tracestate".into(), AMQPValue::LongString(state.as_str().into()));
    }
    headers.insert(
        OCCURRED_AT_HEADER.into(),
        AMQPValue::LongLongInt(envelope.occurred_at.timestamp_micros()),
    );
    BasicProperties::default()
        .with_message_id(envelope.event_id.as_str().into())
        .with_type(envelope.event_type.as_str().into())
        .with_timestamp(u64::try_from(envelope.occurred_at.timestamp()).unwrap_or_default())
        .with_content_type("application/x-protobuf".into())
        .with_delivery_mode(PERSISTENT)
        .with_headers(headers)
}

fn envelope_of(delivery: &Delivery) -> EventEnvelope {
    let props = &delivery.properties;
    let text_header = |name: &str| {
        props.headers().as_ref().and_then(|h| match h.inner().get(name) {
            Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
            Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_owned()),
            _ => None,
        })
    };
    let (traceparent, tracestate) = (text_header("traceparent"), text_header("tracestate"));
    // The AMQP timestamp has whole seconds; the header, when the publisher set it, microseconds.
    let occurred_at = props
        .headers()
        .as_ref()
        .and_then(|h| match h.inner().get(OCCURRED_AT_HEADER) {
            Some(AMQPValue::LongLongInt(micros)) => Utc.timestamp_micros(*micros).single(),
            _ => None,
        })
        .or_else(|| {
            props
                .timestamp()
                .and_then(|t| i64::try_from(t).ok())
                .and_then(|t| Utc.timestamp_opt(t, 0).single())
        })
        .unwrap_or_else(Utc::now);
    EventEnvelope {
        event_id: props
            .message_id()
            .as_ref()
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        event_type: props.kind().as_ref().map(|s| s.as_str().to_owned()).unwrap_or_default(),
        routing_key: delivery.routing_key.as_str().to_owned(),
        payload: delivery.data.clone(),
        occurred_at,
        traceparent,
        tracestate,
    }
}

/// Runs `session` again and again until it reports a clean stop (`Ok(true)`) or `shutdown`,
/// waiting with exponential backoff after each loss of the broker.
async fn reconnecting<F, Fut>(what: &str, shutdown: &CancellationToken, mut session: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, lapin::Error>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(200), MAX_RECONNECT_DELAY);
    while !shutdown.is_cancelled() {
        let started = tokio::time::Instant::now();
        let error = match session().await {
            Ok(true) => break,
            Ok(false) => "the broker closed the stream".to_owned(),
            Err(e) => e.to_string(),
        };
        if started.elapsed() > MAX_RECONNECT_DELAY {
            // A session that lasted was healthy: start the backoff over.
            backoff.reset();
        }
        let delay = backoff.next_delay();
        tracing::warn!(what, %error, retry_in_ms = delay.as_millis() as u64, "lost the broker; reconnecting");
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {},
        }
    }
}

/// Consumes `queue` until `shutdown`, reconnecting with backoff whenever the broker goes away.
pub(super) async fn consume(
    bus: Arc<RabbitBus>,
    queue: String,
    subscriptions: Arc<Subscriptions>,
    linger: Duration,
    shutdown: CancellationToken,
) {
    let queue = bus.names.queue(&queue);
    reconnecting(&queue, &shutdown, || {
        consume_session(&bus, &queue, &subscriptions, linger, &shutdown)
    })
    .await;
}

async fn consume_session(
    bus: &RabbitBus,
    queue: &str,
    subscriptions: &Subscriptions,
    linger: Duration,
    shutdown: &CancellationToken,
) -> Result<bool, lapin::Error> {
    let channel = bus.open_channel().await?;
    bus.declare_consumer_queue(&channel, queue, &subscriptions.routing_keys())
        .await?;
    channel.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    let consumer = channel
        .basic_consume(
            queue.into(),
            ShortString::from(""),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    tracing::info!(%queue, "consuming");
    let dlx = bus.names.dead_letter_exchange();
    // Stop taking deliveries at shutdown; those in flight finish and are acknowledged. A batch
    // (one transaction) is what has arrived, and when busy what arrives within `linger` of its
    // first delivery (`lingering_batches`). Batches are acknowledged in delivery order, each with one
    // `multiple` ack: a later batch that commits first waits for the earlier one, so an ack
    // never covers a delivery not yet applied.
    lingering_batches(consumer.take_until(shutdown.clone().cancelled_owned()), linger)
        .map(|chunk| {
            let (channel, dlx) = (&channel, dlx.as_str());
            async move {
                let mut deliveries = Vec::with_capacity(chunk.len());
                let mut broken = None;
                for item in chunk {
                    match item {
                        Ok(delivery) => deliveries.push(delivery),
                        Err(error) => broken = Some(error),
                    }
                }
                let settled = settle(channel, dlx, queue, subscriptions, deliveries).await?;
                Ok::<_, lapin::Error>((settled, broken))
            }
        })
        .buffered(BATCHES_IN_FLIGHT)
        .try_for_each(|(settled, broken)| async move {
            if let Some(last) = settled {
                last.acker.ack(BasicAckOptions { multiple: true }).await?;
            }
            broken.map_or(Ok(()), Err)
        })
        .await?;
    close_if_stopping(&channel, shutdown).await
}

/// After a session's stream ended: `Ok(true)` when it ended because the process stops (the
/// channel is closed cleanly), `Ok(false)` when the broker ended it.
async fn close_if_stopping(channel: &Channel, shutdown: &CancellationToken) -> Result<bool, lapin::Error> {
    if shutdown.is_cancelled() {
        let _ = channel.close(200, "shutting down".into()).await;
        Ok(true)
    } else {
        Ok(false)
    }
}

/// Applies a batch of deliveries; a message that cannot be applied is re-published to the
/// dead-letter exchange with its error in `x-error`. Returns the last delivery now done with
/// (applied or dead-lettered), whose `multiple` ack settles the batch; one that could not be
/// dead-lettered is handed back to the queue at once.
async fn settle(
    channel: &Channel,
    dlx: &str,
    queue: &str,
    subscriptions: &Subscriptions,
    deliveries: Vec<Delivery>,
) -> Result<Option<Delivery>, lapin::Error> {
    let envelopes: Vec<EventEnvelope> = deliveries.iter().map(envelope_of).collect();
    let outcomes = subscriptions.apply_batch(&envelopes).await;
    let mut done = None;
    for ((delivery, envelope), outcome) in deliveries.into_iter().zip(envelopes).zip(outcomes) {
        let Err(error) = outcome else {
            done = Some(delivery);
            continue;
        };
        tracing::error!(%queue, event_id = %envelope.event_id, %error, "event dead-lettered");
        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
        headers.insert("x-error".into(), AMQPValue::LongString(LongString::from(error)));
        headers.insert(
            "x-original-routing-key".into(),
            AMQPValue::LongString(envelope.routing_key.as_str().into()),
        );
        let properties = delivery.properties.clone().with_headers(headers);
        let published = channel
            .basic_publish(
                dlx.into(),
                queue.into(),
                BasicPublishOptions::default(),
                &delivery.data,
                properties,
            )
            .await;
        if published.is_ok() {
            done = Some(delivery);
        } else {
            delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await?;
        }
    }
    Ok(done)
}

/// Listens on a private, exclusive queue (one per replica) until `shutdown`.
pub(super) async fn listen(
    bus: Arc<RabbitBus>,
    keys: Vec<String>,
    on_event: Arc<dyn Fn(EventEnvelope) + Send + Sync>,
    shutdown: CancellationToken,
) {
    reconnecting("listener", &shutdown, || {
        listen_session(&bus, &keys, on_event.as_ref(), &shutdown)
    })
    .await;
}

async fn listen_session(
    bus: &RabbitBus,
    keys: &[String],
    on_event: &(dyn Fn(EventEnvelope) + Send + Sync),
    shutdown: &CancellationToken,
) -> Result<bool, lapin::Error> {
    let channel = bus.open_channel().await?;
    let queue = channel
        .queue_declare(
            ShortString::from(""),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let name = queue.name().as_str().to_owned();
    for key in keys {
        channel
            .queue_bind(
                name.as_str().into(),
                bus.names.exchange.as_str().into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let consumer = channel
        .basic_consume(
            name.as_str().into(),
            ShortString::from(""),
            BasicConsumeOptions {
                no_ack: true,
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    consumer
        .take_until(shutdown.clone().cancelled_owned())
        .try_for_each(|delivery| {
            on_event(envelope_of(&delivery));
            futures::future::ready(Ok(()))
        })
        .await?;
    close_if_stopping(&channel, shutdown).await
}
