//! Storage: sea-orm entities and the migrations of book-svc's own database.
pub mod books;
pub mod reservations;

use sea_orm::sea_query::{ColumnDef, Expr, ExprTrait, Index, Table};
use sea_orm::{DbErr, DeriveIden};
use sea_orm_migration::{MigrationName, MigrationTrait, MigratorTrait, SchemaManager};

/// book-svc's migrations, oldest first.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut migrations = library_platform::bus::bus_migrations();
        migrations.push(Box::new(CreateCatalog));
        migrations.push(Box::new(AddStockHolds));
        migrations
    }
}

#[derive(DeriveIden)]
enum Books {
    Table,
    Id,
    Isbn,
    Title,
    Author,
    TotalCopies,
    AvailableCopies,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Reservations {
    Table,
    LoanId,
    BookId,
    Quantity,
    CreatedAt,
    HeldUntil,
    UserId,
}

struct CreateCatalog;

impl MigrationName for CreateCatalog {
    fn name(&self) -> &str {
        "m20261125_000001_create_catalog"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for CreateCatalog {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Books::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Books::Id).string_len(36).not_null().primary_key())
                    .col(ColumnDef::new(Books::Isbn).string_len(13).null())
                    .col(ColumnDef::new(Books::Title).string_len(500).not_null())
                    .col(ColumnDef::new(Books::Author).string_len(500).not_null())
                    .col(ColumnDef::new(Books::TotalCopies).integer().not_null())
                    .col(ColumnDef::new(Books::AvailableCopies).integer().not_null())
                    .col(ColumnDef::new(Books::CreatedAt).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(Books::UpdatedAt).timestamp_with_time_zone().not_null())
                    // The stock invariant, enforced by the database whatever the code does.
                    .check(
                        Expr::col(Books::AvailableCopies)
                            .gte(0)
                            .and(Expr::col(Books::AvailableCopies).lte(Expr::col(Books::TotalCopies))),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("books_title_id")
                    .table(Books::Table)
                    .col(Books::Title)
                    .col(Books::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Reservations::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Reservations::LoanId)
                            .string_len(36)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Reservations::BookId).string_len(36).not_null())
                    .col(
                        ColumnDef::new(Reservations::Quantity)
                            .integer()
                            .not_null()
                            .check(Expr::col(Reservations::Quantity).gte(0)),
                    )
                    .col(
                        ColumnDef::new(Reservations::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("reservations_book")
                    .table(Reservations::Table)
                    .col(Reservations::BookId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }
}

/// Copies held for a borrow before its loan is stored (`HoldStock`): a reservation with a
/// `held_until` until the loan's `BookBorrowed` confirms it (null: confirmed, as every
/// reservation the saga makes).
struct AddStockHolds;

impl MigrationName for AddStockHolds {
    fn name(&self) -> &str {
        "m20261126_000001_add_stock_holds"
    }
}

#[sea_orm_migration::async_trait::async_trait]
impl MigrationTrait for AddStockHolds {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Reservations::Table)
                    .add_column(
                        ColumnDef::new(Reservations::HeldUntil)
                            .timestamp_with_time_zone()
                            .null(),
                    )
                    .to_owned(),
            )
            .await?;
        // SQLite adds one column a statement.
        manager
            .alter_table(
                Table::alter()
                    .table(Reservations::Table)
                    .add_column(ColumnDef::new(Reservations::UserId).string_len(128).null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("reservations_held_until")
                    .table(Reservations::Table)
                    .col(Reservations::HeldUntil)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }
}
