//! The loan audit log: when `LIBRARY_AUDIT_DIR` is set (the shared Kubernetes volume), every loan
//! transition is appended as one JSON line to this pod's own file, `<dir>/<host>.jsonl`, so
//! replicas never write to the same file and each sees the others' files.
//!
//! Requests are recorded after their commit. Saga transitions (activated, canceled) are recorded
//! as their event is applied, inside the consumer's batch: a batch that rolls back and is applied
//! again one event at a time can record such a transition twice, never lose one.
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::Utc;

/// Appends loan transitions; a no-op when no directory is configured.
#[derive(Clone, Default)]
pub struct AuditLog {
    file: Option<Arc<Mutex<std::fs::File>>>,
}

impl AuditLog {
    /// Opens (creating) this pod's file in `dir`.
    ///
    /// # Errors
    /// The directory or file cannot be created.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path: PathBuf = dir.join(format!("{}.jsonl", host_name()));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        tracing::info!(path = %path.display(), "auditing loan transitions");
        Ok(Self {
            file: Some(Arc::new(Mutex::new(file))),
        })
    }

    /// Records one transition (after its transaction committed). A failure is logged, never
    /// returned: the loan has changed whatever the audit file says.
    pub fn record(&self, transition: &str, loan_id: &str, user_id: &str, detail: serde_json::Value) {
        let Some(file) = &self.file else { return };
        let line = serde_json::json!({
            "at": Utc::now().to_rfc3339(),
            "host": host_name(),
            "transition": transition,
            "loan_id": loan_id,
            "user_id": user_id,
            "detail": detail,
        });
        let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = writeln!(file, "{line}") {
            tracing::warn!(%error, "cannot append to the audit log");
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_transition_is_one_json_line() {
        let dir = std::env::temp_dir().join(format!("audit-{}", uuid::Uuid::new_v4()));
        let log = AuditLog::open(&dir).unwrap();
        log.record("borrowed", "l1", "u1", serde_json::json!({"quantity": 2}));
        log.record("returned", "l1", "u1", serde_json::json!({"quantity": 2}));
        let file = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
        let text = std::fs::read_to_string(file).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["transition"], "borrowed");
        assert_eq!(lines[1]["detail"]["quantity"], 2);
    }
}
