//! Users and sessions on top of the engine: signup, login, refresh, logout, access-token
//! verification, and signing-key rotation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use chrono::Utc;
use serde::Serialize;

use crate::catalog::{Catalog, NewRefreshToken, NewUser};
use crate::config::EngineConfig;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::identity::{
    check_password_policy, hash_password, new_signing_secret, unix_now, verify_password_or_dummy,
    AccessClaims, Email, FailureLimiter, Membership, RefreshSecret, RefreshUse, Role, TokenConfig,
    TokenSigner, User, UserId,
};
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
async fn load_signer(catalog: &dyn Catalog, config: &TokenConfig) -> Result<TokenSigner> {
    let keys = || async {
        let since = Utc::now()
            - chrono::Duration::from_std(config.access_ttl).unwrap_or_default()
            - chrono::Duration::seconds(60);
        catalog.signing_keys(since).await
    };
    let mut stored = keys().await?;
    if stored.is_empty() {
        catalog
            .add_signing_key(&new_kid(), &hex::encode(new_signing_secret()))
            .await?;
        stored = keys().await?;
    }
    let keys: Vec<(String, Vec<u8>)> = stored
        .into_iter()
        .filter_map(|(kid, secret)| hex::decode(secret).ok().map(|s| (kid, s)))
        .collect();
    TokenSigner::new(config.clone(), &keys)
}

fn new_kid() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// The engine's account state: the token signer (reloaded from the catalog when a token
/// names a key this process has not seen, at most every few seconds) and the failed-login
/// limits per email and per client address.
pub(crate) struct AccountState {
    signer: RwLock<Arc<TokenSigner>>,
    /// When the signer was last reloaded (unix seconds), to bound reloads.
    last_key_reload: AtomicU64,
    per_email: FailureLimiter,
    per_client: FailureLimiter,
}

impl AccountState {
    pub(crate) async fn load(catalog: &dyn Catalog, config: &EngineConfig) -> Result<AccountState> {
        Ok(AccountState {
            signer: RwLock::new(Arc::new(load_signer(catalog, &config.tokens).await?)),
            last_key_reload: AtomicU64::new(0),
            per_email: FailureLimiter::new(config.login_limit_per_email),
            per_client: FailureLimiter::new(config.login_limit_per_client),
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

    /// Refuses a login attempt while the email or the client address is over its limit.
    fn check_limits(&self, email_key: &str, client: Option<&str>) -> Result<()> {
        let limited = self
            .per_email
            .check(email_key)
            .and_then(|()| client.map_or(Ok(()), |c| self.per_client.check(c)));
        limited.map_err(|retry| Error::RateLimited {
            retry_after_secs: retry.as_secs().max(1),
        })
    }

    fn record_failure(&self, email_key: &str, client: Option<&str>) {
        self.per_email.record_failure(email_key);
        if let Some(c) = client {
            self.per_client.record_failure(c);
        }
    }
}

impl Engine {
    fn signer(&self) -> Arc<TokenSigner> {
        self.inner.accounts.signer()
    }

    /// Creates an account. Signup uses this with `superadmin: false`.
    pub async fn create_user(&self, email: &str, password: &str, superadmin: bool) -> Result<User> {
        self.signup(email, password, superadmin, None).await
    }

    /// Creates an account, redeeming an invitation (for this email) in the same step.
    pub async fn signup(
        &self,
        email: &str,
        password: &str,
        superadmin: bool,
        invitation: Option<&str>,
    ) -> Result<User> {
        let email = Email::parse(email)?;
        check_password_policy(password, &email)?;
        let password = password.to_owned();
        let hash = tokio::task::spawn_blocking(move || hash_password(&password)).await??;
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
        self.inner.accounts.check_limits(&email_key, client)?;
        let found = match Email::parse(email) {
            Ok(e) => self.catalog().user_by_email(&e.normalized()).await?,
            Err(_) => None,
        };
        let stored = found.as_ref().map(|(_, hash)| hash.clone());
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || {
            verify_password_or_dummy(stored.as_deref(), &password)
        })
        .await?;
        let user = match (ok, found) {
            (true, Some((user, _))) => user,
            _ => {
                self.inner.accounts.record_failure(&email_key, client);
                return Err(Error::InvalidCredentials);
            }
        };
        let scope = match tenant {
            Some(slug) => Some(self.scope_for(&user, slug).await?),
            None => None,
        };
        self.open_session(&user, scope, None).await
    }

    /// The tenant and the user's role there; superadmins act as `owner` anywhere.
    async fn scope_for(&self, user: &User, slug: &Slug) -> Result<(TenantId, Role)> {
        let tenant = self.tenant(slug).await?;
        let role = self.catalog().membership_role(tenant.id, user.id).await?;
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
                let reloaded = Arc::new(load_signer(self.catalog(), &self.config().tokens).await?);
                self.inner.accounts.replace_signer(Arc::clone(&reloaded));
                reloaded.verify(token)
            }
        }
    }

    /// Makes a new signing key current. Tokens signed by the previous keys stay valid until
    /// they expire. Returns the new key id.
    pub async fn rotate_signing_key(&self) -> Result<String> {
        let kid = new_kid();
        self.catalog()
            .add_signing_key(&kid, &hex::encode(new_signing_secret()))
            .await?;
        let reloaded = load_signer(self.catalog(), &self.config().tokens).await?;
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
