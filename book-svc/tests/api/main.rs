//! book-svc on real PostgreSQL and RabbitMQ: the catalogue through gRPC, and its side of the
//! saga driven directly.
mod catalogue;
mod helpers;
mod standard_services;
mod stock;
