//! GraphQL over HTTP, as the GraphQL-over-HTTP specification asks, so that any standard client
//! (graphql-http, Apollo, urql, Relay, codegen, Postman) gets what it expects:
//!
//! - the response media type follows `Accept`: `application/graphql-response+json`, or
//!   `application/json` (also for `*/*` and no `Accept`, as legacy clients expect); anything
//!   else is 406;
//! - `POST` takes `application/json` (UTF-8) and nothing else (415); `GET` takes the
//!   parameters in the query string and never runs a mutation (405);
//! - a request error (unparsable JSON, a parameter of the wrong type, a document that does not
//!   parse or validate) has no `data` entry; with `application/graphql-response+json` it is a
//!   400, with `application/json` a 200 (legacy clients read the body, not the status), except
//!   for a body that is not a GraphQL request at all, which is a 400 either way;
//! - bodies above [`MAX_BODY_BYTES`] are refused with 413 before they are read to the end.
use std::collections::HashMap;

use async_graphql::parser::types::{DocumentOperations, OperationType};
use async_graphql::{Request as GraphQLRequest, Response as GraphQLResponse, Variables};
use axum::body::{Body, Bytes};
use axum::http::header::{ACCEPT, ALLOW, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json; charset=utf-8";
const JSON: &str = "application/json; charset=utf-8";

/// The media type a response is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    /// `application/graphql-response+json`: the status code tells request errors apart.
    GraphQLResponseJson,
    /// `application/json`: always 200 once the body is a GraphQL request.
    Json,
}

impl MediaType {
    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            MediaType::GraphQLResponseJson => GRAPHQL_RESPONSE_JSON,
            MediaType::Json => JSON,
        })
    }
}

/// Why a request never reached the GraphQL engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `Accept` names no media type the gateway writes.
    NotAcceptable,
    /// A `POST` whose body is not declared as UTF-8 JSON.
    UnsupportedMediaType,
    /// A body above [`MAX_BODY_BYTES`].
    PayloadTooLarge,
    /// A mutation asked for with `GET`.
    MutationOverGet,
    /// The body or query string is not a GraphQL request.
    BadRequest(String),
    /// A browser opened `GET /graphql` with no query: it wants GraphiQL.
    ShowGraphiQL,
}

impl Refusal {
    /// The HTTP response, a GraphQL error body with `extensions.code`.
    pub fn into_response(self, media: MediaType) -> Response {
        let (status, message) = match self {
            Refusal::ShowGraphiQL => {
                return (StatusCode::FOUND, [(LOCATION, HeaderValue::from_static("/graphiql"))]).into_response();
            }
            Refusal::NotAcceptable => (
                StatusCode::NOT_ACCEPTABLE,
                "responses are application/graphql-response+json or application/json".to_owned(),
            ),
            Refusal::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send the request as Content-Type: application/json (UTF-8)".to_owned(),
            ),
            Refusal::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {} KiB", MAX_BODY_BYTES / 1024),
            ),
            Refusal::MutationOverGet => (
                StatusCode::METHOD_NOT_ALLOWED,
                "mutations are sent with POST".to_owned(),
            ),
            Refusal::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
        };
        let body =
            serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": "BAD_USER_INPUT" } }] });
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, media.content_type());
        if status == StatusCode::METHOD_NOT_ALLOWED {
            headers.insert(ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }
}

/// The media type to answer in, from the request's `Accept` (weights honoured, the first listed
/// winning a tie).
///
/// # Errors
/// [`Refusal::NotAcceptable`] when `Accept` lists only types the gateway cannot write.
pub fn negotiate(headers: &HeaderMap) -> Result<MediaType, Refusal> {
    let Some(accept) = headers.get(ACCEPT).and_then(|v| v.to_str().ok()).map(str::trim) else {
        return Ok(MediaType::Json);
    };
    if accept.is_empty() {
        return Ok(MediaType::Json);
    }
    let mut best: Option<(f32, MediaType)> = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let weight = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let media = match essence.as_str() {
            "application/graphql-response+json" => MediaType::GraphQLResponseJson,
            "application/json" | "application/*" | "*/*" => MediaType::Json,
            _ => continue,
        };
        if weight > 0.0 && best.is_none_or(|(w, _)| weight > w) {
            best = Some((weight, media));
        }
    }
    best.map(|(_, media)| media).ok_or(Refusal::NotAcceptable)
}

/// A GraphQL request as the client sent it, before parsing its document.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Params {
    query: Option<String>,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<Variables>,
    #[serde(default)]
    extensions: Option<HashMap<String, async_graphql::Value>>,
}

impl Params {
    fn into_request(self) -> Result<GraphQLRequest, Refusal> {
        let query = self
            .query
            .ok_or_else(|| Refusal::BadRequest("the request has no `query`".into()))?;
        let mut request = GraphQLRequest::new(query);
        if let Some(name) = self.operation_name {
            request = request.operation_name(name);
        }
        if let Some(variables) = self.variables {
            request = request.variables(variables);
        }
        if let Some(extensions) = self.extensions {
            request.extensions = async_graphql::Extensions(extensions);
        }
        Ok(request)
    }
}

/// The query-string form of [`Params`]: `variables` and `extensions` are JSON texts.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueryString {
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
}

/// Reads a `POST` body.
///
/// # Errors
/// Not UTF-8 JSON, too large, or not a GraphQL request.
pub async fn read_post(headers: &HeaderMap, body: Body) -> Result<GraphQLRequest, Refusal> {
    if !is_json_utf8(headers.get(CONTENT_TYPE)) {
        return Err(Refusal::UnsupportedMediaType);
    }
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES) {
        return Err(Refusal::PayloadTooLarge);
    }
    let bytes: Bytes = axum::body::to_bytes(body, MAX_BODY_BYTES).await.map_err(|error| {
        if std::error::Error::source(&error).is_some_and(|source| source.is::<http_body_util::LengthLimitError>()) {
            Refusal::PayloadTooLarge
        } else {
            Refusal::BadRequest("the request body could not be read".into())
        }
    })?;
    if bytes.is_empty() {
        return Err(Refusal::BadRequest("the request body is empty".into()));
    }
    let params: Params = serde_json::from_slice(&bytes).map_err(|error| {
        Refusal::BadRequest(if error.is_data() {
            format!("the request body is not a GraphQL request: {error}")
        } else {
            "the request body is not valid JSON".into()
        })
    })?;
    params.into_request()
}

/// Reads a `GET` request's query string; a mutation is refused before it runs.
///
/// # Errors
/// No query, parameters that are not JSON where they must be, or a mutation.
pub fn read_get(headers: &HeaderMap, raw_query: Option<&str>) -> Result<GraphQLRequest, Refusal> {
    let fields: QueryString = serde_urlencoded::from_str(raw_query.unwrap_or_default())
        .map_err(|_| Refusal::BadRequest("the query string is not a GraphQL request".into()))?;
    if fields.query.is_none() && prefers_html(headers) {
        return Err(Refusal::ShowGraphiQL);
    }
    let params = Params {
        query: fields.query,
        operation_name: fields.operation_name,
        variables: json_object("variables", fields.variables)?,
        extensions: json_object("extensions", fields.extensions)?,
    };
    let request = params.into_request()?;
    if is_mutation(&request) {
        return Err(Refusal::MutationOverGet);
    }
    Ok(request)
}

/// A query-string parameter holding a JSON object; empty or absent is none.
fn json_object<T: serde::de::DeserializeOwned>(name: &str, text: Option<String>) -> Result<Option<T>, Refusal> {
    text.filter(|t| !t.is_empty())
        .map(|t| serde_json::from_str(&t))
        .transpose()
        .map_err(|_| Refusal::BadRequest(format!("`{name}` must be a JSON object")))
}

/// Whether the operation the request selects is a mutation (a document that does not parse is
/// left to the engine, which reports it).
fn is_mutation(request: &GraphQLRequest) -> bool {
    let Ok(document) = async_graphql::parser::parse_query(&request.query) else {
        return false;
    };
    let ty = match (&document.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(operation), _) => Some(operation.node.ty),
        (DocumentOperations::Multiple(operations), Some(name)) => {
            operations.get(name).map(|operation| operation.node.ty)
        }
        (DocumentOperations::Multiple(operations), None) => {
            // Several operations and no name is a request error the engine reports; refuse
            // it here only if one of them could write.
            operations
                .values()
                .any(|operation| operation.node.ty == OperationType::Mutation)
                .then_some(OperationType::Mutation)
        }
    };
    ty == Some(OperationType::Mutation)
}

fn is_json_utf8(content_type: Option<&HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        && parts.all(|parameter| {
            let (key, value) = parameter.split_once('=').unwrap_or((parameter, ""));
            !key.trim().eq_ignore_ascii_case("charset") || value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        })
}

fn prefers_html(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// Writes the engine's response: a request error (nothing executed) has no `data` and, in
/// `application/graphql-response+json`, status 400.
pub fn write(media: MediaType, response: GraphQLResponse) -> Response {
    let request_error = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|error| error.path.is_empty());
    let body = if request_error {
        serde_json::to_vec(&RequestErrors {
            errors: &response.errors,
        })
    } else {
        serde_json::to_vec(&response)
    };
    let Ok(body) = body else {
        tracing::error!("a GraphQL response could not be serialised");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let status = if request_error && media == MediaType::GraphQLResponseJson {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let mut http = (status, body).into_response();
    http.headers_mut().insert(CONTENT_TYPE, media.content_type());
    http.headers_mut().extend(response.http_headers);
    http
}

#[derive(serde::Serialize)]
struct RequestErrors<'a> {
    errors: &'a [async_graphql::ServerError],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_response_media_type_follows_accept() {
        assert_eq!(negotiate(&HeaderMap::new()), Ok(MediaType::Json));
        assert_eq!(negotiate(&accept("*/*")), Ok(MediaType::Json));
        assert_eq!(negotiate(&accept("application/json")), Ok(MediaType::Json));
        assert_eq!(
            negotiate(&accept("application/graphql-response+json, application/json;q=0.9")),
            Ok(MediaType::GraphQLResponseJson)
        );
        assert_eq!(
            negotiate(&accept("application/graphql-response+json;q=0.5, application/json")),
            Ok(MediaType::Json)
        );
        assert_eq!(negotiate(&accept("text/html")), Err(Refusal::NotAcceptable));
        assert_eq!(
            negotiate(&accept("text/html,application/xhtml+xml,*/*;q=0.8")),
            Ok(MediaType::Json)
        );
    }

    #[test]
    fn only_utf8_json_bodies_are_read() {
        let ok = |v: &str| is_json_utf8(Some(&HeaderValue::from_str(v).unwrap()));
        assert!(ok("application/json"));
        assert!(ok("Application/JSON; charset=UTF-8"));
        assert!(!ok("application/json; charset=latin1"));
        assert!(!ok("text/plain"));
        assert!(!is_json_utf8(None));
    }

    #[test]
    fn get_never_runs_a_mutation() {
        let headers = HeaderMap::new();
        assert_eq!(
            read_get(&headers, Some("query=mutation%20%7B%20__typename%20%7D")).err(),
            Some(Refusal::MutationOverGet)
        );
        let named = "query=query%20A%20%7B%20__typename%20%7D%20mutation%20B%20%7B%20__typename%20%7D&operationName=B";
        assert_eq!(read_get(&headers, Some(named)).err(), Some(Refusal::MutationOverGet));
        let query = read_get(&headers, Some("query=%7B__typename%7D&operationName=&variables=%7B%7D")).unwrap();
        assert_eq!(query.query, "{__typename}");
    }

    #[test]
    fn get_parameters_of_the_wrong_shape_are_bad_requests() {
        let headers = HeaderMap::new();
        assert!(matches!(
            read_get(&headers, Some("query=%7Ba%7D&variables=%5B1%5D")),
            Err(Refusal::BadRequest(_))
        ));
        assert!(matches!(read_get(&headers, Some("")), Err(Refusal::BadRequest(_))));
        assert_eq!(read_get(&accept("text/html"), None).err(), Some(Refusal::ShowGraphiQL));
    }

    #[tokio::test]
    async fn post_bodies_are_checked_before_they_reach_the_engine() {
        let mut json = HeaderMap::new();
        json.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let read = |headers: HeaderMap, body: &'static str| async move { read_post(&headers, Body::from(body)).await };
        assert!(
            read(json.clone(), r#"{"query":"{ a }","variables":null}"#)
                .await
                .is_ok()
        );
        for bad in [
            r#"{"query":1}"#,
            r#"{"notquery":"{ a }"}"#,
            r#"{"query":"{a}","variables":"x"}"#,
            "{ \"not",
            "",
        ] {
            assert!(
                matches!(read(json.clone(), bad).await, Err(Refusal::BadRequest(_))),
                "{bad}"
            );
        }
        assert_eq!(
            read(HeaderMap::new(), r#"{"query":"{ a }"}"#).await.err(),
            Some(Refusal::UnsupportedMediaType)
        );
        let big = format!(r#"{{"query":"{{ a }}","x":"{}"}}"#, "y".repeat(MAX_BODY_BYTES));
        let big: &'static str = Box::leak(big.into_boxed_str());
        assert_eq!(read(json, big).await.err(), Some(Refusal::PayloadTooLarge));
    }
}
