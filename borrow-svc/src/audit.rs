//! The loan audit log: when `LIBRARY_AUDIT_DIR` is set (the shared Kubernetes volume), every loan
//! transition is appended as one JSON line to this pod's own file, `<dir>/<host>.jsonl`, so
//! replicas never write to the same file and each sees the others' files.
//!
//! A transition is first a row of `loan_audit`, written in the transaction that makes it: a
//! change that rolls back leaves no line, and a crash after its commit loses none. The pod's
//! [`AuditWriter`] drains that table into its file, oldest first, synced to disk before the rows
//! are deleted. A crash between the two writes those lines again with the same `id`, which tells
//! a repeat from a new transition; `host` is the pod that made the transition.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use library_platform::database::insert_rows;
use library_platform::drain::{TableDrain, run_passes, sequence_key};
use sea_orm::sea_query::{ColumnDef, InsertStatement, Table};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, DeriveIden, QueryResult};
use sea_orm_migration::{MigrationName, MigrationTrait, SchemaManager};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Lines the writer appends at most per pass (and per disk sync).
const BATCH_SIZE: u64 = 512;

/// One loan transition to audit.
pub struct Transition<'a> {
    /// What happened: `borrowed`, `activated`, `canceled`, `returned`, `due_date_changed`.
    pub kind: &'static str,
    pub loan_id: &'a str,
    pub user_id: &'a str,
    pub detail: serde_json::Value,
}

/// Records loan transitions in the transaction that makes them; does nothing when no audit
/// directory is configured.
#[derive(Clone, Default)]
pub struct AuditLog {
    /// This pod's name, when auditing.
    host: Option<Arc<str>>,
}

impl AuditLog {
    /// A log that records (the pod's [`AuditWriter`] writes the lines out).
    pub fn recording() -> Self {
        Self {
            host: Some(host_name().into()),
        }
    }

    /// Adds `transitions` to the audit, in one statement inside `txn`.
    ///
    /// # Errors
    /// The insert failed; the transaction must not commit.
    pub async fn record<'a>(
        &self,
        txn: &impl ConnectionTrait,
        transitions: impl IntoIterator<Item = Transition<'a>>,
    ) -> Result<(), DbErr> {
        if let Some(insert) = self.insert_of(transitions) {
            txn.execute(&insert).await?;
        }
        Ok(())
    }

    /// The insert that records `transitions`: none when nothing is audited or there are none.
    pub fn insert_of<'a>(&self, transitions: impl IntoIterator<Item = Transition<'a>>) -> Option<InsertStatement> {
        let host = self.host.as_ref()?;
        let now = Utc::now();
        let rows = transitions.into_iter().map(|transition| {
            [
                now.into(),
                host.to_string().into(),
                transition.kind.into(),
                transition.loan_id.into(),
                transition.user_id.into(),
                transition.detail.to_string().into(),
            ]
        });
        insert_rows(LoanAudit::Table, COLUMNS, rows)
    }
}

/// Why a pass of the writer failed; the rows stay for the next.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("reading or clearing the audit table failed: {0}")]
    Database(#[from] DbErr),
    #[error("cannot append to the audit file: {0}")]
    File(#[from] std::io::Error),
}

/// Appends the audit table's rows to this pod's file.
pub struct AuditWriter {
    db: DatabaseConnection,
    file: Arc<Mutex<std::fs::File>>,
    table: TableDrain,
}

impl AuditWriter {
    /// Opens (creating) this pod's file in `dir`.
    ///
    /// # Errors
    /// The directory or file cannot be created.
    pub fn open(db: DatabaseConnection, dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path: PathBuf = dir.join(format!("{}.jsonl", host_name()));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        tracing::info!(path = %path.display(), "auditing loan transitions");
        Ok(Self {
            db,
            file: Arc::new(Mutex::new(file)),
            table: TableDrain::new(LoanAudit::Table, LoanAudit::Id, COLUMNS, BATCH_SIZE),
        })
    }

    /// One pass: appends up to one batch of recorded transitions, returns how many.
    ///
    /// # Errors
    /// The database or the file failed; the transitions stay recorded.
    pub async fn write_once(&self) -> Result<usize, AuditError> {
        self.table
            .once(&self.db, |rows| async move {
                let lines = rows.iter().map(line_of).collect::<Result<String, DbErr>>()?;
                let file = self.file.clone();
                tokio::task::spawn_blocking(move || {
                    let mut file = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                    file.write_all(lines.as_bytes())?;
                    file.sync_data()
                })
                .await
                .map_err(std::io::Error::other)??;
                Ok::<_, AuditError>(())
            })
            .await
    }

    /// Writes until `shutdown`, polling the table (a transition is in its file within about
    /// half a second), then once more.
    pub async fn run(self, shutdown: CancellationToken) {
        let polled_only = Arc::new(Notify::new());
        run_passes(
            "audit writer",
            self.table.batch_size(),
            Duration::ZERO,
            polled_only,
            shutdown,
            || self.write_once(),
        )
        .await;
    }
}

/// One row as its JSON line, newline included.
fn line_of(row: &QueryResult) -> Result<String, DbErr> {
    let detail: String = row.try_get("", "detail")?;
    let line = serde_json::json!({
        "id": row.try_get::<i64>("", "id")?,
        "at": row.try_get::<DateTime<Utc>>("", "at")?.to_rfc3339(),
        "host": row.try_get::<String>("", "host")?,
        "transition": row.try_get::<String>("", "transition")?,
        "loan_id": row.try_get::<String>("", "loan_id")?,
        "user_id": row.try_get::<String>("", "user_id")?,
        "detail": serde_json::from_str::<serde_json::Value>(&detail).unwrap_or(serde_json::Value::String(detail)),
    });
    Ok(format!("{line}\n"))
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("pid-{}", std::process::id()))
}

/// A recorded transition's columns besides its id, in the order [`AuditLog::record`] fills them.
const COLUMNS: [LoanAudit; 6] = [
    LoanAudit::At,
    LoanAudit::Host,
    LoanAudit::Transition,
    LoanAudit::LoanId,
    LoanAudit::UserId,
    LoanAudit::Detail,
];

#[derive(DeriveIden)]
enum LoanAudit {
    Table,
    Id,
    At,
    Host,
    Transition,
    LoanId,
    UserId,
    Detail,
}

/// The `loan_audit` table.
pub struct CreateLoanAudit;

impl MigrationName for CreateLoanAudit {
    fn name(&self) -> &str {
        "m20261126_000001_create_loan_audit"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for CreateLoanAudit {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(LoanAudit::Table)
                    .if_not_exists()
                    .col(sequence_key(LoanAudit::Id))
                    .col(ColumnDef::new(LoanAudit::At).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(LoanAudit::Host).string_len(255).not_null())
                    .col(ColumnDef::new(LoanAudit::Transition).string_len(32).not_null())
                    .col(ColumnDef::new(LoanAudit::LoanId).string_len(36).not_null())
                    .col(ColumnDef::new(LoanAudit::UserId).string_len(128).not_null())
                    .col(ColumnDef::new(LoanAudit::Detail).text().not_null())
                    .to_owned(),
            )
            .await
    }
}
