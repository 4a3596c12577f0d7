//! Identity primitives: users' emails and passwords, roles, access tokens, refresh
//! tokens and the failed-login limiter. Storage is the catalog's; HTTP is elsewhere.

mod email;
mod password;
mod ratelimit;
mod role;
mod token;

pub use email::Email;
pub use password::{
    check_password_policy, hash_password, verify_password, HashingConfig, HashingPool,
};
pub use ratelimit::{AttemptLimiter, LimitConfig};
pub use role::Role;
pub use token::{
    new_signing_secret, unix_now, AccessClaims, RefreshSecret, TokenConfig, TokenSigner,
};

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use uuid::Uuid;

use crate::error::{Error, Result};

/// A user's id: a UUIDv7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(pub Uuid);

impl UserId {
    pub fn generate() -> UserId {
        UserId(Uuid::now_v7())
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for UserId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Uuid::parse_str(s)
            .map(UserId)
            .map_err(|_| Error::Catalog(format!("bad user id {s:?}")))
    }
}

/// A user account (never its password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: UserId,
    pub email: String,
    pub is_superadmin: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// A user's role in one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Membership {
    pub tenant_id: crate::TenantId,
    pub slug: String,
    pub name: String,
    pub role: Role,
}

/// What presenting a refresh token found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshUse {
    /// Valid and now spent: issue the next one in `family`.
    Valid {
        user_id: UserId,
        tenant_id: Option<crate::TenantId>,
        family: String,
    },
    /// Already used or revoked: the family has been revoked (a stolen token was replayed,
    /// or the client raced itself).
    Replayed,
    /// Unknown or expired.
    Invalid,
}

/// What an API key may act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "scope", rename_all = "lowercase")]
pub enum KeyScope {
    /// One tenant, with a role there.
    Tenant {
        tenant_id: crate::TenantId,
        role: Role,
    },
    /// The whole platform, as a superadmin.
    Platform,
}

/// An API key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKey {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<crate::TenantId>,
    /// A tenant role, or `superadmin` for a platform key.
    pub role: String,
    pub label: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl ApiKey {
    pub fn scope(&self) -> Result<KeyScope> {
        match self.tenant_id {
            Some(tenant_id) => Ok(KeyScope::Tenant {
                tenant_id,
                role: self.role.parse()?,
            }),
            None => Ok(KeyScope::Platform),
        }
    }
}

/// A member of a tenant, as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub user_id: UserId,
    pub email: String,
    pub role: Role,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub at: chrono::DateTime<chrono::Utc>,
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<crate::TenantId>,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}
