//! The projection: each event adds to a reader's counters, once. Additions commute, so the
//! order in which events arrive does not change where the dashboard ends.
use chrono::Utc;
use library_platform::bus::{EventEnvelope, HandleError, Outbox, Subscriptions};
use library_proto::events::DashboardUpdated;
use library_proto::time::to_timestamp;
use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict};
use sea_orm::{DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait, Set};
use uuid::Uuid;

use crate::store::{self, Column, Entity};

pub use store::Model as Dashboard;

/// What one event changes on a reader's dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Change {
    pub borrowed: i32,
    pub late_fee: i64,
}

/// The read model.
#[derive(Clone)]
pub struct Dashboards {
    db: DatabaseConnection,
    outbox: Outbox,
}

impl Dashboards {
    pub fn new(db: DatabaseConnection, outbox: Outbox) -> Self {
        Self { db, outbox }
    }

    /// An empty set of subscriptions applying events to the read model's database.
    pub fn subscriptions(&self, consumer: &str) -> Subscriptions {
        Subscriptions::new(consumer, self.db.clone(), self.outbox.clone())
    }

    /// A reader's dashboard; all zero before the first event about them.
    ///
    /// # Errors
    /// A database failure.
    pub async fn get(&self, user_id: &str) -> Result<Dashboard, DbErr> {
        Ok(Entity::find_by_id(user_id)
            .one(&self.db)
            .await?
            .unwrap_or_else(|| Dashboard {
                user_id: user_id.to_owned(),
                borrowed_count: 0,
                late_fee_total: 0,
                version: 0,
                updated_at: Utc::now(),
            }))
    }

    /// Applies a run of changes (reader, change) inside the consumer's transaction: each
    /// reader's changes summed, every reader's row written by one statement, and each new value
    /// announced once (`DashboardUpdated`) so every replica's watchers see it.
    ///
    /// # Errors
    /// A database failure: the deliveries are retried.
    pub async fn apply(&self, txn: &DatabaseTransaction, changes: Vec<(String, Change)>) -> Result<(), HandleError> {
        let mut summed: Vec<(String, Change)> = Vec::new();
        for (user_id, change) in changes {
            match summed.iter_mut().find(|(seen, _)| *seen == user_id) {
                Some((_, total)) => {
                    total.borrowed += change.borrowed;
                    total.late_fee += change.late_fee;
                }
                None => summed.push((user_id, change)),
            }
        }
        if summed.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let rows = summed.into_iter().map(|(user_id, change)| store::ActiveModel {
            user_id: Set(user_id),
            borrowed_count: Set(change.borrowed),
            late_fee_total: Set(change.late_fee),
            version: Set(1),
            updated_at: Set(now),
        });
        let excluded = Alias::new("excluded");
        // One statement may touch a row once only: hence the sums above.
        let updated = Entity::insert_many(rows)
            .on_conflict(
                OnConflict::column(Column::UserId)
                    .value(
                        Column::BorrowedCount,
                        Expr::col((Entity, Column::BorrowedCount))
                            .add(Expr::col((excluded.clone(), Column::BorrowedCount))),
                    )
                    .value(
                        Column::LateFeeTotal,
                        Expr::col((Entity, Column::LateFeeTotal))
                            .add(Expr::col((excluded.clone(), Column::LateFeeTotal))),
                    )
                    .value(Column::Version, Expr::col((Entity, Column::Version)).add(1))
                    .value(Column::UpdatedAt, Expr::col((excluded, Column::UpdatedAt)))
                    .to_owned(),
            )
            .exec_with_returning(txn)
            .await?;
        let announcements = updated.iter().map(|now| {
            tracing::debug!(user_id = %now.user_id, borrowed_count = now.borrowed_count, late_fee_total = now.late_fee_total, "dashboard updated");
            EventEnvelope::of(&DashboardUpdated {
                event_id: Uuid::now_v7().to_string(),
                occurred_at: Some(to_timestamp(now.updated_at)),
                user_id: now.user_id.clone(),
                borrowed_count: now.borrowed_count,
                late_fee_total: now.late_fee_total,
                version: now.version,
            })
        });
        self.outbox.enqueue_all(txn, announcements.collect::<Vec<_>>()).await?;
        Ok(())
    }
}
