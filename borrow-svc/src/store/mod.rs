//! Storage: sea-orm entities and the migrations of borrow-svc's own database.
pub mod loan_returns;
pub mod loans;
pub mod readers;

use sea_orm::sea_query::{ColumnDef, Expr, ExprTrait, Index, Table};
use sea_orm::{DbErr, DeriveIden};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};

/// borrow-svc's migrations, oldest first.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut migrations = library_platform::bus::bus_migrations();
        migrations.push(Box::new(CreateCirculation));
        migrations.push(Box::new(crate::audit::CreateLoanAudit));
        migrations
    }
}

#[derive(DeriveIden)]
enum Loans {
    Table,
    Id,
    UserId,
    BookId,
    Quantity,
    ReturnedQuantity,
    Status,
    BorrowedAt,
    DueAt,
    LateFee,
    CancelReason,
    IdempotencyKey,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Readers {
    Table,
    UserId,
    Outstanding,
}

#[derive(DeriveIden)]
enum LoanReturns {
    Table,
    Id,
    LoanId,
    Quantity,
    DaysLate,
    LateFee,
    ReturnedAt,
}

struct CreateCirculation;

impl MigrationName for CreateCirculation {
    fn name(&self) -> &str {
        "m20261125_000001_create_circulation"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for CreateCirculation {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Loans::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Loans::Id).string_len(36).not_null().primary_key())
                    .col(ColumnDef::new(Loans::UserId).string_len(128).not_null())
                    .col(ColumnDef::new(Loans::BookId).string_len(36).not_null())
                    .col(ColumnDef::new(Loans::Quantity).integer().not_null())
                    .col(ColumnDef::new(Loans::ReturnedQuantity).integer().not_null().default(0))
                    .col(ColumnDef::new(Loans::Status).string_len(16).not_null())
                    .col(ColumnDef::new(Loans::BorrowedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Loans::DueAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Loans::LateFee).big_integer().not_null().default(0))
                    .col(ColumnDef::new(Loans::CancelReason).string_len(200).null())
                    .col(ColumnDef::new(Loans::IdempotencyKey).string_len(200).null())
                    .col(ColumnDef::new(Loans::UpdatedAt).timestamp_with_time_zone().not_null())
                    // Never more copies back than were borrowed, whatever the code does.
                    .check(
                        Expr::col(Loans::ReturnedQuantity)
                            .gte(0)
                            .and(Expr::col(Loans::ReturnedQuantity).lte(Expr::col(Loans::Quantity))),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("loans_user_idempotency_key")
                    .table(Loans::Table)
                    .col(Loans::UserId)
                    .col(Loans::IdempotencyKey)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("loans_user_id")
                    .table(Loans::Table)
                    .col(Loans::UserId)
                    .col(Loans::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Readers::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Readers::UserId).string_len(128).not_null().primary_key())
                    .col(ColumnDef::new(Readers::Outstanding).integer().not_null().default(0))
                    .check(Expr::col(Readers::Outstanding).gte(0))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LoanReturns::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(LoanReturns::Id).string_len(36).not_null().primary_key())
                    .col(ColumnDef::new(LoanReturns::LoanId).string_len(36).not_null())
                    .col(ColumnDef::new(LoanReturns::Quantity).integer().not_null())
                    .col(ColumnDef::new(LoanReturns::DaysLate).integer().not_null())
                    .col(ColumnDef::new(LoanReturns::LateFee).big_integer().not_null())
                    .col(
                        ColumnDef::new(LoanReturns::ReturnedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("loan_returns_loan")
                    .table(LoanReturns::Table)
                    .col(LoanReturns::LoanId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }
}
