//! Tenants, their lifecycle status and their placement.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::slug::Slug;

/// A tenant's id: a UUIDv7, generated once and never changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TenantId(pub Uuid);

impl TenantId {
    pub fn generate() -> TenantId {
        TenantId(Uuid::now_v7())
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for TenantId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Uuid::parse_str(s)
            .map(TenantId)
            .map_err(|e| Error::Catalog(format!("bad tenant id {s:?}: {e}")))
    }
}

/// The lifecycle of DESIGN §2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantStatus {
    Provisioning,
    Active,
    Failed,
    Suspended,
    Moving,
    Deleting,
    Deleted,
}

impl TenantStatus {
    pub const ALL: [TenantStatus; 7] = [
        TenantStatus::Provisioning,
        TenantStatus::Active,
        TenantStatus::Failed,
        TenantStatus::Suspended,
        TenantStatus::Moving,
        TenantStatus::Deleting,
        TenantStatus::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Provisioning => "provisioning",
            TenantStatus::Active => "active",
            TenantStatus::Failed => "failed",
            TenantStatus::Suspended => "suspended",
            TenantStatus::Moving => "moving",
            TenantStatus::Deleting => "deleting",
            TenantStatus::Deleted => "deleted",
        }
    }

    /// Statuses in which some process is carrying out a transition with side effects.
    pub fn is_transitional(self) -> bool {
        matches!(
            self,
            TenantStatus::Provisioning | TenantStatus::Moving | TenantStatus::Deleting
        )
    }
}

impl fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TenantStatus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        TenantStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| Error::Catalog(format!("unknown tenant status {s:?}")))
    }
}

/// The isolation model of one tenant (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Database,
    Schema,
    Shared,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Database => "database",
            Mode::Schema => "schema",
            Mode::Shared => "shared",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "database" => Ok(Mode::Database),
            "schema" => Ok(Mode::Schema),
            "shared" => Ok(Mode::Shared),
            other => Err(Error::Catalog(format!("unknown mode {other:?}"))),
        }
    }
}

/// Where a tenant's data lives now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    /// The name of the store.
    pub store: String,
    pub mode: Mode,
    /// Store-relative location: a file name for SQLite, a database or schema name for PostgreSQL.
    #[serde(skip)]
    pub location: String,
    /// The latest tenant migration applied (0: none).
    pub schema_version: i64,
}

/// A tenant as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tenant {
    pub id: TenantId,
    pub slug: Slug,
    pub name: String,
    pub status: TenantStatus,
    /// Why the last transition failed, for `failed` tenants.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(flatten)]
    pub placement: Placement,
    /// Its plan (`None`: the configured default plan).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Its own limits, flags and budget over the plan's.
    #[serde(skip_serializing_if = "crate::plans::PlanOverrides::is_empty")]
    pub plan_overrides: crate::plans::PlanOverrides,
    /// When its trial ends: from then on it is suspended unless its plan changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trial_ends_at: Option<DateTime<Utc>>,
    /// When its subscription ends: from then on it is suspended unless renewed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription_ends_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The process instance carrying out the current transition, if any.
    #[serde(skip)]
    pub op_owner: Option<String>,
}

/// A tenant's display name: 1–200 characters, no control characters. Stored verbatim.
pub fn validate_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::InvalidName {
            reason: "it is empty",
        });
    }
    if name.chars().count() > 200 {
        return Err(Error::InvalidName {
            reason: "it is longer than 200 characters",
        });
    }
    if name.chars().any(char::is_control) {
        return Err(Error::InvalidName {
            reason: "it contains control characters",
        });
    }
    Ok(())
}
