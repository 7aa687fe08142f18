//! Each event counts once, in whatever order the events arrive; watchers see every change.
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use library_platform::bus::EventEnvelope;
use library_proto::dashboard::{GetDashboardRequest, WatchDashboardRequest};
use library_proto::events::{BookBorrowed, BookReturned, LateFeeCharged};
use library_proto::time::from_timestamp;

use crate::helpers::{App, id, spawn_app};

async fn dashboard(app: &App, user: &str) -> (i32, i64) {
    let d = app
        .client()
        .await
        .get_dashboard(GetDashboardRequest { user_id: user.into() })
        .await
        .unwrap()
        .into_inner();
    (d.borrowed_count, d.late_fee_total)
}

fn borrowed(user: &str, quantity: i32) -> BookBorrowed {
    BookBorrowed {
        event_id: id(),
        user_id: user.into(),
        loan_id: id(),
        quantity,
        ..Default::default()
    }
}

fn returned(user: &str, quantity: i32) -> BookReturned {
    BookReturned {
        event_id: id(),
        user_id: user.into(),
        quantity,
        ..Default::default()
    }
}

fn charged(user: &str, amount: i64) -> LateFeeCharged {
    LateFeeCharged {
        event_id: id(),
        user_id: user.into(),
        amount,
        ..Default::default()
    }
}

#[tokio::test]
async fn the_seeds_example_borrow_4_return_3_with_a_500_fee_shows_1_and_500() {
    let app = spawn_app().await;
    assert_eq!(
        dashboard(&app, "ana").await,
        (0, 0),
        "a reader with no event has an all-zero dashboard"
    );
    app.deliver(&borrowed("ana", 4)).await;
    app.deliver(&returned("ana", 3)).await;
    app.deliver(&charged("ana", 500)).await;
    assert_eq!(dashboard(&app, "ana").await, (1, 500));
}

#[tokio::test]
async fn a_dashboard_says_when_it_last_changed_and_nothing_before_its_first_event() {
    let app = spawn_app().await;
    let read = || async {
        app.client()
            .await
            .get_dashboard(GetDashboardRequest { user_id: "cy".into() })
            .await
            .unwrap()
            .into_inner()
            .updated_at
    };
    assert_eq!(read().await, None, "a reader with no event: no time");
    let before = Utc::now();
    app.deliver(&borrowed("cy", 1)).await;
    let after = Utc::now();
    let changed = read()
        .await
        .as_ref()
        .and_then(from_timestamp)
        .expect("a time once changed");
    assert!(
        before <= changed && changed <= after,
        "{changed} is not between {before} and {after}"
    );
}

#[tokio::test]
async fn an_event_applied_twice_counts_once_and_order_does_not_matter() {
    let app = spawn_app().await;
    let (borrow, back, fee) = (borrowed("bo", 2), returned("bo", 2), charged("bo", 1000));
    // The return and its fee arrive before the borrow, and each is delivered twice.
    app.deliver(&back).await;
    app.deliver(&fee).await;
    app.deliver(&back).await;
    app.deliver(&borrow).await;
    app.deliver(&fee).await;
    app.deliver(&borrow).await;
    assert_eq!(dashboard(&app, "bo").await, (0, 1000));
}

#[tokio::test]
async fn a_batch_with_several_events_of_one_reader_counts_each_once() {
    let app = spawn_app().await;
    // One delivery batch as a busy queue hands it over: runs of one type, one reader several
    // times in a run, another reader between, and a redelivery inside the batch.
    let first = borrowed("cy", 1);
    let batch: Vec<EventEnvelope> = vec![
        EventEnvelope::of(&first),
        EventEnvelope::of(&borrowed("cy", 2)),
        EventEnvelope::of(&borrowed("di", 3)),
        EventEnvelope::of(&first),
        EventEnvelope::of(&borrowed("cy", 4)),
        EventEnvelope::of(&returned("cy", 2)),
        EventEnvelope::of(&charged("cy", 500)),
        EventEnvelope::of(&charged("cy", 1000)),
        EventEnvelope::of(&returned("di", 1)),
    ];
    let outcomes = app.projection.apply_batch(&batch).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(dashboard(&app, "cy").await, (5, 1500));
    assert_eq!(dashboard(&app, "di").await, (2, 0));
}

#[tokio::test]
async fn a_watcher_gets_the_current_value_then_each_change() {
    let app = spawn_app().await;
    app.deliver(&borrowed("cy", 1)).await;
    let mut stream = app
        .client()
        .await
        .watch_dashboard(WatchDashboardRequest { user_id: "cy".into() })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.expect("current value").unwrap();
    assert_eq!(first.borrowed_count, 1);
    app.deliver(&borrowed("dan", 9)).await;
    app.deliver(&borrowed("cy", 2)).await;
    let next = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("a change arrives")
        .expect("stream open")
        .unwrap();
    assert_eq!(
        (next.user_id.as_str(), next.borrowed_count),
        ("cy", 3),
        "only this reader's changes, newest"
    );
}
