//! The HTTP face: GraphQL over POST `/graphql` and WebSocket `/graphql/ws`
//! (`graphql-transport-ws`, token in `connection_init`), `GET /graphql`, the SDL at
//! `/graphql/schema.graphql`, GraphiQL at `/graphiql` (`/` redirects there), probes and
//! metrics.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State, WebSocketUpgrade};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use tower_http::trace::TraceLayer;
use tracing::Instrument;

use crate::auth::{Auth, JwtKeys};
use crate::cors::CorsPolicy;
use crate::downstream::Downstreams;
use crate::graphql_http;
use crate::schema::{LibrarySchema, request_data};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub schema: LibrarySchema,
    pub keys: JwtKeys,
    pub downstreams: Arc<Downstreams>,
    /// The schema in SDL, printed once.
    pub sdl: Bytes,
    /// Which browser origins may call.
    pub cors: CorsPolicy,
    /// False from the moment the gateway begins to stop: Kubernetes stops routing first.
    pub ready: Arc<AtomicBool>,
}

/// The gateway's routes. The state is shared, not cloned per request (its keys and clients
/// would be).
pub fn router(state: AppState) -> Router {
    let cors = state.cors.layer();
    let router = Router::new()
        // Temporary: the web app takes `/` (CONTRACT.md).
        .route("/", get(|| async { Redirect::temporary("/graphiql") }))
        .route("/graphql", get(graphql).post(graphql))
        .route("/graphql/schema.graphql", get(schema_sdl))
        .route("/graphql/ws", get(graphql_ws))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(crate::graphiql::router())
        .merge(library_platform::metrics::router())
        .layer(TraceLayer::new_for_http())
        .with_state(Arc::new(state));
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// `GET` and `POST /graphql`: GraphQL over HTTP ([`crate::graphql_http`]).
async fn graphql(
    State(state): State<Arc<AppState>>,
    method: Method,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let media = match graphql_http::negotiate(&headers) {
        Ok(media) => media,
        Err(refusal) => return refusal.into_response(graphql_http::MediaType::Json),
    };
    let request = if method == Method::GET {
        graphql_http::read_get(&headers, raw_query.as_deref())
    } else {
        graphql_http::read_post(&headers, body).await
    };
    let mut request = match request {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(media),
    };
    let auth = state
        .keys
        .authenticate(headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()))
        .await;
    let operation = request.operation_name.clone().unwrap_or_else(|| "anonymous".into());
    request.data = request_data(&state.downstreams, auth);
    let started = Instant::now();
    // One span per request, the parent of every downstream call's context (the resolvers run
    // inside this future), itself the child of the caller's `traceparent` if it sent one.
    let span = tracing::info_span!("graphql", operation = %operation);
    library_platform::telemetry::set_parent_from_headers(&span, &headers);
    let mut response = state.schema.execute(request).instrument(span).await;
    // Parse, validation, depth and complexity errors come from the engine without a code.
    for error in &mut response.errors {
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", "BAD_USER_INPUT");
        }
    }
    let status = if response.errors.is_empty() { "ok" } else { "error" };
    metrics::counter!("graphql_requests_total", "operation" => operation.clone(), "status" => status).increment(1);
    metrics::histogram!("graphql_request_duration_seconds", "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    graphql_http::write(media, response)
}

/// The schema in SDL, for tools that read a schema file rather than introspect.
async fn schema_sdl(State(state): State<Arc<AppState>>) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"))],
        state.sdl.clone(),
    )
        .into_response()
}

async fn graphql_ws(
    State(state): State<Arc<AppState>>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| {
            let (schema, keys, downstreams) = (state.schema.clone(), state.keys.clone(), state.downstreams.clone());
            GraphQLWebSocket::new(socket, schema, protocol)
                .on_connection_init(move |payload| async move {
                    let auth = auth_from_init(&keys, &payload).await;
                    Ok(request_data(&downstreams, auth))
                })
                .serve()
        })
        .into_response()
}

/// The token a WebSocket client sends in `connection_init`: `{"Authorization": "Bearer …"}`.
async fn auth_from_init(keys: &JwtKeys, payload: &serde_json::Value) -> Auth {
    let header = ["Authorization", "authorization"]
        .iter()
        .find_map(|k| payload.get(*k))
        .and_then(|v| v.as_str());
    keys.authenticate(header).await
}

async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if state.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_websocket_token_is_read_from_connection_init() {
        let keys = JwtKeys::new("k");
        let token = keys.issue("ana", &[], 60).unwrap();
        let payload = serde_json::json!({ "Authorization": format!("Bearer {token}") });
        assert!(matches!(auth_from_init(&keys, &payload).await, Auth::Viewer(_)));
        assert!(matches!(
            auth_from_init(&keys, &serde_json::json!({})).await,
            Auth::Anonymous
        ));
    }
}
