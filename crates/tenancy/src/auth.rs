//! Auth primitives: the platform admin token.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret token known only by its SHA-256 hash.
#[derive(Clone)]
pub struct AdminToken {
    hash: [u8; 32],
}

impl AdminToken {
    pub fn from_secret(secret: &str) -> AdminToken {
        AdminToken {
            hash: Sha256::digest(secret.as_bytes()).into(),
        }
    }

    pub fn from_hash_hex(hex_hash: &str) -> Option<AdminToken> {
        let bytes = hex::decode(hex_hash).ok()?;
        Some(AdminToken {
            hash: bytes.try_into().ok()?,
        })
    }

    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }

    /// Constant-time comparison of a presented token with this one.
    pub fn verify(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        presented.ct_eq(&self.hash).into()
    }

    /// A fresh random token: `tny_admin_` and 256 bits of hex.
    pub fn generate() -> (AdminToken, String) {
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token = format!("tny_admin_{}", hex::encode(secret));
        (AdminToken::from_secret(&token), token)
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_only_the_right_token() {
        let (token, secret) = AdminToken::generate();
        assert!(token.verify(&secret));
        assert!(!token.verify(""));
        assert!(!token.verify(&secret[..secret.len() - 1]));
        let again = AdminToken::from_hash_hex(&token.hash_hex()).unwrap();
        assert!(again.verify(&secret));
        assert!(AdminToken::from_hash_hex("zz").is_none());
    }
}
