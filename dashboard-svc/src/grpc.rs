//! The `library.dashboard.v1.DashboardService` server.
use std::pin::Pin;

use futures::{Stream, StreamExt};
use library_platform::CancellationToken;
use library_platform::grpc::{internal, parse_user_id};
use library_proto::dashboard::dashboard_service_server::DashboardService;
use library_proto::dashboard::{Dashboard as DashboardMessage, GetDashboardRequest, WatchDashboardRequest};
use library_proto::events::DashboardUpdated;
use library_proto::time::to_timestamp;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tonic::{Request, Response, Status};

use crate::events::DashboardFeed;
use crate::projection::{Dashboard, Dashboards};

fn to_message(d: Dashboard) -> DashboardMessage {
    DashboardMessage {
        user_id: d.user_id,
        borrowed_count: d.borrowed_count,
        late_fee_total: d.late_fee_total,
        // Version 0 is the all-zero dashboard of a reader with no event: it never changed.
        updated_at: (d.version > 0).then(|| to_timestamp(d.updated_at)),
    }
}

/// The gRPC face of the read model.
pub struct DashboardGrpc {
    pub dashboards: Dashboards,
    pub feed: DashboardFeed,
    /// Ends open watch streams when the server stops, so the drain does not wait on them.
    pub shutdown: CancellationToken,
}

type DashboardStream = Pin<Box<dyn Stream<Item = Result<DashboardMessage, Status>> + Send>>;

#[tonic::async_trait]
impl DashboardService for DashboardGrpc {
    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn get_dashboard(&self, request: Request<GetDashboardRequest>) -> Result<Response<DashboardMessage>, Status> {
        let user = parse_user_id(&request.get_ref().user_id)?.to_owned();
        let dashboard = self
            .dashboards
            .get(&user)
            .await
            .map_err(|e| internal("reading a dashboard", &e))?;
        Ok(Response::new(to_message(dashboard)))
    }

    type WatchDashboardStream = DashboardStream;

    #[tracing::instrument(skip_all, fields(user_id = %request.get_ref().user_id))]
    async fn watch_dashboard(
        &self,
        request: Request<WatchDashboardRequest>,
    ) -> Result<Response<Self::WatchDashboardStream>, Status> {
        let user = parse_user_id(&request.get_ref().user_id)?.to_owned();
        // Subscribe before reading, so no change between the read and the subscription is missed.
        let changes = BroadcastStream::new(self.feed.subscribe());
        let current = self
            .dashboards
            .get(&user)
            .await
            .map_err(|e| internal("reading a dashboard", &e))?;
        let dashboards = self.dashboards.clone();
        // Updates reach this replica in any order and may repeat what was read: only a newer
        // version goes out.
        let mut last_version = current.version;
        let updates = changes
            .then(move |change| {
                let dashboards = dashboards.clone();
                let user = user.clone();
                async move {
                    match change {
                        Ok(update) if update.user_id == user => Some(Ok(update)),
                        Ok(_) => None,
                        // Fell behind: the stored value is the truth.
                        Err(BroadcastStreamRecvError::Lagged(_)) => {
                            Some(dashboards.get(&user).await.map(|d| DashboardUpdated {
                                event_id: String::new(),
                                occurred_at: Some(to_timestamp(d.updated_at)),
                                user_id: d.user_id,
                                borrowed_count: d.borrowed_count,
                                late_fee_total: d.late_fee_total,
                                version: d.version,
                            }))
                        }
                    }
                }
            })
            .filter_map(move |update| {
                let fresh = match update {
                    Some(Ok(update)) if update.version > last_version => {
                        last_version = update.version;
                        Some(Ok(DashboardMessage {
                            user_id: update.user_id,
                            borrowed_count: update.borrowed_count,
                            late_fee_total: update.late_fee_total,
                            updated_at: update.occurred_at,
                        }))
                    }
                    Some(Err(e)) => Some(Err(internal("reading a dashboard", &e))),
                    _ => None,
                };
                futures::future::ready(fresh)
            });
        let stream = futures::stream::once(futures::future::ready(Ok(to_message(current))))
            .chain(updates)
            .take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }
}
