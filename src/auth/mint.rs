//! `ecos token`: an HS256 token signed with the first configured secret, for
//! development and tests. Production tokens come from the team's backend.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Map, Value, json};

use crate::config::JwtSettings;

/// Why no token could be made.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// `auth.jwt.secrets` is empty.
    #[error(
        "`ecos token` signs with `auth.jwt.secrets` (ECOS_AUTH__JWT__SECRETS), which is not set"
    )]
    NoSecret,
    /// `--ttl` is not a duration.
    #[error(
        "invalid --ttl {0:?}; expected a number with an optional unit s, m, h or d, e.g. 90s, 15m, 1h"
    )]
    Ttl(String),
    /// Signing failed.
    #[error("cannot sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// What goes into the token.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The user id.
    pub sub: String,
    /// The rooms claim's entries.
    pub rooms: Vec<String>,
    /// Lifetime from now.
    pub ttl: Duration,
    /// Whether the token allows the global `message` broadcast.
    pub broadcast: bool,
}

/// Parses `90`, `90s`, `15m`, `1h`, `2d`.
pub fn parse_ttl(text: &str) -> Result<Duration, MintError> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| MintError::Ttl(text.to_owned()))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    };
    match secs {
        Some(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err(MintError::Ttl(text.to_owned())),
    }
}

/// Signs `request` with the first secret, using the configured claim names, issuer and audience.
pub fn mint(settings: &JwtSettings, request: &TokenRequest) -> Result<String, MintError> {
    let secret = settings.secrets.first().ok_or(MintError::NoSecret)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut claims = Map::new();
    claims.insert(settings.user_claim.clone(), json!(request.sub));
    claims.insert(settings.rooms_claim.clone(), json!(request.rooms));
    claims.insert("iat".to_owned(), json!(now));
    claims.insert(
        "exp".to_owned(),
        json!(now.saturating_add(request.ttl.as_secs())),
    );
    if request.broadcast {
        claims.insert("broadcast".to_owned(), Value::Bool(true));
    }
    if let Some(issuer) = &settings.issuer {
        claims.insert("iss".to_owned(), json!(issuer));
    }
    if let Some(audience) = &settings.audience {
        claims.insert("aud".to_owned(), json!(audience));
    }
    let key = EncodingKey::from_secret(secret.expose().as_bytes())?;
    Ok(encode(&Header::new(Algorithm::HS256), &claims, &key)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_take_a_unit_and_refuse_nonsense() {
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("2d").unwrap(), Duration::from_secs(172_800));
        for bad in ["", "0", "1w", "h", "-5s", "1.5h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}
