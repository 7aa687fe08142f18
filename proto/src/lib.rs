//! The library's Protobuf contracts, compiled: the gRPC services of book, borrow and dashboard,
//! and the domain events that travel on the `library.events` exchange.
//!
//! # Layout
//! - [`book`], [`borrow`], [`dashboard`]: generated messages, clients and servers.
//! - [`events`]: the event messages, each tied to its routing key by [`DomainEvent`].
//! - [`time`]: conversions between `prost_types::Timestamp` and `chrono`.

pub mod book {
    tonic::include_proto!("library.book.v1");
}
pub mod borrow {
    tonic::include_proto!("library.borrow.v1");
}
pub mod dashboard {
    tonic::include_proto!("library.dashboard.v1");
}
pub mod events {
    tonic::include_proto!("library.events.v1");
}
pub mod time;

/// The encoded descriptors of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/library_descriptor.bin"));

/// A domain event: a Protobuf message that names itself and where it is routed.
pub trait DomainEvent: prost::Message + Default + Send + Sync + 'static {
    /// The message name, sent as the AMQP `type` property (e.g. `BookBorrowed`).
    const NAME: &'static str;
    /// The topic routing key, `<context>.<event>` (e.g. `borrow.book_borrowed`).
    const ROUTING_KEY: &'static str;
    /// The event's unique id, on which consumers de-duplicate.
    fn event_id(&self) -> &str;
}

/// Who consumes what: every durable consumer queue of the system and the routing keys bound to
/// it. Publishers declare these before publishing, so an event published before its consumer
/// ever started waits in the queue instead of being dropped by the exchange.
pub const CONSUMER_QUEUES: &[(&str, &[&str])] = &[
    (
        "book-svc.saga",
        &["borrow.book_borrowed", "borrow.book_returned", "borrow.loan_canceled"],
    ),
    ("borrow-svc.saga", &["book.stock_reserved", "book.out_of_stock"]),
    (
        "dashboard-svc.projection",
        &[
            "borrow.book_borrowed",
            "borrow.loan_canceled",
            "borrow.book_returned",
            "borrow.late_fee_charged",
        ],
    ),
];

/// The routing keys bound to the consumer queue `queue`, sorted.
pub fn routing_keys_of(queue: &str) -> Vec<&'static str> {
    let mut keys: Vec<&'static str> = CONSUMER_QUEUES
        .iter()
        .find(|(q, _)| *q == queue)
        .map(|(_, keys)| keys.to_vec())
        .unwrap_or_default();
    keys.sort_unstable();
    keys
}

macro_rules! domain_events {
    ($($ty:ident => $key:literal),* $(,)?) => {
        $(impl DomainEvent for events::$ty {
            const NAME: &'static str = stringify!($ty);
            const ROUTING_KEY: &'static str = $key;
            fn event_id(&self) -> &str {
                &self.event_id
            }
        })*
    };
}

domain_events! {
    BookBorrowed => "borrow.book_borrowed",
    BookReturned => "borrow.book_returned",
    LateFeeCharged => "borrow.late_fee_charged",
    LoanCanceled => "borrow.loan_canceled",
    StockReserved => "book.stock_reserved",
    OutOfStock => "book.out_of_stock",
    StockReleased => "book.stock_released",
    StockChanged => "book.stock_changed",
    BookRegistered => "book.book_registered",
    BookUpdated => "book.book_updated",
    BookRemoved => "book.book_removed",
    DashboardUpdated => "dashboard.dashboard_updated",
}
