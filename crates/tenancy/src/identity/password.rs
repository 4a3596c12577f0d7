//! Passwords: Argon2id hashes (PHC strings), a minimum policy, and verification that costs
//! the same whether or not the user exists.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use super::Email;
use crate::error::{Error, Result};

pub const MIN_PASSWORD_CHARS: usize = 10;
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Refuses passwords that are too short, too long, or built from the email.
pub fn check_password_policy(password: &str, email: &Email) -> Result<()> {
    let weak = |reason| Err(Error::WeakPassword { reason });
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return weak("it must be at least 10 characters");
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return weak("it must be at most 1024 bytes");
    }
    let lower = password.to_lowercase();
    let local = email.local_part();
    if lower == email.normalized() || (local.len() >= 4 && lower.contains(&local)) {
        return weak("it must not contain the email address");
    }
    if password
        .chars()
        .all(|c| c == password.chars().next().unwrap_or(' '))
    {
        return weak("it must not be one character repeated");
    }
    Ok(())
}

/// An Argon2id PHC string (default parameters: 19 MiB, 2 passes, 1 lane).
pub fn hash_password(password: &str) -> Result<String> {
    let mut bytes = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    let salt = SaltString::encode_b64(&bytes)
        .map_err(|e| Error::Internal(format!("making a salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("hashing a password: {e}")))
}

/// Whether `password` matches the stored PHC string.
pub fn verify_password(stored: &str, password: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    match PasswordHash::new(stored) {
        Ok(hash) => Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(_) => false,
    }
}

/// Verifies against the user's hash, or against a fixed dummy hash when there is no user,
/// so that a login costs one Argon2 verification either way.
pub fn verify_password_or_dummy(stored: Option<&str>, password: &str) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    match stored {
        Some(stored) => verify_password(stored, password),
        None => {
            let dummy = DUMMY.get_or_init(|| {
                hash_password("tenancy-dummy-password-never-matches").unwrap_or_default()
            });
            let _ = verify_password(dummy, password);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_and_verifies() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse battery"));
        assert!(!verify_password(&hash, "wrong horse battery"));
        assert!(!verify_password("not a hash", "x"));
        assert!(!verify_password_or_dummy(None, "anything at all"));
    }

    #[test]
    fn policy() {
        let email = Email::parse("thrall@horde.gg").unwrap();
        assert!(check_password_policy("lok'tar ogar 42", &email).is_ok());
        for weak in [
            "short",
            "thrall@horde.gg",
            "THRALL-is-my-name",
            "aaaaaaaaaaaaaaa",
            &"x".repeat(1025),
        ] {
            assert!(check_password_policy(weak, &email).is_err(), "{weak}");
        }
    }
}
