//! What book-svc consumes (its side of the borrow saga) and listens to (stock changes for the
//! watch streams). It publishes through the outbox: see `catalog`.
use library_platform::bus::{EventBus, EventEnvelope, Subscriptions};
use library_platform::{CancellationToken, TaskTracker};
use library_proto::DomainEvent;
use library_proto::events::{BookBorrowed, BookRemoved, BookReturned, BookUpdated, LoanCanceled, StockChanged};
use prost::Message;
use tokio::sync::broadcast;

use crate::catalog::Catalog;

/// The durable queue of book-svc's saga consumer.
pub const SAGA_QUEUE: &str = "book-svc.saga";

/// Every event book-svc consumes, in one place.
pub fn subscriptions(catalog: Catalog) -> Subscriptions {
    let (reserve, on_return, on_cancel) = (catalog.clone(), catalog.clone(), catalog.clone());
    catalog
        .subscriptions("book-svc")
        .on_batch::<BookBorrowed, _>(move |run, txn| {
            let catalog = reserve.clone();
            Box::pin(async move { catalog.reserve_for_loans(txn, run).await })
        })
        .on::<BookReturned, _>(move |event, _, txn| {
            let catalog = on_return.clone();
            Box::pin(async move { catalog.release_for_loan(txn, &event.loan_id, event.quantity).await })
        })
        .on::<LoanCanceled, _>(move |event, _, txn| {
            let catalog = on_cancel.clone();
            Box::pin(async move { catalog.release_for_loan(txn, &event.loan_id, event.quantity).await })
        })
}

/// Ids of books whose stock or details just changed, on this replica, from every replica.
#[derive(Clone)]
pub struct StockWatch {
    sender: broadcast::Sender<String>,
}

impl StockWatch {
    /// Listens for book changes on the bus (a private queue per replica) until `shutdown`.
    pub fn start(bus: &EventBus, tracker: &TaskTracker, shutdown: CancellationToken) -> Self {
        let (sender, _) = broadcast::channel(1024);
        let feed = sender.clone();
        bus.listen(
            &[
                StockChanged::ROUTING_KEY,
                BookUpdated::ROUTING_KEY,
                BookRemoved::ROUTING_KEY,
            ],
            move |envelope| {
                if let Some(book_id) = book_id_of(&envelope) {
                    let _ = feed.send(book_id);
                }
            },
            tracker,
            shutdown,
        );
        Self { sender }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.sender.subscribe()
    }
}

fn book_id_of(envelope: &EventEnvelope) -> Option<String> {
    let payload = envelope.payload.as_slice();
    match envelope.routing_key.as_str() {
        StockChanged::ROUTING_KEY => StockChanged::decode(payload).ok().map(|e| e.book_id),
        BookUpdated::ROUTING_KEY => BookUpdated::decode(payload).ok().map(|e| e.book_id),
        BookRemoved::ROUTING_KEY => BookRemoved::decode(payload).ok().map(|e| e.book_id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use library_platform::bus::Outbox;

    #[test]
    fn consumes_exactly_what_the_contract_declares() {
        let catalog = Catalog::new(Default::default(), Outbox::default());
        let mut keys = subscriptions(catalog).routing_keys();
        keys.sort();
        assert_eq!(keys, library_proto::routing_keys_of(SAGA_QUEUE));
    }
}
