//! dashboard-svc on real PostgreSQL and RabbitMQ: the projection, once per event, in any order,
//! and the watch stream.
mod helpers;
mod projection;
