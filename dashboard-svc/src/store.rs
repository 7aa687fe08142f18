//! Storage: the `user_dashboards` read model and its migrations.
use sea_orm::entity::prelude::*;
use sea_orm::sea_query::{ColumnDef, Table};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};

/// One row a reader, created by the first event about them.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "user_dashboards")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub user_id: String,
    /// Copies outstanding on PENDING and ACTIVE loans.
    pub borrowed_count: i32,
    /// Won charged over all returns.
    pub late_fee_total: i64,
    /// Grows by one with every applied event: orders the updates watchers receive.
    pub version: i64,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// dashboard-svc's migrations, oldest first.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut migrations = library_platform::bus::bus_migrations();
        migrations.push(Box::new(CreateDashboards));
        migrations
    }
}

struct CreateDashboards;

impl MigrationName for CreateDashboards {
    fn name(&self) -> &str {
        "m20261125_000001_create_dashboards"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for CreateDashboards {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Entity)
                    .if_not_exists()
                    .col(ColumnDef::new(Column::UserId).string_len(128).not_null().primary_key())
                    .col(ColumnDef::new(Column::BorrowedCount).integer().not_null().default(0))
                    .col(ColumnDef::new(Column::LateFeeTotal).big_integer().not_null().default(0))
                    .col(ColumnDef::new(Column::Version).big_integer().not_null().default(0))
                    .col(ColumnDef::new(Column::UpdatedAt).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await
    }
}
