//! Verifying connection tokens: which keys may check which algorithms, and
//! what each failure is called.

use std::{collections::HashSet, path::Path, str::FromStr, sync::Arc};

use base64::Engine;
use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey, Validation, decode, errors::ErrorKind,
};
use serde_json::{Map, Value};

use super::{Refusal, jwks::Jwks};
use crate::config::JwtSettings;

/// Longest token accepted, in bytes: a bound on the work a stranger can ask for.
pub const MAX_TOKEN_BYTES: usize = 8192;

/// Why a public key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("{0}")]
    Read(#[from] std::io::Error),
    /// It holds no RSA, EC or Ed25519 public key in PEM form.
    #[error(
        "not a PEM public key (RSA, EC P-256/P-384 or Ed25519); a private key or certificate is not accepted"
    )]
    NotAPublicKey,
}

/// One of the library's PEM readers, each for one key type.
type PemParser = fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>;

/// A public key read from `auth.jwt.public_key_file`, with the one algorithm family it may verify.
#[derive(Clone)]
pub struct PublicKey {
    /// The key.
    key: DecodingKey,
    /// RSA, EC or Ed: never HMAC, so a public key can never serve as an HMAC secret.
    family: AlgorithmFamily,
}

impl PublicKey {
    /// Reads and classifies a PEM public key.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let pem = std::fs::read(path)?;
        let attempts: [(PemParser, AlgorithmFamily); 3] = [
            (DecodingKey::from_rsa_pem, AlgorithmFamily::Rsa),
            (DecodingKey::from_ec_pem, AlgorithmFamily::Ec),
            (DecodingKey::from_ed_pem, AlgorithmFamily::Ed),
        ];
        // A private key's PEM also parses as RSA (PKCS#1 content): only
        // "PUBLIC KEY" blocks are public keys.
        let text = String::from_utf8_lossy(&pem);
        if !text.contains("PUBLIC KEY-----") {
            return Err(KeyError::NotAPublicKey);
        }
        attempts
            .iter()
            .find_map(|(parse, family)| {
                parse(&pem).ok().map(|key| PublicKey {
                    key,
                    family: *family,
                })
            })
            .ok_or(KeyError::NotAPublicKey)
    }
}

/// The algorithms a key family may verify: the only ones a token checked by it may name.
pub fn algorithms(family: AlgorithmFamily) -> &'static [Algorithm] {
    use Algorithm::*;
    match family {
        AlgorithmFamily::Hmac => &[HS256, HS384, HS512],
        AlgorithmFamily::Rsa => &[RS256, RS384, RS512, PS256, PS384, PS512],
        AlgorithmFamily::Ec => &[ES256, ES384],
        AlgorithmFamily::Ed => &[EdDSA],
        // A family added by a later version of the library verifies nothing here.
        #[allow(unreachable_patterns)]
        _ => &[],
    }
}

/// The parts of a token's header ecos reads before choosing a key.
#[derive(Debug)]
struct Head {
    /// The algorithm it names.
    alg: Algorithm,
    /// The key id, when the issuer set one.
    kid: Option<String>,
}

/// Reads the header without trusting it: `alg: none` and unknown algorithms
/// are refused here, before any key is touched.
fn head(token: &str) -> Result<Head, Refusal> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| Refusal::Malformed)?;
    let header: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| Refusal::Malformed)?;
    let Some(Value::String(alg)) = header.get("alg") else {
        return Err(Refusal::Malformed);
    };
    let alg = Algorithm::from_str(alg).map_err(|_| Refusal::BadAlgorithm)?;
    let kid = match header.get("kid") {
        Some(Value::String(kid)) => Some(kid.clone()),
        None | Some(Value::Null) => None,
        Some(_) => return Err(Refusal::Malformed),
    };
    Ok(Head { alg, kid })
}

/// Checks tokens against the configured secrets, public key and JWKS.
pub struct Verifier {
    /// HMAC keys, in the configured order.
    secrets: Vec<DecodingKey>,
    /// The configured public key.
    public: Option<PublicKey>,
    /// The identity provider's keys.
    jwks: Option<Arc<Jwks>>,
    /// Checks shared by every token (leeway, issuer, audience, `exp`).
    rules: Rules,
}

/// The claim checks, from the settings.
#[derive(Debug, Clone)]
struct Rules {
    leeway: u64,
    issuer: Option<String>,
    audience: Option<String>,
    require_exp: bool,
}

impl Rules {
    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.leeway;
        v.validate_exp = true;
        v.validate_nbf = true;
        let mut required: HashSet<String> = HashSet::new();
        if self.require_exp {
            required.insert("exp".to_owned());
        }
        if let Some(issuer) = &self.issuer {
            v.set_issuer(&[issuer]);
            required.insert("iss".to_owned());
        }
        match &self.audience {
            Some(audience) => {
                v.set_audience(&[audience]);
                required.insert("aud".to_owned());
            }
            // Without a configured audience, any `aud` is accepted.
            None => v.validate_aud = false,
        }
        v.required_spec_claims = required;
        v
    }
}

impl Verifier {
    /// A verifier for `settings`; the public key file was checked when the settings loaded.
    pub fn new(settings: &JwtSettings, jwks: Option<Arc<Jwks>>) -> Result<Self, KeyError> {
        let secrets = settings
            .secrets
            .iter()
            .filter_map(|s| DecodingKey::from_secret(s.expose().as_bytes()).ok())
            .collect();
        let public = match &settings.public_key_file {
            Some(path) => Some(PublicKey::load(path)?),
            None => None,
        };
        Ok(Self {
            secrets,
            public,
            jwks,
            rules: Rules {
                leeway: settings.leeway.as_secs(),
                issuer: settings.issuer.clone(),
                audience: settings.audience.clone(),
                require_exp: settings.require_exp,
            },
        })
    }

    /// The token's claims, once its signature and its time, issuer and audience claims check out.
    pub async fn verify(&self, token: &str) -> Result<Map<String, Value>, Refusal> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::Malformed);
        }
        let head = head(token)?;
        let family = head.alg.family();
        // Keys fetched from the JWKS for this token; the configured ones are borrowed.
        let mut fetched = Vec::new();
        let keys: Vec<&DecodingKey> = match family {
            AlgorithmFamily::Hmac => self.secrets.iter().collect(),
            _ => {
                let public = self.public.as_ref().filter(|p| p.family == family);
                if let Some(jwks) = &self.jwks {
                    match jwks.keys_for(head.kid.as_deref(), head.alg).await {
                        Ok(found) => fetched = found,
                        // A configured public key may still verify it.
                        Err(refusal) if public.is_none() => return Err(refusal),
                        Err(_) => {}
                    }
                }
                public.map(|p| &p.key).into_iter().chain(&fetched).collect()
            }
        };
        if keys.is_empty() {
            // No key of that family is configured: an HS256 token against an
            // RSA-only setup (the algorithm-confusion attack) ends here.
            return Err(Refusal::BadAlgorithm);
        }
        let validation = self.rules.validation(head.alg);
        let mut refusal = Refusal::BadSignature;
        for key in &keys {
            match decode::<Map<String, Value>>(token, key, &validation) {
                Ok(data) => return Ok(data.claims),
                // Another key (a rotated secret, a second JWKS key) may match.
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => {}
                Err(e) => {
                    refusal = refusal_for(e.kind());
                    break;
                }
            }
        }
        Err(refusal)
    }
}

/// The refusal a verification error stands for.
fn refusal_for(kind: &ErrorKind) -> Refusal {
    match kind {
        ErrorKind::ExpiredSignature => Refusal::Expired,
        ErrorKind::ImmatureSignature => Refusal::NotYetValid,
        ErrorKind::InvalidSignature => Refusal::BadSignature,
        ErrorKind::InvalidIssuer => Refusal::WrongIssuer,
        ErrorKind::InvalidAudience => Refusal::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "iss" => Refusal::WrongIssuer,
            "aud" => Refusal::WrongAudience,
            _ => Refusal::MissingExp,
        },
        ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => Refusal::BadAlgorithm,
        // A key that does not fit the algorithm (an RSA key for ES256) is the wrong key.
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidEddsaKey | ErrorKind::InvalidRsaKey(_) => {
            Refusal::BadSignature
        }
        _ => Refusal::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn alg_none_and_unknown_algorithms_are_refused_before_any_key() {
        let none = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(r#"{"sub":"a"}"#));
        assert_eq!(head(&none).unwrap_err(), Refusal::BadAlgorithm);
        let none_upper = format!("{}.{}.", b64(r#"{"alg":"NONE"}"#), b64("{}"));
        assert_eq!(head(&none_upper).unwrap_err(), Refusal::BadAlgorithm);
        let missing = format!("{}.{}.x", b64(r#"{"typ":"JWT"}"#), b64("{}"));
        assert_eq!(head(&missing).unwrap_err(), Refusal::Malformed);
        assert_eq!(head("a.b").unwrap_err(), Refusal::Malformed);
        assert_eq!(head("a.b.c.d").unwrap_err(), Refusal::Malformed);
        assert_eq!(head("!!.b.c").unwrap_err(), Refusal::Malformed);
    }

    #[test]
    fn each_family_verifies_only_its_own_algorithms() {
        assert!(
            algorithms(AlgorithmFamily::Hmac)
                .iter()
                .all(|a| a.family() == AlgorithmFamily::Hmac)
        );
        assert!(
            algorithms(AlgorithmFamily::Rsa)
                .iter()
                .all(|a| a.family() == AlgorithmFamily::Rsa)
        );
        assert!(
            algorithms(AlgorithmFamily::Ec)
                .iter()
                .all(|a| a.family() == AlgorithmFamily::Ec)
        );
        assert_eq!(algorithms(AlgorithmFamily::Ed), &[Algorithm::EdDSA]);
    }
}
