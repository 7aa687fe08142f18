//! The outbox relay: publishes committed outbox rows in batches and deletes them only after the
//! transport confirmed them. A crash in between publishes them again; consumers de-duplicate.
use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::{DatabaseConnection, DbErr};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::outbox::{ENVELOPE_COLUMNS, OutboxEvents, envelope_of};
use super::{BusError, EventBus, EventEnvelope, Outbox, Sending};
use crate::drain::{TableDrain, Taken, run_passes};

/// How often the relay also prunes the processed-events table, and what it keeps.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
const PROCESSED_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// The most events one pass publishes.
const BATCH_SIZE: u64 = 256;
/// Batches a relay has sent and the broker not yet confirmed, at most (each holds a database
/// connection until then).
const BATCHES_IN_FLIGHT: usize = 3;

/// What one pass of the relay did.
#[derive(Debug, PartialEq, Eq)]
pub enum Relayed {
    /// This many events were published and removed from the outbox.
    Published(usize),
    /// The outbox was empty.
    Empty,
}

/// Why a pass failed; the rows stay in the outbox for the next pass.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("reading or clearing the outbox failed: {0}")]
    Database(#[from] DbErr),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Publishes one service's outbox.
pub struct Relay {
    db: DatabaseConnection,
    bus: EventBus,
    wake: Arc<Notify>,
    outbox: TableDrain,
}

impl Relay {
    /// A relay for `outbox`'s rows in `db`.
    pub fn new(db: DatabaseConnection, bus: EventBus, outbox: &Outbox) -> Self {
        Self {
            db,
            bus,
            wake: outbox.waker(),
            outbox: TableDrain::new(OutboxEvents::Table, OutboxEvents::Id, ENVELOPE_COLUMNS, BATCH_SIZE),
        }
    }

    /// One pass: publish up to one batch, the oldest events first, and remove it from the outbox
    /// once the transport confirmed it ([`TableDrain::take`]: on PostgreSQL replicas relay side
    /// by side, each over rows the others have not locked).
    ///
    /// # Errors
    /// The database or the transport failed; nothing was removed.
    pub async fn relay_once(&self) -> Result<Relayed, RelayError> {
        Ok(match self.send_next().await? {
            Some(flight) => Relayed::Published(flight.finish().await?),
            None => Relayed::Empty,
        })
    }

    /// Takes the oldest batch and sends it (none: the outbox is empty); it stays in the outbox
    /// until [`InFlight::finish`].
    async fn send_next(&self) -> Result<Option<InFlight>, RelayError> {
        let Some(taken) = self.outbox.take(&self.db).await? else {
            return Ok(None);
        };
        let batch = taken
            .rows()
            .iter()
            .map(envelope_of)
            .collect::<Result<Vec<EventEnvelope>, _>>()?;
        let sent_at = Instant::now();
        let sending = self.bus.send(&batch).await?;
        Ok(Some(InFlight {
            taken,
            sending,
            sent_at,
        }))
    }

    /// Relays until `shutdown`, then makes one last pass so events committed by requests that
    /// finished during the drain still leave; prunes the processed-events table meanwhile.
    ///
    /// On PostgreSQL a pass sends its batch and the next pass may start while the broker still
    /// confirms it (it writes persistent messages to disk first, which takes a while on a busy
    /// machine), up to [`BATCHES_IN_FLIGHT`] batches; the rows of a batch stay locked, and leave
    /// the outbox only once confirmed. Waiting for each batch's confirmation before sending the
    /// next made every event committed meanwhile wait for it too, on each of a saga's two relay
    /// hops. A full batch (a backlog) is still confirmed before the next pass: pipelining
    /// backlogs let the saga fall behind a saturating load. The measurements are in
    /// docs/benchmarks.md.
    pub async fn run(self, shutdown: CancellationToken) {
        let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
        let confirming = TaskTracker::new();
        let relay = run_passes(
            "outbox relay",
            self.outbox.batch_size(),
            self.bus.batch_linger(),
            self.wake.clone(),
            shutdown.clone(),
            || async {
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    return Ok(0); // never closed
                };
                let Some(flight) = self.send_next().await? else {
                    return Ok(0);
                };
                let count = flight.taken.rows().len();
                // A full batch means a backlog, and the next pass takes a full one at once:
                // there, waiting for each confirmation measured better (see above).
                if flight.taken.locks_rows() && (count as u64) < self.outbox.batch_size() {
                    confirming.spawn(async move {
                        let _permit = permit;
                        if let Err(error) = flight.finish().await {
                            tracing::warn!(%error, "an outbox batch was not confirmed; it stays for the next pass");
                        }
                    });
                } else {
                    flight.finish().await?;
                }
                Ok::<_, RelayError>(count)
            },
        );
        tokio::join!(relay, prune_until(&self.db, shutdown));
        confirming.close();
        confirming.wait().await;
    }
}

/// A batch sent and still in the outbox, until the transport confirms it.
struct InFlight {
    taken: Taken,
    sending: Sending,
    sent_at: Instant,
}

impl InFlight {
    /// Waits for the transport's confirmation, then removes the batch from the outbox.
    async fn finish(self) -> Result<usize, RelayError> {
        let count = self.taken.rows().len();
        self.sending.confirmed().await?;
        metrics::histogram!("events_publish_seconds").record(self.sent_at.elapsed().as_secs_f64());
        self.taken.done().await?;
        tracing::debug!(count, "published an outbox batch");
        metrics::counter!("events_published_total").increment(count as u64);
        Ok(count)
    }
}

/// Prunes the processed-events table now and every [`PRUNE_EVERY`] until `shutdown`.
async fn prune_until(db: &DatabaseConnection, shutdown: CancellationToken) {
    loop {
        match super::prune_processed_events(db, PROCESSED_RETENTION).await {
            Ok(pruned) => tracing::debug!(pruned, "pruned processed events"),
            Err(error) => tracing::warn!(%error, "cannot prune processed events"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_EVERY) => {},
        }
    }
}
