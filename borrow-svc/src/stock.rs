//! The synchronous guard of a borrow: ask book-svc to hold the copies for the loan about to be
//! stored, with a deadline and a circuit breaker, and tell "no" apart from "cannot know". A
//! held loan is stored ACTIVE; its `BookBorrowed` confirms the hold. A hold whose loan is not
//! stored after all (refused by the reader's limit, or a repeated idempotency key) is given
//! back at once; book-svc gives back any hold left unconfirmed for longer than its lifetime.
use std::time::Duration;

use library_platform::grpc::{GuardedChannel, request};
use library_proto::book::book_service_client::BookServiceClient;
use library_proto::book::{ConfirmHoldsRequest, Hold, HoldStockRequest, ListExpiredHoldsRequest, ReleaseHoldRequest};
use tonic::Code;

/// What book-svc said about a borrow's copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockHold {
    /// The copies are off the shelf, held for the loan.
    Held,
    Insufficient {
        available: i32,
    },
    UnknownBook,
    /// book-svc is down, slow or its circuit is open: the loan is stored PENDING and the saga
    /// decides (and confirms a hold made after all, by the loan's id).
    Unavailable,
}

/// A client of `BookService`'s holds.
#[derive(Clone)]
pub struct StockGuard {
    client: BookServiceClient<GuardedChannel>,
    deadline: Duration,
}

impl StockGuard {
    pub fn new(channel: GuardedChannel, deadline: Duration) -> Self {
        Self {
            client: BookServiceClient::new(channel),
            deadline,
        }
    }

    /// Holds `quantity` copies of `book_id` for the loan `loan_id` of `user_id` about to be
    /// stored.
    pub async fn hold(&self, loan_id: &str, user_id: &str, book_id: &str, quantity: i32) -> StockHold {
        let mut client = self.client.clone();
        let call = HoldStockRequest {
            loan_id: loan_id.to_owned(),
            user_id: user_id.to_owned(),
            book_id: book_id.to_owned(),
            quantity,
        };
        match client.hold_stock(request(call, self.deadline)).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                if reply.held {
                    StockHold::Held
                } else {
                    StockHold::Insufficient {
                        available: reply.available,
                    }
                }
            }
            Err(status) if status.code() == Code::NotFound => StockHold::UnknownBook,
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "stock hold impossible; borrowing degraded to the saga");
                StockHold::Unavailable
            }
        }
    }

    /// Gives back the hold of `loan_id`, whose loan will never be stored, in the background: a
    /// failure only leaves the copies held until the hold expires and is settled.
    pub fn release_in_background(&self, loan_id: String) {
        let guard = self.clone();
        tokio::spawn(async move {
            if let Err(status) = guard.release(&loan_id).await {
                tracing::warn!(%loan_id, code = ?status.code(), message = status.message(), "cannot release a hold; it is settled once it expires");
            }
        });
    }

    /// Gives back the hold of `loan_id`, whose loan will never be stored.
    ///
    /// # Errors
    /// book-svc did not answer.
    pub async fn release(&self, loan_id: &str) -> Result<(), tonic::Status> {
        let call = ReleaseHoldRequest {
            loan_id: loan_id.to_owned(),
        };
        self.client.clone().release_hold(request(call, self.deadline)).await?;
        Ok(())
    }

    /// Up to `limit` holds still unconfirmed after their lifetime.
    ///
    /// # Errors
    /// book-svc did not answer.
    pub async fn expired_holds(&self, limit: i32) -> Result<Vec<Hold>, tonic::Status> {
        let call = ListExpiredHoldsRequest { limit };
        let reply = self
            .client
            .clone()
            .list_expired_holds(request(call, self.deadline))
            .await?;
        Ok(reply.into_inner().holds)
    }

    /// Confirms the holds of loans that exist.
    ///
    /// # Errors
    /// book-svc did not answer.
    pub async fn confirm(&self, loan_ids: Vec<String>) -> Result<(), tonic::Status> {
        if loan_ids.is_empty() {
            return Ok(());
        }
        let call = ConfirmHoldsRequest { loan_ids };
        self.client.clone().confirm_holds(request(call, self.deadline)).await?;
        Ok(())
    }
}
