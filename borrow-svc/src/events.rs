//! What borrow-svc consumes: book-svc's answer in the borrow saga. It publishes through the
//! outbox: see `circulation`.
use library_platform::bus::Subscriptions;
use library_proto::events::{OutOfStock, StockReserved};

use crate::circulation::Circulation;

/// The durable queue of borrow-svc's saga consumer.
pub const SAGA_QUEUE: &str = "borrow-svc.saga";

/// Every event borrow-svc consumes, in one place.
pub fn subscriptions(circulation: Circulation) -> Subscriptions {
    let (on_reserved, on_refused) = (circulation.clone(), circulation.clone());
    circulation
        .subscriptions("borrow-svc")
        .on_batch::<StockReserved, _>(move |run, txn| {
            let circulation = on_reserved.clone();
            let reserved: Vec<StockReserved> = run.into_iter().map(|(event, _)| event).collect();
            Box::pin(async move { circulation.activate(txn, &reserved).await })
        })
        .on::<OutOfStock, _>(move |event, _, txn| {
            let circulation = on_refused.clone();
            Box::pin(async move { circulation.cancel(txn, event).await })
        })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audit::AuditLog;
    use crate::domain::{FeeTiers, LoanPolicy};
    use crate::stock::StockGuard;
    use library_platform::bus::Outbox;

    #[tokio::test]
    async fn consumes_exactly_what_the_contract_declares() {
        let channel = library_platform::grpc::guarded_channel(
            "book",
            "BOOK_SVC_URL",
            "http://127.0.0.1:1",
            Duration::from_millis(10),
        )
        .unwrap();
        let policy = LoanPolicy::new(14, 10, FeeTiers::default(), "UTC").unwrap();
        let circulation = Circulation::new(
            Default::default(),
            Outbox::default(),
            policy,
            StockGuard::new(channel, Duration::from_millis(10)),
            AuditLog::default(),
        );
        let mut keys = subscriptions(circulation).routing_keys();
        keys.sort();
        assert_eq!(keys, library_proto::routing_keys_of(SAGA_QUEUE));
    }
}
