//! Bearer tokens: JWTs signed either with the shared HS256 key `LIBRARY_JWT_SECRET` or by the
//! identity provider whose public keys are published as a JWKS at `LIBRARY_JWT_JWKS_URL`
//! (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA). Claims: `sub` (the user id), `exp`
//! (required), `nbf` (honoured when present), `roles` (`"admin"` grants the administrator's
//! operations); `iss` and `aud` are required and checked when `LIBRARY_JWT_ISSUER` /
//! `LIBRARY_JWT_AUDIENCE` are set.
//!
//! Verification is on every request's path: a token is checked against keys already in memory.
//! Only a token naming a key id (`kid`) the gateway does not know waits for the JWKS to be
//! fetched again, and such fetches are rate-limited so that a flood of made-up key ids cannot
//! hammer the identity provider; [`JwtKeys::keep_fresh`] also re-reads the set periodically, so
//! keys the provider retires stop being accepted.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use library_platform::CancellationToken;
use library_platform::config::Secret;
use serde::{Deserialize, Serialize};

use library_platform::grpc::MAX_USER_ID_LEN;

use crate::error::GatewayError;

/// Seconds of clock skew allowed on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 5;

/// The largest JWKS document read (a provider's set is a few kilobytes).
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The claims the gateway reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// Required, but checked by the validation (which names it when missing), not here.
    #[serde(default)]
    pub exp: u64,
    #[serde(default)]
    pub roles: Vec<String>,
}

/// The claims of a token the gateway issues (`library token`, the all-in-one's start-up tokens).
#[derive(Serialize)]
struct IssuedClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    roles: &'a [&'a str],
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub user_id: String,
    pub admin: bool,
}

/// The outcome of reading a request's credentials: no token is not an error until an operation
/// needs a user.
#[derive(Debug, Clone)]
pub enum Auth {
    Anonymous,
    Viewer(Viewer),
    Invalid(String),
}

impl Auth {
    /// The viewer, or UNAUTHENTICATED.
    ///
    /// # Errors
    /// No token, or a token that did not verify.
    pub fn viewer(&self) -> Result<&Viewer, GatewayError> {
        match self {
            Auth::Viewer(viewer) => Ok(viewer),
            Auth::Anonymous => Err(GatewayError::Unauthenticated("a bearer token is required".into())),
            Auth::Invalid(why) => Err(GatewayError::Unauthenticated(why.clone())),
        }
    }

    /// An administrator, or UNAUTHENTICATED / FORBIDDEN.
    ///
    /// # Errors
    /// No valid token, or a token without the admin role.
    pub fn admin(&self) -> Result<&Viewer, GatewayError> {
        let viewer = self.viewer()?;
        if viewer.admin {
            Ok(viewer)
        } else {
            Err(GatewayError::Forbidden("this operation is for administrators".into()))
        }
    }
}

/// Why keys could not be set up, or a token not issued.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("LIBRARY_JWT_SECRET or LIBRARY_JWT_JWKS_URL is required (either or both)")]
    NoKeys,
    #[error("LIBRARY_JWT_SECRET is required to sign a token (tokens of the JWKS come from the identity provider)")]
    NoSecret,
    #[error("LIBRARY_JWT_JWKS_URL: `{0}` is not an http(s) URL")]
    BadJwksUrl(String),
    #[error("cannot make the HTTP client of the JWKS: {0}")]
    Client(#[source] reqwest::Error),
    #[error("cannot fetch the JWKS: {0}")]
    Fetch(String),
    #[error("cannot sign the token: {0}")]
    Signing(#[from] jsonwebtoken::errors::Error),
}

/// How the JWKS is kept fresh.
#[derive(Debug, Clone)]
pub struct JwksPolicy {
    /// The set is fetched again this often, so retired keys stop being accepted.
    pub refresh_every: Duration,
    /// After a failed fetch (the provider down at start), the next try is this soon.
    pub retry_after_failure: Duration,
    /// A token with an unknown key id fetches the set at most this often.
    pub min_unknown_kid_interval: Duration,
    /// One fetch's deadline.
    pub fetch_timeout: Duration,
}

impl Default for JwksPolicy {
    fn default() -> Self {
        Self {
            refresh_every: Duration::from_secs(600),
            retry_after_failure: Duration::from_secs(30),
            min_unknown_kid_interval: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
        }
    }
}

/// What token verification is configured with.
#[derive(Debug, Clone, Default)]
pub struct AuthSettings {
    /// The HS256 key, if tokens signed with a shared secret are accepted (and issued).
    pub secret: Option<Secret>,
    /// The required `iss`, if any.
    pub issuer: Option<String>,
    /// The accepted `aud` values (one of them required), if any.
    pub audience: Vec<String>,
    /// The identity provider's JWKS, if its tokens are accepted.
    pub jwks_url: Option<String>,
    pub jwks_policy: JwksPolicy,
}

/// Verifies tokens (HS256 and/or the JWKS's keys) and issues HS256 ones. Cheap to clone.
#[derive(Clone)]
pub struct JwtKeys {
    inner: Arc<Inner>,
}

struct Inner {
    hmac: Option<Hmac>,
    jwks: Option<Jwks>,
    issuer: Option<String>,
    audience: Vec<String>,
}

/// The shared-secret key, both ways.
struct Hmac {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

/// The rules every token meets, for the given algorithms.
fn validation(algorithms: &[Algorithm], issuer: Option<&str>, audience: &[String]) -> Validation {
    let mut validation = Validation::new(algorithms.first().copied().unwrap_or(Algorithm::HS256));
    validation.algorithms = algorithms.to_vec();
    let mut required = vec!["exp", "sub"];
    validation.leeway = LEEWAY_SECONDS;
    validation.validate_nbf = true;
    if let Some(issuer) = issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    if audience.is_empty() {
        // Without a configured audience, a token's `aud` (an identity provider always sets one)
        // is not ours to judge.
        validation.validate_aud = false;
    } else {
        validation.set_audience(audience);
        required.push("aud");
    }
    validation.set_required_spec_claims(&required);
    validation
}

impl JwtKeys {
    /// HS256 with `secret`, no issuer or audience.
    pub fn new(secret: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                hmac: Some(Hmac::new(secret, None, &[])),
                jwks: None,
                issuer: None,
                audience: Vec::new(),
            }),
        }
    }

    /// Keys from the settings. The JWKS (if any) starts empty: [`JwtKeys::load_jwks`] fetches
    /// it.
    ///
    /// # Errors
    /// Neither a secret nor a JWKS, or a JWKS URL that is not one.
    pub fn from_settings(settings: &AuthSettings) -> Result<Self, AuthError> {
        let issuer = settings.issuer.clone().filter(|i| !i.trim().is_empty());
        let audience: Vec<String> = settings
            .audience
            .iter()
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        let hmac = settings
            .secret
            .as_ref()
            .filter(|s| !s.is_blank())
            .map(|secret| Hmac::new(secret.expose(), issuer.as_deref(), &audience));
        let jwks = match settings.jwks_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
            Some(url) => Some(Jwks::new(
                url,
                settings.jwks_policy.clone(),
                issuer.clone(),
                audience.clone(),
            )?),
            None => None,
        };
        if hmac.is_none() && jwks.is_none() {
            return Err(AuthError::NoKeys);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                hmac,
                jwks,
                issuer,
                audience,
            }),
        })
    }

    /// Whether tokens of a JWKS are accepted.
    pub fn uses_jwks(&self) -> bool {
        self.inner.jwks.is_some()
    }

    /// Fetches the JWKS once (at start). A provider that cannot be reached is logged, not fatal:
    /// catalogue reads need no token, and the set is fetched again soon.
    pub async fn load_jwks(&self) {
        if let Some(jwks) = &self.inner.jwks
            && let Err(error) = jwks.refresh().await
        {
            tracing::warn!(%error, url = %jwks.url, "the JWKS cannot be fetched yet; tokens it signs are refused until it can");
        }
    }

    /// Re-reads the JWKS every [`JwksPolicy::refresh_every`] (sooner after a failure) until
    /// `shutdown`; returns at once when no JWKS is configured.
    pub async fn keep_fresh(&self, shutdown: CancellationToken) {
        let Some(jwks) = &self.inner.jwks else {
            return;
        };
        loop {
            let wait = if jwks.healthy.load(Ordering::Relaxed) {
                jwks.policy.refresh_every
            } else {
                jwks.policy.retry_after_failure
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            if let Err(error) = jwks.refresh().await {
                tracing::warn!(%error, url = %jwks.url, "the JWKS cannot be fetched; the keys already known stay in use");
            }
        }
    }

    /// Reads an `Authorization` header value (`Bearer <jwt>`); `None` is anonymous. Waits on
    /// the network only for a token whose key id is not known yet.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Auth {
        let Some(value) = authorization.map(str::trim).filter(|v| !v.is_empty()) else {
            return Auth::Anonymous;
        };
        let Some(token) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) else {
            return Auth::Invalid("the Authorization header must be `Bearer <token>`".into());
        };
        let token = token.trim();
        let verified = match (&self.inner.hmac, &self.inner.jwks) {
            // The shared secret alone: no header to read first.
            (Some(hmac), None) => hmac.verify(token),
            (hmac, Some(jwks)) => {
                let Ok(header) = jsonwebtoken::decode_header(token) else {
                    return Auth::Invalid("the token is not valid".into());
                };
                match (header.alg.family(), hmac) {
                    (jsonwebtoken::AlgorithmFamily::Hmac, Some(hmac)) => hmac.verify(token),
                    (jsonwebtoken::AlgorithmFamily::Hmac, None) => {
                        return Auth::Invalid("the token's algorithm is not accepted".into());
                    }
                    _ => jwks.verify(token, &header).await,
                }
            }
            (None, None) => return Auth::Invalid("the token is not valid".into()),
        };
        match verified {
            Ok(claims) if !claims.sub.trim().is_empty() && claims.sub.len() <= MAX_USER_ID_LEN => {
                Auth::Viewer(Viewer {
                    admin: claims.roles.iter().any(|r| r == "admin"),
                    user_id: claims.sub,
                })
            }
            Ok(_) => Auth::Invalid("the token's subject is empty or too long".into()),
            Err(why) => Auth::Invalid(why.into()),
        }
    }

    /// Issues an HS256 token for `user_id` valid for `ttl_seconds`, with the configured issuer
    /// and audience.
    ///
    /// # Errors
    /// No shared secret is configured, or signing failed.
    pub fn issue(&self, user_id: &str, roles: &[&str], ttl_seconds: u64) -> Result<String, AuthError> {
        let hmac = self.inner.hmac.as_ref().ok_or(AuthError::NoSecret)?;
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        let claims = IssuedClaims {
            sub: user_id,
            iat: now,
            exp: now.saturating_add(ttl_seconds),
            roles,
            iss: self.inner.issuer.as_deref(),
            aud: self.inner.audience.first().map(String::as_str),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &hmac.encoding,
        )?)
    }
}

impl Hmac {
    fn new(secret: &str, issuer: Option<&str>, audience: &[String]) -> Self {
        Self {
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            validation: validation(&[Algorithm::HS256], issuer, audience),
        }
    }

    fn verify(&self, token: &str) -> Result<Claims, &'static str> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| refusal(&e))
    }
}

/// The client's message for a token that did not verify.
fn refusal(error: &jsonwebtoken::errors::Error) -> &'static str {
    match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet",
        ErrorKind::InvalidSignature => "the token's signature is not valid",
        ErrorKind::InvalidIssuer => "the token's issuer is not accepted",
        ErrorKind::InvalidAudience => "the token is meant for another audience",
        ErrorKind::InvalidAlgorithm => "the token's algorithm is not accepted",
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => "the token has no expiry (exp)",
            "sub" => "the token has no subject (sub)",
            "iss" => "the token has no issuer (iss)",
            "aud" => "the token has no audience (aud)",
            _ => "the token lacks a required claim",
        },
        _ => "the token is not valid",
    }
}

/// The identity provider's public keys, as last fetched.
struct Jwks {
    url: reqwest::Url,
    client: reqwest::Client,
    policy: JwksPolicy,
    issuer: Option<String>,
    audience: Vec<String>,
    keys: RwLock<Arc<Vec<VerifyingKey>>>,
    /// Bumped at every stored set, so a request that waited for a fetch another one made does
    /// not fetch again.
    generation: AtomicU64,
    /// Whether the last fetch succeeded.
    healthy: AtomicBool,
    /// Held while fetching (one fetch at a time); holds when an unknown key id last fetched.
    refreshing: tokio::sync::Mutex<Option<Instant>>,
}

/// One key of the set, with the algorithms it may verify.
struct VerifyingKey {
    kid: Option<String>,
    key: DecodingKey,
    validation: Validation,
}

impl Jwks {
    fn new(url: &str, policy: JwksPolicy, issuer: Option<String>, audience: Vec<String>) -> Result<Self, AuthError> {
        let parsed = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| AuthError::BadJwksUrl(url.to_owned()))?;
        let client = reqwest::Client::builder()
            .timeout(policy.fetch_timeout)
            .build()
            .map_err(AuthError::Client)?;
        Ok(Self {
            url: parsed,
            client,
            policy,
            issuer,
            audience,
            keys: RwLock::new(Arc::new(Vec::new())),
            generation: AtomicU64::new(0),
            healthy: AtomicBool::new(false),
            refreshing: tokio::sync::Mutex::new(None),
        })
    }

    fn current(&self) -> Arc<Vec<VerifyingKey>> {
        match self.keys.read() {
            Ok(keys) => keys.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    async fn verify(&self, token: &str, header: &Header) -> Result<Claims, &'static str> {
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(outcome) = Self::verify_with(&self.current(), token, header) {
            return outcome;
        }
        // Boxed: the fetch's state would otherwise enlarge every request's future.
        Box::pin(self.refresh_for_unknown_key(generation)).await;
        Self::verify_with(&self.current(), token, header).unwrap_or(Err(
            "the token's signing key is not one of the identity provider's keys",
        ))
    }

    /// `None` when no key of `keys` can verify the token (unknown `kid`, or no key for its
    /// algorithm).
    fn verify_with(keys: &[VerifyingKey], token: &str, header: &Header) -> Option<Result<Claims, &'static str>> {
        let mut candidates = keys
            .iter()
            .filter(|k| header.kid.is_none() || k.kid == header.kid)
            .filter(|k| k.validation.algorithms.contains(&header.alg))
            .peekable();
        candidates.peek()?;
        let mut first_refusal = None;
        for candidate in candidates {
            match jsonwebtoken::decode::<Claims>(token, &candidate.key, &candidate.validation) {
                Ok(data) => return Some(Ok(data.claims)),
                Err(error) => {
                    first_refusal.get_or_insert(refusal(&error));
                }
            }
        }
        first_refusal.map(Err)
    }

    /// Fetches the set for a token naming an unknown key, unless another request just did or
    /// one did within [`JwksPolicy::min_unknown_kid_interval`].
    async fn refresh_for_unknown_key(&self, seen_generation: u64) {
        let mut last = self.refreshing.lock().await;
        if self.generation.load(Ordering::Acquire) != seen_generation {
            return;
        }
        if last.is_some_and(|at| at.elapsed() < self.policy.min_unknown_kid_interval) {
            metrics::counter!("gateway_jwks_fetches_total", "reason" => "unknown_kid", "outcome" => "rate_limited")
                .increment(1);
            return;
        }
        *last = Some(Instant::now());
        if let Err(error) = self.fetch_and_store("unknown_kid").await {
            tracing::warn!(%error, url = %self.url, "the JWKS cannot be fetched for a token with an unknown key id");
        }
    }

    /// Fetches the set (at start and periodically), one fetch at a time.
    async fn refresh(&self) -> Result<(), AuthError> {
        let _refreshing = self.refreshing.lock().await;
        self.fetch_and_store("refresh").await
    }

    /// Fetches the set and replaces the keys in use; on failure the keys in use stay. The
    /// caller holds `refreshing`; `reason` labels the fetch in the metrics.
    async fn fetch_and_store(&self, reason: &'static str) -> Result<(), AuthError> {
        let outcome = self.fetch().await;
        let label = if outcome.is_ok() { "ok" } else { "error" };
        metrics::counter!("gateway_jwks_fetches_total", "reason" => reason, "outcome" => label).increment(1);
        let keys = match outcome {
            Ok(keys) => keys,
            Err(error) => {
                self.healthy.store(false, Ordering::Relaxed);
                return Err(error);
            }
        };
        let kids: Vec<&str> = keys.iter().filter_map(|k| k.kid.as_deref()).collect();
        tracing::info!(url = %self.url, keys = keys.len(), kids = ?kids, "JWKS loaded");
        let keys = Arc::new(keys);
        match self.keys.write() {
            Ok(mut current) => *current = keys,
            Err(poisoned) => *poisoned.into_inner() = keys,
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.healthy.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn fetch(&self) -> Result<Vec<VerifyingKey>, AuthError> {
        let fetch_error = |e: reqwest::Error| AuthError::Fetch(e.without_url().to_string());
        let response = self
            .client
            .get(self.url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(fetch_error)?;
        if !response.status().is_success() {
            return Err(AuthError::Fetch(format!("the server answered {}", response.status())));
        }
        if response.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
            return Err(AuthError::Fetch("the document is too large".into()));
        }
        let body = response.bytes().await.map_err(fetch_error)?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(AuthError::Fetch("the document is too large".into()));
        }
        parse_key_set(&body, self.issuer.as_deref(), &self.audience)
    }
}

/// The usable signing keys of a JWKS document. A key the gateway cannot use (an encryption
/// key, an unknown type or curve) is skipped, not fatal: providers publish such keys too.
fn parse_key_set(body: &[u8], issuer: Option<&str>, audience: &[String]) -> Result<Vec<VerifyingKey>, AuthError> {
    #[derive(Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document =
        serde_json::from_slice(body).map_err(|e| AuthError::Fetch(format!("the document is not a JWKS: {e}")))?;
    let keys: Vec<VerifyingKey> = document
        .keys
        .into_iter()
        .filter_map(|value| {
            let jwk: Jwk = serde_json::from_value(value).ok()?;
            let algorithms = signing_algorithms(&jwk)?;
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            Some(VerifyingKey {
                kid: jwk.common.key_id.clone(),
                key,
                validation: validation(&algorithms, issuer, audience),
            })
        })
        .collect();
    if keys.is_empty() {
        return Err(AuthError::Fetch(
            "the JWKS holds no signing key the gateway can use".into(),
        ));
    }
    Ok(keys)
}

/// The algorithms a JWK may verify: its own `alg` if it names one, else every one of its key
/// type. `None` for a key that does not sign, or that the gateway cannot use. A symmetric
/// (`oct`) key is refused: a shared secret has no place in a published set.
fn signing_algorithms(jwk: &Jwk) -> Option<Vec<Algorithm>> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let of_type: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => jsonwebtoken::AlgorithmFamily::Rsa.algorithms(),
        AlgorithmParameters::EllipticCurve(params) => match params.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(params) => match params.curve {
            EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            _ => return None,
        },
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(of_type.to_vec()),
        Some(KeyAlgorithm::UNKNOWN_ALGORITHM) => None,
        Some(named) => {
            let named = Algorithm::try_from(named).ok()?;
            of_type.contains(&named).then(|| vec![named])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn sign(secret: &str, claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::default(), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
    }

    fn bearer(token: &str) -> Option<String> {
        Some(format!("Bearer {token}"))
    }

    fn keys_with(issuer: Option<&str>, audience: &[&str]) -> JwtKeys {
        JwtKeys::from_settings(&AuthSettings {
            secret: Some(Secret::from("secret")),
            issuer: issuer.map(str::to_owned),
            audience: audience.iter().map(|a| (*a).to_owned()).collect(),
            ..AuthSettings::default()
        })
        .unwrap()
    }

    fn refused_because(auth: Auth) -> String {
        match auth {
            Auth::Invalid(why) => why,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_valid_token_names_the_viewer_and_their_role() {
        let keys = JwtKeys::new("secret");
        let token = keys.issue("ana", &["admin"], 60).unwrap();
        let auth = keys.authenticate(bearer(&token).as_deref()).await;
        assert_eq!(
            auth.admin().unwrap(),
            &Viewer {
                user_id: "ana".into(),
                admin: true
            }
        );
    }

    #[tokio::test]
    async fn a_reader_is_not_an_admin() {
        let keys = JwtKeys::new("secret");
        let token = keys.issue("bo", &[], 60).unwrap();
        let auth = keys.authenticate(bearer(&token).as_deref()).await;
        assert!(auth.viewer().is_ok());
        assert_eq!(auth.admin().unwrap_err().code(), "FORBIDDEN");
    }

    #[tokio::test]
    async fn missing_expired_and_forged_tokens_are_unauthenticated() {
        let keys = JwtKeys::new("secret");
        assert_eq!(
            keys.authenticate(None).await.viewer().unwrap_err().code(),
            "UNAUTHENTICATED"
        );
        let forged = JwtKeys::new("other").issue("eve", &["admin"], 60).unwrap();
        assert_eq!(
            refused_because(keys.authenticate(bearer(&forged).as_deref()).await),
            "the token's signature is not valid"
        );
        let expired = sign("secret", &serde_json::json!({ "sub": "old", "exp": 1_000 }));
        assert_eq!(
            refused_because(keys.authenticate(bearer(&expired).as_deref()).await),
            "the token has expired"
        );
        let no_exp = sign("secret", &serde_json::json!({ "sub": "old" }));
        assert_eq!(
            refused_because(keys.authenticate(bearer(&no_exp).as_deref()).await),
            "the token has no expiry (exp)"
        );
        assert!(matches!(keys.authenticate(Some("Basic abc")).await, Auth::Invalid(_)));
    }

    #[tokio::test]
    async fn a_token_not_valid_yet_is_refused_beyond_the_leeway() {
        let keys = JwtKeys::new("secret");
        let later = sign(
            "secret",
            &serde_json::json!({ "sub": "ana", "exp": now() + 3600, "nbf": now() + 600 }),
        );
        let auth = keys.authenticate(bearer(&later).as_deref()).await;
        assert_eq!(auth.viewer().unwrap_err().code(), "UNAUTHENTICATED");
        assert_eq!(refused_because(auth), "the token is not valid yet");
        // A clock a second or two ahead of ours is not refused.
        let skewed = sign(
            "secret",
            &serde_json::json!({ "sub": "ana", "exp": now() + 3600, "nbf": now() + 2 }),
        );
        assert!(matches!(
            keys.authenticate(bearer(&skewed).as_deref()).await,
            Auth::Viewer(_)
        ));
    }

    #[tokio::test]
    async fn issuer_and_audience_are_checked_when_configured() {
        let keys = keys_with(Some("https://idp.example/realms/library"), &["library-api"]);
        let claims = |iss: &str, aud: serde_json::Value| {
            sign(
                "secret",
                &serde_json::json!({ "sub": "ana", "exp": now() + 60, "iss": iss, "aud": aud }),
            )
        };
        let good = claims("https://idp.example/realms/library", "library-api".into());
        assert!(matches!(
            keys.authenticate(bearer(&good).as_deref()).await,
            Auth::Viewer(_)
        ));
        let in_a_list = claims(
            "https://idp.example/realms/library",
            serde_json::json!(["account", "library-api"]),
        );
        assert!(matches!(
            keys.authenticate(bearer(&in_a_list).as_deref()).await,
            Auth::Viewer(_)
        ));
        let other_issuer = claims("https://evil.example", "library-api".into());
        assert_eq!(
            refused_because(keys.authenticate(bearer(&other_issuer).as_deref()).await),
            "the token's issuer is not accepted"
        );
        let other_audience = claims(
            "https://idp.example/realms/library",
            serde_json::json!(["account", "billing"]),
        );
        assert_eq!(
            refused_because(keys.authenticate(bearer(&other_audience).as_deref()).await),
            "the token is meant for another audience"
        );
        let bare = sign(
            "secret",
            &serde_json::json!({ "sub": "ana", "exp": now() + 60, "aud": "library-api" }),
        );
        assert_eq!(
            refused_because(keys.authenticate(bearer(&bare).as_deref()).await),
            "the token has no issuer (iss)"
        );
        // Issued tokens carry both, so they pass.
        let issued = keys.issue("ana", &[], 60).unwrap();
        assert!(matches!(
            keys.authenticate(bearer(&issued).as_deref()).await,
            Auth::Viewer(_)
        ));
    }

    #[tokio::test]
    async fn without_a_configured_audience_any_audience_is_accepted() {
        let keys = keys_with(None, &[]);
        let token = sign(
            "secret",
            &serde_json::json!({ "sub": "ana", "exp": now() + 60, "aud": "whatever", "iss": "x" }),
        );
        assert!(matches!(
            keys.authenticate(bearer(&token).as_deref()).await,
            Auth::Viewer(_)
        ));
    }

    #[test]
    fn settings_need_a_secret_or_a_jwks() {
        assert!(matches!(
            JwtKeys::from_settings(&AuthSettings::default()),
            Err(AuthError::NoKeys)
        ));
        let blank = AuthSettings {
            secret: Some(Secret::from(" ")),
            ..AuthSettings::default()
        };
        assert!(matches!(JwtKeys::from_settings(&blank), Err(AuthError::NoKeys)));
        let bad_url = AuthSettings {
            jwks_url: Some("ftp://idp".into()),
            ..AuthSettings::default()
        };
        assert!(matches!(
            JwtKeys::from_settings(&bad_url),
            Err(AuthError::BadJwksUrl(_))
        ));
        let jwks_only = AuthSettings {
            jwks_url: Some("https://idp.example/jwks".into()),
            ..AuthSettings::default()
        };
        let keys = JwtKeys::from_settings(&jwks_only).unwrap();
        assert!(matches!(keys.issue("ana", &[], 60), Err(AuthError::NoSecret)));
    }

    #[tokio::test]
    async fn with_only_a_jwks_an_hs256_token_is_refused() {
        let keys = JwtKeys::from_settings(&AuthSettings {
            jwks_url: Some("http://127.0.0.1:9/jwks".into()),
            ..AuthSettings::default()
        })
        .unwrap();
        let token = sign("secret", &serde_json::json!({ "sub": "ana", "exp": now() + 60 }));
        assert_eq!(
            refused_because(keys.authenticate(bearer(&token).as_deref()).await),
            "the token's algorithm is not accepted"
        );
    }

    #[test]
    fn a_key_set_keeps_only_the_keys_that_sign() {
        let body = serde_json::json!({ "keys": [
            { "kty": "oct", "kid": "shared", "k": "c2VjcmV0" },
            { "kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB" },
            { "kty": "EC", "kid": "p256", "crv": "P-256", "alg": "ES256",
              "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
              "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" },
            { "kty": "RSA", "kid": "rsa", "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw", "e": "AQAB" },
            { "kty": "EC", "kid": "curve", "crv": "secp256k1", "x": "AA", "y": "AA" },
            { "kty": "weird" }
        ]});
        let keys = parse_key_set(body.to_string().as_bytes(), None, &[]).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref().unwrap_or("")).collect();
        assert_eq!(kids, ["p256", "rsa"]);
        assert_eq!(keys[0].validation.algorithms, [Algorithm::ES256]);
        assert!(keys[1].validation.algorithms.contains(&Algorithm::RS256));
        assert!(!keys[1].validation.algorithms.contains(&Algorithm::HS256));
        assert!(parse_key_set(br#"{"keys":[]}"#, None, &[]).is_err());
        assert!(parse_key_set(b"<html>", None, &[]).is_err());
    }
}
