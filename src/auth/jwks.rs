//! An identity provider's keys (JWKS), fetched at start-up, refreshed in the
//! background, and refetched when a token names a key not seen yet.

use std::{
    sync::{Arc, RwLock, Weak},
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, jwk};

use super::Refusal;

/// How often the keys are refreshed while all is well.
pub const REFRESH_EVERY: Duration = Duration::from_secs(300);

/// Fewest seconds between two fetches triggered by tokens: forged `kid`s
/// cannot make ecos hammer the provider.
pub const MIN_REFETCH_GAP: Duration = Duration::from_secs(5);

/// Longest wait for the provider's answer.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// Why the keys could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The request failed (connection, TLS, timeout).
    #[error("cannot fetch the JWKS: {0}")]
    Fetch(#[from] reqwest::Error),
    /// The provider answered with an error status.
    #[error("the JWKS endpoint answered {0}")]
    Status(reqwest::StatusCode),
    /// The document is larger than [`MAX_JWKS_BYTES`].
    #[error("the JWKS document is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    /// The document is not a JWKS.
    #[error("the JWKS document is not valid: {0}")]
    Invalid(String),
}

/// One usable key of the set.
#[derive(Clone)]
struct Entry {
    /// Its `kid`, if it has one.
    kid: Option<String>,
    /// The family its type allows.
    family: AlgorithmFamily,
    /// The one algorithm it is for, when the set says (`alg`).
    alg: Option<String>,
    /// The key.
    key: DecodingKey,
}

/// The keys of a JWKS endpoint.
pub struct Jwks {
    /// The endpoint.
    url: String,
    /// The HTTP client (pooled, time-limited).
    client: reqwest::Client,
    /// The keys of the latest successful fetch; `None` before the first.
    keys: RwLock<Option<Arc<Vec<Entry>>>>,
    /// When the latest fetch began; held during a fetch, so concurrent
    /// callers wait for it instead of starting their own.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
}

impl Jwks {
    /// A key set for `url`; nothing is fetched until [`Jwks::spawn_refresh`] or a token asks.
    pub fn new(url: String) -> Result<Arc<Self>, JwksError> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .user_agent(concat!("ecos/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Arc::new(Self {
            url,
            client,
            keys: RwLock::new(None),
            last_attempt: tokio::sync::Mutex::new(None),
        }))
    }

    /// Fetches now and then every [`REFRESH_EVERY`] (every [`MIN_REFETCH_GAP`]
    /// until the first success), for as long as the key set is in use.
    pub fn spawn_refresh(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(jwks) = weak.upgrade() else { return };
                let ok = jwks.fetch_now().await;
                drop(jwks);
                tokio::time::sleep(if ok { REFRESH_EVERY } else { MIN_REFETCH_GAP }).await;
            }
        });
    }

    /// Fetches and installs the keys; logs and keeps the old ones on failure.
    async fn fetch_now(&self) -> bool {
        let mut last = self.last_attempt.lock().await;
        *last = Some(Instant::now());
        self.fetch_locked().await
    }

    async fn fetch_locked(&self) -> bool {
        match self.fetch().await {
            Ok(entries) => {
                tracing::info!(keys = entries.len(), "JWKS keys loaded");
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(entries));
                true
            }
            Err(error) => {
                tracing::warn!(%error, url = %crate::config::mask(&self.url), "JWKS fetch failed; keeping the keys already loaded");
                false
            }
        }
    }

    /// Fetches once more if the last attempt is older than [`MIN_REFETCH_GAP`].
    async fn refetch_if_due(&self) {
        let mut last = self.last_attempt.lock().await;
        if last.is_some_and(|at| at.elapsed() < MIN_REFETCH_GAP) {
            return;
        }
        *last = Some(Instant::now());
        self.fetch_locked().await;
    }

    fn current(&self) -> Option<Arc<Vec<Entry>>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The keys that may verify a token of `alg` naming `kid`.
    pub async fn keys_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Vec<DecodingKey>, Refusal> {
        if let Some(found) = self.current().map(|set| matching(&set, kid, alg))
            && !found.is_empty()
        {
            return Ok(found);
        }
        // Not loaded yet, or a key the provider may have added since.
        self.refetch_if_due().await;
        match self.current() {
            None => Err(Refusal::KeysUnavailable),
            Some(set) => {
                let found = matching(&set, kid, alg);
                if found.is_empty() {
                    Err(Refusal::UnknownKey)
                } else {
                    Ok(found)
                }
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<Entry>, JwksError> {
        let mut response = self.client.get(&self.url).send().await?;
        if !response.status().is_success() {
            return Err(JwksError::Status(response.status()));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(JwksError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(JwksError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        parse(&body)
    }
}

/// The keys of `set` for `alg`, with `kid` when the token names one.
fn matching(set: &[Entry], kid: Option<&str>, alg: Algorithm) -> Vec<DecodingKey> {
    let alg_name = format!("{alg:?}");
    set.iter()
        .filter(|e| e.family == alg.family())
        .filter(|e| e.alg.as_deref().is_none_or(|a| a == alg_name))
        .filter(|e| kid.is_none_or(|kid| e.kid.as_deref() == Some(kid)))
        .map(|e| e.key.clone())
        .collect()
}

/// The usable public keys of a JWKS document. Keys of other types, secret
/// (`oct`) keys and encryption keys are skipped: one odd key must not hide the rest.
fn parse(body: &[u8]) -> Result<Vec<Entry>, JwksError> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let doc: Document =
        serde_json::from_slice(body).map_err(|e| JwksError::Invalid(e.to_string()))?;
    let mut entries = Vec::new();
    for value in doc.keys {
        let Ok(jwk) = serde_json::from_value::<jwk::Jwk>(value) else {
            continue;
        };
        if matches!(
            jwk.common.public_key_use,
            Some(jwk::PublicKeyUse::Encryption)
        ) {
            continue;
        }
        let family = match &jwk.algorithm {
            jwk::AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
            jwk::AlgorithmParameters::EllipticCurve(_) => AlgorithmFamily::Ec,
            jwk::AlgorithmParameters::OctetKeyPair(_) => AlgorithmFamily::Ed,
            // A shared secret has no place in a public key set.
            _ => continue,
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        entries.push(Entry {
            kid: jwk.common.key_id.clone(),
            family,
            alg: jwk.common.key_algorithm.map(|a| format!("{a:?}")),
            key,
        });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_keys_are_skipped_and_the_rest_kept() {
        let doc = br#"{"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"secret"},
            {"kty":"weird","kid":"x"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","kid":"ed","alg":"EdDSA"}
        ]}"#;
        let entries = parse(doc).unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].kid.as_deref(), Some("ed"));
        assert_eq!(matching(&entries, Some("ed"), Algorithm::EdDSA).len(), 1);
        assert!(matching(&entries, Some("other"), Algorithm::EdDSA).is_empty());
        assert!(matching(&entries, Some("ed"), Algorithm::RS256).is_empty());
        assert!(parse(b"[]").is_err());
    }
}
