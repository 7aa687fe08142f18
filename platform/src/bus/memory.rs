//! The in-process transport (the all-in-one's default). A publish hands each message to every
//! queue bound to its routing key and returns only once every durable consumer has committed it,
//! so the publisher's outbox row stays until the event has taken effect: a crash at any point
//! loses nothing, and consumers de-duplicate the replay. A message a consumer gives up on is
//! kept in that consumer's database ([`super::dead_letters`]) before it counts as done.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;

use super::consumer::lingering_batches;
use super::{BusError, EventEnvelope, Subscriptions, dead_letters};

pub(super) struct Delivery {
    envelope: EventEnvelope,
    /// Answered once the consumer committed (or dead-lettered); absent for listeners.
    done: Option<oneshot::Sender<()>>,
}

struct Queue {
    routing_keys: Vec<String>,
    durable: bool,
    sender: mpsc::UnboundedSender<Delivery>,
}

#[derive(Default)]
pub(super) struct MemoryBus {
    queues: Mutex<Vec<Queue>>,
}

impl MemoryBus {
    pub(super) fn declare(
        &self,
        _name: &str,
        routing_keys: Vec<String>,
        durable: bool,
    ) -> mpsc::UnboundedReceiver<Delivery> {
        let (sender, receiver) = mpsc::unbounded_channel();
        lock(&self.queues).push(Queue {
            routing_keys,
            durable,
            sender,
        });
        receiver
    }

    /// Hands `batch` to the queues; the receivers answer once each durable consumer committed.
    pub(super) fn send(&self, batch: &[EventEnvelope]) -> Result<Vec<oneshot::Receiver<()>>, BusError> {
        let mut acks = Vec::new();
        {
            let mut queues = lock(&self.queues);
            queues.retain(|q| q.durable || !q.sender.is_closed());
            for envelope in batch {
                for queue in queues.iter().filter(|q| q.routing_keys.contains(&envelope.routing_key)) {
                    let (done, ack) = if queue.durable {
                        let (tx, rx) = oneshot::channel();
                        (Some(tx), Some(rx))
                    } else {
                        (None, None)
                    };
                    let delivered = queue
                        .sender
                        .send(Delivery {
                            envelope: envelope.clone(),
                            done,
                        })
                        .is_ok();
                    match (delivered, ack) {
                        (true, Some(ack)) => acks.push(ack),
                        (false, Some(_)) => return Err(BusError::ConsumerGone),
                        _ => {}
                    }
                }
            }
        }
        Ok(acks)
    }
}

/// Waits until every consumer [`MemoryBus::send`] handed an event to has committed it.
pub(super) async fn confirmed(acks: Vec<oneshot::Receiver<()>>) -> Result<(), BusError> {
    for ack in acks {
        ack.await.map_err(|_| BusError::ConsumerGone)?;
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Pause before trying again to keep a dead letter the database refused.
const KEEP_RETRY: Duration = Duration::from_millis(500);

pub(super) async fn consume(
    queue: String,
    receiver: mpsc::UnboundedReceiver<Delivery>,
    subscriptions: Arc<Subscriptions>,
    linger: Duration,
    shutdown: CancellationToken,
) {
    let deliveries = UnboundedReceiverStream::new(receiver).take_until(shutdown.clone().cancelled_owned());
    let mut batches = std::pin::pin!(lingering_batches(deliveries, linger));
    while let Some(batch) = batches.next().await {
        let envelopes: Vec<EventEnvelope> = batch.iter().map(|d| d.envelope.clone()).collect();
        let outcomes = subscriptions.apply_batch(&envelopes).await;
        for (delivery, outcome) in batch.into_iter().zip(outcomes) {
            if let Err(error) = outcome {
                tracing::error!(%queue, event_id = %delivery.envelope.event_id, %error, "event dead-lettered");
                if !keep_dead_letter(&queue, &delivery.envelope, &error, &subscriptions, &shutdown).await {
                    // Not kept, and stopping: the publisher is told the message is not done
                    // (`done` dropped), so its outbox row stays and is published at the next start.
                    return;
                }
            }
            if let Some(done) = delivery.done {
                let _ = done.send(());
            }
        }
    }
}

/// Stores a dead letter in the consumer's database, trying again until it is stored (`true`) or
/// the consumer stops (`false`).
async fn keep_dead_letter(
    queue: &str,
    envelope: &EventEnvelope,
    error: &str,
    subscriptions: &Subscriptions,
    shutdown: &CancellationToken,
) -> bool {
    loop {
        match dead_letters::keep(subscriptions.database(), queue, envelope, error).await {
            Ok(()) => return true,
            Err(db_error) => {
                tracing::warn!(%queue, event_id = %envelope.event_id, error = %db_error, "cannot keep a dead letter; trying again");
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep(KEEP_RETRY) => {}
                }
            }
        }
    }
}

pub(super) async fn listen<F>(mut receiver: mpsc::UnboundedReceiver<Delivery>, on_event: F, shutdown: CancellationToken)
where
    F: Fn(EventEnvelope),
{
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            delivery = receiver.recv() => match delivery {
                Some(d) => on_event(d.envelope),
                None => break,
            },
        }
    }
}
