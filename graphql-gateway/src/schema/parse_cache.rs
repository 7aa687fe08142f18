//! Front ends send the same few queries over and over, and parsing one was a noticeable share of
//! the gateway's work per request. Parsed documents are kept by query text, least recently used out
//! first; validation (depth and complexity limits included) and execution still run for every
//! request, with its own variables. A document is checked against the gateway's own bounds
//! ([`super::limits`]) once, when it is parsed: only documents within them are kept.
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, PoisonError};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{ServerError, ServerResult, Variables};
use lru::LruCache;

/// Distinct queries kept.
const CAPACITY: NonZeroUsize = NonZeroUsize::new(256).unwrap();
/// Longer queries are parsed every time, so the cache stays a few megabytes at most.
const MAX_CACHED_LEN: usize = 4096;

type Documents = Arc<Mutex<LruCache<String, ExecutableDocument>>>;

/// The extension to register on the schema; its cache is shared by every request.
pub struct ParseCache {
    documents: Documents,
}

impl ParseCache {
    pub fn new() -> Self {
        Self {
            documents: Arc::new(Mutex::new(LruCache::new(CAPACITY))),
        }
    }
}

impl ExtensionFactory for ParseCache {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(CachedParse {
            documents: self.documents.clone(),
        })
    }
}

struct CachedParse {
    documents: Documents,
}

#[async_trait::async_trait]
impl Extension for CachedParse {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        // A poisoned lock only means another request panicked mid-update of a cache entry.
        let cached = self
            .documents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(query)
            .cloned();
        if let Some(document) = cached {
            return Ok(document);
        }
        let document = next.run(ctx, query, variables).await?;
        super::limits::check(&document).map_err(|exceeded| ServerError::new(exceeded.to_string(), None))?;
        if query.len() <= MAX_CACHED_LEN {
            self.documents
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .put(query.to_owned(), document.clone());
        }
        Ok(document)
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::{EmptyMutation, EmptySubscription, Object, Request, Schema};
    use serde_json::json;

    use super::*;

    struct Query;

    #[Object]
    impl Query {
        async fn echo(&self, text: String) -> String {
            text
        }

        async fn nested(&self) -> Query {
            Query
        }
    }

    fn schema() -> Schema<Query, EmptyMutation, EmptySubscription> {
        Schema::build(Query, EmptyMutation, EmptySubscription)
            .limit_depth(3)
            .extension(ParseCache::new())
            .finish()
    }

    #[tokio::test]
    async fn a_cached_query_runs_with_each_requests_own_variables() {
        let schema = schema();
        for text in ["first", "second", "first"] {
            let request = Request::new("query($t: String!) { echo(text: $t) }")
                .variables(Variables::from_json(json!({ "t": text })));
            let response = schema.execute(request).await;
            assert!(response.errors.is_empty(), "{:?}", response.errors);
            assert_eq!(response.data.into_json().unwrap(), json!({ "echo": text }));
        }
    }

    #[tokio::test]
    async fn limits_and_syntax_errors_hold_on_every_request() {
        let schema = schema();
        let too_deep = r#"{ nested { nested { nested { nested { echo(text: "x") } } } } }"#;
        for query in [too_deep, too_deep, "{ echo(", "{ echo("] {
            let response = schema.execute(query).await;
            assert!(!response.errors.is_empty(), "{query} was accepted");
        }
    }
}
