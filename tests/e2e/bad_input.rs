//! Bad input is refused with BAD_USER_INPUT (or NOT_FOUND for ids that name nothing) and leaves
//! nothing behind.
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{System, unique};

/// `errors[0].extensions.code` when the body is a GraphQL answer.
fn graphql_code(body: &Value) -> Option<&str> {
    body["errors"][0]["extensions"]["code"].as_str()
}

async fn malformed_and_too_deep_queries_are_refused(system: &System) {
    let client = system.anonymous();

    for query in [
        "query { books { nodes { id }",                // unbalanced
        "{ books { nodes { noSuchField } } }",         // unknown field
        "{ books(first: \"twenty\") { totalCount } }", // wrong type
    ] {
        let reply = client.post(query, json!({})).await;
        assert!(
            reply.status == 200 || reply.status == 400,
            "{query}: HTTP {}",
            reply.status
        );
        reply.error("BAD_USER_INPUT");
    }

    // A body that is not JSON at all: 400, still in GraphQL's error shape with a code, and no
    // parser internals in the message.
    let reply = client.post_body("{not json".into()).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(graphql_code(&reply.body), Some("BAD_USER_INPUT"), "{}", reply.body);
    assert!(!reply.body.to_string().contains("key must be"), "{}", reply.body);

    // Introspection may nest as deep as the standard introspection query does, not deeper:
    // 4 nested `ofType` pass, 30 do not.
    let nested = |of_types: usize| {
        format!(
            "{{ __schema {{ types {{ fields {{ type {}{{ name }}{} }} }} }} }}",
            "{ ofType ".repeat(of_types),
            "}".repeat(of_types)
        )
    };
    client.ok(&nested(4), json!({})).await;
    let deep = client.post(&nested(30), json!({})).await;
    deep.error("BAD_USER_INPUT");
    assert!(
        deep.body["data"].is_null(),
        "a refused query runs nothing: {}",
        deep.body
    );
}

async fn borrow_and_return_arguments_are_checked(system: &System) {
    let admin = system.admin();
    let reader = system.reader("reader");
    let book_id = crate::helpers::id_of(&admin.create_book("Arguments", 20).await);

    for quantity in [0, -1, 11] {
        reader.borrow(&book_id, quantity).await.error("BAD_USER_INPUT");
    }
    reader.borrow("not-a-uuid", 1).await.error("BAD_USER_INPUT");
    reader.borrow(&Uuid::new_v4().to_string(), 1).await.error("NOT_FOUND");
    let loans = reader.my_loans(None).await;
    assert_eq!(loans.data()["myLoans"]["totalCount"], 0, "{}", loans.body);

    reader
        .return_book(&Uuid::new_v4().to_string(), None)
        .await
        .error("NOT_FOUND");
    let loan_id = crate::helpers::id_of(&reader.borrow_ok(&book_id, 10).await);
    reader.wait_loan_status(&loan_id, "ACTIVE").await;
    for quantity in [0, -1] {
        reader
            .return_book(&loan_id, Some(quantity))
            .await
            .error("BAD_USER_INPUT");
    }
    let loan = reader.loan(&loan_id).await;
    assert_eq!(loan.data()["loan"]["returnedQuantity"], 0, "{}", loan.body);

    reader.loan(&Uuid::new_v4().to_string()).await.error("NOT_FOUND");
}

async fn page_sizes_are_bounded(system: &System) {
    let client = system.anonymous();
    let books = "query($first: Int) { books(first: $first) { totalCount nodes { id } } }";
    for first in [0, -1, 101] {
        client
            .post(books, json!({ "first": first }))
            .await
            .error("BAD_USER_INPUT");
    }
    for first in [1, 100] {
        let page = client.ok(books, json!({ "first": first })).await;
        assert!(
            page["books"]["nodes"]
                .as_array()
                .is_some_and(|n| n.len() <= first as usize)
        );
    }

    let reader = system.reader("reader");
    let loans = "query($first: Int) { myLoans(first: $first) { totalCount } }";
    for first in [0, 101] {
        reader
            .post(loans, json!({ "first": first }))
            .await
            .error("BAD_USER_INPUT");
    }
    reader.ok(loans, json!({ "first": 100 })).await;
}

async fn book_ids_and_fields_are_validated(system: &System) {
    let client = system.anonymous();
    client.book("not-a-uuid").await.error("BAD_USER_INPUT");

    let admin = system.admin();
    let marker = unique("Validation");
    let create = |isbn: Option<&str>, title: &str, author: &str, copies: i32| json!({ "input": { "isbn": isbn, "title": title, "author": format!("{author} {marker}"), "totalCopies": copies } });
    let mutation = "mutation($input: CreateBookInput!) { createBook(input: $input) { id isbn title } }";

    for title in ["", "   "] {
        let message = admin
            .post(mutation, create(None, title, "Anon", 1))
            .await
            .error_message("BAD_USER_INPUT");
        assert!(message.contains("title"), "the message names the field: {message}");
    }
    let bad_isbn = admin
        .post(
            mutation,
            create(Some("978-0-306-40615-8"), "Wrong check digit", "Anon", 1),
        )
        .await;
    bad_isbn.error("BAD_USER_INPUT");
    admin
        .post(mutation, create(None, "Negative stock", "Anon", -1))
        .await
        .error("BAD_USER_INPUT");

    // The control: the same ISBN with its right check digit is accepted.
    let good = admin
        .post(
            mutation,
            create(Some("978-0-306-40615-7"), "Right check digit", "Anon", 1),
        )
        .await;
    assert!(good.data()["createBook"]["isbn"].is_string(), "{}", good.body);

    // Only the valid book exists.
    let found = client
        .ok(
            "query($s: String) { books(search: $s) { totalCount nodes { title } } }",
            json!({ "s": marker }),
        )
        .await;
    assert_eq!(found["books"]["totalCount"], 1, "{found}");
}

in_both_modes!(
    malformed_and_too_deep_queries_are_refused,
    borrow_and_return_arguments_are_checked,
    page_sizes_are_bounded,
    book_ids_and_fields_are_validated,
);
