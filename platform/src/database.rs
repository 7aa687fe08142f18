//! Database connections (PostgreSQL or SQLite through sea-orm) and migrations.
use std::time::Duration;

use sea_orm::sea_query::{Alias, CommonTableExpression, Expr, InsertStatement, IntoIden, Query, WithClause};
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, QueryResult, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;

pub use sea_orm;

/// Why a database could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("DATABASE_URL: `{0}` is neither postgres:// nor sqlite://")]
    UnsupportedUrl(String),
    #[error("cannot create the directory for {path}: {source}")]
    Directory { path: String, source: std::io::Error },
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
pub async fn connect_and_migrate<M: MigratorTrait>(url: &str) -> Result<DatabaseConnection, DatabaseError> {
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
        options.max_connections(1).min_connections(1).map_sqlx_sqlite_opts(|o| {
            o.create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
        });
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        // Ten, not sixteen: each connection holds buffers and a statement cache here and a
        // backend process on the server, and with two cores more connections only queue (less
        // memory and a lower tail latency in the benchmarks, docs/benchmarks.md).
        options.max_connections(10).min_connections(1);
    } else {
        return Err(DatabaseError::UnsupportedUrl(redact(url)));
    }
    Database::connect(options).await.map_err(DatabaseError::Connect)
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

/// The URL of one service's own database when several services share one setting (the
/// all-in-one): `sqlite://dir/x.db` becomes `sqlite://dir/x_<service>.db`, and
/// `postgres://…/name` becomes `postgres://…/name_<service>`, created if missing.
///
/// # Errors
/// The PostgreSQL server cannot be reached, or the database cannot be created.
pub async fn service_database(url: &str, service: &str) -> Result<String, DatabaseError> {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let with_query = |u: String| match query {
        Some(q) => format!("{u}?{q}"),
        None => u,
    };
    if url.starts_with("sqlite:") {
        let derived = match base.strip_suffix(".db") {
            Some(stem) => format!("{stem}_{service}.db"),
            None => format!("{base}_{service}"),
        };
        return Ok(with_query(derived));
    }
    if !(url.starts_with("postgres:") || url.starts_with("postgresql:")) {
        return Err(DatabaseError::UnsupportedUrl(redact(url)));
    }
    let (server, name) = base
        .rsplit_once('/')
        .ok_or_else(|| DatabaseError::UnsupportedUrl(redact(url)))?;
    let name = if name.is_empty() { "library" } else { name };
    let database = format!("{name}_{service}");
    let admin = Database::connect(url.to_owned())
        .await
        .map_err(DatabaseError::Connect)?;
    let exists = admin
        .query_one_raw(sea_orm::Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT 1 FROM pg_database WHERE datname = $1",
            [database.clone().into()],
        ))
        .await
        .map_err(DatabaseError::Connect)?
        .is_some();
    if !exists {
        // A replica racing us may create it first; that is fine.
        let _ = admin
            .execute_unprepared(&format!("CREATE DATABASE \"{database}\""))
            .await;
    }
    let _ = admin.close().await;
    Ok(with_query(format!("{server}/{database}")))
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

/// An insert of `rows` (each the values of `columns`, in their order) into `table`, in one
/// statement; none when there are no rows, as SQL has no insert of nothing.
pub fn insert_rows<C: IntoIden, R: IntoIterator<Item = Expr>>(
    table: impl IntoIden,
    columns: impl IntoIterator<Item = C>,
    rows: impl IntoIterator<Item = R>,
) -> Option<InsertStatement> {
    let mut rows = rows.into_iter().peekable();
    rows.peek()?;
    let mut insert = Query::insert();
    insert.into_table(table).columns(columns);
    for row in rows {
        insert.values_panic(row);
    }
    Some(insert)
}

/// Runs inserts that do not depend on each other (into different tables, or none reading
/// another's rows) as one, and returns what the last one's `RETURNING` gave: on PostgreSQL one
/// statement, each insert but the last a part of its `WITH` clause, so a transaction pays one
/// round trip for all of them; on SQLite, which has no data-modifying `WITH`, one after the
/// other. Either way all of them happen or the call fails.
///
/// # Errors
/// An insert failed; the caller's transaction must not commit.
pub async fn insert_together(
    conn: &impl ConnectionTrait,
    inserts: Vec<InsertStatement>,
) -> Result<Vec<QueryResult>, DbErr> {
    let mut inserts = inserts.into_iter();
    let Some(last) = inserts.next_back() else {
        return Ok(Vec::new());
    };
    if conn.get_database_backend() != DbBackend::Postgres || inserts.len() == 0 {
        for insert in inserts {
            conn.execute(&insert).await?;
        }
        return conn.query_all(&last).await;
    }
    let mut parts = WithClause::new();
    for (n, insert) in inserts.enumerate() {
        parts.cte(
            CommonTableExpression::new()
                .query(insert)
                .table_name(Alias::new(format!("insert_{n}")))
                .to_owned(),
        );
    }
    conn.query_all(&parts.query(last)).await
}

/// True when `err` is a unique-constraint violation (a duplicate key).
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(sea_orm::SqlErr::UniqueConstraintViolation(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_files_are_split_per_service() {
        assert_eq!(
            service_database("sqlite://data/library.db", "book").await.unwrap(),
            "sqlite://data/library_book.db"
        );
        assert_eq!(
            service_database("sqlite://x/l.db?mode=rwc", "borrow").await.unwrap(),
            "sqlite://x/l_borrow.db?mode=rwc"
        );
    }

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
