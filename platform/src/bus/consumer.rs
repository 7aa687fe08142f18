//! Consuming: routing a delivery to its handler, de-duplication, retries and dead-lettering.
//! Shared by both transports so they behave the same.
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use library_proto::DomainEvent;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, DbErr};
use tracing::Instrument;

use super::EventEnvelope;
use super::outbox::ProcessedEvents;

/// Attempts before a failing message goes to the dead-letter queue.
const MAX_ATTEMPTS: u32 = 5;

/// Why a handler did not apply an event.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The message can never be applied (undecodable, unknown type): dead-letter it at once.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Applying failed (database down, conflict…): try again, then dead-letter.
    #[error("handler failed: {0}")]
    Failed(String),
}

impl From<DbErr> for HandleError {
    fn from(err: DbErr) -> Self {
        HandleError::Failed(err.to_string())
    }
}

/// What a handler knows about the delivery besides the event.
#[derive(Clone, Debug)]
pub struct EventMeta {
    /// The consumer's name: processed events are recorded per consumer.
    pub consumer: Arc<str>,
    pub event_id: String,
    pub occurred_at: chrono::DateTime<chrono::Utc>,
}

impl EventMeta {
    /// Records that this consumer processed this event, inside the handler's transaction.
    /// Returns `false` when it already did: the handler must then change nothing.
    ///
    /// # Errors
    /// The insert failed.
    pub async fn claim(&self, txn: &impl ConnectionTrait) -> Result<bool, DbErr> {
        let insert = Query::insert()
            .into_table(ProcessedEvents::Table)
            .columns([ProcessedEvents::Consumer, ProcessedEvents::EventId])
            .values_panic([self.consumer.as_ref().into(), self.event_id.as_str().into()])
            .on_conflict(
                OnConflict::columns([ProcessedEvents::Consumer, ProcessedEvents::EventId])
                    .do_nothing()
                    .to_owned(),
            )
            .to_owned();
        let result = txn.execute(&insert).await?;
        Ok(result.rows_affected() == 1)
    }
}

/// Forgets the processed events of every consumer older than `retention`, so the table stays
/// small. A redelivery comes within minutes (an unacknowledged message, an outbox row re-sent
/// after a crash); a week is far beyond that.
///
/// # Errors
/// The delete failed.
pub async fn prune_processed_events(conn: &impl ConnectionTrait, retention: Duration) -> Result<u64, DbErr> {
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let delete = Query::delete()
        .from_table(ProcessedEvents::Table)
        .and_where(Expr::col(ProcessedEvents::ProcessedAt).lt(cutoff))
        .to_owned();
    Ok(conn.execute(&delete).await?.rows_affected())
}

type Handler = Arc<dyn Fn(Vec<u8>, EventMeta) -> BoxFuture<'static, Result<(), HandleError>> + Send + Sync>;

/// One consumer's handlers, keyed by routing key: what it subscribes to, listed in one place.
pub struct Subscriptions {
    consumer: Arc<str>,
    handlers: HashMap<&'static str, Handler>,
}

impl Subscriptions {
    /// An empty set for the consumer `consumer` (e.g. `book-svc`).
    pub fn new(consumer: &str) -> Self {
        Self {
            consumer: consumer.into(),
            handlers: HashMap::new(),
        }
    }

    /// Handles events of type `E` with `handler`.
    #[must_use]
    pub fn on<E, F, Fut>(mut self, handler: F) -> Self
    where
        E: DomainEvent,
        F: Fn(E, EventMeta) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandleError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let erased: Handler = Arc::new(move |payload: Vec<u8>, meta: EventMeta| {
            let handler = handler.clone();
            Box::pin(async move {
                let event = E::decode(payload.as_slice())
                    .map_err(|e| HandleError::Malformed(format!("{} does not decode: {e}", E::NAME)))?;
                if event.event_id() != meta.event_id {
                    return Err(HandleError::Malformed("message_id differs from the event's id".into()));
                }
                handler(event, meta).await
            })
        });
        self.handlers.insert(E::ROUTING_KEY, erased);
        self
    }

    /// The routing keys to bind.
    pub fn routing_keys(&self) -> Vec<String> {
        self.handlers.keys().map(|k| (*k).to_owned()).collect()
    }

    /// Applies one delivery, retrying failures with backoff. `Err` carries the reason to put on
    /// the dead-letter queue.
    pub(super) async fn dispatch(&self, envelope: &EventEnvelope) -> Result<(), String> {
        let span = tracing::info_span!(
            "consume",
            consumer = %self.consumer,
            event = %envelope.event_type,
            event_id = %envelope.event_id,
        );
        crate::telemetry::set_parent_from_traceparent(&span, envelope.traceparent.as_deref());
        self.dispatch_with_retries(envelope).instrument(span).await
    }

    async fn dispatch_with_retries(&self, envelope: &EventEnvelope) -> Result<(), String> {
        let Some(handler) = self.handlers.get(envelope.routing_key.as_str()) else {
            return Err(format!("no handler for routing key `{}`", envelope.routing_key));
        };
        if envelope.event_id.is_empty() {
            return Err("message has no message_id".into());
        }
        let meta = EventMeta {
            consumer: self.consumer.clone(),
            event_id: envelope.event_id.clone(),
            occurred_at: envelope.occurred_at,
        };
        let mut delay = Duration::from_millis(50);
        for attempt in 1..=MAX_ATTEMPTS {
            match handler(envelope.payload.clone(), meta.clone()).await {
                Ok(()) => return Ok(()),
                Err(HandleError::Malformed(reason)) => return Err(reason),
                Err(HandleError::Failed(reason)) if attempt == MAX_ATTEMPTS => {
                    return Err(format!("failed {MAX_ATTEMPTS} times, last: {reason}"));
                }
                Err(HandleError::Failed(reason)) => {
                    tracing::warn!(attempt, %reason, "event handler failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        unreachable!("the last attempt returns")
    }
}
