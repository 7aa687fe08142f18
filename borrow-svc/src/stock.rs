//! The synchronous guard of a borrow: ask book-svc whether the stock covers it, with a deadline
//! and a circuit breaker, and tell "no" apart from "cannot know".
use std::time::Duration;

use library_platform::grpc::{GuardedChannel, request};
use library_proto::book::CheckStockRequest;
use library_proto::book::book_service_client::BookServiceClient;
use tonic::Code;

/// What book-svc said about a borrow's stock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockCheck {
    Sufficient,
    Insufficient {
        available: i32,
    },
    UnknownBook,
    /// book-svc is down, slow or its circuit is open: the saga will decide.
    Unavailable,
}

/// A client of `BookService.CheckStock`.
#[derive(Clone)]
pub struct StockChecker {
    client: BookServiceClient<GuardedChannel>,
    deadline: Duration,
}

impl StockChecker {
    pub fn new(channel: GuardedChannel, deadline: Duration) -> Self {
        Self {
            client: BookServiceClient::new(channel),
            deadline,
        }
    }

    pub async fn check(&self, book_id: &str, quantity: i32) -> StockCheck {
        let mut client = self.client.clone();
        let call = CheckStockRequest {
            book_id: book_id.to_owned(),
            quantity,
        };
        match client.check_stock(request(call, self.deadline)).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                if reply.sufficient {
                    StockCheck::Sufficient
                } else {
                    StockCheck::Insufficient {
                        available: reply.available,
                    }
                }
            }
            Err(status) if status.code() == Code::NotFound => StockCheck::UnknownBook,
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "stock check impossible; borrowing degraded to the saga");
                StockCheck::Unavailable
            }
        }
    }
}
