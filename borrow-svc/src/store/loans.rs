//! The `loans` table: one row a borrow, with what has come back and what it was charged.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "loans")]
pub struct Model {
    /// UUIDv7: ordering by id is ordering by creation.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub user_id: String,
    pub book_id: String,
    pub quantity: i32,
    pub returned_quantity: i32,
    /// PENDING, ACTIVE, RETURNED or CANCELED (`domain::LoanStatus`).
    pub status: String,
    pub borrowed_at: DateTimeUtc,
    pub due_at: DateTimeUtc,
    /// Won charged over the loan's returns.
    pub late_fee: i64,
    pub cancel_reason: Option<String>,
    /// The client's request id; unique per reader.
    pub idempotency_key: Option<String>,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
