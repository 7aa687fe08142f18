//! End-to-end tests of the library system, through the gateway's HTTP and WebSocket only.
//!
//! Every scenario runs against the all-in-one `library` binary (SQLite, in-process bus) and
//! against the distributed system (one process per service, PostgreSQL, RabbitMQ), unless it
//! says otherwise. Every test creates its own readers and books (unique names), and every
//! all-in-one test its own process in a fresh working directory.
//!
//! Run with `cargo build --workspace && cargo test --test e2e`: the distributed tests start the
//! services' own binaries, which only `cargo build --workspace` builds. They need PostgreSQL
//! (`TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432`), RabbitMQ
//! (`TEST_AMQP_URL`, default the local guest account) and `rabbitmqctl` on the same machine as
//! the broker (each distributed system gets its own vhost).

/// Declares, for each scenario `async fn name(system: &System)` of the enclosing module, a
/// module `name` with two tests: `all_in_one` (a fresh all-in-one process) and `distributed`
/// (the distributed system shared by this test binary).
macro_rules! in_both_modes {
    ($($scenario:ident),* $(,)?) => {
        $(
            mod $scenario {
                #[tokio::test]
                async fn all_in_one() {
                    let system = crate::helpers::System::all_in_one().await;
                    super::$scenario(&system).await;
                }

                #[tokio::test]
                async fn distributed() {
                    let system = crate::helpers::System::shared_distributed().await;
                    let _logs = crate::helpers::LogsOnPanic(system);
                    super::$scenario(system).await;
                }
            }
        )*
    };
}

mod helpers;

mod auth;
mod bad_input;
mod clients;
mod crash;
mod graceful_stop;
mod grpc_reflection;
mod limits;
mod out_of_stock;
mod overload;
mod saga_fault;
mod standard_clients;
mod subscriptions;
mod tokens;
mod traces;
mod worked_example;
