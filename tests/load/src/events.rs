//! The event platform's throughput: transactional outbox -> relay -> RabbitMQ -> idempotent
//! consumer, with the platform's own code, on a scratch database and broker names of its own so
//! runs never collide and leave nothing behind.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use chrono::Utc;
use clap::builder::TypedValueParser as _;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use library_platform::bus::{BusNames, EventBus, Outbox, Relay, Subscriptions};
use library_platform::database::sea_orm::{ConnectionTrait, Database, DatabaseConnection, TransactionTrait};
use library_platform::database::{connect_and_migrate, redact};
use library_proto::events::StockChanged;
use sea_orm_migration::{MigrationTrait, MigratorTrait};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::driver::parse_duration;
use crate::report::{Recorder, Report};

/// The consumer's name (its queue, and its rows in `processed_events`).
const CONSUMER: &str = "library-load";
/// The `book_id` of the events that only check the path is open before the clock starts.
const WARM_UP: &str = "warm-up";
const WARM_UP_LIMIT: Duration = Duration::from_secs(15);
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// `events`: the settings.
#[derive(clap::Args, Clone, Debug)]
pub struct EventsArgs {
    /// The PostgreSQL server. The database in the URL is only used to create and drop a scratch
    /// database (`library_load_events_<uuid>`) where the run happens.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pub database_url: String,
    /// RabbitMQ. The run uses an exchange and queues of its own, deleted at the end.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,
    /// Events to send through.
    #[arg(long, default_value_t = 20_000)]
    pub count: u64,
    /// Events per producer transaction.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    /// Producers enqueueing at once (each its share, in transactions of --batch).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256).map(usize::from))]
    pub producers: usize,
    /// Outbox relays (as replicas of a service would run).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64).map(usize::from))]
    pub relays: usize,
    /// Consumers sharing the queue (as replicas of a consuming service would).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64).map(usize::from))]
    pub consumers: usize,
    /// Stop waiting for deliveries this long after the first event was enqueued.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// The scratch database's schema: the platform's outbox and processed-events tables.
struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        library_platform::bus::bus_migrations()
    }
}

/// Runs `count` events through on a scratch database and fresh broker names, removing both
/// afterwards (also when the run fails or is interrupted with Ctrl-C).
pub async fn events(args: &EventsArgs) -> anyhow::Result<Report> {
    let scratch = ScratchDatabase::create(&args.database_url).await?;
    let names = library_platform::test_support::fresh_bus_names();
    let outcome = tokio::select! {
        outcome = measure(args, &scratch.url, names.clone()) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    let broker = remove_broker_names(&args.amqp_url, &names).await;
    let database = scratch.remove().await;
    match (outcome, broker.and(database)) {
        (Ok(report), Ok(())) => Ok(report),
        (Ok(_), Err(cleanup)) => Err(cleanup),
        (Err(error), Ok(())) => Err(error),
        (Err(error), Err(cleanup)) => Err(error.context(format!("cleanup failed too: {cleanup:#}"))),
    }
}

/// What the consumers saw.
#[derive(Default)]
struct Sink {
    claimed: AtomicU64,
    duplicates: AtomicU64,
    warm_ups: AtomicU64,
    handler_failures: AtomicU64,
    /// Enqueue -> claimed, per event.
    latency: Mutex<Recorder>,
}

impl Sink {
    fn record(&self, event: &StockChanged, fresh: bool) {
        if event.book_id == WARM_UP {
            self.warm_ups.fetch_add(1, Ordering::Relaxed);
        } else if !fresh {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        } else {
            let enqueued = event.occurred_at.as_ref().and_then(library_proto::time::from_timestamp);
            if let Some(lag) = enqueued.and_then(|at| (Utc::now() - at).to_std().ok()) {
                self.latency
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .ok(lag);
            }
            self.claimed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn measure(args: &EventsArgs, db_url: &str, names: BusNames) -> anyhow::Result<Report> {
    let db = connect_and_migrate::<Migrator>(db_url)
        .await
        .context("cannot prepare the scratch database")?;
    let bus = EventBus::rabbitmq(&args.amqp_url, names)?;
    let (shutdown, tracker) = (CancellationToken::new(), TaskTracker::new());
    let (outbox, sink) = (Outbox::default(), Arc::new(Sink::default()));
    for _ in 0..args.consumers {
        let subscriptions = subscriptions(db.clone(), sink.clone());
        bus.consume(CONSUMER, subscriptions, &tracker, shutdown.clone());
    }
    for _ in 0..args.relays {
        tracker.spawn(Relay::new(db.clone(), bus.clone(), &outbox).run(shutdown.clone()));
    }
    let result = async {
        warm_up(&db, &outbox, &sink).await?;
        timed(args, &db, &outbox, &sink).await
    }
    .await;
    shutdown.cancel();
    tracker.close();
    let stopped = tokio::time::timeout(STOP_LIMIT, tracker.wait()).await;
    bus.close().await;
    let _ = db.close().await;
    let report = result?;
    stopped.map_err(|_| anyhow!("the relay or a consumer did not stop within {STOP_LIMIT:?}"))?;
    Ok(report)
}

/// The consumer: the platform claims each event in the batch's transaction (a duplicate never
/// reaches the handler); the handler only counts.
fn subscriptions(db: DatabaseConnection, sink: Arc<Sink>) -> Subscriptions {
    Subscriptions::new(CONSUMER, db, Outbox::default()).on::<StockChanged, _>(move |event, _, _| {
        sink.record(&event, true);
        Box::pin(async { Ok(()) })
    })
}

/// Sends warm-up events until one comes back: the consumer's queue exists and is bound (an event
/// published before that would be dropped by the broker).
async fn warm_up(db: &DatabaseConnection, outbox: &Outbox, sink: &Sink) -> anyhow::Result<()> {
    let limit = Instant::now() + WARM_UP_LIMIT;
    while sink.warm_ups.load(Ordering::Relaxed) == 0 {
        if Instant::now() >= limit {
            bail!("no event came back through the broker within {WARM_UP_LIMIT:?}");
        }
        enqueue(db, outbox, WARM_UP, 1).await?;
        let retry = Instant::now() + Duration::from_millis(500);
        while sink.warm_ups.load(Ordering::Relaxed) == 0 && Instant::now() < retry {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(())
}

/// Enqueues `count` events from the producers, then waits until every one was claimed.
async fn timed(args: &EventsArgs, db: &DatabaseConnection, outbox: &Outbox, sink: &Sink) -> anyhow::Result<Report> {
    let start = Instant::now();
    let producers = (0..args.producers).map(|p| {
        let share = args.count / args.producers as u64 + u64::from((p as u64) < args.count % args.producers as u64);
        produce(db, outbox, share, args.batch)
    });
    futures::future::try_join_all(producers).await?;
    let enqueued = start.elapsed();
    let limit = start + args.timeout;
    while sink.claimed.load(Ordering::Relaxed) < args.count && Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let elapsed = start.elapsed();
    let claimed = sink.claimed.load(Ordering::Relaxed);
    let mut recorder = Recorder::default();
    recorder.merge(&sink.latency.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    recorder.error_without_latency("not delivered in time", args.count.saturating_sub(claimed));
    let target = format!(
        "outbox on {} -> relay -> {} -> consumer",
        redact(&args.database_url),
        redact(&args.amqp_url)
    );
    let mut report = Report::new("events", &target, &recorder, elapsed);
    let figures = [
        ("enqueue_s", enqueued.as_secs_f64()),
        (
            "enqueue_eps",
            args.count as f64 / enqueued.as_secs_f64().max(f64::EPSILON),
        ),
        ("drain_after_enqueue_s", (elapsed - enqueued).as_secs_f64()),
        (
            "end_to_end_eps",
            claimed as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
        ),
        ("duplicates", sink.duplicates.load(Ordering::Relaxed) as f64),
        ("handler_failures", sink.handler_failures.load(Ordering::Relaxed) as f64),
        ("producers", args.producers as f64),
        ("relays", args.relays as f64),
        ("consumers", args.consumers as f64),
        ("batch", args.batch as f64),
    ];
    report
        .figures
        .extend(figures.into_iter().map(|(k, v)| (k.to_owned(), v)));
    Ok(report)
}

async fn produce(db: &DatabaseConnection, outbox: &Outbox, count: u64, batch: u64) -> anyhow::Result<()> {
    let mut left = count;
    while left > 0 {
        let n = left.min(batch);
        enqueue(db, outbox, "load", n).await?;
        left -= n;
    }
    Ok(())
}

/// One transaction of `n` events, committed through the outbox (which wakes the relay).
async fn enqueue(db: &DatabaseConnection, outbox: &Outbox, book_id: &str, n: u64) -> anyhow::Result<()> {
    let txn = db.begin().await?;
    for _ in 0..n {
        let event = StockChanged {
            event_id: uuid::Uuid::now_v7().to_string(),
            occurred_at: Some(library_proto::time::to_timestamp(Utc::now())),
            book_id: book_id.to_owned(),
            total_copies: 1,
            available_copies: 1,
        };
        outbox.enqueue(&txn, &event).await?;
    }
    outbox.commit(txn).await.context("cannot commit to the outbox")
}

/// A database created for one run and dropped after it.
struct ScratchDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl ScratchDatabase {
    async fn create(server_url: &str) -> anyhow::Result<Self> {
        let name = format!("library_load_events_{}", uuid::Uuid::new_v4().simple());
        let (admin_url, url) = scratch_urls(server_url, &name)?;
        let admin = Database::connect(admin_url.as_str())
            .await
            .with_context(|| format!("cannot connect to {}", redact(&admin_url)))?;
        let created = admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .with_context(|| format!("cannot create the database {name}"));
        let _ = admin.close().await;
        created?;
        Ok(Self { admin_url, name, url })
    }

    async fn remove(self) -> anyhow::Result<()> {
        let admin = Database::connect(self.admin_url.as_str())
            .await
            .with_context(|| format!("cannot connect to {}", redact(&self.admin_url)))?;
        let dropped = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
            .await
            .with_context(|| format!("cannot drop the database {}", self.name));
        let _ = admin.close().await;
        dropped.map(drop)
    }
}

/// From `postgres://user@host:port[/db][?query]`: the URL of the database to administer from
/// (`db`, default `postgres`) and the URL of the scratch database `name` on the same server.
fn scratch_urls(server_url: &str, name: &str) -> anyhow::Result<(String, String)> {
    let (base, query) = match server_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (server_url, String::new()),
    };
    let authority_at = base
        .find("://")
        .map(|i| i + 3)
        .filter(|_| base.starts_with("postgres"))
        .ok_or_else(|| anyhow!("`{}` is not a postgres:// URL", redact(server_url)))?;
    let (server, admin_db) = match base[authority_at..].find('/') {
        Some(slash) => {
            let (server, path) = base.split_at(authority_at + slash);
            (server, path.trim_start_matches('/'))
        }
        None => (base, ""),
    };
    let admin_db = if admin_db.is_empty() { "postgres" } else { admin_db };
    Ok((format!("{server}/{admin_db}{query}"), format!("{server}/{name}{query}")))
}

/// Deletes the run's exchanges and queues (they are unique to it).
async fn remove_broker_names(url: &str, names: &BusNames) -> anyhow::Result<()> {
    let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .with_context(|| format!("cannot connect to {} to clean up", redact(url)))?;
    let channel = connection.create_channel().await?;
    let queue = names.queue(CONSUMER);
    for queue in [format!("{queue}.dlq"), queue] {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .with_context(|| format!("cannot delete the queue {queue}"))?;
    }
    for exchange in [names.exchange.clone(), names.dead_letter_exchange()] {
        channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .with_context(|| format!("cannot delete the exchange {exchange}"))?;
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scratch_database_lives_on_the_given_server() {
        let (admin, scratch) = scratch_urls("postgres://postgres@127.0.0.1:5432/bench", "s1").expect("valid");
        assert_eq!(admin, "postgres://postgres@127.0.0.1:5432/bench");
        assert_eq!(scratch, "postgres://postgres@127.0.0.1:5432/s1");
        let (admin, scratch) = scratch_urls("postgres://u:p@db:5432?sslmode=disable", "s2").expect("valid");
        assert_eq!(admin, "postgres://u:p@db:5432/postgres?sslmode=disable");
        assert_eq!(scratch, "postgres://u:p@db:5432/s2?sslmode=disable");
        assert!(scratch_urls("mysql://x/y", "s").is_err());
    }
}
