//! What borrow-svc consumes: book-svc's answer in the borrow saga. It publishes through the
//! outbox: see `circulation`.
use library_platform::bus::Subscriptions;
use library_proto::events::{OutOfStock, StockReserved};

use crate::circulation::Circulation;

/// The durable queue of borrow-svc's saga consumer.
pub const SAGA_QUEUE: &str = "borrow-svc.saga";

/// Every event borrow-svc consumes, in one place.
pub fn subscriptions(circulation: Circulation) -> Subscriptions {
    let (on_reserved, on_refused) = (circulation.clone(), circulation);
    Subscriptions::new("borrow-svc")
        .on::<StockReserved, _, _>(move |event, meta| {
            let circulation = on_reserved.clone();
            async move { circulation.activate(event, meta).await }
        })
        .on::<OutOfStock, _, _>(move |event, meta| {
            let circulation = on_refused.clone();
            async move { circulation.cancel(event, meta).await }
        })
}
