//! What standard clients rely on (GraphQL tooling, browsers): the full introspection query, the
//! SDL, GraphQL over HTTP's media types and methods, CORS, and the bounds on input, with
//! messages that name the client's own arguments. Spoken over plain HTTP, as those tools do.
use serde_json::{Value, json};

use crate::helpers::{System, id_of};

/// graphql-js 16's `getIntrospectionQuery()` with every option on: what GraphiQL, codegen,
/// Apollo and Relay tooling send.
const STANDARD_INTROSPECTION: &str = include_str!("fixtures/introspection.graphql");

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

fn graphql_url(system: &System) -> String {
    format!("{}/graphql", system.http_url)
}

async fn the_standard_introspection_query_loads_the_schema(system: &System) {
    let schema = system.anonymous().ok(STANDARD_INTROSPECTION, json!({})).await;
    let types = schema["__schema"]["types"].as_array().expect("types");
    let book = types.iter().find(|t| t["name"] == "Book").expect("the Book type");
    assert!(book["description"].as_str().is_some_and(|d| !d.is_empty()), "{book}");

    // The engine still bounds introspection: 30 nested `ofType` are refused, and run nothing.
    let too_deep = format!(
        "{{ __schema {{ types {{ fields {{ type {}{{ name }}{} }} }} }} }}",
        "{ ofType ".repeat(30),
        "}".repeat(30)
    );
    let refused = system.anonymous().post(&too_deep, json!({})).await;
    refused.error("BAD_USER_INPUT");
    assert!(refused.body.get("data").is_none(), "{}", refused.body);
}

async fn the_sdl_is_served_as_committed(system: &System) {
    let response = http()
        .get(format!("{}/graphql/schema.graphql", system.http_url))
        .send()
        .await
        .expect("the gateway answers");
    assert_eq!(response.status(), 200);
    let served = response.text().await.expect("read the SDL");
    let committed = include_str!("../../graphql-gateway/schema.graphql");
    assert!(
        served == committed,
        "the served SDL differs from graphql-gateway/schema.graphql"
    );
    assert!(served.contains("type Query"), "{served}");
}

async fn graphql_over_http_follows_the_spec(system: &System) {
    let url = graphql_url(system);
    let post = |accept: Option<&'static str>, body: String| {
        let mut request = http().post(&url).header("content-type", "application/json").body(body);
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        request.send()
    };
    let typename = json!({ "query": "{ __typename }" }).to_string();
    for (accept, media) in [
        (None, "application/json"),
        (Some("application/json"), "application/json"),
        (Some("*/*"), "application/json"),
        (
            Some("application/graphql-response+json"),
            "application/graphql-response+json",
        ),
    ] {
        let response = post(accept, typename.clone()).await.expect("answer");
        assert_eq!(response.status(), 200, "{accept:?}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .to_owned();
        assert!(content_type.starts_with(media), "{accept:?}: {content_type}");
    }
    let refused = post(Some("text/csv"), typename.clone()).await.expect("answer");
    assert_eq!(refused.status(), 406);

    // A document that does not validate: 400 with no data in the new media type, 200 in the old.
    let invalid = json!({ "query": "{ noSuchField }" }).to_string();
    let strict = post(Some("application/graphql-response+json"), invalid.clone())
        .await
        .expect("answer");
    assert_eq!(strict.status(), 400);
    let body: Value = strict.json().await.expect("json");
    assert!(
        body.get("data").is_none() && body["errors"][0]["message"].is_string(),
        "{body}"
    );
    let legacy = post(Some("application/json"), invalid).await.expect("answer");
    assert_eq!(legacy.status(), 200);

    // No content type on a POST: 415.
    let untyped = http().post(&url).body(typename).send().await.expect("answer");
    assert_eq!(untyped.status(), 415);

    // GET serves queries, JSON even when a browser-like Accept lists HTML after JSON ...
    let get = http()
        .get(&url)
        .query(&[
            ("query", "query Named { books(first: 1) { totalCount } }"),
            ("operationName", "Named"),
        ])
        .header("accept", "application/json")
        .send()
        .await
        .expect("answer");
    assert_eq!(get.status(), 200);
    let body: Value = get.json().await.expect("json");
    assert!(body["data"]["books"]["totalCount"].is_number(), "{body}");
    // ... and never a mutation.
    let mutation = http()
        .get(&url)
        .query(&[("query", "mutation { deleteBook(id: \"x\") }")])
        .send()
        .await
        .expect("answer");
    assert_eq!(mutation.status(), 405);
    assert_eq!(mutation.headers()["allow"], "POST");

    // A browser opening /graphql is sent to GraphiQL.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(&url)
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .expect("answer");
    assert_eq!(browser.status(), 302);
    assert_eq!(browser.headers()["location"], "/graphiql");
}

async fn browsers_on_allowed_origins_may_call(system: &System) {
    let url = graphql_url(system);
    let preflight = |origin: &'static str| {
        http()
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization, content-type")
            .send()
    };
    let allowed = preflight("http://localhost:5173").await.expect("answer");
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(headers["access-control-allow-origin"], "http://localhost:5173");
    let allowed_headers = headers["access-control-allow-headers"]
        .to_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        allowed_headers.contains("authorization") && allowed_headers.contains("content-type"),
        "{allowed_headers}"
    );

    let other = preflight("https://evil.example").await.expect("answer");
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let call = http()
        .post(&url)
        .header("origin", "http://127.0.0.1:3000")
        .header("content-type", "application/json")
        .body(json!({ "query": "{ __typename }" }).to_string())
        .send()
        .await
        .expect("answer");
    assert_eq!(call.headers()["access-control-allow-origin"], "http://127.0.0.1:3000");
}

async fn inputs_are_bounded_and_messages_name_the_clients_arguments(system: &System) {
    let url = graphql_url(system);
    let anonymous = system.anonymous();

    // Bodies above 64 KiB: 413, in GraphQL's error shape.
    let huge = json!({ "query": "{ __typename }", "variables": { "x": "y".repeat(70 * 1024) } }).to_string();
    let response = http()
        .post(&url)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{body}");

    // Thousands of aliases, or of plain `__typename` (free in the complexity count), run nothing.
    let typenames = "__typename ".repeat(5000);
    let batch = anonymous.post(&format!("{{ {typenames} }}"), json!({})).await;
    assert!(
        batch.error_message("BAD_USER_INPUT").contains("at most"),
        "{}",
        batch.body
    );
    let aliases: String = (0..3000).map(|i| format!("a{i}: __typename ")).collect();
    let batch = anonymous.post(&format!("{{ {aliases} }}"), json!({})).await;
    assert!(
        batch.error_message("BAD_USER_INPUT").contains("at most"),
        "{}",
        batch.body
    );

    // `search` is at most 200 characters.
    let books = "query($s: String) { books(search: $s) { totalCount } }";
    let message = anonymous
        .post(books, json!({ "s": "x".repeat(201) }))
        .await
        .error_message("BAD_USER_INPUT");
    assert!(message.starts_with("search:"), "{message}");
    anonymous.ok(books, json!({ "s": "x".repeat(200) })).await;

    // Arguments and cursors by their GraphQL names.
    let reader = system.reader("messages");
    let message = reader.borrow("not-an-id", 1).await.error_message("BAD_USER_INPUT");
    assert!(message.starts_with("bookId:"), "{message}");
    let message = anonymous
        .post(
            "query($after: String) { books(after: $after) { totalCount } }",
            json!({ "after": "garbage" }),
        )
        .await
        .error_message("BAD_USER_INPUT");
    assert!(message.starts_with("after:"), "{message}");
    let message = reader
        .post("{ myLoans(after: \"garbage\") { totalCount } }", json!({}))
        .await
        .error_message("BAD_USER_INPUT");
    assert!(message.starts_with("after:"), "{message}");
    let admin = system.admin();
    let message = admin
        .post(
            "mutation { createBook(input: {title: \"T\", author: \"A\", totalCopies: -1}) { id } }",
            json!({}),
        )
        .await
        .error_message("BAD_USER_INPUT");
    assert!(message.starts_with("totalCopies:"), "{message}");

    // Counted words agree: one copy is, two copies are.
    let book = id_of(&admin.create_book(&crate::helpers::unique("Plurals"), 1).await);
    let loan = id_of(&reader.borrow_ok(&book, 1).await);
    reader.wait_loan_status(&loan, "ACTIVE").await;
    let message = reader
        .return_book(&loan, Some(2))
        .await
        .error_message("RETURN_EXCEEDS_LOAN");
    assert_eq!(message, "only 1 copy of this loan is outstanding");
    let message = reader.borrow(&book, 1).await.error_message("OUT_OF_STOCK");
    assert_eq!(message, "only 0 copies are available");
}

in_both_modes!(
    the_standard_introspection_query_loads_the_schema,
    the_sdl_is_served_as_committed,
    graphql_over_http_follows_the_spec,
    browsers_on_allowed_origins_may_call,
    inputs_are_bounded_and_messages_name_the_clients_arguments,
);
