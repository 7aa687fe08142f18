//! The event bus: how a service's state changes reach the other services, never lost and never
//! applied twice.
//!
//! A producer writes its events to the `outbox_events` table in the transaction that changes its
//! state ([`Outbox`]); a [`Relay`] publishes committed rows in batches and deletes them only once
//! the transport confirmed them. A consumer ([`Subscriptions`]) records each event id in
//! `processed_events` in the transaction that applies it ([`EventMeta::claim`]), so a redelivery
//! does nothing, and the message is acknowledged only after that commit. A message that cannot be
//! decoded, or that keeps failing, goes to the dead-letter queue with its error.
//!
//! Two transports sit behind [`EventBus`]: RabbitMQ (one durable topic exchange, a durable queue
//! per consumer and a `.dlq` beside it) and an in-process one for the all-in-one binary, whose
//! publish returns only after every consumer committed, so the outbox stays the durable record.
//!
//! # Layout
//! - `outbox`: [`Outbox`], [`EventMeta::claim`] and the shared migrations.
//! - `dead_letters`: where the in-process transport keeps what its consumers gave up on.
//! - `relay`: [`Relay`].
//! - `consumer`: [`Subscriptions`], retries and dead-lettering, shared by both transports.
//! - `rabbit`, `memory`: the transports.

mod consumer;
mod dead_letters;
mod memory;
mod outbox;
mod rabbit;
mod relay;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use library_proto::DomainEvent;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use consumer::{EventMeta, HandleError, Subscriptions, prune_processed_events};
pub use dead_letters::{DeadLetter, dead_letters};
pub use outbox::{Outbox, bus_migrations};
pub use relay::{Relay, Relayed};

/// An event as it travels: the encoded Protobuf body plus what consumers need before decoding.
#[derive(Clone, Debug, PartialEq)]
pub struct EventEnvelope {
    /// Unique id; consumers de-duplicate on it (AMQP `message_id`).
    pub event_id: String,
    /// Message name, e.g. `BookBorrowed` (AMQP `type`).
    pub event_type: String,
    /// `<context>.<event>`, e.g. `borrow.book_borrowed`.
    pub routing_key: String,
    /// The Protobuf-encoded event.
    pub payload: Vec<u8>,
    /// When the change happened (AMQP `timestamp`).
    pub occurred_at: DateTime<Utc>,
    /// W3C trace context of the change (`traceparent`); every event published by
    /// [`EventEnvelope::of`] has one, exported or not.
    pub traceparent: Option<String>,
    /// The W3C `tracestate` beside it, when the trace carries vendor state.
    pub tracestate: Option<String>,
}

impl EventEnvelope {
    /// Wraps `event`, taking the trace context of the current span (outside any span, a new
    /// trace's).
    pub fn of<E: DomainEvent>(event: &E) -> Self {
        Self::in_trace(event, crate::telemetry::TraceHeaders::current_or_new())
    }

    /// Wraps `event`, caused by what the span `cause` traces (e.g. the request that made it,
    /// when the event is written by another task, or the consumed event of [`EventMeta::span`]).
    pub fn caused_by<E: DomainEvent>(event: &E, cause: &tracing::Span) -> Self {
        let trace = crate::telemetry::TraceHeaders::of_span(cause)
            .unwrap_or_else(crate::telemetry::TraceHeaders::current_or_new);
        Self::in_trace(event, trace)
    }

    /// Wraps `event` with the trace context `trace`.
    pub fn in_trace<E: DomainEvent>(event: &E, trace: crate::telemetry::TraceHeaders) -> Self {
        Self {
            event_id: event.event_id().to_owned(),
            event_type: E::NAME.to_owned(),
            routing_key: E::ROUTING_KEY.to_owned(),
            payload: event.encode_to_vec(),
            occurred_at: Utc::now(),
            traceparent: Some(trace.traceparent),
            tracestate: trace.tracestate,
        }
    }
}

/// Names on the broker. Production uses the contract's names; tests use a unique prefix so runs
/// never collide.
#[derive(Clone, Debug)]
pub struct BusNames {
    /// The topic exchange (`library.events`).
    pub exchange: String,
    /// Put before every queue name (empty in production).
    pub queue_prefix: String,
    /// Queues vanish after this long unused (tests only; `None` in production).
    pub queue_expires_ms: Option<u32>,
}

impl Default for BusNames {
    fn default() -> Self {
        Self {
            exchange: "library.events".into(),
            queue_prefix: String::new(),
            queue_expires_ms: None,
        }
    }
}

impl BusNames {
    /// The dead-letter exchange beside the main one.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.exchange)
    }
    /// A consumer queue's full name.
    pub fn queue(&self, name: &str) -> String {
        format!("{}{}", self.queue_prefix, name)
    }
}

/// A failure of the transport; the caller retries later.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("AMQP_URL: `{0}` is not an amqp:// or amqps:// URL")]
    BadUrl(String),
    #[error("the broker is unreachable: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker refused message {0}")]
    Nacked(String),
    #[error("an in-process consumer stopped before it acknowledged")]
    ConsumerGone,
}

#[derive(Clone)]
enum Transport {
    Rabbit(Arc<rabbit::RabbitBus>),
    Memory(Arc<memory::MemoryBus>),
}

/// How long a busy consumer or outbox relay (given events within this long of its last batch),
/// once events arrive, waits for more before it takes a batch; after a quiet spell it goes at
/// once ([`crate::drain::linger_if_busy`]). Every hop of the saga is a transaction and a round
/// trip or two whatever the batch's size, and on a busy machine those fixed costs, paid per
/// event when batches are small, take the cores from the requests; a quiet system does not
/// wait at all (measurements: docs/benchmarks.md).
pub const DEFAULT_BATCH_LINGER: Duration = Duration::from_millis(10);

/// A batch [`EventBus::send`] sent, until the transport confirmed it.
#[must_use = "a batch is delivered only once confirmed"]
pub struct Sending(SendingTo);

enum SendingTo {
    Rabbit(Arc<rabbit::RabbitBus>, rabbit::Sent),
    Memory(Vec<tokio::sync::oneshot::Receiver<()>>),
}

impl Sending {
    /// Waits until the transport confirmed every message of the batch: the broker persisted it,
    /// or every in-process consumer committed it.
    ///
    /// # Errors
    /// The broker refused a message or the connection failed; nothing is known to be delivered.
    pub async fn confirmed(self) -> Result<(), BusError> {
        match self.0 {
            SendingTo::Rabbit(bus, sent) => bus.confirmed(sent).await,
            SendingTo::Memory(acks) => memory::confirmed(acks).await,
        }
    }
}

/// The seam every service talks to; it never sees lapin.
#[derive(Clone)]
pub struct EventBus {
    transport: Transport,
    batch_linger: Duration,
}

impl EventBus {
    /// RabbitMQ at `url`. Connects lazily and reconnects after a broker restart, so a service
    /// starts (and keeps committing to its outbox) while the broker is down.
    ///
    /// # Errors
    /// A URL that is not `amqp://` or `amqps://`.
    pub fn rabbitmq(url: &str, names: BusNames) -> Result<Self, BusError> {
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return Err(BusError::BadUrl(crate::database::redact(url)));
        }
        Ok(Self {
            transport: Transport::Rabbit(Arc::new(rabbit::RabbitBus::new(url, names))),
            batch_linger: DEFAULT_BATCH_LINGER,
        })
    }

    /// RabbitMQ at `url` as a service of the system uses it: every consumer queue of the system
    /// declared before the first publish ([`Self::with_system_queues`]).
    ///
    /// # Errors
    /// A URL that is not `amqp://` or `amqps://`.
    pub fn rabbitmq_for_system(url: &str, names: BusNames) -> Result<Self, BusError> {
        Ok(Self::rabbitmq(url, names)?.with_system_queues())
    }

    /// The in-process transport (the all-in-one's default).
    pub fn in_process() -> Self {
        Self {
            transport: Transport::Memory(Arc::new(memory::MemoryBus::default())),
            batch_linger: DEFAULT_BATCH_LINGER,
        }
    }

    /// The same bus, its consumers and relays waiting `linger` for more events before taking a
    /// batch ([`DEFAULT_BATCH_LINGER`]).
    #[must_use]
    pub fn with_batch_linger(mut self, linger: Duration) -> Self {
        self.batch_linger = linger;
        self
    }

    /// How long its consumers and relays wait for more events before taking a batch.
    pub fn batch_linger(&self) -> Duration {
        self.batch_linger
    }

    /// True for the in-process transport.
    pub fn is_in_process(&self) -> bool {
        matches!(self.transport, Transport::Memory(_))
    }

    /// Publishes `batch` in order; returns once the transport confirmed every message.
    ///
    /// # Errors
    /// The broker is unreachable or refused a message; nothing is known to be delivered.
    pub async fn publish(&self, batch: &[EventEnvelope]) -> Result<(), BusError> {
        self.send(batch).await?.confirmed().await
    }

    /// Sends `batch` in order, after every batch sent before it, and returns before the
    /// transport confirmed it: [`Sending::confirmed`] waits for that. What an outbox relay uses
    /// to send its next batch while the broker still writes the last one to disk.
    ///
    /// # Errors
    /// The broker is unreachable; nothing is known to be delivered.
    pub async fn send(&self, batch: &[EventEnvelope]) -> Result<Sending, BusError> {
        Ok(Sending(match &self.transport {
            Transport::Rabbit(bus) => SendingTo::Rabbit(bus.clone(), bus.send(batch).await?),
            Transport::Memory(bus) => SendingTo::Memory(bus.send(batch)?),
        }))
    }

    /// Starts consuming the durable queue `queue` (declared with its bindings and dead-letter
    /// queue) until `shutdown`; in-flight messages finish first.
    pub fn consume(
        &self,
        queue: &str,
        subscriptions: Subscriptions,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) {
        let subscriptions = Arc::new(subscriptions);
        self.declare_queue(queue, &subscriptions.routing_keys());
        match &self.transport {
            Transport::Rabbit(bus) => {
                let (queue, linger) = (queue.to_owned(), self.batch_linger);
                tracker.spawn(rabbit::consume(bus.clone(), queue, subscriptions, linger, shutdown));
            }
            Transport::Memory(bus) => {
                let rx = bus.declare(queue, subscriptions.routing_keys(), true);
                let (queue, linger) = (queue.to_owned(), self.batch_linger);
                tracker.spawn(memory::consume(queue, rx, subscriptions, linger, shutdown));
            }
        }
    }

    /// Makes the publisher declare the durable consumer queue `queue` (with its bindings and
    /// dead-letter queue) before it publishes, so events wait for a consumer that has not started
    /// yet. Idempotent.
    pub fn declare_queue(&self, queue: &str, routing_keys: &[String]) {
        if let Transport::Rabbit(bus) = &self.transport {
            bus.know_queue(queue, routing_keys.to_vec());
        }
    }

    /// Declares every consumer queue of the system ([`library_proto::CONSUMER_QUEUES`]).
    #[must_use]
    pub fn with_system_queues(self) -> Self {
        for (queue, keys) in library_proto::CONSUMER_QUEUES {
            let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
            self.declare_queue(queue, &keys);
        }
        self
    }

    /// Calls `on_event` for every event with one of `routing_keys`, on this replica only, with no
    /// durability: for live views (gRPC watch streams) that re-read the state anyway.
    pub fn listen<F>(&self, routing_keys: &[&str], on_event: F, tracker: &TaskTracker, shutdown: CancellationToken)
    where
        F: Fn(EventEnvelope) + Send + Sync + 'static,
    {
        let keys: Vec<String> = routing_keys.iter().map(|k| (*k).to_owned()).collect();
        match &self.transport {
            Transport::Rabbit(bus) => {
                tracker.spawn(rabbit::listen(bus.clone(), keys, Arc::new(on_event), shutdown));
            }
            Transport::Memory(bus) => {
                let rx = bus.declare("listener", keys, false);
                tracker.spawn(memory::listen(rx, on_event, shutdown));
            }
        }
    }

    /// Closes the broker connection cleanly (after consumers and the relay stopped).
    pub async fn close(&self) {
        if let Transport::Rabbit(bus) = &self.transport {
            bus.close().await;
        }
    }
}
