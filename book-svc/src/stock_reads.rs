//! `CheckStock` is the hottest read of the catalogue, and most of its callers at any moment ask
//! about the same few books. Reads that arrive together share one `WHERE id IN (…)` query
//! ([`Batches`]), so a read always sees the stock as it was at its arrival or later.
use std::collections::HashMap;

use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect};

use crate::batches::{BatchHandler, Batches};
use crate::store::books;

/// Queries that may run at once; more would only queue on the pool.
const READERS: usize = 4;
/// Requests answered by one query at most.
const MAX_BATCH: usize = 256;

/// Available copies of books, read in shared queries.
#[derive(Clone)]
pub struct StockReads {
    batches: Batches<ReadStock>,
}

impl StockReads {
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            batches: Batches::new(ReadStock { db }, READERS, MAX_BATCH),
        }
    }

    /// The copies of `book_id` on the shelf, `None` for an unknown book.
    ///
    /// # Errors
    /// The query failed.
    pub async fn available(&self, book_id: &str) -> Result<Option<i32>, DbErr> {
        self.batches.call(book_id.to_owned()).await
    }
}

#[derive(Clone)]
struct ReadStock {
    db: DatabaseConnection,
}

impl BatchHandler for ReadStock {
    type Request = String;
    type Answer = Option<i32>;

    async fn handle(&self, book_ids: &[String]) -> Result<Vec<Option<i32>>, DbErr> {
        let mut ids: Vec<&str> = book_ids.iter().map(String::as_str).collect();
        ids.sort_unstable();
        ids.dedup();
        let available: HashMap<String, i32> = books::Entity::find()
            .select_only()
            .columns([books::Column::Id, books::Column::AvailableCopies])
            .filter(books::Column::Id.is_in(ids))
            .into_tuple::<(String, i32)>()
            .all(&self.db)
            .await?
            .into_iter()
            .collect();
        Ok(book_ids.iter().map(|id| available.get(id).copied()).collect())
    }
}
