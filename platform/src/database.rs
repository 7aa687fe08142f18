//! Database connections (PostgreSQL or SQLite through sea-orm) and migrations.
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr,
    TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

pub use sea_orm;

/// Why a database could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("DATABASE_URL: `{0}` is neither postgres:// nor sqlite://")]
    UnsupportedUrl(String),
    #[error("cannot create the directory for {path}: {source}")]
    Directory {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot connect to the database: {0}")]
    Connect(DbErr),
    #[error("cannot migrate the database: {0}")]
    Migrate(DbErr),
}

/// Opens the database at `url` and applies `M`'s migrations.
///
/// PostgreSQL gets a pool; SQLite gets one connection in WAL mode (SQLite has one writer, and a
/// single connection never meets a `database is locked` upgrade conflict). A missing SQLite file
/// and its directory are created.
///
/// # Errors
/// A URL of another kind, a server that cannot be reached, or a failed migration.
pub async fn connect_and_migrate<M: MigratorTrait>(
    url: &str,
) -> Result<DatabaseConnection, DatabaseError> {
    let db = connect(url).await?;
    migrate::<M>(&db).await?;
    Ok(db)
}

/// Opens the database at `url` (see [`connect_and_migrate`]).
///
/// # Errors
/// A URL of another kind or a server that cannot be reached.
pub async fn connect(url: &str) -> Result<DatabaseConnection, DatabaseError> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .sqlx_logging(false)
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(10));
    if url.starts_with("sqlite:") {
        create_sqlite_dir(url)?;
        options
            .max_connections(1)
            .min_connections(1)
            .map_sqlx_sqlite_opts(|o| {
                o.create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
            });
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        options.max_connections(16).min_connections(1);
    } else {
        return Err(DatabaseError::UnsupportedUrl(redact(url)));
    }
    Database::connect(options)
        .await
        .map_err(DatabaseError::Connect)
}

/// Applies `M`'s migrations. On PostgreSQL an advisory lock makes replicas that start together
/// take turns instead of racing on `CREATE TABLE`.
///
/// # Errors
/// A migration that fails.
pub async fn migrate<M: MigratorTrait>(db: &DatabaseConnection) -> Result<(), DatabaseError> {
    if db.get_database_backend() == DbBackend::Postgres {
        let txn = db.begin().await.map_err(DatabaseError::Migrate)?;
        txn.execute_unprepared("SELECT pg_advisory_xact_lock(7130512240)")
            .await
            .map_err(DatabaseError::Migrate)?;
        M::up(&txn, None).await.map_err(DatabaseError::Migrate)?;
        txn.commit().await.map_err(DatabaseError::Migrate)?;
        Ok(())
    } else {
        M::up(db, None).await.map_err(DatabaseError::Migrate)
    }
}

fn create_sqlite_dir(url: &str) -> Result<(), DatabaseError> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:")
        .split('?')
        .next()
        .unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(dir) = std::path::Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir).map_err(|source| DatabaseError::Directory {
            path: path.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// True when `err` is a unique-constraint violation (a duplicate key).
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/book"),
            "postgres://app:***@db:5432/book"
        );
        assert_eq!(redact("sqlite://data/book.db"), "sqlite://data/book.db");
    }

    #[tokio::test]
    async fn an_unknown_scheme_is_refused_by_name() {
        let err = connect("mysql://x").await.unwrap_err();
        assert!(matches!(err, DatabaseError::UnsupportedUrl(_)));
    }
}
