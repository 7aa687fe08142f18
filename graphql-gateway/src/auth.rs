//! Bearer tokens: HS256 JWTs signed with `LIBRARY_JWT_SECRET`, claims `sub` (the user id), `exp`
//! (required) and `roles` (`"admin"` grants the administrator's operations).
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use library_platform::grpc::MAX_USER_ID_LEN;

use crate::error::GatewayError;

/// The claims the gateway reads and issues.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default)]
    pub roles: Vec<String>,
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

/// Verifies and issues tokens with one secret.
#[derive(Clone)]
pub struct JwtKeys {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

impl JwtKeys {
    pub fn new(secret: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        Self {
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Reads an `Authorization` header value (`Bearer <jwt>`); `None` is anonymous.
    pub fn authenticate(&self, authorization: Option<&str>) -> Auth {
        let Some(value) = authorization.map(str::trim).filter(|v| !v.is_empty()) else {
            return Auth::Anonymous;
        };
        let Some(token) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")) else {
            return Auth::Invalid("the Authorization header must be `Bearer <token>`".into());
        };
        match jsonwebtoken::decode::<Claims>(token.trim(), &self.decoding, &self.validation) {
            Ok(data) if !data.claims.sub.trim().is_empty() && data.claims.sub.len() <= MAX_USER_ID_LEN => {
                Auth::Viewer(Viewer {
                    admin: data.claims.roles.iter().any(|r| r == "admin"),
                    user_id: data.claims.sub,
                })
            }
            Ok(_) => Auth::Invalid("the token's subject is empty or too long".into()),
            Err(error) => {
                use jsonwebtoken::errors::ErrorKind;
                let why = match error.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::InvalidSignature => "the token's signature is not valid",
                    _ => "the token is not valid",
                };
                Auth::Invalid(why.into())
            }
        }
    }

    /// Issues a token for `user_id` valid for `ttl_seconds`.
    ///
    /// # Errors
    /// Signing failed.
    pub fn issue(
        &self,
        user_id: &str,
        roles: &[&str],
        ttl_seconds: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let exp = chrono::Utc::now().timestamp().max(0) as u64 + ttl_seconds;
        let claims = Claims {
            sub: user_id.to_owned(),
            exp,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_token_names_the_viewer_and_their_role() {
        let keys = JwtKeys::new("secret");
        let token = keys.issue("ana", &["admin"], 60).unwrap();
        let auth = keys.authenticate(Some(&format!("Bearer {token}")));
        assert_eq!(
            auth.admin().unwrap(),
            &Viewer {
                user_id: "ana".into(),
                admin: true
            }
        );
    }

    #[test]
    fn a_reader_is_not_an_admin() {
        let keys = JwtKeys::new("secret");
        let token = keys.issue("bo", &[], 60).unwrap();
        let auth = keys.authenticate(Some(&format!("Bearer {token}")));
        assert!(auth.viewer().is_ok());
        assert_eq!(auth.admin().unwrap_err().code(), "FORBIDDEN");
    }

    #[test]
    fn missing_expired_and_forged_tokens_are_unauthenticated() {
        let keys = JwtKeys::new("secret");
        assert_eq!(keys.authenticate(None).viewer().unwrap_err().code(), "UNAUTHENTICATED");
        let forged = JwtKeys::new("other").issue("eve", &["admin"], 60).unwrap();
        assert!(matches!(
            keys.authenticate(Some(&format!("Bearer {forged}"))),
            Auth::Invalid(_)
        ));
        let claims = Claims {
            sub: "old".into(),
            exp: 1_000,
            roles: vec![],
        };
        let expired = jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(b"secret")).unwrap();
        assert!(matches!(
            keys.authenticate(Some(&format!("Bearer {expired}"))),
            Auth::Invalid(_)
        ));
        assert!(matches!(keys.authenticate(Some("Basic abc")), Auth::Invalid(_)));
    }
}
