//! Users and sessions on top of the engine: signup, login, refresh, logout, access-token
//! verification, and signing-key rotation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::catalog::{Catalog, NewRefreshToken, NewUser};
use crate::config::EngineConfig;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::identity::{
    check_password_policy, new_signing_secret, unix_now, AccessClaims, AttemptLimiter, Email,
    HashingPool, Membership, RefreshSecret, RefreshUse, Role, TokenConfig, TokenSigner, User,
    UserId,
};
use crate::secrets::{SecretKey, SEALED_PREFIX};
use crate::slug::Slug;
use crate::tenant::TenantId;

/// What a successful login or refresh hands to the client.
#[derive(Debug, Clone, Serialize)]
pub struct Session {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

/// The signer over the catalog's keys that may still verify tokens; creates the first key.
/// Keys are stored sealed with the secret key, like store URLs.
async fn load_signer(
    catalog: &dyn Catalog,
    config: &TokenConfig,
    secrets: &SecretKey,
) -> Result<TokenSigner> {
    let keys = || async {
        let since = Utc::now()
            - chrono::Duration::from_std(config.access_ttl).unwrap_or_default()
            - chrono::Duration::seconds(60);
        catalog.signing_keys(since).await
    };
    let mut stored = keys().await?;
    if stored.is_empty() {
        add_signing_key(catalog, secrets).await?;
        stored = keys().await?;
    }
    let mut keys = Vec::with_capacity(stored.len());
    for (kid, secret) in stored {
        let clear = open_signing_key(secrets, &secret)?;
        if let Ok(bytes) = hex::decode(clear) {
            keys.push((kid, bytes));
        }
    }
    TokenSigner::new(config.clone(), &keys)
}

/// A new current key (sealed), retiring the previous one. Returns its id.
async fn add_signing_key(catalog: &dyn Catalog, secrets: &SecretKey) -> Result<String> {
    let kid = new_kid();
    let sealed = secrets.seal(&hex::encode(new_signing_secret()));
    catalog.add_signing_key(&kid, &sealed).await?;
    Ok(kid)
}

/// A stored key's hex secret: sealed, or in clear as versions before sealing kept it.
fn open_signing_key(secrets: &SecretKey, stored: &str) -> Result<String> {
    if stored.starts_with(SEALED_PREFIX) {
        secrets.open(stored).map_err(|_| {
            Error::Secrets(
                "the access-token signing keys in the catalog do not open with the configured \
                 secret key: every process on one catalog needs the same key \
                 (TENANCY_SECRET_KEY or [secrets] key_file)"
                    .into(),
            )
        })
    } else {
        Ok(stored.to_owned())
    }
}

/// Seals every key a version before sealing stored in clear (a one-time upgrade that each
/// start repeats harmlessly: sealed keys are left alone).
async fn seal_clear_keys(catalog: &dyn Catalog, secrets: &SecretKey) -> Result<()> {
    for (kid, secret) in catalog.signing_keys(DateTime::<Utc>::UNIX_EPOCH).await? {
        if !secret.starts_with(SEALED_PREFIX) {
            catalog
                .seal_signing_key(&kid, &secret, &secrets.seal(&secret))
                .await?;
        }
    }
    Ok(())
}

fn new_kid() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// The engine's account state: the token signer (reloaded from the catalog when a token
/// names a key this process has not seen, at most every few seconds), the login limits per
/// email and per client address, the signup limit per client address, and the pool that
/// bounds the password hashing running at once.
pub(crate) struct AccountState {
    signer: RwLock<Arc<TokenSigner>>,
    /// When the signer was last reloaded (unix seconds), to bound reloads.
    last_key_reload: AtomicU64,
    per_email: AttemptLimiter,
    per_client: AttemptLimiter,
    signups_per_client: AttemptLimiter,
    hashing: HashingPool,
    /// Seals the signing keys in the catalog.
    secrets: SecretKey,
}

impl AccountState {
    pub(crate) async fn load(catalog: &dyn Catalog, config: &EngineConfig) -> Result<AccountState> {
        let secrets = crate::stores::secret_key(config)?;
        seal_clear_keys(catalog, &secrets).await?;
        Ok(AccountState {
            signer: RwLock::new(Arc::new(
                load_signer(catalog, &config.tokens, &secrets).await?,
            )),
            last_key_reload: AtomicU64::new(0),
            per_email: AttemptLimiter::new(config.login_limit_per_email),
            per_client: AttemptLimiter::new(config.login_limit_per_client),
            signups_per_client: AttemptLimiter::new(config.signup_limit_per_client),
            hashing: HashingPool::new(config.password_hashing),
            secrets,
        })
    }

    fn signer(&self) -> Arc<TokenSigner> {
        match self.signer.read() {
            Ok(s) => Arc::clone(&s),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn replace_signer(&self, signer: Arc<TokenSigner>) {
        match self.signer.write() {
            Ok(mut s) => *s = signer,
            Err(poisoned) => *poisoned.into_inner() = signer,
        }
    }

    /// Whether a reload of the keys is allowed now (and, if so, claims it).
    fn may_reload_keys(&self) -> bool {
        let now = unix_now();
        let last = self.last_key_reload.load(Ordering::Relaxed);
        if now.saturating_sub(last) < 5 {
            return false;
        }
        self.last_key_reload
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes a login attempt's slot for the email and for the client address before the
    /// password is checked, so concurrent guesses cannot outrun the limits; refused while
    /// either has none left.
    fn reserve_login(&self, email_key: &str, client: Option<&str>) -> Result<()> {
        let limited = |retry: std::time::Duration| Error::RateLimited {
            retry_after_secs: retry.as_secs().max(1),
        };
        self.per_email.reserve(email_key).map_err(limited)?;
        if let Some(c) = client {
            if let Err(retry) = self.per_client.reserve(c) {
                self.per_email.release(email_key);
                return Err(limited(retry));
            }
        }
        Ok(())
    }

    /// Gives the slots back: the login succeeded, or no password was checked.
    fn release_login(&self, email_key: &str, client: Option<&str>) {
        self.per_email.release(email_key);
        if let Some(c) = client {
            self.per_client.release(c);
        }
    }
}

impl Engine {
    fn signer(&self) -> Arc<TokenSigner> {
        self.inner.accounts.signer()
    }

    /// Creates an account. Signup uses this with `superadmin: false`.
    pub async fn create_user(&self, email: &str, password: &str, superadmin: bool) -> Result<User> {
        self.signup(email, password, superadmin, None, None).await
    }

    /// Creates an account, redeeming an invitation (for this email) in the same step.
    /// `client`: the caller's address, held to the signup limit per address (`None`: an
    /// operator's own command, not limited).
    pub async fn signup(
        &self,
        email: &str,
        password: &str,
        superadmin: bool,
        invitation: Option<&str>,
        client: Option<&str>,
    ) -> Result<User> {
        let email = Email::parse(email)?;
        check_password_policy(password, &email)?;
        let accounts = &self.inner.accounts;
        if let Some(c) = client {
            accounts
                .signups_per_client
                .reserve(c)
                .map_err(|retry| Error::RateLimited {
                    retry_after_secs: retry.as_secs().max(1),
                })?;
        }
        let hash = match accounts.hashing.hash(password).await {
            Ok(hash) => hash,
            Err(e) => {
                // Nothing was hashed: the attempt does not count.
                if let Some(c) = client {
                    accounts.signups_per_client.release(c);
                }
                return Err(e);
            }
        };
        self.catalog()
            .insert_user(
                &NewUser {
                    id: UserId::generate(),
                    email: email.as_str().to_owned(),
                    password_hash: hash,
                    is_superadmin: superadmin,
                },
                invitation.map(RefreshSecret::hash).as_deref(),
            )
            .await
    }

    /// Checks the credentials (one Argon2 verification whether or not the user exists),
    /// subject to the failed-login limits, and opens a session — scoped to `tenant` when
    /// given, with the user's role there. A tenant the user is not a member of answers
    /// `TenantNotFound`, like an unknown one.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        tenant: Option<&Slug>,
        client: Option<&str>,
    ) -> Result<Session> {
        let email_key = email.trim().to_lowercase();
        let accounts = &self.inner.accounts;
        accounts.reserve_login(&email_key, client)?;
        let user = match self.check_password(email, password).await {
            Ok(user) => {
                accounts.release_login(&email_key, client);
                user
            }
            // A failure keeps its slot.
            Err(Error::InvalidCredentials) => return Err(Error::InvalidCredentials),
            Err(e) => {
                accounts.release_login(&email_key, client);
                return Err(e);
            }
        };
        let scope = match tenant {
            Some(slug) => Some(self.scope_for(&user, slug).await?),
            None => None,
        };
        self.open_session(&user, scope, None).await
    }

    /// The user whose credentials these are (one Argon2 verification either way).
    async fn check_password(&self, email: &str, password: &str) -> Result<User> {
        let found = match Email::parse(email) {
            Ok(e) => self.catalog().user_by_email(&e.normalized()).await?,
            Err(_) => None,
        };
        let stored = found.as_ref().map(|(_, hash)| hash.as_str());
        let ok = self.inner.accounts.hashing.verify(stored, password).await?;
        match (ok, found) {
            (true, Some((user, _))) => Ok(user),
            _ => Err(Error::InvalidCredentials),
        }
    }

    /// The tenant and the user's role there; superadmins act as `owner` anywhere. No
    /// session is scoped to a suspended tenant.
    async fn scope_for(&self, user: &User, slug: &Slug) -> Result<(TenantId, Role)> {
        let tenant = self.tenant(slug).await?;
        let role = self.catalog().membership_role(tenant.id, user.id).await?;
        if role.is_some() || user.is_superadmin {
            self.refuse_if_suspended(tenant.id).await?;
        }
        match (role, user.is_superadmin) {
            (Some(role), _) => Ok((tenant.id, role)),
            (None, true) => Ok((tenant.id, Role::Owner)),
            (None, false) => Err(Error::TenantNotFound {
                slug: slug.to_string(),
            }),
        }
    }

    async fn open_session(
        &self,
        user: &User,
        scope: Option<(TenantId, Role)>,
        family: Option<String>,
    ) -> Result<Session> {
        let signer = self.signer();
        let tid = scope.map(|(t, _)| t.to_string());
        let role = scope.map(|(_, r)| r.as_str());
        let (access_token, claims) = signer.issue(&user.id.to_string(), tid.as_deref(), role)?;
        let (refresh_token, token_hash) = RefreshSecret::generate();
        let ttl = chrono::Duration::from_std(signer.config().refresh_ttl)
            .map_err(|e| Error::Internal(e.to_string()))?;
        self.catalog()
            .insert_refresh_token(&NewRefreshToken {
                token_hash,
                family: family.unwrap_or_else(new_kid),
                user_id: user.id,
                tenant_id: scope.map(|(t, _)| t),
                expires_at: Utc::now() + ttl,
            })
            .await?;
        Ok(Session {
            access_token,
            refresh_token,
            token_type: "Bearer",
            expires_in: claims.exp.saturating_sub(unix_now()),
        })
    }

    /// Spends a refresh token for a new session in the same family. A token works once;
    /// replaying a spent one revokes its whole family. The role is read afresh: a user
    /// removed from the tenant cannot refresh into it.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Session> {
        if refresh_token.len() > 256 {
            return Err(Error::InvalidToken);
        }
        let hash = RefreshSecret::hash(refresh_token);
        let RefreshUse::Valid {
            user_id,
            tenant_id,
            family,
        } = self.catalog().use_refresh_token(&hash).await?
        else {
            return Err(Error::InvalidToken);
        };
        let user = self
            .catalog()
            .user(user_id)
            .await?
            .ok_or(Error::InvalidToken)?;
        let scope = match tenant_id {
            Some(tid) => {
                let tenant = self
                    .catalog()
                    .tenant(tid)
                    .await?
                    .ok_or(Error::InvalidToken)?;
                let slug = tenant.slug.clone();
                Some(
                    self.scope_for(&user, &slug)
                        .await
                        .map_err(|_| Error::InvalidToken)?,
                )
            }
            None => None,
        };
        self.open_session(&user, scope, Some(family)).await
    }

    /// Revokes the refresh token's session (its whole family).
    pub async fn logout(&self, refresh_token: &str) -> Result<()> {
        if refresh_token.len() > 256 {
            return Ok(());
        }
        self.catalog()
            .revoke_refresh_token(&RefreshSecret::hash(refresh_token))
            .await
    }

    /// Verifies an access token. A key id this process has not seen makes it reload the
    /// keys from the catalog (at most every few seconds), so a rotation done by another
    /// process is picked up.
    pub async fn verify_access_token(&self, token: &str) -> Result<AccessClaims> {
        let signer = self.signer();
        match signer.verify(token) {
            Ok(claims) => Ok(claims),
            Err(e) => {
                let unknown_kid = TokenSigner::kid_of(token).is_some_and(|k| !signer.knows(&k));
                if !unknown_kid || !self.inner.accounts.may_reload_keys() {
                    return Err(e);
                }
                let reloaded = Arc::new(
                    load_signer(
                        self.catalog(),
                        &self.config().tokens,
                        &self.inner.accounts.secrets,
                    )
                    .await?,
                );
                self.inner.accounts.replace_signer(Arc::clone(&reloaded));
                reloaded.verify(token)
            }
        }
    }

    /// Makes a new signing key current. Tokens signed by the previous keys stay valid until
    /// they expire. Returns the new key id.
    pub async fn rotate_signing_key(&self) -> Result<String> {
        let secrets = &self.inner.accounts.secrets;
        let kid = add_signing_key(self.catalog(), secrets).await?;
        let reloaded = load_signer(self.catalog(), &self.config().tokens, secrets).await?;
        self.inner.accounts.replace_signer(Arc::new(reloaded));
        Ok(kid)
    }

    /// The user and their memberships.
    pub async fn user_with_memberships(&self, id: UserId) -> Result<(User, Vec<Membership>)> {
        let user = self.catalog().user(id).await?.ok_or(Error::InvalidToken)?;
        let memberships = self.catalog().memberships(id).await?;
        Ok((user, memberships))
    }
}
