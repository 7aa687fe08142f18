//! Tokens of an identity provider: RS256 and ES256 keys from a JWKS the test serves, a key
//! rotated in later, made-up key ids, a provider down at start, and the claims checked.
use std::time::Duration;

use graphql_gateway::{AuthSettings, JwksPolicy, JwtKeys};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;

use crate::helpers::{AUDIENCE, ISSUER, IdentityProvider, TestGateway, TestKey};

fn idp_flags(idp: &IdentityProvider) -> Vec<&str> {
    vec![
        "--jwt-jwks-url",
        &idp.url,
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
    ]
}

#[tokio::test]
async fn rs256_and_es256_tokens_of_the_jwks_are_accepted_and_their_claims_checked() {
    let rsa = TestKey::fixture("rsa-1.pem", "rsa-1");
    let ec = TestKey::fixture("ec-1.pem", "ec-1");
    let idp = IdentityProvider::start(&[&rsa, &ec]).await;
    let gateway = TestGateway::start(&idp_flags(&idp)).await;

    // A reader's valid token passes authentication and meets the admin check.
    assert_eq!(gateway.create_book_code(&rsa.token()).await, "FORBIDDEN");
    assert_eq!(gateway.create_book_code(&ec.token()).await, "FORBIDDEN");
    // The provider's roles claim grants the administrator's operations: the call goes on to
    // book-svc, which is not there.
    let admin = rsa.token_as("rsa-1", |c| c["roles"] = json!(["admin"]));
    let past_auth = gateway.create_book_code(&admin).await;
    assert!(
        !["FORBIDDEN", "UNAUTHENTICATED"].contains(&past_auth.as_str()),
        "{past_auth}"
    );

    let refused = |outcome: crate::helpers::Outcome, why: &str| {
        assert_eq!(outcome.code.as_deref(), Some("UNAUTHENTICATED"), "{outcome:?}");
        assert_eq!(outcome.message, why, "{outcome:?}");
    };
    let wrong_key = TestKey::fixture("rsa-wrong.pem", "rsa-wrong");
    refused(
        gateway.create_book(Some(&wrong_key.token_as("rsa-1", |_| {}))).await,
        "the token's signature is not valid",
    );
    let soon = chrono::Utc::now().timestamp() + 600;
    refused(
        gateway
            .create_book(Some(&rsa.token_as("rsa-1", |c| c["nbf"] = json!(soon))))
            .await,
        "the token is not valid yet",
    );
    refused(
        gateway
            .create_book(Some(&ec.token_as("ec-1", |c| c["aud"] = json!("billing"))))
            .await,
        "the token is meant for another audience",
    );
    refused(
        gateway
            .create_book(Some(&rsa.token_as("rsa-1", |c| c["iss"] = json!("https://evil.test"))))
            .await,
        "the token's issuer is not accepted",
    );
    refused(
        gateway
            .create_book(Some(&ec.token_as("ec-1", |c| c["exp"] = json!(1_000))))
            .await,
        "the token has expired",
    );
    // An ES256 token naming the RSA key's id is not verified with the RSA key.
    let confused = ec.token_as("rsa-1", |_| {});
    assert_eq!(gateway.create_book_code(&confused).await, "UNAUTHENTICATED");
    // No shared secret is configured: an HS256 token is refused whatever it is signed with.
    let claims = json!({ "sub": "eve", "iss": ISSUER, "aud": AUDIENCE, "exp": soon });
    let hs256 = jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(b"guess")).unwrap();
    refused(
        gateway.create_book(Some(&hs256)).await,
        "the token's algorithm is not accepted",
    );
    refused(gateway.create_book(None).await, "a bearer token is required");
}

#[tokio::test]
async fn a_key_rotated_in_later_is_fetched_and_made_up_key_ids_do_not_hammer_the_provider() {
    let first = TestKey::fixture("rsa-1.pem", "rsa-1");
    let rotated = TestKey::fixture("rsa-2.pem", "rsa-2");
    let idp = IdentityProvider::start(&[&first]).await;
    let gateway = TestGateway::start(&idp_flags(&idp)).await;
    assert_eq!(idp.fetches(), 1, "the set is fetched once at start");
    assert_eq!(gateway.create_book_code(&first.token()).await, "FORBIDDEN");
    assert_eq!(idp.fetches(), 1, "a known key needs no fetch");

    idp.publish(&rotated);
    assert_eq!(gateway.create_book_code(&rotated.token()).await, "FORBIDDEN");
    assert_eq!(idp.fetches(), 2, "the unknown key id fetched the set once");

    let stranger = TestKey::fixture("rsa-wrong.pem", "rsa-wrong");
    let made_up: Vec<_> = (0..20)
        .map(|i| stranger.token_as(&format!("bogus-{i}"), |_| {}))
        .collect();
    let outcomes = futures::future::join_all(made_up.iter().map(|t| gateway.create_book(Some(t)))).await;
    for outcome in outcomes {
        assert_eq!(outcome.code.as_deref(), Some("UNAUTHENTICATED"), "{outcome:?}");
        assert_eq!(
            outcome.message, "the token's signing key is not one of the identity provider's keys",
            "{outcome:?}"
        );
    }
    assert_eq!(idp.fetches(), 2, "made-up key ids fetch at most once per interval");
    // Known keys are unaffected.
    assert_eq!(gateway.create_book_code(&first.token()).await, "FORBIDDEN");
    assert_eq!(gateway.create_book_code(&rotated.token()).await, "FORBIDDEN");
}

#[tokio::test]
async fn a_provider_down_at_start_is_asked_again_when_a_token_comes() {
    let key = TestKey::fixture("ec-1.pem", "ec-1");
    let idp = IdentityProvider::start(&[&key]).await;
    idp.answer(503);
    let gateway = TestGateway::start(&idp_flags(&idp)).await;
    assert_eq!(idp.fetches(), 1);
    idp.answer(200);
    assert_eq!(gateway.create_book_code(&key.token()).await, "FORBIDDEN");
    assert_eq!(idp.fetches(), 2);
}

#[tokio::test]
async fn the_shared_secret_and_the_jwks_work_side_by_side() {
    let key = TestKey::fixture("rsa-1.pem", "rsa-1");
    let idp = IdentityProvider::start(&[&key]).await;
    let mut flags = idp_flags(&idp);
    flags.extend(["--jwt-secret", "side-by-side"]);
    let gateway = TestGateway::start(&flags).await;
    let now = chrono::Utc::now().timestamp();
    let claims = json!({ "sub": "ana", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 60 });
    let sign =
        |secret: &[u8]| jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(secret)).unwrap();
    assert_eq!(gateway.create_book_code(&sign(b"side-by-side")).await, "FORBIDDEN");
    assert_eq!(gateway.create_book_code(&sign(b"other")).await, "UNAUTHENTICATED");
    assert_eq!(gateway.create_book_code(&key.token()).await, "FORBIDDEN");
    assert_eq!(idp.fetches(), 1);
}

#[tokio::test]
async fn the_set_is_read_again_periodically_so_retired_keys_stop_working() {
    let old = TestKey::fixture("rsa-1.pem", "rsa-1");
    let new = TestKey::fixture("ec-1.pem", "ec-1");
    let idp = IdentityProvider::start(&[&old]).await;
    let keys = JwtKeys::from_settings(&AuthSettings {
        jwks_url: Some(idp.url.clone()),
        issuer: Some(ISSUER.into()),
        audience: vec![AUDIENCE.into()],
        jwks_policy: JwksPolicy {
            refresh_every: Duration::from_millis(100),
            // Only the periodic refresh may explain a fetch here.
            min_unknown_kid_interval: Duration::from_secs(3600),
            ..JwksPolicy::default()
        },
        ..AuthSettings::default()
    })
    .unwrap();
    keys.load_jwks().await;
    let bearer = |t: String| format!("Bearer {t}");
    assert!(keys.authenticate(Some(&bearer(old.token()))).await.viewer().is_ok());

    let stop = library_platform::CancellationToken::new();
    let refresher = tokio::spawn({
        let (keys, stop) = (keys.clone(), stop.clone());
        async move { keys.keep_fresh(stop).await }
    });
    idp.replace(&[&new]);
    let started = std::time::Instant::now();
    while idp.fetches() < 3 {
        assert!(started.elapsed() < Duration::from_secs(5), "no periodic fetch");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(keys.authenticate(Some(&bearer(old.token()))).await.viewer().is_err());
    assert!(keys.authenticate(Some(&bearer(new.token()))).await.viewer().is_ok());
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(2), refresher)
        .await
        .expect("the refresher stops with the token")
        .unwrap();
}
