//! GraphiQL, served by the gateway itself: the page at `GET /graphiql` and every script and
//! stylesheet it loads under `/graphiql/assets/`, all built into the binary from
//! `graphql-gateway/assets/graphiql/` (pinned npm releases, see the README there). Nothing is
//! fetched from another host, so it works on a network with no internet access.
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The vendored files carry their version in their name: a browser may keep them for good.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The gateway's own page and start-up script change with the gateway: always revalidated.
const REVALIDATE: &str = "no-cache";

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

/// Where the page may load from and talk to: this gateway only (fonts and icons GraphiQL
/// inlines as `data:` URLs). A browser refuses, and reports, anything else.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
     connect-src 'self'; worker-src 'self' blob:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    body: &'static [u8],
    content_type: &'static str,
    cache_control: &'static str,
}

macro_rules! asset {
    ($name:literal, $content_type:expr, $cache_control:expr) => {
        Asset {
            name: $name,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/graphiql/", $name)),
            content_type: $content_type,
            cache_control: $cache_control,
        }
    };
}

/// Every file under `/graphiql/assets/`. A new version of one is a new name (fetch.sh, README).
const ASSETS: &[Asset] = &[
    asset!("graphiql-4.1.2.min.js", JAVASCRIPT, IMMUTABLE),
    asset!("graphiql-4.1.2.min.css", CSS, IMMUTABLE),
    asset!("react-18.3.1.production.min.js", JAVASCRIPT, IMMUTABLE),
    asset!("react-dom-18.3.1.production.min.js", JAVASCRIPT, IMMUTABLE),
    asset!("init.js", JAVASCRIPT, REVALIDATE),
];

const PAGE: &str = include_str!("../assets/graphiql/index.html");

/// The GraphiQL routes, for any router state: `GET /graphiql` and `GET /graphiql/assets/{file}`.
pub fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/graphiql", get(page))
        .route("/graphiql/assets/{file}", get(asset))
}

async fn page() -> Response {
    let mut response = respond(PAGE.as_bytes(), HTML, REVALIDATE);
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    response
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(asset) => respond(asset.body, asset.content_type, asset.cache_control),
        None => (StatusCode::NOT_FOUND, "no such GraphiQL asset").into_response(),
    }
}

fn respond(body: &'static [u8], content_type: &'static str, cache_control: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, cache_control),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn get(path: &str) -> Response {
        router::<()>()
            .oneshot(Request::get(path).body(Body::empty()).expect("a request"))
            .await
            .expect("the router answers")
    }

    fn header(response: &Response, name: header::HeaderName) -> &str {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// Every `src="…"` and `href="…"` of the page.
    fn references(page: &str) -> Vec<&str> {
        ["src=\"", "href=\""]
            .iter()
            .flat_map(|attribute| page.split(attribute).skip(1))
            .filter_map(|rest| rest.split('"').next())
            .collect()
    }

    #[tokio::test]
    async fn the_page_loads_only_assets_the_gateway_serves() {
        let response = get("/graphiql").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, header::CONTENT_TYPE), HTML);
        assert!(header(&response, header::CONTENT_SECURITY_POLICY).starts_with("default-src 'self'"));
        let page = to_bytes(response.into_body(), usize::MAX).await.expect("the page");
        let page = std::str::from_utf8(&page).expect("the page is UTF-8");
        let references = references(page);
        assert!(references.len() >= 5, "{references:?}");
        for reference in references {
            if reference.starts_with("data:") {
                continue;
            }
            assert!(reference.starts_with("/graphiql/assets/"), "the page loads {reference}");
            let response = get(reference).await;
            assert_eq!(response.status(), StatusCode::OK, "{reference}");
            let expected = if reference.ends_with(".css") { CSS } else { JAVASCRIPT };
            assert_eq!(header(&response, header::CONTENT_TYPE), expected, "{reference}");
        }
    }

    #[tokio::test]
    async fn versioned_assets_are_immutable_and_the_rest_revalidated() {
        let vendored = get("/graphiql/assets/graphiql-4.1.2.min.js").await;
        assert_eq!(header(&vendored, header::CACHE_CONTROL), IMMUTABLE);
        assert_eq!(header(&vendored, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        let body = to_bytes(vendored.into_body(), usize::MAX).await.expect("the script");
        assert_eq!(body.len(), ASSETS[0].body.len());
        assert_eq!(
            header(&get("/graphiql/assets/init.js").await, header::CACHE_CONTROL),
            REVALIDATE
        );
        assert_eq!(header(&get("/graphiql").await, header::CACHE_CONTROL), REVALIDATE);
    }

    #[tokio::test]
    async fn an_unknown_asset_is_not_found() {
        assert_eq!(get("/graphiql/assets/nothing.js").await.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            get("/graphiql/assets/..%2Fgraphiql.rs").await.status(),
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn the_gateways_own_files_name_no_other_host() {
        let init = ASSETS.iter().find(|a| a.name == "init.js").expect("init.js");
        for text in [PAGE, std::str::from_utf8(init.body).expect("UTF-8")] {
            assert!(!text.contains("http://") && !text.contains("https://"), "{text}");
        }
    }
}
