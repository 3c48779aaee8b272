//! Who may connect, and what a connection may do.
//!
//! - `auth.mode = none`: anyone connects, every socket may use every room
//!   (except the reserved `user:` rooms) and the global broadcast.
//! - `auth.mode = jwt`: the CONNECT payload's `token` (or the handshake's
//!   `Authorization: Bearer`) must be a valid JWT; its claims name the user
//!   (the socket joins `user:<id>`) and bound the rooms it may use
//!   ([`Grants`]). A refused connection gets CONNECT_ERROR
//!   `unauthorized: <reason>` ([`Refusal`]).
//!
//! - [`jwt`]: which key verifies which algorithm, and what each failure is called;
//! - [`jwks`]: an identity provider's key set, cached and refreshed;
//! - [`grants`]: room permissions from the rooms claim;
//! - [`mint`]: `ecos token`, for development and tests.

pub mod grants;
pub mod jwks;
pub mod jwt;
pub mod mint;

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::http::{HeaderMap, header::AUTHORIZATION};
use prometheus::{IntCounterVec, Opts};
use serde_json::{Map, Value};

use crate::{
    config::{AuthMode, AuthSettings},
    metrics::{Metrics, MetricsError},
};

pub use grants::Grants;
pub use jwt::{KeyError, PublicKey};

/// Longest user id accepted, in characters: `user:<id>` must fit a room name.
pub const MAX_USER_CHARS: usize = 120;

/// Why a connection was refused. The client sees `unauthorized: <reason>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token in the CONNECT payload nor in `Authorization`.
    MissingToken,
    /// Not a JWT, too long, or claims of the wrong type.
    Malformed,
    /// `exp` is past (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// No configured key signed it.
    BadSignature,
    /// `iss` missing or not the configured issuer.
    WrongIssuer,
    /// `aud` missing or not the configured audience.
    WrongAudience,
    /// Its `kid` is not in the JWKS, even after a refetch.
    UnknownKey,
    /// `alg: none`, an unknown algorithm, or one no configured key may verify.
    BadAlgorithm,
    /// No `exp` while `auth.jwt.require_exp` is on.
    MissingExp,
    /// The user claim is missing, empty, too long or not a string.
    BadUser,
    /// The JWKS could not be fetched yet.
    KeysUnavailable,
}

impl Refusal {
    /// Every refusal, for pre-created metric labels.
    pub const ALL: [Refusal; 12] = [
        Refusal::MissingToken,
        Refusal::Malformed,
        Refusal::Expired,
        Refusal::NotYetValid,
        Refusal::BadSignature,
        Refusal::WrongIssuer,
        Refusal::WrongAudience,
        Refusal::UnknownKey,
        Refusal::BadAlgorithm,
        Refusal::MissingExp,
        Refusal::BadUser,
        Refusal::KeysUnavailable,
    ];

    /// The reason the client reads after `unauthorized: `.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::MissingToken => "missing token",
            Refusal::Malformed => "malformed token",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not yet valid",
            Refusal::BadSignature => "bad signature",
            Refusal::WrongIssuer => "wrong issuer",
            Refusal::WrongAudience => "wrong audience",
            Refusal::UnknownKey => "unknown key",
            Refusal::BadAlgorithm => "algorithm not allowed",
            Refusal::MissingExp => "missing exp",
            Refusal::BadUser => "missing or invalid user claim",
            Refusal::KeysUnavailable => "keys unavailable",
        }
    }

    /// The `reason` label of `ecos_auth_failures_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::MissingToken => "missing_token",
            Refusal::Malformed => "malformed",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::BadSignature => "bad_signature",
            Refusal::WrongIssuer => "wrong_issuer",
            Refusal::WrongAudience => "wrong_audience",
            Refusal::UnknownKey => "unknown_key",
            Refusal::BadAlgorithm => "bad_algorithm",
            Refusal::MissingExp => "missing_exp",
            Refusal::BadUser => "bad_user",
            Refusal::KeysUnavailable => "keys_unavailable",
        }
    }
}

impl std::fmt::Display for Refusal {
    /// The CONNECT_ERROR message: socketioxide sends the error's text as `message`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unauthorized: {}", self.reason())
    }
}

/// Who a socket is and what it may do, decided once at connect.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user id, when the connection was authenticated.
    pub user: Option<Arc<str>>,
    /// Its room permissions.
    pub grants: Grants,
    /// When its token stops being valid (its `exp` plus the leeway).
    pub expires_at: Option<SystemTime>,
}

impl Identity {
    /// An unauthenticated socket in `auth.mode = none`.
    pub fn anonymous() -> Self {
        Self {
            user: None,
            grants: Grants::All,
            expires_at: None,
        }
    }
}

/// Why authentication could not be set up at start-up.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The public key file became unusable since the settings were checked.
    #[error("auth.jwt.public_key_file: {0}")]
    Key(#[from] KeyError),
    /// The JWKS client could not be built.
    #[error("auth.jwt.jwks_url: {0}")]
    Jwks(#[from] jwks::JwksError),
    /// The metrics could not be registered.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// Decides who may connect, and counts refusals.
pub struct Authenticator {
    /// The verifier in `jwt` mode; `None` lets everyone in.
    verifier: Option<jwt::Verifier>,
    /// The claim holding the user id.
    user_claim: String,
    /// The claim listing the rooms.
    rooms_claim: String,
    /// Clock skew allowed on `exp`.
    leeway: Duration,
    /// `ecos_auth_failures_total{reason}`.
    failures: IntCounterVec,
}

impl Authenticator {
    /// The authenticator `settings` describe; in `jwt` mode with a JWKS, its
    /// keys start loading in the background (a provider that is down does not stop ecos).
    pub fn new(settings: &AuthSettings, metrics: &Metrics) -> Result<Arc<Self>, AuthError> {
        let failures = IntCounterVec::new(
            Opts::new(
                "auth_failures_total",
                "Connections refused by authentication, by reason.",
            ),
            &["reason"],
        )
        .map_err(MetricsError::from)?;
        metrics.register(Box::new(failures.clone()))?;
        for refusal in Refusal::ALL {
            failures.with_label_values(&[refusal.label()]);
        }
        let verifier = match settings.mode {
            AuthMode::None => None,
            AuthMode::Jwt => {
                let jwks = match &settings.jwt.jwks_url {
                    Some(url) => {
                        let jwks = jwks::Jwks::new(url.clone())?;
                        jwks.spawn_refresh();
                        Some(jwks)
                    }
                    None => None,
                };
                Some(jwt::Verifier::new(&settings.jwt, jwks)?)
            }
        };
        Ok(Arc::new(Self {
            verifier,
            user_claim: settings.jwt.user_claim.clone(),
            rooms_claim: settings.jwt.rooms_claim.clone(),
            leeway: settings.jwt.leeway,
            failures,
        }))
    }

    /// Whether connections need a token.
    pub fn required(&self) -> bool {
        self.verifier.is_some()
    }

    /// The identity of a connection presenting `token`; refusals are counted.
    pub async fn authenticate(&self, token: Option<&str>) -> Result<Identity, Refusal> {
        let Some(verifier) = &self.verifier else {
            return Ok(Identity::anonymous());
        };
        let result = match token {
            None => Err(Refusal::MissingToken),
            Some(token) => match verifier.verify(token).await {
                Ok(claims) => self.identity(&claims),
                Err(refusal) => Err(refusal),
            },
        };
        if let Err(refusal) = result {
            self.failures.with_label_values(&[refusal.label()]).inc();
        }
        result
    }

    /// The identity verified claims describe.
    fn identity(&self, claims: &Map<String, Value>) -> Result<Identity, Refusal> {
        let user = match claims.get(&self.user_claim) {
            Some(Value::String(s)) => s.clone(),
            // Some providers number their users.
            Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
            _ => return Err(Refusal::BadUser),
        };
        let chars = user.chars().count();
        if chars == 0 || chars > MAX_USER_CHARS || user.chars().any(char::is_control) {
            return Err(Refusal::BadUser);
        }
        let patterns: Vec<&str> = match claims.get(&self.rooms_claim) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) if items.len() <= grants::MAX_ROOM_GRANTS => items
                .iter()
                .map(|item| item.as_str().filter(|s| !s.is_empty() && s.len() <= 512))
                .collect::<Option<Vec<&str>>>()
                .ok_or(Refusal::Malformed)?,
            Some(_) => return Err(Refusal::Malformed),
        };
        let broadcast = match claims.get("broadcast") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(Refusal::Malformed),
        };
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_u64)
            .and_then(|exp| UNIX_EPOCH.checked_add(Duration::from_secs(exp)))
            .and_then(|at| at.checked_add(self.leeway));
        Ok(Identity {
            user: Some(Arc::from(user)),
            grants: Grants::from_patterns(patterns, broadcast),
            expires_at,
        })
    }
}

/// The token a connection presents: the CONNECT payload's `token`, else the
/// handshake's `Authorization: Bearer`. Never the query string, which ends up in router logs.
pub fn presented_token(auth: Option<&Value>, headers: &HeaderMap) -> Option<String> {
    if let Some(Value::String(token)) = auth.and_then(|a| a.get("token")) {
        return Some(token.clone());
    }
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_token_wins_over_the_header_and_other_schemes_are_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, "Bearer from-header".parse().unwrap());
        let payload = serde_json::json!({ "token": "from-payload" });
        assert_eq!(
            presented_token(Some(&payload), &headers).as_deref(),
            Some("from-payload")
        );
        assert_eq!(
            presented_token(None, &headers).as_deref(),
            Some("from-header")
        );
        let not_a_string = serde_json::json!({ "token": 42 });
        assert_eq!(
            presented_token(Some(&not_a_string), &headers).as_deref(),
            Some("from-header")
        );
        headers.insert(AUTHORIZATION, "Basic dXNlcjpwYXNz".parse().unwrap());
        assert_eq!(presented_token(None, &headers), None);
        assert_eq!(presented_token(None, &HeaderMap::new()), None);
    }

    #[test]
    fn refusals_read_as_the_client_sees_them() {
        assert_eq!(Refusal::Expired.to_string(), "unauthorized: expired");
        assert_eq!(
            Refusal::MissingToken.to_string(),
            "unauthorized: missing token"
        );
        let labels: std::collections::HashSet<_> = Refusal::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Refusal::ALL.len());
    }
}
