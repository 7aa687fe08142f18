//! The `reservations` table: the copies each loan holds (or, until confirmed, each borrow about
//! to be stored holds). Keyed by loan id, so reserving twice for
//! one loan is impossible; `quantity` falls as copies come back.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "reservations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub loan_id: String,
    pub book_id: String,
    /// Copies still held by the loan.
    pub quantity: i32,
    pub created_at: DateTimeUtc,
    /// Until when an unconfirmed hold (`HoldStock`) keeps its copies; `None` once the loan's
    /// `BookBorrowed` confirmed it, and for every reservation the saga makes.
    pub held_until: Option<DateTimeUtc>,
    /// The reader of a hold's loan (holds only).
    pub user_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
