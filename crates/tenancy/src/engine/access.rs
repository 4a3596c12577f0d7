//! Who may do what to which tenant: principals, API keys, members, invitations, custom
//! domains, suspension, and the audit of elevated access.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::AdminToken;
use crate::catalog::{NewApiKey, NewInvitation, Transition};
use crate::domain::{CustomDomain, Domain, DomainVerifier};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::identity::{
    ApiKey, AuditEntry, Email, KeyScope, Member, Membership, RefreshSecret, Role, User, UserId,
};
use crate::plans::LimitKind;
use crate::tenant::{Tenant, TenantId, TenantStatus};

/// `last_used_at` is recorded at most this often per key (and written in batches).
pub(crate) const KEY_TOUCH_INTERVAL: Duration = Duration::from_secs(60);
const INVITATION_TTL_DAYS: i64 = 7;

/// Who calls.
#[derive(Debug, Clone)]
pub enum Principal {
    /// The holder of the platform admin token.
    PlatformAdmin,
    /// A logged-in user. `token_tenant`: the `tid` of a tenant-scoped token, which then
    /// reaches that tenant only.
    User {
        user: User,
        token_tenant: Option<TenantId>,
    },
    ApiKey(ApiKey),
}

/// A principal's access to one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Access {
    pub role: Role,
    /// Granted by platform power (superadmin, platform key or admin token), not by
    /// membership: such access is audited.
    pub elevated: bool,
}

impl Principal {
    /// Platform power: acts on every tenant.
    pub fn is_platform(&self) -> bool {
        match self {
            Principal::PlatformAdmin => true,
            Principal::User { user, .. } => user.is_superadmin,
            Principal::ApiKey(key) => key.tenant_id.is_none(),
        }
    }

    /// The tenant this principal is bound to, if it is bound to one (a tenant API key or
    /// a tenant-scoped token).
    pub fn bound_tenant(&self) -> Option<TenantId> {
        match self {
            Principal::PlatformAdmin => None,
            Principal::User { token_tenant, .. } => *token_tenant,
            Principal::ApiKey(key) => key.tenant_id,
        }
    }

    /// How the audit log names this principal.
    pub fn actor(&self) -> String {
        match self {
            Principal::PlatformAdmin => "admin-token".to_owned(),
            Principal::User { user, .. } => format!("user:{}", user.id),
            Principal::ApiKey(key) => format!("api-key:{}", key.id),
        }
    }

    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Principal::User { user, .. } => Some(user.id),
            _ => None,
        }
    }
}

/// The answer to adding a member by email: always an invitation, whether or not the email
/// has an account (the answer tells nothing about who has one, and nobody joins a tenant
/// without accepting). A new user redeems it at signup, an existing one with
/// [`Engine::accept_invitation`].
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum AddedMember {
    Invited {
        email: String,
        role: Role,
        invitation: String,
        expires_at: DateTime<Utc>,
    },
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Splits `tny_<16 hex id>_<secret>`.
fn parse_api_key(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix("tny_")?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    let secret_ok = (40..=64).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some((id, secret))
}

fn check_label(label: Option<&str>) -> Result<()> {
    if let Some(l) = label {
        if l.chars().count() > 100 || l.chars().any(char::is_control) {
            return Err(Error::InvalidInput(
                "label: at most 100 characters, no control characters".into(),
            ));
        }
    }
    Ok(())
}

impl Engine {
    /// Refuses a change to a suspended tenant (read from the catalog, not a cache: the
    /// suspension may be a moment old). Changes that only take access away — revoking a
    /// key, removing a member or a domain — are not refused.
    pub(crate) async fn refuse_if_suspended(&self, tenant: TenantId) -> Result<()> {
        match self.catalog().tenant(tenant).await? {
            Some(t) if t.status == TenantStatus::Suspended => Err(Error::TenantSuspended {
                slug: t.slug.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Identifies the bearer of a token: the platform admin token, an API key
    /// (`tny_<id>_<secret>`) or an access token (JWT). Every failure is `InvalidToken`.
    pub async fn authenticate(&self, bearer: &str, admin: &AdminToken) -> Result<Principal> {
        // An API key is recognised by its shape, which spares most requests the admin
        // token's hash; a configured admin token of the same shape still works.
        if parse_api_key(bearer).is_some() {
            return match self.authenticate_api_key(bearer).await {
                Ok(key) => Ok(Principal::ApiKey(key)),
                Err(_) if admin.verify(bearer) => Ok(Principal::PlatformAdmin),
                Err(e) => Err(e),
            };
        }
        if admin.verify(bearer) {
            return Ok(Principal::PlatformAdmin);
        }
        if bearer.starts_with("tny_") {
            return Err(Error::InvalidToken);
        }
        let claims = self.verify_access_token(bearer).await?;
        let user_id: UserId = claims.sub.parse().map_err(|_| Error::InvalidToken)?;
        let user = self
            .lookup_user(user_id)
            .await?
            .ok_or(Error::InvalidToken)?;
        let token_tenant = claims
            .tid
            .map(|t| t.parse::<TenantId>().map_err(|_| Error::InvalidToken))
            .transpose()?;
        Ok(Principal::User { user, token_tenant })
    }

    /// The key, if it exists, its secret matches, and it is neither revoked nor expired.
    pub async fn authenticate_api_key(&self, presented: &str) -> Result<ApiKey> {
        let (id, secret) = parse_api_key(presented).ok_or(Error::InvalidToken)?;
        let (mut key, stored_hash) = self.lookup_api_key(id).await?.ok_or(Error::InvalidToken)?;
        let presented_hash = sha256_hex(secret);
        if !bool::from(presented_hash.as_bytes().ct_eq(stored_hash.as_bytes())) {
            return Err(Error::InvalidToken);
        }
        let now = Utc::now();
        if key.revoked_at.is_some() || key.expires_at.is_some_and(|e| e <= now) {
            return Err(Error::InvalidToken);
        }
        if let Some(tenant) = key.tenant_id {
            // A key of a deleted tenant is dead with it.
            let live = self.tenant_by_id(tenant).await?;
            if live.is_none_or(|t| t.status == TenantStatus::Deleted) {
                return Err(Error::InvalidToken);
            }
        }
        let last = self.last_touch(&key.id).or(key.last_used_at);
        let stale =
            last.is_none_or(|t| (now - t).to_std().unwrap_or_default() >= KEY_TOUCH_INTERVAL);
        if stale {
            self.buffer_touch(&key.id, now);
            key.last_used_at = Some(now);
        }
        Ok(key)
    }

    /// The principal's role in the tenant, or `None` if it has no access. Elevated access
    /// is recorded in the audit log with `action`.
    pub async fn access(
        &self,
        principal: &Principal,
        tenant: &Tenant,
        action: &str,
    ) -> Result<Option<Access>> {
        let access = match principal {
            Principal::PlatformAdmin => Some(Access {
                role: Role::Owner,
                elevated: true,
            }),
            Principal::ApiKey(key) => match key.scope()? {
                KeyScope::Platform => Some(Access {
                    role: Role::Owner,
                    elevated: true,
                }),
                KeyScope::Tenant { tenant_id, role } => {
                    (tenant_id == tenant.id).then_some(Access {
                        role,
                        elevated: false,
                    })
                }
            },
            Principal::User { user, token_tenant } => {
                if token_tenant.is_some_and(|t| t != tenant.id) {
                    None
                } else {
                    match self.lookup_role(tenant.id, user.id).await? {
                        Some(role) => Some(Access {
                            role,
                            elevated: false,
                        }),
                        None if user.is_superadmin => Some(Access {
                            role: Role::Owner,
                            elevated: true,
                        }),
                        None => None,
                    }
                }
            }
        };
        if access.is_some_and(|a| a.elevated) {
            self.catalog()
                .append_audit(&principal.actor(), Some(tenant.id), action, None)
                .await?;
        }
        Ok(access)
    }

    /// Creates an API key and returns it with the full key, which is never shown again.
    pub async fn create_api_key(
        &self,
        scope: KeyScope,
        label: Option<String>,
        expires_at: Option<DateTime<Utc>>,
        created_by: &str,
    ) -> Result<(ApiKey, String)> {
        check_label(label.as_deref())?;
        if expires_at.is_some_and(|e| e <= Utc::now()) {
            return Err(Error::InvalidInput(
                "expires_at must be in the future".into(),
            ));
        }
        let id = hex::encode(&uuid::Uuid::new_v4().as_bytes()[..8]);
        let (secret, _) = RefreshSecret::generate();
        let secret = secret.trim_start_matches("tnr_").to_owned();
        if let KeyScope::Tenant { tenant_id, .. } = scope {
            self.refuse_if_suspended(tenant_id).await?;
        }
        let (tenant_id, role) = match scope {
            KeyScope::Tenant { tenant_id, role } => (Some(tenant_id), role.as_str().to_owned()),
            KeyScope::Platform => (None, "superadmin".to_owned()),
        };
        let max = match tenant_id {
            Some(t) => self.limit_of(t, LimitKind::ApiKeys).await?,
            None => None,
        };
        let key = self
            .catalog()
            .insert_api_key(&NewApiKey {
                id: id.clone(),
                tenant_id,
                role,
                label,
                secret_hash: sha256_hex(&secret),
                created_by: created_by.to_owned(),
                expires_at,
                max,
            })
            .await?;
        Ok((key, format!("tny_{id}_{secret}")))
    }

    /// Keys without secrets; `last_used_at` includes uses not yet written to the catalog.
    pub async fn api_keys(&self, tenant: Option<TenantId>) -> Result<Vec<ApiKey>> {
        let mut keys = self.catalog().api_keys(tenant).await?;
        for key in &mut keys {
            if let Some(t) = self.last_touch(&key.id) {
                key.last_used_at = Some(key.last_used_at.map_or(t, |l| l.max(t)));
            }
        }
        Ok(keys)
    }

    /// Revokes a key; the very next request with it is refused.
    pub async fn revoke_api_key(&self, tenant: Option<TenantId>, id: &str) -> Result<()> {
        if self.catalog().revoke_api_key(tenant, id).await? {
            Ok(())
        } else {
            Err(Error::ApiKeyNotFound)
        }
    }

    pub async fn members(&self, tenant: TenantId) -> Result<Vec<Member>> {
        self.catalog().members(tenant).await
    }

    /// Invites the email to the tenant with `role`; the same answer whether or not the
    /// email has an account. Refused with `MemberExists` if its user already belongs (the
    /// members list shows that anyway).
    pub async fn add_member(
        &self,
        tenant: TenantId,
        email: &str,
        role: Role,
        by: &str,
    ) -> Result<AddedMember> {
        let email = Email::parse(email)?;
        self.refuse_if_suspended(tenant).await?;
        if let Some((user, _)) = self.catalog().user_by_email(&email.normalized()).await? {
            if self
                .catalog()
                .membership_role(tenant, user.id)
                .await?
                .is_some()
            {
                return Err(Error::MemberExists);
            }
        }
        let (token, _) = RefreshSecret::generate();
        let invitation = format!("tni_{}", token.trim_start_matches("tnr_"));
        let expires_at = Utc::now() + chrono::Duration::days(INVITATION_TTL_DAYS);
        self.catalog()
            .insert_invitation(&NewInvitation {
                token_hash: RefreshSecret::hash(&invitation),
                tenant_id: tenant,
                email_norm: email.normalized(),
                role,
                created_by: by.to_owned(),
                expires_at,
                max_members: self.limit_of(tenant, LimitKind::Members).await?,
            })
            .await?;
        Ok(AddedMember::Invited {
            email: email.as_str().to_owned(),
            role,
            invitation,
            expires_at,
        })
    }

    /// An existing user accepts an invitation made out to their email, and becomes a
    /// member with its role. Returns the membership.
    pub async fn accept_invitation(&self, user: UserId, invitation: &str) -> Result<Membership> {
        if invitation.len() > 256 {
            return Err(Error::InvalidInvitation);
        }
        let account = self
            .catalog()
            .user(user)
            .await?
            .ok_or(Error::InvalidToken)?;
        let email = Email::parse(&account.email)?;
        let tenant = self
            .catalog()
            .accept_invitation(&RefreshSecret::hash(invitation), user, &email.normalized())
            .await?;
        self.catalog()
            .memberships(user)
            .await?
            .into_iter()
            .find(|m| m.tenant_id == tenant)
            .ok_or(Error::MemberNotFound)
    }

    pub async fn set_member_role(&self, tenant: TenantId, user: UserId, role: Role) -> Result<()> {
        self.refuse_if_suspended(tenant).await?;
        if self.catalog().set_member_role(tenant, user, role).await? {
            Ok(())
        } else {
            Err(Error::MemberNotFound)
        }
    }

    pub async fn remove_member(&self, tenant: TenantId, user: UserId) -> Result<()> {
        if self.catalog().remove_member(tenant, user).await? {
            Ok(())
        } else {
            Err(Error::MemberNotFound)
        }
    }

    /// Claims a custom domain for the tenant: pending, with the token the domain must
    /// serve before [`Engine::verify_domain`] lets it route. `platform_hosts` are the
    /// hosts of the platform (base domains, its own host names): they and everything under
    /// them are refused (`DomainReserved`), and so is everything under `localhost`.
    pub async fn add_domain(
        &self,
        tenant: TenantId,
        raw: &str,
        platform_hosts: &[String],
    ) -> Result<CustomDomain> {
        let domain = Domain::parse(raw)?;
        self.refuse_if_suspended(tenant).await?;
        if domain.is_within(platform_hosts) || domain.is_within(&["localhost".to_owned()]) {
            return Err(Error::DomainReserved {
                domain: domain.to_string(),
            });
        }
        let token = uuid::Uuid::new_v4().simple().to_string();
        self.catalog()
            .insert_domain(tenant, domain.as_str(), &token)
            .await
    }

    /// The tenant's domains, verified or pending.
    pub async fn domains(&self, tenant: TenantId) -> Result<Vec<CustomDomain>> {
        self.catalog().domains(tenant).await
    }

    /// Verifies the tenant's claim on a domain: `verifier` must find the claim's token
    /// served by the domain (`DomainUnverified` says what it found instead). From then on
    /// the domain names the tenant, and other tenants' claims on it are dropped. A domain
    /// verified already is answered as it is.
    pub async fn verify_domain(
        &self,
        tenant: TenantId,
        raw: &str,
        verifier: &dyn DomainVerifier,
    ) -> Result<CustomDomain> {
        let domain = Domain::parse(raw).map_err(|_| Error::DomainNotFound)?;
        let claim = self
            .catalog()
            .domains(tenant)
            .await?
            .into_iter()
            .find(|c| c.domain == domain.as_str())
            .ok_or(Error::DomainNotFound)?;
        if claim.is_verified() {
            return Ok(claim);
        }
        verifier
            .verify(&domain, &claim.token)
            .await
            .map_err(|reason| Error::DomainUnverified {
                domain: domain.to_string(),
                reason,
            })?;
        self.catalog()
            .verify_domain(tenant, domain.as_str())
            .await?
            .ok_or(Error::DomainNotFound)
    }

    pub async fn remove_domain(&self, tenant: TenantId, raw: &str) -> Result<()> {
        let domain =
            Domain::parse(raw).map_err(|_| Error::InvalidInput("no such domain".into()))?;
        if self
            .catalog()
            .remove_domain(tenant, domain.as_str())
            .await?
        {
            Ok(())
        } else {
            Err(Error::InvalidInput("no such domain".into()))
        }
    }

    /// `active → suspended`.
    pub async fn suspend_tenant(&self, tenant: &Tenant) -> Result<Tenant> {
        self.set_status(
            tenant,
            TenantStatus::Active,
            TenantStatus::Suspended,
            "suspend",
        )
        .await
    }

    /// `suspended → active`.
    pub async fn resume_tenant(&self, tenant: &Tenant) -> Result<Tenant> {
        self.set_status(
            tenant,
            TenantStatus::Suspended,
            TenantStatus::Active,
            "resume",
        )
        .await
    }

    async fn set_status(
        &self,
        tenant: &Tenant,
        from: TenantStatus,
        to: TenantStatus,
        event: &str,
    ) -> Result<Tenant> {
        self.catalog()
            .transition(Transition {
                id: tenant.id,
                from: &[from],
                to,
                expect_owner: None,
                new_owner: None,
                error: None,
                schema_version: None,
                event,
            })
            .await
    }

    pub async fn audit(&self, tenant: TenantId) -> Result<Vec<AuditEntry>> {
        self.catalog().audit(tenant).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_api_keys() {
        let secret = "a".repeat(43);
        assert!(super::parse_api_key(&format!("tny_0123456789abcdef_{secret}")).is_some());
        for bad in [
            String::new(),
            "tny_".into(),
            format!("tny_0123456789ABCDEF_{secret}"),
            format!("tny_admin_{secret}"),
            format!("tny_0123456789abcdef_{}", "a".repeat(10)),
            format!("tny_0123456789abcdef_{secret}'--"),
            format!("xyz_0123456789abcdef_{secret}"),
        ] {
            assert!(super::parse_api_key(&bad).is_none(), "{bad}");
        }
    }
}
