//! The HTTP face: GraphQL over POST `/graphql` and WebSocket `/graphql/ws`
//! (`graphql-transport-ws`, token in `connection_init`), GraphiQL at `/`, probes and metrics.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, GraphiQLSource};
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tower_http::trace::TraceLayer;
use tracing::Instrument;

use crate::auth::{Auth, JwtKeys};
use crate::downstream::Downstreams;
use crate::schema::{LibrarySchema, request_data};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub schema: LibrarySchema,
    pub keys: JwtKeys,
    pub downstreams: Arc<Downstreams>,
    /// False from the moment the gateway begins to stop: Kubernetes stops routing first.
    pub ready: Arc<AtomicBool>,
}

/// The gateway's routes. The state is shared, not cloned per request (its keys and clients
/// would be).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(graphiql))
        .route("/graphql", get(graphiql).post(graphql))
        .route("/graphql/ws", get(graphql_ws))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .merge(library_platform::metrics::router())
        .layer(TraceLayer::new_for_http())
        .with_state(Arc::new(state))
}

async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .finish(),
    )
}

/// A body that is not a GraphQL request: answered in GraphQL's error shape, with a code, instead
/// of the parser's debug text.
pub struct BadRequest(async_graphql::ParseRequestError);

impl From<async_graphql::ParseRequestError> for BadRequest {
    fn from(error: async_graphql::ParseRequestError) -> Self {
        Self(error)
    }
}

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        let (status, message) = match self.0 {
            async_graphql::ParseRequestError::PayloadTooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large")
            }
            async_graphql::ParseRequestError::UnsupportedBatch => {
                (StatusCode::BAD_REQUEST, "batched requests are not supported")
            }
            _ => (
                StatusCode::BAD_REQUEST,
                "the request body is not a GraphQL request (JSON with a `query`)",
            ),
        };
        let body =
            serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": "BAD_USER_INPUT" } }] });
        (status, axum::Json(body)).into_response()
    }
}

async fn graphql(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    request: GraphQLRequest<BadRequest>,
) -> GraphQLResponse {
    let auth = state
        .keys
        .authenticate(headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()));
    let mut request = request.into_inner();
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
    response.into()
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
                    let auth = auth_from_init(&keys, &payload);
                    Ok(request_data(&downstreams, auth))
                })
                .serve()
        })
        .into_response()
}

/// The token a WebSocket client sends in `connection_init`: `{"Authorization": "Bearer …"}`.
fn auth_from_init(keys: &JwtKeys, payload: &serde_json::Value) -> Auth {
    let header = ["Authorization", "authorization"]
        .iter()
        .find_map(|k| payload.get(*k))
        .and_then(|v| v.as_str());
    keys.authenticate(header)
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

    #[test]
    fn the_websocket_token_is_read_from_connection_init() {
        let keys = JwtKeys::new("k");
        let token = keys.issue("ana", &[], 60).unwrap();
        let payload = serde_json::json!({ "Authorization": format!("Bearer {token}") });
        assert!(matches!(auth_from_init(&keys, &payload), Auth::Viewer(_)));
        assert!(matches!(auth_from_init(&keys, &serde_json::json!({})), Auth::Anonymous));
    }
}
