//! What dashboard-svc consumes (the CQRS feed) and listens to (its own updates, for the watch
//! streams of every replica).
use library_platform::bus::{EventBus, Subscriptions};
use library_platform::{CancellationToken, TaskTracker};
use library_proto::DomainEvent;
use library_proto::events::{BookBorrowed, BookReturned, DashboardUpdated, LateFeeCharged, LoanCanceled};
use prost::Message;
use tokio::sync::broadcast;

use crate::projection::{Change, Dashboards};

/// The durable queue of the projection.
pub const PROJECTION_QUEUE: &str = "dashboard-svc.projection";

/// Every event dashboard-svc consumes, in one place: copies borrowed count up until they are
/// returned or the loan is canceled; fees add up.
pub fn subscriptions(dashboards: Dashboards) -> Subscriptions {
    let subscriptions = dashboards.subscriptions("dashboard-svc");
    let subscriptions = project(subscriptions, &dashboards, |e: &BookBorrowed| {
        (e.user_id.clone(), copies(e.quantity))
    });
    let subscriptions = project(subscriptions, &dashboards, |e: &LoanCanceled| {
        (e.user_id.clone(), copies(-e.quantity))
    });
    let subscriptions = project(subscriptions, &dashboards, |e: &BookReturned| {
        (e.user_id.clone(), copies(-e.quantity))
    });
    project(subscriptions, &dashboards, |e: &LateFeeCharged| {
        (
            e.user_id.clone(),
            Change {
                borrowed: 0,
                late_fee: e.amount,
            },
        )
    })
}

fn copies(n: i32) -> Change {
    Change {
        borrowed: n,
        late_fee: 0,
    }
}

/// Handles `E` by applying the change it means to its reader's dashboard, a run at a time.
fn project<E: DomainEvent>(
    subscriptions: Subscriptions,
    dashboards: &Dashboards,
    change_of: fn(&E) -> (String, Change),
) -> Subscriptions {
    let dashboards = dashboards.clone();
    subscriptions.on_batch::<E, _>(move |run, txn| {
        let dashboards = dashboards.clone();
        let changes = run.iter().map(|(event, _)| change_of(event)).collect();
        Box::pin(async move { dashboards.apply(txn, changes).await })
    })
}

/// Dashboard changes on this replica, from every replica.
#[derive(Clone)]
pub struct DashboardFeed {
    sender: broadcast::Sender<DashboardUpdated>,
}

impl DashboardFeed {
    /// Listens for `DashboardUpdated` on the bus (a private queue per replica) until `shutdown`.
    pub fn start(bus: &EventBus, tracker: &TaskTracker, shutdown: CancellationToken) -> Self {
        let (sender, _) = broadcast::channel(4096);
        let feed = sender.clone();
        bus.listen(
            &[DashboardUpdated::ROUTING_KEY],
            move |envelope| {
                if let Ok(update) = DashboardUpdated::decode(envelope.payload.as_slice()) {
                    let _ = feed.send(update);
                }
            },
            tracker,
            shutdown,
        );
        Self { sender }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<DashboardUpdated> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use library_platform::bus::Outbox;

    #[test]
    fn consumes_exactly_what_the_contract_declares() {
        let mut keys = subscriptions(Dashboards::new(Default::default(), Outbox::default())).routing_keys();
        keys.sort();
        assert_eq!(keys, library_proto::routing_keys_of(PROJECTION_QUEUE));
    }
}
