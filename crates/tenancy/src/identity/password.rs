//! Passwords: Argon2id hashes (PHC strings), a minimum policy, verification that costs
//! the same whether or not the user exists, and the [`HashingPool`] that bounds how many
//! hashes run at once.

use std::sync::Mutex;
use std::time::Duration;

use argon2::password_hash::{
    Output, ParamsString, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;

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

/// How much password hashing runs at once.
#[derive(Debug, Clone, Copy)]
pub struct HashingConfig {
    /// Hashes (signups) and verifications (logins) running at once; each holds one
    /// 19 MiB Argon2 buffer, kept for reuse.
    pub max_concurrent: usize,
    /// How long a request waits for a free slot before it is refused as busy.
    pub max_wait: Duration,
}

impl Default for HashingConfig {
    /// One slot per core, at most 8; a two-second queue.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        HashingConfig {
            max_concurrent: cores.clamp(1, 8),
            max_wait: Duration::from_secs(2),
        }
    }
}

/// Runs Argon2 work with bounded concurrency, each job on the blocking pool with a memory
/// buffer taken from a free list. At most `max_concurrent` buffers ever exist, so a flood
/// of signups costs a fixed amount of memory (and leaves nothing behind for the
/// allocator to hold on to); requests past the bound queue for `max_wait`, then are
/// refused with [`Error::HashingBusy`].
pub struct HashingPool {
    permits: tokio::sync::Semaphore,
    buffers: Mutex<Vec<Vec<Block>>>,
    max_wait: Duration,
}

impl HashingPool {
    pub fn new(config: HashingConfig) -> HashingPool {
        HashingPool {
            permits: tokio::sync::Semaphore::new(config.max_concurrent.max(1)),
            buffers: Mutex::new(Vec::new()),
            max_wait: config.max_wait,
        }
    }

    /// An Argon2id PHC string for `password` (default parameters).
    pub async fn hash(&self, password: &str) -> Result<String> {
        let password = password.to_owned();
        self.run(move |memory| hash_with_memory(&password, memory))
            .await?
    }

    /// Whether `password` matches the stored PHC string; with no stored hash, one
    /// verification against a dummy hash all the same (so the time does not tell whether
    /// the user exists), answering `false`.
    pub async fn verify(&self, stored: Option<&str>, password: &str) -> Result<bool> {
        let exists = stored.is_some();
        let stored = stored.unwrap_or(DUMMY_HASH).to_owned();
        let password = password.to_owned();
        let ok = self
            .run(move |memory| verify_with_memory(&stored, &password, memory))
            .await?;
        Ok(ok && exists)
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T> {
        let _permit = tokio::time::timeout(self.max_wait, self.permits.acquire())
            .await
            .map_err(|_| Error::HashingBusy {
                retry_after_secs: self.max_wait.as_secs().max(1),
            })?
            .map_err(|_| Error::Internal("the hashing pool is closed".into()))?;
        let mut memory = self.lock_buffers().pop().unwrap_or_default();
        let (out, memory) = tokio::task::spawn_blocking(move || {
            let out = job(&mut memory);
            (out, memory)
        })
        .await?;
        self.lock_buffers().push(memory);
        Ok(out)
    }

    fn lock_buffers(&self) -> std::sync::MutexGuard<'_, Vec<Vec<Block>>> {
        self.buffers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A well-formed hash with the default parameters that no password matches in practice.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn grow(memory: &mut Vec<Block>, params: &Params) {
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::default());
    }
}

/// [`hash_password`], in `memory` (grown as needed, kept by the caller for reuse).
fn hash_with_memory(password: &str, memory: &mut Vec<Block>) -> Result<String> {
    let failed = |e: &dyn std::fmt::Display| Error::Internal(format!("hashing a password: {e}"));
    let mut salt = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
    let salt_string = SaltString::encode_b64(&salt).map_err(|e| failed(&e))?;
    let params = Params::default();
    grow(memory, &params);
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon
        .hash_password_into_with_memory(password.as_bytes(), &salt, &mut out, &mut memory[..])
        .map_err(|e| failed(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
        salt: Some(salt_string.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(phc.to_string())
}

/// [`verify_password`], in `memory`.
fn verify_with_memory(stored: &str, password: &str, memory: &mut Vec<Block>) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    let Ok(hash) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(expected), Some(salt)) = (hash.hash, hash.salt) else {
        return false;
    };
    let algorithm = Algorithm::try_from(hash.algorithm);
    let version = hash.version.map_or(Ok(Version::V0x13), Version::try_from);
    let (Ok(algorithm), Ok(version), Ok(params)) = (algorithm, version, Params::try_from(&hash))
    else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    grow(memory, &params);
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..])
        .is_ok()
        && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
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
    }

    #[tokio::test]
    async fn the_pool_hashes_and_verifies_like_the_plain_functions() {
        let pool = HashingPool::new(HashingConfig {
            max_concurrent: 2,
            max_wait: Duration::from_secs(30),
        });
        let hash = pool.hash("correct horse battery").await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(verify_password(&hash, "correct horse battery"));
        let plain = hash_password("correct horse battery").unwrap();
        for stored in [&hash, &plain] {
            assert!(pool
                .verify(Some(stored), "correct horse battery")
                .await
                .unwrap());
            assert!(!pool
                .verify(Some(stored), "wrong horse battery")
                .await
                .unwrap());
        }
        assert!(!pool.verify(None, "anything at all").await.unwrap());
        assert!(!pool.verify(Some("not a hash"), "x").await.unwrap());
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(pool.lock_buffers().len() <= 2, "buffers are reused");
    }

    #[tokio::test]
    async fn the_pool_refuses_when_every_slot_stays_busy() {
        let pool = std::sync::Arc::new(HashingPool::new(HashingConfig {
            max_concurrent: 1,
            max_wait: Duration::from_millis(50),
        }));
        let (hold, release) = std::sync::mpsc::channel::<()>();
        let busy = {
            let pool = std::sync::Arc::clone(&pool);
            tokio::spawn(async move { pool.run(move |_| release.recv().ok()).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let refused = pool.hash("correct horse battery").await;
        assert!(
            matches!(refused, Err(Error::HashingBusy { .. })),
            "{refused:?}"
        );
        hold.send(()).unwrap();
        busy.await.unwrap().unwrap();
        assert!(pool.hash("correct horse battery").await.is_ok());
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
