//! Calls to the services behind the gateway: each with a deadline, behind a circuit breaker
//! (the channel), and within a concurrency budget — when the budget is spent the call is shed
//! with SERVICE_BUSY at once instead of queueing without bound.
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use library_platform::grpc::{GuardedChannel, request};
use library_proto::book::book_service_client::BookServiceClient;
use library_proto::borrow::borrow_service_client::BorrowServiceClient;
use library_proto::dashboard::dashboard_service_client::DashboardServiceClient;
use tokio::sync::Semaphore;
use tonic::{Response, Status};

use crate::error::GatewayError;

/// How long a call may wait for a free slot before it is shed.
const QUEUE_WAIT: Duration = Duration::from_millis(50);

/// One downstream service.
#[derive(Clone)]
pub struct Downstream<C> {
    name: &'static str,
    client: C,
    /// Calls in flight at most; the rest are shed.
    permits: Arc<Semaphore>,
    deadline: Duration,
}

impl<C: Clone> Downstream<C> {
    pub fn new(name: &'static str, client: C, concurrency: usize, deadline: Duration) -> Self {
        Self {
            name,
            client,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            deadline,
        }
    }

    /// A request with this downstream's deadline and the current trace context.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        request(message, self.deadline)
    }

    /// Calls `method` within the concurrency budget and maps its failure.
    ///
    /// # Errors
    /// SERVICE_BUSY when the budget is spent, or the call's mapped failure.
    pub async fn call<T, F, Fut>(&self, method: &'static str, call: F) -> Result<T, GatewayError>
    where
        F: FnOnce(C) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        let Ok(Ok(_permit)) = tokio::time::timeout(QUEUE_WAIT, self.permits.acquire()).await else {
            metrics::counter!("grpc_client_requests_total", "service" => self.name, "method" => method, "code" => "Shed")
                .increment(1);
            return Err(GatewayError::ServiceBusy(self.name));
        };
        let started = Instant::now();
        let result = call(self.client.clone()).await;
        let code = match &result {
            Ok(_) => "Ok".to_owned(),
            Err(status) => format!("{:?}", status.code()),
        };
        metrics::counter!("grpc_client_requests_total", "service" => self.name, "method" => method, "code" => code)
            .increment(1);
        metrics::histogram!("grpc_client_request_duration_seconds", "service" => self.name, "method" => method)
            .record(started.elapsed().as_secs_f64());
        result
            .map(Response::into_inner)
            .map_err(|status| GatewayError::from_status(self.name, &status))
    }

    /// Opens a server stream (subscriptions): not counted against the budget, since it lives as
    /// long as the subscription.
    ///
    /// # Errors
    /// The stream could not be opened.
    pub async fn open_stream<T, F, Fut>(&self, call: F) -> Result<T, GatewayError>
    where
        F: FnOnce(C) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        call(self.client.clone())
            .await
            .map(Response::into_inner)
            .map_err(|status| GatewayError::from_status(self.name, &status))
    }

    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// The three services behind the gateway.
#[derive(Clone)]
pub struct Downstreams {
    pub book: Downstream<BookServiceClient<GuardedChannel>>,
    pub borrow: Downstream<BorrowServiceClient<GuardedChannel>>,
    pub dashboard: Downstream<DashboardServiceClient<GuardedChannel>>,
}
