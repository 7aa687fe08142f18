//! The runtime every library service shares, so a service crate holds only its domain, its
//! storage and its gRPC mapping.
//!
//! # Layout
//! - [`backoff`]: the waits of every retry loop (exponential, capped, reset on success).
//! - [`config`]: settings from environment variables and flags, checked at start.
//! - [`telemetry`]: `tracing` (text or JSON for Loki), OpenTelemetry export, W3C trace context.
//! - [`database`]: sea-orm connections to PostgreSQL or SQLite and the migrations every service
//!   shares (outbox, processed events).
//! - [`drain`]: a table of committed work handed over in id order and deleted once taken (the
//!   outbox relay's and the audit writer's way out of the database).
//! - [`bus`]: the event bus — transactional outbox, relay, idempotent consumers with a
//!   dead-letter queue — over RabbitMQ or in-process.
//! - [`grpc`]: serving with health and reflection, client channels, error reasons in metadata.
//! - [`metrics`]: the Prometheus recorder, `/metrics`, and gRPC server call metrics.
//! - [`paging`]: page sizes and opaque cursors of the list calls.
//! - [`text`]: counted words in messages ("1 copy is", "3 copies are").
//! - [`service`]: what every binary does around its work (telemetry, signals, exit codes).
//! - [`shutdown`]: the process's stop signal.
//! - `test_support` (feature `test-support`): fresh databases and bus namespaces for tests.

pub mod backoff;
pub mod bus;
pub mod config;
pub mod database;
pub mod drain;
pub mod grpc;
pub mod metrics;
pub mod paging;
pub mod service;
pub mod shutdown;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod test_support;
pub mod text;

/// The allocator every binary of the library installs
/// (`#[global_allocator] static GLOBAL: Allocator = Allocator;`): a service allocates and frees
/// small buffers for every request and message, which mimalloc does for about half of what
/// glibc's malloc costs.
pub use mimalloc::MiMalloc as Allocator;

pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;
