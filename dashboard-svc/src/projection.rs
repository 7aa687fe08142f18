//! The projection: each event adds to a reader's counters, once. Additions commute, so the
//! order in which events arrive does not change where the dashboard ends.
use chrono::Utc;
use library_platform::bus::{HandleError, Outbox, Subscriptions};
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

    /// Applies `change` to `user_id`'s dashboard inside the consumer's transaction, and announces the new value
    /// (`DashboardUpdated`) so every replica's watchers see it.
    ///
    /// # Errors
    /// A database failure: the delivery is retried.
    pub async fn apply(&self, txn: &DatabaseTransaction, user_id: &str, change: Change) -> Result<(), HandleError> {
        let excluded = Alias::new("excluded");
        let upsert = Entity::insert(store::ActiveModel {
            user_id: Set(user_id.to_owned()),
            borrowed_count: Set(change.borrowed),
            late_fee_total: Set(change.late_fee),
            version: Set(1),
            updated_at: Set(Utc::now()),
        })
        .on_conflict(
            OnConflict::column(Column::UserId)
                .value(
                    Column::BorrowedCount,
                    Expr::col((Entity, Column::BorrowedCount))
                        .add(Expr::col((excluded.clone(), Column::BorrowedCount))),
                )
                .value(
                    Column::LateFeeTotal,
                    Expr::col((Entity, Column::LateFeeTotal)).add(Expr::col((excluded.clone(), Column::LateFeeTotal))),
                )
                .value(Column::Version, Expr::col((Entity, Column::Version)).add(1))
                .value(Column::UpdatedAt, Expr::col((excluded, Column::UpdatedAt)))
                .to_owned(),
        );
        upsert.exec(txn).await?;
        let now = Entity::find_by_id(user_id)
            .one(txn)
            .await?
            .ok_or(DbErr::RecordNotFound(user_id.to_owned()))?;
        let updated = DashboardUpdated {
            event_id: Uuid::now_v7().to_string(),
            occurred_at: Some(to_timestamp(now.updated_at)),
            user_id: now.user_id.clone(),
            borrowed_count: now.borrowed_count,
            late_fee_total: now.late_fee_total,
            version: now.version,
        };
        self.outbox.enqueue(txn, &updated).await?;
        tracing::debug!(%user_id, borrowed_count = now.borrowed_count, late_fee_total = now.late_fee_total, "dashboard updated");
        Ok(())
    }
}
