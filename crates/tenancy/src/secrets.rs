//! Secrets at rest in the catalog (store URLs with passwords, generated role passwords):
//! sealed with ChaCha20-Poly1305 under a 256-bit key that never enters the catalog. The key
//! comes from `TENANCY_SECRET_KEY` (64 hex digits) or from a key file, created with mode
//! 0600 on first use when nothing else is configured.

use std::path::Path;

use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;

use crate::error::{Error, Result};

const PREFIX: &str = "sealed:v1:";
/// How every sealed value begins (whatever its version).
pub(crate) const SEALED_PREFIX: &str = "sealed:";

/// The key that seals secrets stored in the catalog.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(…)")
    }
}

impl SecretKey {
    /// From 64 hex digits.
    pub fn from_hex(hex_key: &str) -> Result<SecretKey> {
        let bytes = hex::decode(hex_key.trim())
            .map_err(|_| Error::Secrets("the secret key must be 64 hex digits".into()))?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| {
            Error::Secrets("the secret key must be 64 hex digits (32 bytes)".into())
        })?;
        Ok(SecretKey(key))
    }

    pub fn generate() -> SecretKey {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        SecretKey(key)
    }

    /// Reads the key file, or creates it (mode 0600) holding a new key.
    pub fn load_or_create(path: &Path) -> Result<SecretKey> {
        match std::fs::read_to_string(path) {
            Ok(text) => SecretKey::from_hex(&text)
                .map_err(|e| Error::Secrets(format!("key file {}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SecretKey::generate();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
                }
                write_private(path, &hex::encode(key.0))?;
                Ok(key)
            }
            Err(e) => Err(Error::io(format!("reading key file {}", path.display()), e)),
        }
    }

    /// `sealed:v1:<base64 of nonce ‖ ciphertext>`.
    pub fn seal(&self, plaintext: &str) -> String {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        // Encryption fails only past 256 GiB of input; a secret is a few hundred bytes.
        #[allow(clippy::expect_used)]
        let sealed = cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
            .expect("ChaCha20-Poly1305 encryption does not fail for in-memory input");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}", B64.encode(out))
    }

    pub fn open(&self, sealed: &str) -> Result<String> {
        let wrong = || {
            Error::Secrets(
                "a sealed secret does not open with the configured key (was the key changed?)"
                    .into(),
            )
        };
        let body = sealed.strip_prefix(PREFIX).ok_or_else(wrong)?;
        let bytes = B64.decode(body).map_err(|_| wrong())?;
        if bytes.len() < 12 {
            return Err(wrong());
        }
        let (nonce, ciphertext) = bytes.split_at(12);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let plain = cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| wrong())?;
        String::from_utf8(plain).map_err(|_| wrong())
    }
}

fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| Error::io(format!("creating key file {}", path.display()), e))?;
    file.write_all(contents.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|e| Error::io(format!("writing key file {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens() {
        let key = SecretKey::generate();
        let sealed = key.seal("postgres://app:s3cret@db/x");
        assert!(sealed.starts_with(PREFIX));
        assert!(!sealed.contains("s3cret"));
        assert_eq!(key.open(&sealed).unwrap(), "postgres://app:s3cret@db/x");
        // Two seals of one secret differ (fresh nonce).
        assert_ne!(sealed, key.seal("postgres://app:s3cret@db/x"));
    }

    #[test]
    fn refuses_the_wrong_key_and_tampering() {
        let sealed = SecretKey::generate().seal("x");
        assert!(matches!(
            SecretKey::generate().open(&sealed),
            Err(Error::Secrets(_))
        ));
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        let key = SecretKey::generate();
        assert!(key.open(&tampered).is_err());
        assert!(key.open("plain").is_err());
        assert!(key.open("sealed:v1:!!!").is_err());
    }

    #[test]
    fn key_from_hex_checks_length() {
        assert!(SecretKey::from_hex(&"ab".repeat(32)).is_ok());
        assert!(SecretKey::from_hex("abcd").is_err());
        assert!(SecretKey::from_hex(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let first = SecretKey::load_or_create(&path).unwrap();
        let again = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(again.open(&first.seal("s")).unwrap(), "s");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
