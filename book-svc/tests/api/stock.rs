//! book-svc's side of the saga: reservations and releases, once each, never below zero.
use futures::future::join_all;
use library_platform::bus::EventBus;
use library_platform::bus::EventEnvelope;
use library_platform::{CancellationToken, TaskTracker};
use library_proto::DomainEvent;
use library_proto::book::{
    CheckStockRequest, ConfirmHoldsRequest, CreateBookRequest, GetBookRequest, HoldStockRequest,
    ListExpiredHoldsRequest, ReleaseHoldRequest,
};
use library_proto::events::{BookBorrowed, BookReturned, LoanCanceled, StockReserved};
use prost::Message;

use crate::helpers::{App, spawn_app, spawn_app_on};

fn borrowed(book_id: &str, quantity: i32) -> BookBorrowed {
    BookBorrowed {
        event_id: uuid::Uuid::now_v7().to_string(),
        loan_id: uuid::Uuid::now_v7().to_string(),
        user_id: "reader".into(),
        book_id: book_id.into(),
        quantity,
        ..Default::default()
    }
}

fn returned(loan_id: &str, book_id: &str, quantity: i32) -> BookReturned {
    BookReturned {
        event_id: uuid::Uuid::now_v7().to_string(),
        loan_id: loan_id.into(),
        book_id: book_id.into(),
        quantity,
        ..Default::default()
    }
}

async fn book_with(app: &App, copies: i32) -> String {
    let request = CreateBookRequest {
        isbn: None,
        title: "Stock".into(),
        author: "Keeper".into(),
        total_copies: copies,
    };
    app.client().await.create_book(request).await.unwrap().into_inner().id
}

async fn available(app: &App, id: &str) -> i32 {
    app.client()
        .await
        .get_book(GetBookRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner()
        .available_copies
}

#[tokio::test]
async fn fifty_concurrent_reservations_of_one_copy_against_ten_reserve_exactly_ten() {
    let app = spawn_app().await;
    let id = book_with(&app, 10).await;
    let events: Vec<BookBorrowed> = (0..50).map(|_| borrowed(&id, 1)).collect();
    let outcomes = join_all(events.iter().map(|e| app.deliver(e))).await;
    assert!(outcomes.iter().all(Result::is_ok));
    assert_eq!(available(&app, &id).await, 0, "10 reserved, never below zero");

    // Each loan's copies come back once; then the shelf is full again.
    for event in &events {
        app.deliver(&returned(&event.loan_id, &id, 1)).await.unwrap();
    }
    assert_eq!(
        available(&app, &id).await,
        10,
        "only the 10 reserved loans released anything"
    );
}

#[tokio::test]
async fn the_same_event_delivered_twice_takes_effect_once() {
    let app = spawn_app().await;
    let id = book_with(&app, 5).await;
    let event = borrowed(&id, 2);
    for _ in 0..2 {
        app.deliver(&event).await.unwrap();
    }
    assert_eq!(available(&app, &id).await, 3);
    // Even under another event id, the same loan is not reserved twice: its reservation is
    // found by the loan's id.
    let replay = BookBorrowed {
        event_id: uuid::Uuid::now_v7().to_string(),
        ..event.clone()
    };
    app.deliver(&replay).await.unwrap();
    assert_eq!(available(&app, &id).await, 3);

    let returned = returned(&event.loan_id, &id, 2);
    for _ in 0..2 {
        app.deliver(&returned).await.unwrap();
    }
    assert_eq!(available(&app, &id).await, 5);
}

#[tokio::test]
async fn an_unknown_book_or_too_few_copies_answer_out_of_stock_without_touching_stock() {
    let app = spawn_app().await;
    let id = book_with(&app, 2).await;
    let too_many = borrowed(&id, 3);
    app.deliver(&too_many).await.unwrap();
    let unknown = borrowed(&uuid::Uuid::new_v4().to_string(), 1);
    app.deliver(&unknown).await.unwrap();
    assert_eq!(available(&app, &id).await, 2);
    // A cancellation of a loan that never held copies releases nothing.
    let canceled = LoanCanceled {
        event_id: uuid::Uuid::now_v7().to_string(),
        loan_id: too_many.loan_id.clone(),
        book_id: id.clone(),
        quantity: 3,
        ..Default::default()
    };
    app.deliver(&canceled).await.unwrap();
    assert_eq!(available(&app, &id).await, 2);
}

#[tokio::test]
async fn a_batch_serves_its_loans_first_come_first_served_per_book_and_only_those_release() {
    let app = spawn_app().await;
    let (popular, scarce) = (book_with(&app, 10).await, book_with(&app, 3).await);
    // One delivery batch, as a busy queue hands it over: two books interleaved, an unknown book,
    // a request too big that must not block the smaller ones after it, and a redelivery.
    let mut loans: Vec<BookBorrowed> = Vec::new();
    for n in 0..12 {
        loans.push(borrowed(&popular, 1));
        if n % 3 == 0 {
            loans.push(borrowed(&scarce, if n == 3 { 5 } else { 1 }));
        }
    }
    loans.push(borrowed(&uuid::Uuid::new_v4().to_string(), 1));
    let mut batch: Vec<_> = loans.iter().map(EventEnvelope::of).collect();
    batch.push(batch[0].clone());
    let outcomes = app.saga.apply_batch(&batch).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(available(&app, &popular).await, 0, "the first 10 of 12 are served");
    assert_eq!(available(&app, &scarce).await, 0, "1 + 1 + 1, the 5 between refused");

    // Releasing every loan gives back exactly what was reserved, and only once.
    let returns: Vec<_> = loans
        .iter()
        .map(|loan| EventEnvelope::of(&returned(&loan.loan_id, &loan.book_id, loan.quantity)))
        .collect();
    assert!(app.saga.apply_batch(&returns).await.iter().all(Result::is_ok));
    assert_eq!(available(&app, &popular).await, 10);
    assert_eq!(available(&app, &scarce).await, 3);
}

#[tokio::test]
async fn concurrent_stock_checks_each_answer_for_their_own_book_and_see_every_committed_change() {
    let app = spawn_app().await;
    let books = [book_with(&app, 3).await, book_with(&app, 7).await];
    let client = app.client().await;
    let check = |book_id: String, quantity: i32| {
        let mut client = client.clone();
        async move {
            client
                .check_stock(CheckStockRequest { book_id, quantity })
                .await
                .map(|reply| reply.into_inner())
        }
    };
    // Enough at once that many share a query.
    let replies = join_all((0..300).map(|n| check(books[n % 2].clone(), 1 + (n % 8) as i32))).await;
    for (n, reply) in replies.into_iter().enumerate() {
        let reply = reply.expect("checked");
        let (available, quantity) = ([3, 7][n % 2], 1 + (n % 8) as i32);
        assert_eq!(reply.available, available, "request {n}");
        assert_eq!(reply.sufficient, quantity <= available, "request {n}");
    }

    app.deliver(&borrowed(&books[0], 2)).await.unwrap();
    let reply = check(books[0].clone(), 1).await.expect("checked");
    assert_eq!(reply.available, 1, "a check after a commit sees it");

    let unknown = check(uuid::Uuid::new_v4().to_string(), 1).await;
    assert_eq!(unknown.expect_err("unknown book").code(), tonic::Code::NotFound);
}

fn hold(loan_id: &str, book_id: &str, quantity: i32) -> HoldStockRequest {
    HoldStockRequest {
        loan_id: loan_id.into(),
        user_id: "reader".into(),
        book_id: book_id.into(),
        quantity,
    }
}

/// The `BookBorrowed` of a loan stored ACTIVE on the copies held for it.
fn borrowed_on_hold(loan_id: &str, book_id: &str, quantity: i32) -> BookBorrowed {
    BookBorrowed {
        loan_id: loan_id.into(),
        stock_held: true,
        ..borrowed(book_id, quantity)
    }
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[tokio::test]
async fn a_hold_takes_copies_at_once_and_once_per_loan_and_only_an_unconfirmed_one_goes_back() {
    let app = spawn_app().await;
    let id = book_with(&app, 5).await;
    let mut client = app.client().await;
    let loan = new_id();
    let first = client.hold_stock(hold(&loan, &id, 2)).await.unwrap().into_inner();
    assert_eq!((first.held, first.available), (true, 3));
    let again = client.hold_stock(hold(&loan, &id, 2)).await.unwrap().into_inner();
    assert_eq!(
        (again.held, again.available),
        (true, 3),
        "a repeated hold takes nothing more"
    );
    let short = client.hold_stock(hold(&new_id(), &id, 4)).await.unwrap().into_inner();
    assert_eq!(
        (short.held, short.available),
        (false, 3),
        "too few copies: nothing held"
    );
    let unknown = client.hold_stock(hold(&new_id(), &new_id(), 1)).await;
    assert_eq!(unknown.expect_err("unknown book").code(), tonic::Code::NotFound);

    // The loan's BookBorrowed confirms the hold and takes nothing more; a confirmed hold is no
    // longer given back.
    app.deliver(&borrowed_on_hold(&loan, &id, 2)).await.unwrap();
    assert_eq!(available(&app, &id).await, 3);
    let releaser = client.clone();
    let release = |loan_id: String| {
        let mut client = releaser.clone();
        async move {
            let request = ReleaseHoldRequest { loan_id };
            client.release_hold(request).await.unwrap().into_inner().released
        }
    };
    assert_eq!(release(loan.clone()).await, 0);
    assert_eq!(available(&app, &id).await, 3);

    // A hold whose loan is never stored goes back once.
    let refused = new_id();
    client.hold_stock(hold(&refused, &id, 1)).await.unwrap();
    assert_eq!(available(&app, &id).await, 2);
    assert_eq!(release(refused.clone()).await, 1);
    assert_eq!(release(refused.clone()).await, 0);
    assert_eq!(available(&app, &id).await, 3);
    // A loan whose hold was settled (given back) before its BookBorrowed came takes nothing.
    app.deliver(&borrowed_on_hold(&refused, &id, 1)).await.unwrap();
    assert_eq!(available(&app, &id).await, 3);

    // Its loan's copies come back as any loan's.
    app.deliver(&returned(&loan, &id, 2)).await.unwrap();
    assert_eq!(available(&app, &id).await, 5);
}

#[tokio::test]
async fn holds_racing_for_the_last_copies_are_served_first_come_never_below_zero() {
    let app = spawn_app().await;
    let id = book_with(&app, 10).await;
    let client = app.client().await;
    let replies = join_all((0..50).map(|_| {
        let mut client = client.clone();
        let request = hold(&new_id(), &id, 1);
        async move { client.hold_stock(request).await.map(|reply| reply.into_inner()) }
    }))
    .await;
    let held = replies
        .iter()
        .filter(|reply| reply.as_ref().expect("answered").held)
        .count();
    assert_eq!(held, 10);
    assert_eq!(available(&app, &id).await, 0);
}

#[tokio::test]
async fn a_held_loan_stored_pending_hears_stock_reserved_without_taking_twice() {
    // In-process bus, so the test hears what the relay publishes.
    let bus = EventBus::in_process();
    let reserved = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
    let heard = reserved.clone();
    bus.listen(
        &[StockReserved::ROUTING_KEY],
        move |envelope| {
            if let Ok(event) = StockReserved::decode(envelope.payload.as_slice()) {
                heard.lock().expect("not poisoned").push(event.loan_id);
            }
        },
        &tracker,
        shutdown.clone(),
    );
    let app = spawn_app_on(bus).await;
    let id = book_with(&app, 4).await;
    let loan = new_id();
    app.client().await.hold_stock(hold(&loan, &id, 3)).await.unwrap();
    // borrow-svc did not hear the hold's answer (its deadline passed) and stored the loan PENDING.
    let stored = BookBorrowed {
        loan_id: loan.clone(),
        stock_held: false,
        ..borrowed(&id, 3)
    };
    app.deliver(&stored).await.unwrap();
    assert_eq!(available(&app, &id).await, 1, "the hold's copies, not taken again");
    let told = library_platform::test_support::eventually(std::time::Duration::from_secs(10), || async {
        reserved.lock().expect("not poisoned").contains(&loan)
    })
    .await;
    assert!(told, "StockReserved for the loan was published");
    shutdown.cancel();
}

#[tokio::test]
async fn expired_holds_are_listed_until_confirmed_or_released() {
    let app = spawn_app_on_with_ttl("0").await;
    let id = book_with(&app, 6).await;
    let mut client = app.client().await;
    let (kept, dropped) = (new_id(), new_id());
    client.hold_stock(hold(&kept, &id, 1)).await.unwrap();
    client.hold_stock(hold(&dropped, &id, 2)).await.unwrap();
    let expired = |client: &mut library_proto::book::book_service_client::BookServiceClient<_>| {
        let mut client = client.clone();
        async move {
            let holds = client
                .list_expired_holds(ListExpiredHoldsRequest { limit: 0 })
                .await
                .unwrap()
                .into_inner()
                .holds;
            holds
                .into_iter()
                .map(|hold| (hold.loan_id, hold.user_id, hold.quantity))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        expired(&mut client).await,
        [
            (kept.clone(), "reader".to_owned(), 1),
            (dropped.clone(), "reader".to_owned(), 2)
        ]
    );
    client
        .confirm_holds(ConfirmHoldsRequest {
            loan_ids: vec![kept.clone()],
        })
        .await
        .unwrap();
    client
        .release_hold(ReleaseHoldRequest {
            loan_id: dropped.clone(),
        })
        .await
        .unwrap();
    assert!(expired(&mut client).await.is_empty());
    assert_eq!(available(&app, &id).await, 5, "the confirmed hold keeps its copy");
    let too_many = client.list_expired_holds(ListExpiredHoldsRequest { limit: 1001 }).await;
    assert_eq!(too_many.expect_err("refused").code(), tonic::Code::InvalidArgument);
}

async fn spawn_app_on_with_ttl(ttl: &str) -> App {
    crate::helpers::spawn_app_with(&["--stock-hold-ttl", ttl]).await
}
