//! `CheckStock` is the synchronous guard of every borrow, so it is the hottest read of the
//! system, and most of its callers at any moment ask about the same few books. Reads that arrive
//! together share one query: a few readers take whatever requests are waiting and answer them all
//! from one `WHERE id IN (…)`. A request that arrives while a query runs waits for the next one,
//! never joins a query that started before it, so it always sees the stock as it was at its
//! arrival or later. With nothing else waiting, a read is one query, as before.
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect};
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::store::books;

/// Queries that may run at once; more would only queue on the pool.
const READERS: usize = 4;
/// Requests answered by one query at most.
const MAX_BATCH: usize = 256;

type Answer = Result<Option<i32>, Arc<DbErr>>;

struct Request {
    book_id: String,
    reply: oneshot::Sender<Answer>,
}

/// Available copies of books, read in shared queries.
#[derive(Clone)]
pub struct StockReads {
    db: DatabaseConnection,
    /// Made on first use, when a runtime is sure to be there; the readers stop when the last
    /// clone is dropped.
    queue: Arc<OnceLock<mpsc::Sender<Request>>>,
}

impl StockReads {
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            queue: Arc::default(),
        }
    }

    /// The copies of `book_id` on the shelf, `None` for an unknown book.
    ///
    /// # Errors
    /// The query failed.
    pub async fn available(&self, book_id: &str) -> Result<Option<i32>, DbErr> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            book_id: book_id.to_owned(),
            reply,
        };
        let stopped = || DbErr::Custom("the stock readers stopped".into());
        self.queue().send(request).await.map_err(|_| stopped())?;
        answer
            .await
            .map_err(|_| stopped())?
            .map_err(|shared| DbErr::Custom(shared.to_string()))
    }

    fn queue(&self) -> &mpsc::Sender<Request> {
        self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(MAX_BATCH * READERS);
            let receiver = Arc::new(Mutex::new(receiver));
            for _ in 0..READERS {
                tokio::spawn(read_batches(self.db.clone(), receiver.clone()));
            }
            sender
        })
    }
}

/// One reader: takes every waiting request (up to `MAX_BATCH`), answers them with one query,
/// again until the queue closes.
async fn read_batches(db: DatabaseConnection, queue: Arc<Mutex<mpsc::Receiver<Request>>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        {
            let mut queue = queue.lock().await;
            if queue.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
        }
        let mut ids: Vec<&str> = batch.iter().map(|r| r.book_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let found: Result<HashMap<String, i32>, DbErr> = books::Entity::find()
            .select_only()
            .columns([books::Column::Id, books::Column::AvailableCopies])
            .filter(books::Column::Id.is_in(ids))
            .into_tuple::<(String, i32)>()
            .all(&db)
            .await
            .map(|rows| rows.into_iter().collect());
        match found {
            Ok(available) => {
                for request in batch.drain(..) {
                    let _ = request.reply.send(Ok(available.get(&request.book_id).copied()));
                }
            }
            Err(error) => {
                let error = Arc::new(error);
                for request in batch.drain(..) {
                    let _ = request.reply.send(Err(error.clone()));
                }
            }
        }
    }
}
