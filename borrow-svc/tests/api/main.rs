//! borrow-svc with book-svc, on real PostgreSQL and RabbitMQ, through gRPC.
mod audit;
mod borrowing;
mod concurrency;
mod faults;
mod helpers;
mod holds;
mod returning;
