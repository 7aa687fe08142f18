//! Cross-origin requests from browsers (`GATEWAY_CORS_ORIGINS`): a web front end served from
//! another origin calls the API only if its origin is listed. tower-http's CORS layer answers
//! the preflights and sets the headers; this module only reads the setting.
//!
//! The setting is a comma-separated list of origins (`https://app.example.org`), origins with
//! any port (`http://localhost:*`, for development servers), or `*` alone (any origin, and
//! then no credentials, as browsers require). Bearer tokens travel in `Authorization`, which
//! is allowed in every case.
use std::time::Duration;

use axum::http::{HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// A bad `GATEWAY_CORS_ORIGINS`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("GATEWAY_CORS_ORIGINS: {0}")]
pub struct CorsError(String);

/// One allowed origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `scheme://host[:port]`, compared exactly (browsers send it in lowercase).
    Exact(String),
    /// `scheme://host:*`: that host on any port (or none).
    AnyPort(String),
}

impl Origin {
    fn allows(&self, origin: &str) -> bool {
        match self {
            Origin::Exact(allowed) => allowed == origin,
            Origin::AnyPort(prefix) => origin.strip_prefix(prefix.as_str()).is_some_and(|rest| {
                rest.is_empty()
                    || rest
                        .strip_prefix(':')
                        .is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
            }),
        }
    }
}

/// What `GATEWAY_CORS_ORIGINS` allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsPolicy {
    /// No cross-origin calls (unset or empty).
    SameOriginOnly,
    /// `*`: any origin, without credentials.
    AnyOrigin,
    /// The listed origins, with credentials.
    Listed(Vec<Origin>),
}

impl CorsPolicy {
    /// Parses the setting.
    ///
    /// # Errors
    /// An entry that is not an origin, or `*` beside other origins.
    pub fn parse(setting: Option<&str>) -> Result<Self, CorsError> {
        let entries: Vec<&str> = setting
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        if entries.is_empty() {
            return Ok(CorsPolicy::SameOriginOnly);
        }
        if entries.contains(&"*") {
            return if entries.len() == 1 {
                Ok(CorsPolicy::AnyOrigin)
            } else {
                Err(CorsError("`*` allows every origin; list origins or `*` alone".into()))
            };
        }
        let origins = entries.into_iter().map(origin).collect::<Result<_, _>>()?;
        Ok(CorsPolicy::Listed(origins))
    }

    /// The layer for this policy; `None` when no cross-origin call is allowed.
    pub fn layer(&self) -> Option<CorsLayer> {
        let base = || {
            CorsLayer::new()
                .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
                .max_age(Duration::from_secs(600))
        };
        match self {
            CorsPolicy::SameOriginOnly => None,
            CorsPolicy::AnyOrigin => Some(base().allow_origin(AllowOrigin::any())),
            CorsPolicy::Listed(origins) => {
                let origins = origins.clone();
                Some(base().allow_credentials(true).allow_origin(AllowOrigin::predicate(
                    move |value: &HeaderValue, _| {
                        value
                            .to_str()
                            .is_ok_and(|value| origins.iter().any(|allowed| allowed.allows(value)))
                    },
                )))
            }
        }
    }
}

fn origin(entry: &str) -> Result<Origin, CorsError> {
    let bad = || {
        CorsError(format!(
            "`{entry}` is not an origin like https://app.example.org or http://localhost:*"
        ))
    };
    let (scheme, rest) = entry.split_once("://").ok_or_else(bad)?;
    if !matches!(scheme, "http" | "https") || rest.is_empty() || rest.contains('/') {
        return Err(bad());
    }
    let lowercase = entry.to_ascii_lowercase();
    match lowercase.strip_suffix(":*") {
        Some(prefix) if !prefix.ends_with("//") => Ok(Origin::AnyPort(prefix.to_owned())),
        Some(_) => Err(bad()),
        None if rest.contains('*') => Err(bad()),
        None => Ok(Origin::Exact(lowercase)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_with_any_port_match_only_that_host() {
        let any_port = origin("http://localhost:*").unwrap();
        assert!(any_port.allows("http://localhost:5173"));
        assert!(any_port.allows("http://localhost"));
        assert!(!any_port.allows("http://localhost.evil.example:80"));
        assert!(!any_port.allows("https://localhost:5173"));
        assert!(!any_port.allows("http://localhost:"));
        let exact = origin("https://App.Example.org").unwrap();
        assert!(exact.allows("https://app.example.org"));
        assert!(!exact.allows("https://app.example.org:8443"));
    }

    #[test]
    fn the_setting_is_checked_at_start() {
        assert_eq!(CorsPolicy::parse(None), Ok(CorsPolicy::SameOriginOnly));
        assert_eq!(CorsPolicy::parse(Some(" , ")), Ok(CorsPolicy::SameOriginOnly));
        assert_eq!(CorsPolicy::parse(Some("*")), Ok(CorsPolicy::AnyOrigin));
        assert!(CorsPolicy::parse(Some("*, https://a.example")).is_err());
        assert!(CorsPolicy::parse(Some("a.example")).is_err());
        assert!(CorsPolicy::parse(Some("https://a.example/path")).is_err());
        assert!(CorsPolicy::parse(Some("https://*.example")).is_err());
        assert_eq!(
            CorsPolicy::parse(Some("https://a.example, http://localhost:*")),
            Ok(CorsPolicy::Listed(vec![
                Origin::Exact("https://a.example".into()),
                Origin::AnyPort("http://localhost".into())
            ]))
        );
    }
}
