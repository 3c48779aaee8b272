//! Bearer secrets: the API keys, and the metrics token that `/metrics` checks
//! the same way.
//!
//! The comparison takes the same time whatever the first differing byte is
//! (`subtle`), and every configured key is compared, so the time of an
//! answer does not tell how much of a guess was right. Key lengths are not
//! hidden; long random keys make that worthless.

use axum::http::{HeaderMap, header};
use subtle::{Choice, ConstantTimeEq};

use crate::config::Secret;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer ...` header.
    #[error("this call needs an `Authorization: Bearer <key>` header")]
    Missing,
    /// A bearer token that matches none of the secrets.
    #[error("the bearer token is not valid")]
    Wrong,
}

/// The secrets a request may present, any one of which is accepted.
#[derive(Debug, Clone, Default)]
pub struct Secrets(Vec<Secret>);

impl Secrets {
    /// Accepts any of `secrets` (none: nothing is accepted).
    pub fn new(secrets: impl IntoIterator<Item = Secret>) -> Self {
        Self(secrets.into_iter().collect())
    }

    /// Whether any secret is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Checks the request's `Authorization: Bearer <token>` against every secret.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let token = bearer_token(headers).ok_or(AuthError::Missing)?;
        let mut matched = Choice::from(0);
        for secret in &self.0 {
            matched |= secret.expose().as_bytes().ct_eq(token.as_bytes());
        }
        if bool::from(matched) {
            Ok(())
        } else {
            Err(AuthError::Wrong)
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(authorization: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn any_configured_key_is_accepted_and_nothing_else() {
        let secrets = Secrets::new([Secret::new("old-key"), Secret::new("new-key")]);
        assert_eq!(secrets.check(&headers(Some("Bearer old-key"))), Ok(()));
        assert_eq!(secrets.check(&headers(Some("bearer  new-key "))), Ok(()));
        assert_eq!(
            secrets.check(&headers(Some("Bearer new-ke"))),
            Err(AuthError::Wrong)
        );
        assert_eq!(
            secrets.check(&headers(Some("Bearer new-key2"))),
            Err(AuthError::Wrong)
        );
        assert_eq!(
            secrets.check(&headers(Some("Basic new-key"))),
            Err(AuthError::Missing)
        );
        assert_eq!(
            secrets.check(&headers(Some("Bearer "))),
            Err(AuthError::Missing)
        );
        assert_eq!(secrets.check(&headers(None)), Err(AuthError::Missing));
        assert_eq!(
            Secrets::default().check(&headers(Some("Bearer x"))),
            Err(AuthError::Wrong)
        );
    }
}
