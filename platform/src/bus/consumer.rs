//! Consuming: routing deliveries to their handlers inside one transaction per batch, with
//! de-duplication, retries and dead-lettering. Shared by both transports so they behave the same.
//!
//! A batch of deliveries is applied in one transaction: each event is claimed in
//! `processed_events` (a duplicate is skipped) and handed to its handler with the transaction;
//! one commit covers them all, and only then are they acknowledged. Committing once per batch
//! instead of once per event is what lets a consumer keep up with a busy producer, and makes
//! events about one hot row (a popular book) queue on its lock once per batch, not once each.
//! Consecutive events of one type reach their handler as one run (`on_batch`), so a handler can
//! also write that row once per run. If any event of a batch fails, the batch rolls back and
//! each event is applied alone, with retries, so one bad event never holds the others back.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use library_proto::DomainEvent;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, TransactionTrait};
use tracing::Instrument;

use super::outbox::ProcessedEvents;
use super::{EventEnvelope, Outbox};
use crate::backoff::Backoff;
use crate::drain::linger_if_busy;

/// Attempts before a failing message goes to the dead-letter queue.
const MAX_ATTEMPTS: u32 = 5;
/// Deliveries applied in one transaction at most.
const BATCH: usize = 64;

/// A transport's `deliveries` in the batches a consumer applies, up to [`BATCH`] each: what is
/// ready when the first delivery comes, and, when the consumer is busy, what follows within
/// `linger` of it ([`linger_if_busy`], counted from when the previous batch was done, which is
/// when the next is asked for).
pub(super) fn lingering_batches<S>(deliveries: S, linger: Duration) -> impl Stream<Item = Vec<S::Item>>
where
    S: Stream,
{
    futures::stream::unfold(Box::pin(deliveries.fuse()), move |mut deliveries| async move {
        let free_since = tokio::time::Instant::now();
        let first = deliveries.next().await?;
        let deadline = tokio::time::Instant::now() + linger_if_busy(free_since, linger);
        let mut batch = vec![first];
        // A deadline already past still takes what is ready: the timeout polls the stream first.
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, deliveries.next()).await {
                Ok(Some(delivery)) => batch.push(delivery),
                Ok(None) | Err(_) => break,
            }
        }
        Some((batch, deliveries))
    })
}

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
    /// This event's `consume` span, a child of the context it was published in. A per-event
    /// handler ([`Subscriptions::on`]) runs inside it; a run handler ([`Subscriptions::on_batch`])
    /// gives it to [`EventEnvelope::caused_by`] for the events it writes because of this one, so
    /// that they continue its trace.
    pub span: tracing::Span,
}

impl EventMeta {
    /// Records that this consumer processed this event, inside the transaction that applies it.
    /// Returns `false` when it already did: nothing must then change.
    ///
    /// # Errors
    /// The insert failed.
    pub async fn claim(&self, txn: &impl ConnectionTrait) -> Result<bool, DbErr> {
        let insert = Query::insert()
            .into_table(ProcessedEvents::Table)
            // The time is written by us, not the database's default, so that it compares with
            // the pruning cutoff in the same format on SQLite as on PostgreSQL.
            .columns([
                ProcessedEvents::Consumer,
                ProcessedEvents::EventId,
                ProcessedEvents::ProcessedAt,
            ])
            .values_panic([
                self.consumer.as_ref().into(),
                self.event_id.as_str().into(),
                chrono::Utc::now().into(),
            ])
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

/// Applies a run of consecutive deliveries of one event type inside the consumer's transaction
/// (it must not commit). Every handler is one of these; a per-event handler is wrapped.
type Handler = Arc<
    dyn for<'a> Fn(Vec<(Vec<u8>, EventMeta)>, &'a DatabaseTransaction) -> BoxFuture<'a, Result<(), HandleError>>
        + Send
        + Sync,
>;

/// One consumer's handlers, keyed by routing key: what it subscribes to, listed in one place,
/// and the database its effects and processed-event records go to.
pub struct Subscriptions {
    consumer: Arc<str>,
    db: DatabaseConnection,
    /// Woken after each commit, for the events handlers wrote.
    outbox: Outbox,
    handlers: HashMap<&'static str, Handler>,
}

impl Subscriptions {
    /// An empty set for the consumer `consumer` (e.g. `book-svc`) applying events to `db`;
    /// handlers write their own events through `outbox`.
    pub fn new(consumer: &str, db: DatabaseConnection, outbox: Outbox) -> Self {
        Self {
            consumer: consumer.into(),
            db,
            outbox,
            handlers: HashMap::new(),
        }
    }

    /// Handles events of type `E` with `handler`, which applies one event inside the given
    /// transaction and must not commit it.
    #[must_use]
    pub fn on<E, F>(self, handler: F) -> Self
    where
        E: DomainEvent,
        F: for<'a> Fn(E, EventMeta, &'a DatabaseTransaction) -> BoxFuture<'a, Result<(), HandleError>>
            + Send
            + Sync
            + 'static,
    {
        let handler = Arc::new(handler);
        self.on_batch::<E, _>(move |events, txn| {
            let handler = handler.clone();
            Box::pin(async move {
                for (event, meta) in events {
                    let span = meta.span.clone();
                    handler(event, meta, txn).instrument(span).await?;
                }
                Ok(())
            })
        })
    }

    /// Handles events of type `E` a run at a time: `handler` gets every event of a delivery
    /// batch that follows another of the same type (in delivery order, each claimed, none twice)
    /// and applies them inside the given transaction, without committing it. For events that
    /// touch one hot row, which a run can then change once instead of once per event.
    #[must_use]
    pub fn on_batch<E, F>(mut self, handler: F) -> Self
    where
        E: DomainEvent,
        F: for<'a> Fn(Vec<(E, EventMeta)>, &'a DatabaseTransaction) -> BoxFuture<'a, Result<(), HandleError>>
            + Send
            + Sync
            + 'static,
    {
        let handler = Arc::new(handler);
        let erased: Handler = Arc::new(move |run: Vec<(Vec<u8>, EventMeta)>, txn: &DatabaseTransaction| {
            let decoded: Result<Vec<(E, EventMeta)>, HandleError> = run
                .into_iter()
                .map(|(payload, meta)| Ok((decode::<E>(&payload, &meta)?, meta)))
                .collect();
            match decoded {
                Ok(events) => handler(events, txn),
                Err(error) => Box::pin(async move { Err(error) }),
            }
        });
        self.handlers.insert(E::ROUTING_KEY, erased);
        self
    }

    /// The database the consumer applies events to.
    pub(super) fn database(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The routing keys to bind.
    pub fn routing_keys(&self) -> Vec<String> {
        self.handlers.keys().map(|k| (*k).to_owned()).collect()
    }

    fn meta_of(&self, envelope: &EventEnvelope, span: &tracing::Span) -> EventMeta {
        EventMeta {
            consumer: self.consumer.clone(),
            event_id: envelope.event_id.clone(),
            occurred_at: envelope.occurred_at,
            span: span.clone(),
        }
    }

    /// The span of consuming `envelope`: a child of the context it was published in, so the
    /// consumer's work joins the publisher's trace (each event its own, within a batch too).
    fn consume_span(&self, envelope: &EventEnvelope) -> tracing::Span {
        let span = tracing::info_span!(
            "consume",
            consumer = %self.consumer,
            event = %envelope.event_type,
            event_id = %envelope.event_id,
        );
        crate::telemetry::set_parent(&span, envelope.traceparent.as_deref(), envelope.tracestate.as_deref());
        span
    }

    /// Applies one delivery (with retries). `Err` carries the reason to put on the dead-letter
    /// queue. Also how a test or a tool replays one event.
    pub async fn apply(&self, envelope: &EventEnvelope) -> Result<(), String> {
        self.apply_batch(std::slice::from_ref(envelope)).await.remove(0)
    }

    /// Applies a batch of deliveries as one transaction, or each alone if the batch fails: one
    /// outcome each, in order; `Err` carries the reason to put on the dead-letter queue. What
    /// both transports do with what they received at once.
    pub async fn apply_batch(&self, batch: &[EventEnvelope]) -> Vec<Result<(), String>> {
        let mut outcomes: Vec<Option<Result<(), String>>> =
            batch.iter().map(|e| self.precheck(e).err().map(Err)).collect();
        let valid: Vec<usize> = (0..batch.len()).filter(|i| outcomes[*i].is_none()).collect();
        // One span per event, open until its outcome is known, whether it is applied with the
        // batch or alone after the batch failed.
        let spans: Vec<tracing::Span> = batch.iter().map(|envelope| self.consume_span(envelope)).collect();
        if valid.len() > 1 {
            let span = tracing::info_span!("consume_batch", consumer = %self.consumer, size = valid.len());
            // The transaction's own trace, linked to each event's, where a trace viewer finds
            // what else was applied with an event.
            for event_span in valid.iter().map(|i| &spans[*i]) {
                use opentelemetry::trace::TraceContextExt;
                use tracing_opentelemetry::OpenTelemetrySpanExt;
                span.add_link(event_span.context().span().span_context().clone());
            }
            let together = self.apply_together(batch, &valid, &spans).instrument(span).await;
            if together.is_ok() {
                for i in &valid {
                    outcomes[*i] = Some(Ok(()));
                }
            }
        }
        for i in valid {
            if outcomes[i].is_none() {
                outcomes[i] = Some(self.apply_alone(&batch[i], &spans[i]).await);
            }
        }
        let outcomes: Vec<Result<(), String>> = outcomes.into_iter().map(|o| o.unwrap_or(Ok(()))).collect();
        let failed = outcomes.iter().filter(|o| o.is_err()).count();
        let lag = metrics::histogram!("events_consumed_lag_seconds", "consumer" => self.consumer.clone());
        let now = chrono::Utc::now();
        for (envelope, _) in batch.iter().zip(&outcomes).filter(|(_, outcome)| outcome.is_ok()) {
            // Another host's clock may run ahead of this one's: no negative lag.
            lag.record((now - envelope.occurred_at).to_std().unwrap_or_default().as_secs_f64());
        }
        metrics::counter!("events_consumed_total", "consumer" => self.consumer.clone(), "outcome" => "applied")
            .increment((outcomes.len() - failed) as u64);
        if failed > 0 {
            metrics::counter!("events_consumed_total", "consumer" => self.consumer.clone(), "outcome" => "dead_lettered")
                .increment(failed as u64);
        }
        outcomes
    }

    fn precheck(&self, envelope: &EventEnvelope) -> Result<(), String> {
        if !self.handlers.contains_key(envelope.routing_key.as_str()) {
            return Err(format!("no handler for routing key `{}`", envelope.routing_key));
        }
        if envelope.event_id.is_empty() {
            return Err("message has no message_id".into());
        }
        Ok(())
    }

    /// Every event of `batch[valid]` in one transaction; any failure rolls all of them back. The
    /// claims of the whole batch are one statement; only the events it newly claimed (each once,
    /// even when the batch holds it twice) reach their handler.
    async fn apply_together(
        &self,
        batch: &[EventEnvelope],
        valid: &[usize],
        spans: &[tracing::Span],
    ) -> Result<(), HandleError> {
        let txn = self.db.begin().await?;
        let mut claimed = self
            .claim_all(&txn, valid.iter().map(|i| batch[*i].event_id.as_str()))
            .await?;
        let fresh = valid
            .iter()
            .map(|i| (&batch[*i], &spans[*i]))
            .filter(|(envelope, _)| claimed.remove(envelope.event_id.as_str()));
        self.handle_runs(&txn, fresh).await?;
        self.outbox.commit(txn).await?;
        Ok(())
    }

    /// Hands claimed events to their handlers, each run of one type at once, in order.
    async fn handle_runs<'e>(
        &self,
        txn: &DatabaseTransaction,
        events: impl Iterator<Item = (&'e EventEnvelope, &'e tracing::Span)>,
    ) -> Result<(), HandleError> {
        let mut run: Vec<(&EventEnvelope, &tracing::Span)> = Vec::new();
        for (envelope, span) in events {
            if run
                .last()
                .is_some_and(|(last, _)| last.routing_key != envelope.routing_key)
            {
                self.handle(txn, std::mem::take(&mut run)).await?;
            }
            run.push((envelope, span));
        }
        if !run.is_empty() {
            self.handle(txn, run).await?;
        }
        Ok(())
    }

    /// Records the processed events `ids` for this consumer; returns those not recorded before.
    async fn claim_all<'a>(
        &self,
        txn: &DatabaseTransaction,
        ids: impl Iterator<Item = &'a str>,
    ) -> Result<std::collections::HashSet<String>, DbErr> {
        let now = chrono::Utc::now();
        let mut insert = Query::insert();
        insert.into_table(ProcessedEvents::Table).columns([
            ProcessedEvents::Consumer,
            ProcessedEvents::EventId,
            ProcessedEvents::ProcessedAt,
        ]);
        for id in ids {
            insert.values_panic([self.consumer.as_ref().into(), id.into(), now.into()]);
        }
        insert
            .on_conflict(
                OnConflict::columns([ProcessedEvents::Consumer, ProcessedEvents::EventId])
                    .do_nothing()
                    .to_owned(),
            )
            .returning_col(ProcessedEvents::EventId);
        let rows = txn.query_all(&insert).await?;
        rows.iter().map(|row| row.try_get::<String>("", "event_id")).collect()
    }

    /// One event in its own transaction, retried with backoff, inside its `span`.
    async fn apply_alone(&self, envelope: &EventEnvelope, span: &tracing::Span) -> Result<(), String> {
        async {
            let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
            let mut attempt = 1;
            loop {
                let outcome = async {
                    let txn = self.db.begin().await?;
                    self.apply_in(&txn, envelope, span).await?;
                    self.outbox.commit(txn).await?;
                    Ok::<(), HandleError>(())
                }
                .await;
                match outcome {
                    Ok(()) => return Ok(()),
                    Err(HandleError::Malformed(reason)) => return Err(reason),
                    Err(HandleError::Failed(reason)) if attempt >= MAX_ATTEMPTS => {
                        return Err(format!("failed {MAX_ATTEMPTS} times, last: {reason}"));
                    }
                    Err(HandleError::Failed(reason)) => {
                        tracing::warn!(attempt, %reason, "event handler failed; retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                        attempt += 1;
                    }
                }
            }
        }
        .instrument(span.clone())
        .await
    }

    /// Claims and applies one event inside `txn`; a duplicate changes nothing.
    async fn apply_in(
        &self,
        txn: &DatabaseTransaction,
        envelope: &EventEnvelope,
        span: &tracing::Span,
    ) -> Result<(), HandleError> {
        if !self.meta_of(envelope, span).claim(txn).await? {
            return Ok(());
        }
        self.handle(txn, vec![(envelope, span)]).await
    }

    /// Hands a run of claimed events of one type to its handler.
    async fn handle(
        &self,
        txn: &DatabaseTransaction,
        run: Vec<(&EventEnvelope, &tracing::Span)>,
    ) -> Result<(), HandleError> {
        let Some((first, _)) = run.first() else {
            return Ok(());
        };
        let handler = self
            .handlers
            .get(first.routing_key.as_str())
            .ok_or_else(|| HandleError::Malformed(format!("no handler for `{}`", first.routing_key)))?;
        let run = run
            .into_iter()
            .map(|(envelope, span)| (envelope.payload.clone(), self.meta_of(envelope, span)))
            .collect();
        handler(run, txn).await
    }
}

/// Decodes one delivery's payload, which must carry the id its message was sent under.
fn decode<E: DomainEvent>(payload: &[u8], meta: &EventMeta) -> Result<E, HandleError> {
    let event = E::decode(payload).map_err(|e| HandleError::Malformed(format!("{} does not decode: {e}", E::NAME)))?;
    if event.event_id() == meta.event_id {
        Ok(event)
    } else {
        Err(HandleError::Malformed("message_id differs from the event's id".into()))
    }
}
