//! Access tokens (HS256 JWTs with a key id, several keys valid at once for rotation) and
//! opaque refresh tokens (random, stored as a hash).

use std::collections::HashMap;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The longest token accepted; anything longer is refused before parsing.
const MAX_TOKEN_BYTES: usize = 4096;

#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            issuer: "tenancy".into(),
            audience: "tenancy".into(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    /// The tenant id, when the token is tenant-scoped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    /// The user's role in `tid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub exp: u64,
    pub iat: u64,
    pub nbf: u64,
    pub jti: String,
}

/// Signs with the newest key; verifies with any key still in its validity window.
pub struct TokenSigner {
    config: TokenConfig,
    current: (String, EncodingKey),
    verifying: HashMap<String, DecodingKey>,
}

impl TokenSigner {
    /// `keys` are `(kid, secret)`, newest first; at least one.
    pub fn new(config: TokenConfig, keys: &[(String, Vec<u8>)]) -> Result<TokenSigner> {
        let (kid, secret) = keys
            .first()
            .ok_or_else(|| Error::Internal("no signing key".into()))?;
        Ok(TokenSigner {
            current: (kid.clone(), EncodingKey::from_secret(secret)),
            verifying: keys
                .iter()
                .map(|(k, s)| (k.clone(), DecodingKey::from_secret(s)))
                .collect(),
            config,
        })
    }

    pub fn config(&self) -> &TokenConfig {
        &self.config
    }

    pub fn knows(&self, kid: &str) -> bool {
        self.verifying.contains_key(kid)
    }

    /// A new access token for `sub`, scoped to a tenant and role when given.
    pub fn issue(
        &self,
        sub: &str,
        tid: Option<&str>,
        role: Option<&str>,
    ) -> Result<(String, AccessClaims)> {
        let now = unix_now();
        let claims = AccessClaims {
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
            sub: sub.to_owned(),
            tid: tid.map(str::to_owned),
            role: role.map(str::to_owned),
            exp: now + self.config.access_ttl.as_secs(),
            iat: now,
            nbf: now,
            jti: uuid::Uuid::now_v7().simple().to_string(),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.current.0.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.current.1)
            .map_err(|e| Error::Internal(format!("signing a token: {e}")))?;
        Ok((token, claims))
    }

    /// The key id a token names, if it parses that far (to decide on a key reload).
    pub fn kid_of(token: &str) -> Option<String> {
        if token.len() > MAX_TOKEN_BYTES {
            return None;
        }
        jsonwebtoken::decode_header(token).ok()?.kid
    }

    /// Verifies signature (HS256 only, known key id), issuer, audience, expiry and
    /// not-before. Every failure is the same `InvalidToken`.
    pub fn verify(&self, token: &str) -> Result<AccessClaims> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Error::InvalidToken);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| Error::InvalidToken)?;
        if header.alg != Algorithm::HS256 {
            return Err(Error::InvalidToken);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.verifying.get(kid))
            .ok_or(Error::InvalidToken)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        jsonwebtoken::decode::<AccessClaims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|_| Error::InvalidToken)
    }
}

/// An opaque refresh token: shown to the client once, stored as its SHA-256.
pub struct RefreshSecret;

impl RefreshSecret {
    /// `(token, hash)`: 256 random bits, `tnr_` + base64url.
    pub fn generate() -> (String, String) {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let token = format!("tnr_{}", URL_SAFE_NO_PAD.encode(bytes));
        let hash = Self::hash(&token);
        (token, hash)
    }

    pub fn hash(token: &str) -> String {
        hex::encode(Sha256::digest(token.as_bytes()))
    }
}

/// A new random HS256 secret (256 bits).
pub fn new_signing_secret() -> Vec<u8> {
    let mut bytes = vec![0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(keys: &[(&str, &[u8])]) -> TokenSigner {
        let keys: Vec<_> = keys
            .iter()
            .map(|(k, s)| (k.to_string(), s.to_vec()))
            .collect();
        TokenSigner::new(TokenConfig::default(), &keys).unwrap()
    }

    fn forge(header: &str, claims: &serde_json::Value, sig: &str) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            sig
        )
    }

    #[test]
    fn issues_and_verifies() {
        let s = signer(&[("k1", b"0123456789abcdef0123456789abcdef")]);
        let (token, claims) = s.issue("user-1", Some("tenant-1"), Some("admin")).unwrap();
        assert_eq!(s.verify(&token).unwrap(), claims);
        assert_eq!(TokenSigner::kid_of(&token).as_deref(), Some("k1"));
    }

    #[test]
    fn rotation_keeps_old_tokens_valid_until_the_old_key_goes() {
        let old = signer(&[("k1", b"first-secret-first-secret-first!")]);
        let (token, _) = old.issue("u", None, None).unwrap();
        let rotated = signer(&[
            ("k2", b"second-secret-second-secret-sec!"),
            ("k1", b"first-secret-first-secret-first!"),
        ]);
        assert!(rotated.verify(&token).is_ok());
        let (new_token, _) = rotated.issue("u", None, None).unwrap();
        assert_eq!(TokenSigner::kid_of(&new_token).as_deref(), Some("k2"));
        let retired = signer(&[("k2", b"second-secret-second-secret-sec!")]);
        assert!(retired.verify(&token).is_err());
    }

    #[test]
    fn refuses_forgeries_and_bad_tokens() {
        let s = signer(&[("k1", b"0123456789abcdef0123456789abcdef")]);
        let other = signer(&[("k1", b"another-secret-another-secret-an")]);
        let (foreign, _) = other.issue("u", None, None).unwrap();
        let (good, claims) = s.issue("u", None, None).unwrap();
        let claims_json = serde_json::to_value(&claims).unwrap();
        let mut expired = claims_json.clone();
        expired["exp"] = serde_json::json!(unix_now() - 3600);
        let mut future = claims_json.clone();
        future["nbf"] = serde_json::json!(unix_now() + 3600);
        let mut wrong_iss = claims_json.clone();
        wrong_iss["iss"] = serde_json::json!("someone-else");
        let mut wrong_aud = claims_json.clone();
        wrong_aud["aud"] = serde_json::json!("someone-else");
        let sign = |c: &serde_json::Value| {
            let mut h = Header::new(Algorithm::HS256);
            h.kid = Some("k1".into());
            jsonwebtoken::encode(
                &h,
                c,
                &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
            )
            .unwrap()
        };
        let mut unknown_kid = Header::new(Algorithm::HS256);
        unknown_kid.kid = Some("k9".into());
        let unknown = jsonwebtoken::encode(
            &unknown_kid,
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        let mut no_kid = Header::new(Algorithm::HS256);
        no_kid.kid = None;
        let kidless = jsonwebtoken::encode(
            &no_kid,
            &claims,
            &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap();
        let bad = [
            String::new(),
            "garbage".into(),
            good[..good.len() - 3].to_string(),
            format!("{good}x"),
            "a".repeat(5000),
            foreign,
            sign(&expired),
            sign(&future),
            sign(&wrong_iss),
            sign(&wrong_aud),
            unknown,
            kidless,
            forge(r#"{"alg":"none","kid":"k1"}"#, &claims_json, ""),
            forge(r#"{"alg":"HS512","kid":"k1"}"#, &claims_json, "abc"),
            forge(r#"{"alg":"RS256","kid":"k1"}"#, &claims_json, "abc"),
        ];
        for token in bad {
            assert!(s.verify(&token).is_err(), "accepted {token:.60}");
        }
    }

    #[test]
    fn refresh_secrets_are_random_and_hashed() {
        let (a, ha) = RefreshSecret::generate();
        let (b, _) = RefreshSecret::generate();
        assert_ne!(a, b);
        assert!(a.starts_with("tnr_") && a.len() > 40);
        assert_eq!(RefreshSecret::hash(&a), ha);
    }
}
