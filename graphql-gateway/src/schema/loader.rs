//! Batches `Loan.book` lookups: one `BatchGetBooks` call per request, not one per loan.
use std::collections::HashMap;
use std::sync::Arc;

use library_proto::book::BatchGetBooksRequest;

use super::types::Book;
use crate::downstream::Downstreams;
use crate::error::GatewayError;

pub struct BookLoader {
    pub downstreams: Arc<Downstreams>,
}

impl async_graphql::dataloader::Loader<String> for BookLoader {
    type Value = Book;
    type Error = GatewayError;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, Book>, GatewayError> {
        let book = &self.downstreams.book;
        let request = book.request(BatchGetBooksRequest { ids: keys.to_vec() });
        let reply = book
            .call("BatchGetBooks", |mut c| async move { c.batch_get_books(request).await })
            .await?;
        Ok(reply.books.into_iter().map(|b| (b.id.clone(), Book::from(b))).collect())
    }
}
