//! Authentication and authorisation: bearer tokens (HS256, `sub`, `exp`, `roles`), the admin
//! role, and readers who never see each other's loans.
use serde_json::json;

use crate::helpers::{System, WsEvent, id_of, sign_token, unique};

const DASHBOARD: &str = "{ myDashboard { userId borrowedCount lateFeeTotal } }";

async fn missing_expired_and_forged_tokens_are_unauthenticated(system: &System) {
    // The control: a valid token works.
    let reader = system.reader("reader");
    let mine = reader.ok(DASHBOARD, json!({})).await;
    assert_eq!(mine["myDashboard"]["userId"], reader.user.as_str());

    let cases = [
        ("no token", system.anonymous()),
        (
            "an expired token",
            system.client("late", Some(system.token(&unique("late"), &[], -3600))),
        ),
        (
            "a token signed with another key",
            system.client(
                "eve",
                Some(sign_token("not-the-secret", &unique("eve"), &["admin"], 3600)),
            ),
        ),
        (
            "a token not valid yet (nbf in ten minutes)",
            system.client(
                "early",
                Some(system.token_with_claims(&json!({
                    "sub": unique("early"),
                    "exp": chrono::Utc::now().timestamp() + 3600,
                    "nbf": chrono::Utc::now().timestamp() + 600,
                }))),
            ),
        ),
        ("a token that is no JWT", system.client_with_header("Bearer not-a-jwt")),
        ("another scheme", system.client_with_header("Basic cmVhZGVyOnB3")),
    ];
    for (what, client) in &cases {
        let reply = client.post(DASHBOARD, json!({})).await;
        assert_eq!(
            reply.code(),
            Some("UNAUTHENTICATED"),
            "{what}: myDashboard must be UNAUTHENTICATED; got {}",
            reply.body
        );
        reply.error("UNAUTHENTICATED");
        assert!(reply.body["data"].is_null(), "{what}: no data: {}", reply.body);
    }

    // A forged admin token cannot register books.
    let forged = system.client(
        "eve",
        Some(sign_token("not-the-secret", &unique("eve"), &["admin"], 3600)),
    );
    let reply = forged
        .post(
            "mutation { createBook(input: {title: \"Forged\", author: \"Eve\", totalCopies: 1}) { id } }",
            json!({}),
        )
        .await;
    reply.error("UNAUTHENTICATED");

    // The catalogue needs no token.
    let books = system
        .anonymous()
        .ok("{ books(first: 1) { totalCount } }", json!({}))
        .await;
    assert!(books["books"]["totalCount"].is_i64(), "{books}");

    // Over WebSocket, the token travels in connection_init; without one, no dashboard.
    let expired = system.token(&unique("late"), &[], -3600);
    for (what, token) in [("no token", None), ("an expired token", Some(expired.as_str()))] {
        let mut subscription = system
            .subscribe(token, "subscription { myDashboard { borrowedCount } }", json!({}))
            .await;
        let code = match subscription.event().await {
            WsEvent::Next(payload) => payload["errors"][0]["extensions"]["code"].clone(),
            WsEvent::Error(errors) => errors[0]["extensions"]["code"].clone(),
            WsEvent::Complete => panic!("{what}: the subscription ended without an error"),
        };
        assert_eq!(code, "UNAUTHENTICATED", "{what}: subscription myDashboard");
    }
}

async fn only_administrators_manage_the_catalogue(system: &System) {
    let admin = system.admin();
    let reader = system.reader("reader");
    let title = unique("Not by a reader");
    let create = "mutation($input: CreateBookInput!) { createBook(input: $input) { id } }";
    let input = json!({ "input": { "title": title, "author": "Reader", "totalCopies": 1 } });

    reader.post(create, input.clone()).await.error("FORBIDDEN");
    system
        .anonymous()
        .post(create, input.clone())
        .await
        .error("UNAUTHENTICATED");
    let found = reader
        .ok(
            "query($s: String) { books(search: $s) { totalCount } }",
            json!({ "s": title }),
        )
        .await;
    assert_eq!(
        found["books"]["totalCount"], 0,
        "the refused book was not created: {found}"
    );

    let book_id = id_of(&admin.create_book("Admin only", 2).await);
    reader
        .post(
            "mutation($id: ID!) { updateBook(id: $id, input: {title: \"Mine now\"}) { id } }",
            json!({ "id": book_id }),
        )
        .await
        .error("FORBIDDEN");
    reader
        .post("mutation($id: ID!) { deleteBook(id: $id) }", json!({ "id": book_id }))
        .await
        .error("FORBIDDEN");
    let loan_id = id_of(&reader.borrow_ok(&book_id, 1).await);
    reader
        .post(
            "mutation($id: ID!, $at: DateTime!) { changeDueDate(loanId: $id, dueAt: $at) { id } }",
            json!({ "id": loan_id, "at": "2100-01-01T00:00:00Z" }),
        )
        .await
        .error("FORBIDDEN");
    let book = reader.book(&book_id).await;
    assert!(
        book.data()["book"]["title"]
            .as_str()
            .is_some_and(|t| t.starts_with("Admin only")),
        "the book is unchanged: {}",
        book.body
    );
}

async fn readers_never_see_each_others_loans(system: &System) {
    let admin = system.admin();
    let ana = system.reader("ana");
    let bo = system.reader("bo");
    let book_id = id_of(&admin.create_book("Shared shelf", 10).await);

    let anas = id_of(&ana.borrow_ok(&book_id, 1).await);
    let bos = id_of(&bo.borrow_ok(&book_id, 2).await);
    bo.wait_loan_status(&bos, "ACTIVE").await;

    let peek = ana.loan(&bos).await;
    let code = peek.code();
    assert!(
        code == Some("NOT_FOUND") || code == Some("FORBIDDEN"),
        "reading another reader's loan is NOT_FOUND or FORBIDDEN: {}",
        peek.body
    );
    assert!(peek.body["data"]["loan"].is_null(), "no data leaks: {}", peek.body);

    let grab = ana.return_book(&bos, None).await;
    let code = grab.code();
    assert!(
        code == Some("NOT_FOUND") || code == Some("FORBIDDEN"),
        "returning another reader's loan is NOT_FOUND or FORBIDDEN: {}",
        grab.body
    );
    let untouched = bo.loan(&bos).await;
    assert_eq!(untouched.data()["loan"]["returnedQuantity"], 0, "{}", untouched.body);
    assert_eq!(untouched.data()["loan"]["status"], "ACTIVE", "{}", untouched.body);

    for (reader, own, theirs) in [(&ana, &anas, &bos), (&bo, &bos, &anas)] {
        let loans = reader.my_loans(None).await;
        let loans = &loans.data()["myLoans"];
        assert_eq!(loans["totalCount"], 1, "{}: {loans}", reader.user);
        let nodes = loans["nodes"].as_array().expect("nodes");
        assert_eq!(nodes.len(), 1, "{loans}");
        assert_eq!(nodes[0]["id"], own.as_str(), "{loans}");
        assert!(
            nodes
                .iter()
                .all(|l| l["userId"] == reader.user.as_str() && l["id"] != theirs.as_str())
        );
    }
    ana.wait_dashboard(1, 0).await;
    bo.wait_dashboard(2, 0).await;
}

in_both_modes!(
    missing_expired_and_forged_tokens_are_unauthenticated,
    only_administrators_manage_the_catalogue,
    readers_never_see_each_others_loans,
);
