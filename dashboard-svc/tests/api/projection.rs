//! Each event counts once, in whatever order the events arrive; watchers see every change.
use std::time::Duration;

use futures::StreamExt;
use library_proto::dashboard::{GetDashboardRequest, WatchDashboardRequest};

use crate::helpers::{delivery, spawn_app};
use dashboard_svc::Change;

async fn dashboard(app: &crate::helpers::App, user: &str) -> (i32, i64) {
    let d = app
        .client()
        .await
        .get_dashboard(GetDashboardRequest { user_id: user.into() })
        .await
        .unwrap()
        .into_inner();
    (d.borrowed_count, d.late_fee_total)
}

#[tokio::test]
async fn the_seeds_example_borrow_4_return_3_with_a_500_fee_shows_1_and_500() {
    let app = spawn_app().await;
    assert_eq!(
        dashboard(&app, "ana").await,
        (0, 0),
        "a reader with no event has an all-zero dashboard"
    );
    app.dashboards
        .apply(
            "ana",
            Change {
                borrowed: 4,
                late_fee: 0,
            },
            delivery(),
        )
        .await
        .unwrap();
    app.dashboards
        .apply(
            "ana",
            Change {
                borrowed: -3,
                late_fee: 0,
            },
            delivery(),
        )
        .await
        .unwrap();
    app.dashboards
        .apply(
            "ana",
            Change {
                borrowed: 0,
                late_fee: 500,
            },
            delivery(),
        )
        .await
        .unwrap();
    assert_eq!(dashboard(&app, "ana").await, (1, 500));
}

#[tokio::test]
async fn an_event_applied_twice_counts_once_and_order_does_not_matter() {
    let app = spawn_app().await;
    let borrowed = delivery();
    let returned = delivery();
    // The return arrives before the borrow, and each is delivered twice.
    for meta in [&returned, &returned, &borrowed, &borrowed] {
        let change = if meta.event_id == borrowed.event_id {
            Change {
                borrowed: 2,
                late_fee: 0,
            }
        } else {
            Change {
                borrowed: -2,
                late_fee: 1000,
            }
        };
        app.dashboards.apply("bo", change, meta.clone()).await.unwrap();
    }
    assert_eq!(dashboard(&app, "bo").await, (0, 1000));
}

#[tokio::test]
async fn a_watcher_gets_the_current_value_then_each_change() {
    let app = spawn_app().await;
    app.dashboards
        .apply(
            "cy",
            Change {
                borrowed: 1,
                late_fee: 0,
            },
            delivery(),
        )
        .await
        .unwrap();
    let mut stream = app
        .client()
        .await
        .watch_dashboard(WatchDashboardRequest { user_id: "cy".into() })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.expect("current value").unwrap();
    assert_eq!(first.borrowed_count, 1);
    app.dashboards
        .apply(
            "dan",
            Change {
                borrowed: 9,
                late_fee: 0,
            },
            delivery(),
        )
        .await
        .unwrap();
    app.dashboards
        .apply(
            "cy",
            Change {
                borrowed: 2,
                late_fee: 0,
            },
            delivery(),
        )
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("a change arrives")
        .expect("stream open")
        .unwrap();
    assert_eq!(
        (next.user_id.as_str(), next.borrowed_count),
        ("cy", 3),
        "only this reader's changes"
    );
}
