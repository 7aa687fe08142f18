//! Registering, editing, listing and removing books through gRPC.
use library_proto::book::{
    CheckStockRequest, CreateBookRequest, DeleteBookRequest, GetBookRequest, ListBooksRequest, UpdateBookRequest,
};
use library_proto::events::BookBorrowed;
use tonic::Code;

use crate::helpers::spawn_app;

fn create(title: &str, author: &str, copies: i32) -> CreateBookRequest {
    CreateBookRequest {
        isbn: None,
        title: title.into(),
        author: author.into(),
        total_copies: copies,
    }
}

#[tokio::test]
async fn a_registered_book_can_be_read_edited_and_removed() {
    let app = spawn_app().await;
    let mut client = app.client().await;
    let mut request = create("  Dune ", "Frank Herbert", 3);
    request.isbn = Some("978-0-306-40615-7".into());
    let book = client.create_book(request).await.unwrap().into_inner();
    assert_eq!(
        (book.title.as_str(), book.isbn.as_deref(), book.available_copies),
        ("Dune", Some("9780306406157"), 3)
    );

    let edited = client
        .update_book(UpdateBookRequest {
            id: book.id.clone(),
            title: Some("Dune Messiah".into()),
            total_copies: Some(5),
            isbn: Some(String::new()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            edited.title.as_str(),
            edited.total_copies,
            edited.available_copies,
            edited.isbn
        ),
        ("Dune Messiah", 5, 5, None)
    );

    client
        .delete_book(DeleteBookRequest { id: book.id.clone() })
        .await
        .unwrap();
    let gone = client.get_book(GetBookRequest { id: book.id }).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test]
async fn malformed_requests_name_the_field() {
    let app = spawn_app().await;
    let mut client = app.client().await;
    let cases = [
        (create("", "A", 1), "title"),
        (create("T", " ", 1), "author"),
        (create("T", "A", -1), "totalCopies"),
        (create("T", "A", 100_001), "totalCopies"),
        (
            CreateBookRequest {
                isbn: Some("9780306406158".into()),
                ..create("T", "A", 1)
            },
            "isbn",
        ),
    ];
    for (request, field) in cases {
        let status = client.create_book(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with(field), "{field}: {}", status.message());
    }
    let status = client.get_book(GetBookRequest { id: "42".into() }).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = client
        .check_stock(CheckStockRequest {
            book_id: uuid::Uuid::new_v4().to_string(),
            quantity: 1,
        })
        .await;
    assert_eq!(status.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn copies_on_loan_block_removal_and_shrinking_below_them() {
    let app = spawn_app().await;
    let mut client = app.client().await;
    let book = client
        .create_book(create("Emma", "Jane Austen", 4))
        .await
        .unwrap()
        .into_inner();
    let borrowed = BookBorrowed {
        event_id: uuid::Uuid::now_v7().to_string(),
        loan_id: uuid::Uuid::now_v7().to_string(),
        user_id: "u".into(),
        book_id: book.id.clone(),
        quantity: 3,
        ..Default::default()
    };
    app.deliver(&borrowed).await.unwrap();

    let status = client
        .delete_book(DeleteBookRequest { id: book.id.clone() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    let status = client
        .update_book(UpdateBookRequest {
            id: book.id.clone(),
            total_copies: Some(2),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(
        status.message().contains("3 copies are on loan"),
        "{}",
        status.message()
    );
    let resized = client
        .update_book(UpdateBookRequest {
            id: book.id.clone(),
            total_copies: Some(3),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((resized.total_copies, resized.available_copies), (3, 0));
}

#[tokio::test]
async fn the_catalogue_is_searched_and_paged_by_title() {
    let app = spawn_app().await;
    let mut client = app.client().await;
    for (title, author) in [
        ("Persuasion", "Jane Austen"),
        ("Emma", "Jane Austen"),
        ("Dune", "Frank Herbert"),
        ("Ulysses", "James Joyce"),
    ] {
        client.create_book(create(title, author, 1)).await.unwrap();
    }
    let austen = client
        .list_books(ListBooksRequest {
            search: "austen".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let titles: Vec<_> = austen.books.iter().map(|b| b.title.as_str()).collect();
    assert_eq!((titles, austen.total_count), (vec!["Emma", "Persuasion"], 2));

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_books(ListBooksRequest {
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.total_count, 4);
        seen.extend(page.books.into_iter().map(|b| b.title));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, vec!["Dune", "Emma", "Persuasion", "Ulysses"]);

    // A cursor past the last book (it was removed meanwhile): an empty page, still the total.
    let first = client
        .list_books(ListBooksRequest {
            page_size: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ulysses = client
        .list_books(ListBooksRequest {
            search: "ulysses".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .books
        .remove(0);
    client.delete_book(DeleteBookRequest { id: ulysses.id }).await.unwrap();
    let past_the_end = client
        .list_books(ListBooksRequest {
            page_size: 3,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(past_the_end.books.is_empty());
    assert_eq!(past_the_end.total_count, 3);
    assert!(past_the_end.next_page_token.is_empty());

    for bad in [
        ListBooksRequest {
            page_size: 101,
            ..Default::default()
        },
        ListBooksRequest {
            page_token: "zz!".into(),
            ..Default::default()
        },
    ] {
        assert_eq!(client.list_books(bad).await.unwrap_err().code(), Code::InvalidArgument);
    }
    // A search with LIKE wildcards matches them literally.
    let literal = client
        .list_books(ListBooksRequest {
            search: "%".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(literal.into_inner().total_count, 0);
}

#[tokio::test]
async fn calls_are_counted_by_method_and_code_on_the_metrics_port() {
    let app = spawn_app().await;
    let mut client = app.client().await;
    client.create_book(create("Counted", "A. Uthor", 1)).await.unwrap();
    let missing = client
        .get_book(GetBookRequest {
            id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let metrics = app.metrics().await;
    for series in [
        r#"grpc_server_requests_total{method="/library.book.v1.BookService/CreateBook",code="Ok"}"#,
        r#"grpc_server_requests_total{method="/library.book.v1.BookService/GetBook",code="NotFound"}"#,
        r#"grpc_server_request_duration_seconds_bucket{method="/library.book.v1.BookService/GetBook",le="0.005"}"#,
    ] {
        assert!(metrics.contains(series), "no {series} in:\n{metrics}");
    }
    assert!(
        !metrics.contains("grpc.health"),
        "health probes are not counted:\n{metrics}"
    );
}
