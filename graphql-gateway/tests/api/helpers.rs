//! A gateway on port 0 with no service behind it, an identity provider's JWKS served by the
//! test itself, and tokens signed with the fixtures' keys.
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use clap::Parser;
use graphql_gateway::{Application, Config};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use library_platform::CancellationToken;
use serde_json::{Value, json};

pub const ISSUER: &str = "https://idp.test/realms/library";
pub const AUDIENCE: &str = "library-api";

/// A signing key of the test's identity provider.
pub struct TestKey {
    pub kid: &'static str,
    pub alg: Algorithm,
    pub encoding: EncodingKey,
}

impl TestKey {
    /// A key of `tests/fixtures` (`rsa-*.pem`: RS256, `ec-*.pem`: ES256).
    pub fn fixture(file: &str, kid: &'static str) -> Self {
        let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
        let pem = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let (alg, encoding) = if file.starts_with("ec") {
            (Algorithm::ES256, EncodingKey::from_ec_pem(&pem).expect("an EC key"))
        } else {
            (Algorithm::RS256, EncodingKey::from_rsa_pem(&pem).expect("an RSA key"))
        };
        Self { kid, alg, encoding }
    }

    /// The public half, as the provider publishes it.
    pub fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.encoding, self.alg).expect("a public JWK");
        jwk.common.key_id = Some(self.kid.to_owned());
        jwk
    }

    /// A token with the default claims (a reader, the right issuer and audience, valid for an
    /// hour) changed by `edit`, signed with this key and naming `kid`.
    pub fn token_as(&self, kid: &str, edit: impl FnOnce(&mut Value)) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut claims = json!({
            "sub": "reader-jwks",
            "iss": ISSUER,
            "aud": ["account", AUDIENCE],
            "iat": now,
            "exp": now + 3600,
            "roles": [],
        });
        edit(&mut claims);
        let mut header = Header::new(self.alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, &claims, &self.encoding).expect("sign a token")
    }

    /// A default token naming this key.
    pub fn token(&self) -> String {
        self.token_as(self.kid, |_| {})
    }
}

/// The identity provider's JWKS endpoint: the set it serves can change, and it counts fetches.
#[derive(Clone)]
pub struct IdentityProvider {
    pub url: String,
    keys: Arc<Mutex<Vec<Jwk>>>,
    fetches: Arc<AtomicUsize>,
    status: Arc<AtomicU16>,
}

#[derive(Clone)]
struct Served {
    keys: Arc<Mutex<Vec<Jwk>>>,
    fetches: Arc<AtomicUsize>,
    status: Arc<AtomicU16>,
}

async fn jwks(State(served): State<Served>) -> Result<axum::Json<JwkSet>, StatusCode> {
    served.fetches.fetch_add(1, Ordering::SeqCst);
    let status = StatusCode::from_u16(served.status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK);
    if status != StatusCode::OK {
        return Err(status);
    }
    let keys = served.keys.lock().expect("keys").clone();
    Ok(axum::Json(JwkSet { keys }))
}

impl IdentityProvider {
    /// Serves `keys` at `http://127.0.0.1:<port>/certs` until the test ends.
    pub async fn start(keys: &[&TestKey]) -> Self {
        let served = Served {
            keys: Arc::new(Mutex::new(keys.iter().map(|k| k.jwk()).collect())),
            fetches: Arc::new(AtomicUsize::new(0)),
            status: Arc::new(AtomicU16::new(200)),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/certs", listener.local_addr().expect("address"));
        let router = axum::Router::new()
            .route("/certs", get(jwks))
            .with_state(served.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            url,
            keys: served.keys,
            fetches: served.fetches,
            status: served.status,
        }
    }

    /// Publishes one more key (a rotation).
    pub fn publish(&self, key: &TestKey) {
        self.keys.lock().expect("keys").push(key.jwk());
    }

    /// Publishes exactly `keys` (the others retired).
    pub fn replace(&self, keys: &[&TestKey]) {
        *self.keys.lock().expect("keys") = keys.iter().map(|k| k.jwk()).collect();
    }

    /// How many times the set was fetched.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Answers every fetch with `status` (200: the set again).
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }
}

/// A running gateway; stops when dropped.
pub struct TestGateway {
    pub url: String,
    http: reqwest::Client,
    stop: CancellationToken,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// How a GraphQL request came out: the first error's code and message, if any.
#[derive(Debug)]
pub struct Outcome {
    pub code: Option<String>,
    pub message: String,
}

impl TestGateway {
    /// The gateway with `args` (flags, as on its command line) and services that do not answer.
    pub async fn start(args: &[&str]) -> Self {
        let mut argv = vec![
            "graphql-gateway",
            "--gateway-http-addr",
            "127.0.0.1:0",
            "--book-svc-url",
            "http://127.0.0.1:9",
            "--borrow-svc-url",
            "http://127.0.0.1:9",
            "--dashboard-svc-url",
            "http://127.0.0.1:9",
            "--downstream-timeout-ms",
            "300",
        ];
        argv.extend_from_slice(args);
        let config = Config::try_parse_from(argv).expect("the gateway's settings");
        let stop = CancellationToken::new();
        let app = Application::build(&config, stop.clone())
            .await
            .expect("the gateway builds");
        let url = format!("http://127.0.0.1:{}/graphql", app.port());
        tokio::spawn(app.run_until_stopped());
        Self {
            url,
            http: reqwest::Client::new(),
            stop,
        }
    }

    /// Registers a book with `token`: an administrator's operation, so a reader's valid token
    /// is FORBIDDEN (authenticated, role checked) where a bad one is UNAUTHENTICATED.
    pub async fn create_book(&self, token: Option<&str>) -> Outcome {
        let mut request = self.http.post(&self.url).json(&json!({
            "query": "mutation { createBook(input: { title: \"T\", author: \"A\", totalCopies: 1 }) { id } }"
        }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let body: Value = request
            .send()
            .await
            .expect("the gateway answers")
            .json()
            .await
            .expect("a JSON answer");
        let error = &body["errors"][0];
        Outcome {
            code: error["extensions"]["code"].as_str().map(str::to_owned),
            message: error["message"].as_str().unwrap_or_default().to_owned(),
        }
    }

    /// The code of [`TestGateway::create_book`].
    pub async fn create_book_code(&self, token: &str) -> String {
        self.create_book(Some(token))
            .await
            .code
            .unwrap_or_else(|| "none".into())
    }
}
