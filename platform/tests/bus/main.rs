//! The event bus against real PostgreSQL and RabbitMQ, and against SQLite with the in-process
//! transport: nothing lost, nothing applied twice, poison isolated.
mod delivery;
mod drain;
mod faults;
mod helpers;
mod linger;
mod trace_context;
