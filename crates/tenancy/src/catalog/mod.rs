//! The catalog: the control-plane database (tenants, placements, the lifecycle journal,
//! migration runs and results, locks, platform settings, tenant settings).
//!
//! [`Catalog`] is the one interface the engine talks to; [`SqliteCatalog`] is the embedded
//! implementation. Every state change is a compare-and-set on the tenant's status, written
//! with a journal row in the same transaction, so that concurrent processes on one catalog
//! cannot both win a transition and every transition leaves a trace.
//!
//! Readers may cache some rows (API keys, tenants, slugs, memberships, users, domains,
//! tenant settings: [`Change`]). Every write names those it changed, in its own transaction, and
//! [`Catalog::changes_since`] tells any process what changed since it last asked.

pub mod postgres;
mod sqlite;

pub use sqlite::SqliteCatalog;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::domain::CustomDomain;
use crate::error::Result;
use crate::identity::{ApiKey, AuditEntry, Member, Membership, RefreshUse, Role, User, UserId};
use crate::migrations::{Dialect, Script};
use crate::settings::TenantSettings;
use crate::slug::Slug;
use crate::tenant::{Placement, Tenant, TenantId, TenantStatus};

/// A tenant about to be provisioned.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub id: TenantId,
    pub slug: Slug,
    pub name: String,
    pub placement: Placement,
    /// The user who becomes its `owner`, recorded with the tenant itself.
    pub owner: Option<UserId>,
    /// Its plan (`None`: whichever is the default when asked).
    pub plan: Option<String>,
}

/// What a tenant holds of the limits the catalog keeps.
#[derive(Debug, Clone, Copy, Default)]
pub struct QuotaCounts {
    /// Members and pending invitations.
    pub members: u64,
    /// Keys neither revoked nor expired.
    pub api_keys: u64,
}

/// A tenant's plan, overrides and dates as they are to be after a change (the whole state,
/// not a difference), journaled as `plan.update` with `detail`.
#[derive(Debug, Clone)]
pub struct PlanState {
    pub plan: Option<String>,
    pub overrides: crate::plans::PlanOverrides,
    pub trial_ends_at: Option<DateTime<Utc>>,
    pub subscription_ends_at: Option<DateTime<Utc>>,
    /// What changed, for the journal.
    pub detail: String,
}

/// A user about to be created.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: UserId,
    /// As typed (trimmed); compared in lower case.
    pub email: String,
    pub password_hash: String,
    pub is_superadmin: bool,
}

/// An API key to store (by the hash of its secret).
#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub id: String,
    /// `None`: a platform key.
    pub tenant_id: Option<TenantId>,
    pub role: String,
    pub label: Option<String>,
    pub secret_hash: String,
    pub created_by: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// Refuse (`QuotaExceeded`) if the tenant already has this many live keys: counted
    /// and inserted in one transaction.
    pub max: Option<u64>,
}

/// An invitation to join a tenant, redeemed at signup by its token.
#[derive(Debug, Clone)]
pub struct NewInvitation {
    pub token_hash: String,
    pub tenant_id: TenantId,
    pub email_norm: String,
    pub role: Role,
    pub created_by: String,
    pub expires_at: DateTime<Utc>,
    /// Refuse (`QuotaExceeded`) if the tenant's members and pending invitations already
    /// number this many: counted and inserted in one transaction.
    pub max_members: Option<u64>,
}

/// A refresh token to store (by hash).
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    pub token_hash: String,
    pub family: String,
    pub user_id: UserId,
    pub tenant_id: Option<TenantId>,
    pub expires_at: DateTime<Utc>,
}

/// A compare-and-set on a tenant's status, journaled.
#[derive(Debug, Clone)]
pub struct Transition<'a> {
    pub id: TenantId,
    /// The statuses the tenant must be in for the transition to apply.
    pub from: &'a [TenantStatus],
    pub to: TenantStatus,
    /// `Some(owner)`: the transition applies only if this process instance owns the
    /// tenant's current operation (or nobody does).
    pub expect_owner: Option<&'a str>,
    /// The owner of the operation the tenant is in after the transition (`None`: settled).
    pub new_owner: Option<&'a str>,
    /// Recorded on the tenant (cleared when `None`).
    pub error: Option<String>,
    /// Mirrors the tenant database's schema version when known.
    pub schema_version: Option<i64>,
    /// What happened, for the journal (`provision.begin`, `delete.done`, …).
    pub event: &'a str,
}

/// Which tenants to list.
#[derive(Debug, Clone, Default)]
pub struct TenantFilter {
    pub statuses: Option<Vec<TenantStatus>>,
    /// Only tenants whose schema version is below this.
    pub schema_below: Option<i64>,
    pub include_deleted: bool,
}

/// One line of the lifecycle journal.
#[derive(Debug, Clone, Serialize)]
pub struct JournalEntry {
    pub seq: i64,
    pub tenant_id: TenantId,
    pub event: String,
    pub from_status: Option<String>,
    pub to_status: String,
    pub owner: Option<String>,
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

/// The outcome of migrating one tenant in one run.
#[derive(Debug, Clone, Serialize)]
pub struct TenantMigrationResult {
    pub run_id: i64,
    pub tenant_id: TenantId,
    pub slug: String,
    pub from_version: i64,
    /// The version reached, or on failure the version that was attempted.
    pub to_version: i64,
    pub ok: bool,
    pub error: Option<String>,
}

/// A migration applied to at least one tenant: its checksum can no longer change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredMigration {
    pub version: i64,
    pub file: String,
    pub checksum: String,
}

/// Counts of tenants by status and schema version.
#[derive(Debug, Clone, Serialize)]
pub struct StatusCount {
    pub status: TenantStatus,
    pub schema_version: i64,
    pub count: u64,
}

/// A catalog row that readers may cache, named as they look it up. Every write reports
/// the ones it changed (see [`Catalog::changes_since`]); any other write changes nothing a
/// reader caches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Change {
    /// An API key, by id (not its `last_used_at`, which readers keep themselves).
    ApiKey(String),
    /// A tenant or its placement, by id.
    Tenant(TenantId),
    /// Which live tenant holds a slug: reported when a tenant takes it or, renamed, leaves
    /// it (a tenant's status, deletion included, is [`Change::Tenant`]).
    Slug(Slug),
    /// A user's membership of a tenant: `(tenant, user)`.
    Member(TenantId, UserId),
    User(UserId),
    /// Which tenant a custom domain names.
    Domain(String),
    /// A tenant's settings document, by tenant id.
    Settings(TenantId),
}

/// What changed since a position of the catalog's change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changes {
    /// These rows (often none).
    Keys(Vec<Change>),
    /// Too many rows to name, or changes that are not known (a change log pruned past the
    /// position, a time without news from other processes): anything may have changed.
    All,
}

/// The answer of [`Catalog::changes_since`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangesSince {
    /// Where to ask from next time.
    pub position: u64,
    pub changes: Changes,
}

/// More changes than this, by one write or since a position, are reported as
/// [`Changes::All`] (a bulk creation, a fleet migration): a reader would drop most of what
/// it holds anyway.
pub const CHANGES_MAX: usize = 1024;

/// How the change log and notifications name everything.
const ALL_KIND: &str = "*";

impl Change {
    /// The kind and key under which the change log and notifications carry it.
    fn encode(&self) -> (&'static str, String) {
        match self {
            Change::ApiKey(id) => ("api_key", id.clone()),
            Change::Tenant(id) => ("tenant", id.to_string()),
            Change::Slug(slug) => ("slug", slug.to_string()),
            Change::Member(tenant, user) => ("member", format!("{tenant}:{user}")),
            Change::User(id) => ("user", id.to_string()),
            Change::Domain(domain) => ("domain", domain.clone()),
            Change::Settings(id) => ("settings", id.to_string()),
        }
    }

    /// What [`Change::encode`] gave; `None` for anything else (a kind of a newer version).
    fn decode(kind: &str, key: &str) -> Option<Change> {
        Some(match kind {
            "api_key" => Change::ApiKey(key.to_owned()),
            "tenant" => Change::Tenant(key.parse().ok()?),
            "slug" => Change::Slug(Slug::parse(key).ok()?),
            "member" => {
                let (tenant, user) = key.split_once(':')?;
                Change::Member(tenant.parse().ok()?, user.parse().ok()?)
            }
            "user" => Change::User(key.parse().ok()?),
            "domain" => Change::Domain(key.to_owned()),
            "settings" => Change::Settings(key.parse().ok()?),
            _ => return None,
        })
    }
}

impl Changes {
    fn none() -> Changes {
        Changes::Keys(Vec::new())
    }

    /// What a write that changed `rows` reports.
    fn of_write(rows: &[Change]) -> Changes {
        if rows.len() > CHANGES_MAX {
            Changes::All
        } else {
            Changes::Keys(rows.to_vec())
        }
    }

    /// The (kind, key) pairs that carry these changes.
    fn encode(&self) -> Vec<(&'static str, String)> {
        match self {
            Changes::All => vec![(ALL_KIND, String::new())],
            Changes::Keys(rows) => rows.iter().map(Change::encode).collect(),
        }
    }

    /// Adds a pair [`Changes::encode`] gave. One this version cannot read means anything
    /// may have changed.
    fn add_encoded(&mut self, kind: &str, key: &str) {
        match (&mut *self, Change::decode(kind, key)) {
            (Changes::Keys(rows), Some(row)) if rows.len() < CHANGES_MAX => rows.push(row),
            _ => *self = Changes::All,
        }
    }

    /// Adds the changes of a later write.
    fn extend(&mut self, later: &Changes) {
        match (&mut *self, later) {
            (Changes::Keys(rows), Changes::Keys(more))
                if rows.len() + more.len() <= CHANGES_MAX =>
            {
                rows.extend(more.iter().cloned())
            }
            _ => *self = Changes::All,
        }
    }
}

/// The control-plane database. Implemented by [`SqliteCatalog`]; the PostgreSQL catalog
/// implements the same interface.
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// This process instance's owner id: it stays alive (see [`Catalog::is_alive`]) for as
    /// long as the catalog value lives.
    fn owner(&self) -> &str;

    /// A number that changes whenever the catalog changes: at once for changes made through
    /// this value, within a few milliseconds for other processes'. Cheap: the engine
    /// reads it on every request, and asks [`Catalog::changes_since`] what changed when it
    /// moved.
    fn generation(&self) -> Result<u64>;

    /// Whether this value hears every change to the catalog now. While it does not (the
    /// PostgreSQL catalog's listening session is down), [`Catalog::generation`] moves on
    /// every call, and readers check what they cached against the catalog itself — and
    /// keep it, should the catalog be unreachable too.
    fn hears_changes(&self) -> bool {
        true
    }

    /// How many times this value has gone to its database (a read or a write, however
    /// many statements it runs), not counting the cheap polls behind
    /// [`Catalog::generation`]: a counter for metrics, and for tests of what a request
    /// costs.
    fn query_count(&self) -> u64;

    /// What changed among the rows readers cache ([`Change`]) after `position`, which an
    /// earlier answer gave; `None` asks only where the feed is now. Writes of this process
    /// and of every other one are reported, in commit order: a reader that asks whenever
    /// [`Catalog::generation`] moves learns what to drop, and everything else it holds
    /// stays valid. SQLite: a change log written in each write's transaction (the latest
    /// rows kept). PostgreSQL: the changes named in each commit's notification.
    async fn changes_since(&self, position: Option<u64>) -> Result<ChangesSince>;

    /// Writes buffered `last_used_at` times of API keys, in one transaction.
    async fn touch_api_keys(&self, touches: &[(String, DateTime<Utc>)]) -> Result<()>;

    /// Whether the process instance that wrote `owner` still runs. A dead owner's
    /// operations are resumed or rolled back by recovery.
    async fn is_alive(&self, owner: &str) -> Result<bool>;

    /// Inserts the tenant in `provisioning`, owned by this instance. Fails with
    /// `TenantExists` if a tenant that is not `deleted` has the slug.
    async fn insert_tenant(&self, new: &NewTenant) -> Result<Tenant>;

    /// Like [`Catalog::insert_tenant`], refused with `TenantLimitReached` when the owner
    /// already owns `max_owned` tenants that are not deleted. The count and the insert are
    /// one transaction that holds the owner's row, so concurrent creations by one user
    /// cannot pass the bound.
    async fn insert_tenant_capped(&self, new: &NewTenant, max_owned: u32) -> Result<Tenant>;

    /// [`Catalog::insert_tenant`] for many tenants in one transaction: the outcome of
    /// each, in order. A tenant whose slug is taken (by an earlier one of the batch too)
    /// is `TenantExists` and the others are inserted.
    async fn insert_tenants(&self, new: &[NewTenant]) -> Result<Vec<Result<Tenant>>>;

    /// Settles many `provisioning` tenants this instance owns as `active` at the schema
    /// version given, in one transaction, journaled as `provision.done`. A tenant no
    /// longer in that state is `InvalidTransition` (or `TenantBusy`) and the others are
    /// settled. The outcomes come in the order given.
    async fn activate_provisioned(&self, done: &[(TenantId, i64)]) -> Result<Vec<Result<Tenant>>>;

    async fn tenant(&self, id: TenantId) -> Result<Option<Tenant>>;

    /// The tenant that holds the slug (never a `deleted` one).
    async fn tenant_by_slug(&self, slug: &Slug) -> Result<Option<Tenant>>;

    /// Tenants in slug order.
    async fn list_tenants(&self, filter: &TenantFilter) -> Result<Vec<Tenant>>;

    /// Applies the transition if the tenant is in one of `from` (and owned as expected);
    /// otherwise `InvalidTransition` or `TenantBusy`.
    async fn transition(&self, t: Transition<'_>) -> Result<Tenant>;

    /// Mirrors a tenant database's schema version (only ever raises it).
    async fn set_schema_version(&self, id: TenantId, version: i64) -> Result<()>;

    /// Sets a tenant's plan state (any status but `deleted`), with a journal row.
    async fn set_plan(&self, id: TenantId, state: &PlanState) -> Result<Tenant>;

    /// What the tenant holds of its catalog-kept limits.
    async fn quota_counts(&self, tenant: TenantId) -> Result<QuotaCounts>;

    /// Active tenants whose trial or subscription ended at or before `now`.
    async fn lapsed_tenants(&self, now: DateTime<Utc>) -> Result<Vec<Tenant>>;

    async fn status_counts(&self) -> Result<Vec<StatusCount>>;

    /// Tenants (deleted ones excluded) by status and mode, for the `tenancy_tenants` gauge.
    async fn counts_by_status_and_mode(&self) -> Result<Vec<(TenantStatus, crate::Mode, u64)>>;

    async fn journal(&self, id: TenantId) -> Result<Vec<JournalEntry>>;

    /// Takes a named fleet lock for this instance; a lock held by a dead owner is taken over.
    async fn acquire_lock(&self, name: &str) -> Result<()>;

    async fn release_lock(&self, name: &str) -> Result<()>;

    /// Starts a migration run toward `target`, returning its id.
    async fn start_migration_run(&self, target: i64) -> Result<i64>;

    /// Records the outcomes of a run's tenants in one transaction; each tenant that
    /// succeeded has its schema version raised to the version reached in that same
    /// transaction (never lowered).
    async fn record_tenant_migrations(&self, results: &[TenantMigrationResult]) -> Result<()>;

    async fn finish_migration_run(&self, run_id: i64, ok: u64, failed: u64) -> Result<()>;

    /// For each tenant whose latest migration attempt failed and that is still below that
    /// attempt's target: that result.
    async fn failed_migrations(&self) -> Result<Vec<TenantMigrationResult>>;

    /// [`Catalog::failed_migrations`] for one tenant: its standing failure, if any.
    async fn failed_migration(&self, tenant: TenantId) -> Result<Option<TenantMigrationResult>>;

    /// The migrations applied somewhere in this dialect, by version.
    async fn registered_migrations(&self, dialect: Dialect) -> Result<Vec<RegisteredMigration>>;

    /// Records scripts as applied (first registration wins; existing rows are kept).
    async fn register_migrations(&self, dialect: Dialect, scripts: &[Script<'_>]) -> Result<()>;

    /// Fails with `EmailTaken` if the email (case-insensitively) has an account. With an
    /// invitation token hash, the invitation (for this email, unexpired, unused) is
    /// redeemed in the same transaction, or nothing is created (`InvalidInvitation`).
    async fn insert_user(&self, new: &NewUser, invitation: Option<&str>) -> Result<User>;

    async fn user(&self, id: UserId) -> Result<Option<User>>;

    /// The user with this normalized email, and their password hash.
    async fn user_by_email(&self, email_norm: &str) -> Result<Option<(User, String)>>;

    /// The user's memberships in tenants that are not deleted, by slug.
    async fn memberships(&self, user: UserId) -> Result<Vec<Membership>>;

    async fn membership_role(&self, tenant: TenantId, user: UserId) -> Result<Option<Role>>;

    async fn insert_refresh_token(&self, token: &NewRefreshToken) -> Result<()>;

    /// Spends a refresh token, atomically: it works once.
    async fn use_refresh_token(&self, token_hash: &str) -> Result<RefreshUse>;

    /// Revokes the family of the token with this hash (logout). Unknown hashes are ignored.
    async fn revoke_refresh_token(&self, token_hash: &str) -> Result<()>;

    /// Signing keys created or retired after `since`, newest first, as `(kid, secret)`: the
    /// hex secret sealed with the secret key (in clear only in catalogs written before
    /// sealing, until the next start seals them).
    async fn signing_keys(&self, since: DateTime<Utc>) -> Result<Vec<(String, String)>>;

    /// Adds a key that becomes the current one, retiring the others now.
    async fn add_signing_key(&self, kid: &str, secret_hex: &str) -> Result<()>;

    /// Replaces a key's stored secret `clear` by `sealed` (the same key, sealed with the
    /// secret key); a no-op if the row no longer holds `clear`.
    async fn seal_signing_key(&self, kid: &str, clear: &str, sealed: &str) -> Result<()>;

    async fn insert_api_key(&self, key: &NewApiKey) -> Result<ApiKey>;

    /// The key and its secret hash.
    async fn api_key(&self, id: &str) -> Result<Option<(ApiKey, String)>>;

    /// Keys of a tenant (`None`: platform keys), newest first, revoked ones included.
    async fn api_keys(&self, tenant: Option<TenantId>) -> Result<Vec<ApiKey>>;

    /// Revokes a key of that tenant (or platform); false if there is none.
    async fn revoke_api_key(&self, tenant: Option<TenantId>, id: &str) -> Result<bool>;

    async fn members(&self, tenant: TenantId) -> Result<Vec<Member>>;

    /// Adds a member; `MemberExists` if the user already is one.
    async fn add_member(&self, tenant: TenantId, user: UserId, role: Role) -> Result<()>;

    /// Changes a role; refuses to demote the last owner (`LastOwner`). False if no member.
    async fn set_member_role(&self, tenant: TenantId, user: UserId, role: Role) -> Result<bool>;

    /// Removes a member; refuses to remove the last owner. False if no member.
    async fn remove_member(&self, tenant: TenantId, user: UserId) -> Result<bool>;

    async fn insert_invitation(&self, invitation: &NewInvitation) -> Result<()>;

    /// Spends the invitation (by token hash) for an existing user whose normalized email
    /// it names, making them a member with its role, in one transaction: `InvalidInvitation`
    /// if it is unknown, expired, spent, for another email or for a tenant that is deleted
    /// or suspended; `MemberExists` (the invitation left unspent) if they already belong.
    async fn accept_invitation(
        &self,
        token_hash: &str,
        user: UserId,
        email_norm: &str,
    ) -> Result<TenantId>;

    /// Registers a pending claim on a domain, with the token that will prove it;
    /// `DomainTaken` if this tenant claimed it already or another tenant verified it.
    async fn insert_domain(
        &self,
        tenant: TenantId,
        domain: &str,
        token: &str,
    ) -> Result<CustomDomain>;

    /// The tenant's claims, verified or pending, by domain.
    async fn domains(&self, tenant: TenantId) -> Result<Vec<CustomDomain>>;

    /// Marks the tenant's claim verified (if it was pending) and drops the other tenants'
    /// pending claims on the domain. `None` if the tenant has no claim on it;
    /// `DomainTaken` if another tenant verified it first.
    async fn verify_domain(&self, tenant: TenantId, domain: &str) -> Result<Option<CustomDomain>>;

    async fn remove_domain(&self, tenant: TenantId, domain: &str) -> Result<bool>;

    /// The live tenant that verified the domain. A tenant's transition to `deleted`
    /// releases its domains.
    async fn tenant_by_domain(&self, domain: &str) -> Result<Option<Tenant>>;

    async fn append_audit(
        &self,
        actor: &str,
        tenant: Option<TenantId>,
        action: &str,
        detail: Option<&str>,
    ) -> Result<()>;

    async fn audit(&self, tenant: TenantId) -> Result<Vec<AuditEntry>>;

    /// The tenant's settings, `None` if none were ever written.
    async fn tenant_settings(&self, tenant: TenantId) -> Result<Option<TenantSettings>>;

    /// Replaces the tenant's settings document (checked by the engine) and appends its
    /// audit entry — [`crate::settings::AUDIT_ACTION`] by `actor`, naming the properties,
    /// never their values — in one transaction: both are written or neither. Changes
    /// [`Change::Settings`].
    async fn put_tenant_settings(
        &self,
        tenant: TenantId,
        document: &serde_json::Map<String, serde_json::Value>,
        actor: &str,
    ) -> Result<TenantSettings>;

    async fn setting(&self, key: &str) -> Result<Option<String>>;

    /// Writes a flush of usage in one transaction: counts are added to the day's
    /// (`usage_daily`), users seen are inserted or ignored (`usage_active_users`, so that
    /// processes seeing one user do not count them twice), and a storage sample replaces
    /// the tenant's latest and its day's value unless a later one is already there.
    async fn add_usage(&self, batch: &crate::usage::UsageBatch) -> Result<()>;

    /// The tenant's usage from `from` to `to` (inclusive): every stored count, each day's
    /// active users, and the distinct users of the whole range.
    async fn usage(
        &self,
        tenant: TenantId,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<crate::usage::UsageRows>;

    /// The latest storage samples taken at or after `since` (`None`: all).
    async fn storage_samples(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<crate::usage::StorageSample>>;

    /// The tenant's latest storage sample.
    async fn storage_sample(&self, tenant: TenantId)
        -> Result<Option<crate::usage::StorageSample>>;

    /// Up to `limit` active tenants with no storage sample taken on `day` or later.
    async fn tenants_unsampled(&self, day: chrono::NaiveDate, limit: u32) -> Result<Vec<Tenant>>;

    /// Records a budget alert unless the tenant's month already has one at that threshold
    /// (a unique key, so two processes cannot both raise it): whether it was raised now.
    async fn raise_budget_alert(&self, alert: &crate::usage::BudgetAlert) -> Result<bool>;

    /// The tenant's budget alerts, newest month first (`month`: only that `YYYY-MM`).
    async fn budget_alerts(
        &self,
        tenant: TenantId,
        month: Option<&str>,
    ) -> Result<Vec<crate::usage::BudgetAlert>>;

    async fn set_setting(&self, key: &str, value: &str) -> Result<()>;

    /// SQLite's `synchronous` setting in effect on the catalog's connection (`FULL`,
    /// `NORMAL`, …): how durable its commits are. `None` for a catalog without one.
    async fn sqlite_synchronous(&self) -> Result<Option<String>> {
        Ok(None)
    }
}

/// Whether `t` may apply to a tenant that is now `current`: `InvalidTransition` if its
/// status is not one of `t.from`, `TenantBusy` if another process owns its operation.
/// `QuotaExceeded` when `current` already reaches `max` (one more would pass it).
fn refuse_past(limit: &str, current: i64, max: u64) -> Result<()> {
    let current = u64::try_from(current).unwrap_or(0);
    if current >= max {
        return Err(crate::Error::QuotaExceeded {
            limit: limit.to_owned(),
            current,
            max,
        });
    }
    Ok(())
}

fn check_transition(current: &Tenant, t: &Transition<'_>) -> Result<()> {
    if !t.from.contains(&current.status) {
        let from: Vec<&str> = t.from.iter().map(|s| s.as_str()).collect();
        return Err(crate::error::Error::InvalidTransition {
            slug: current.slug.to_string(),
            status: current.status.to_string(),
            action: event_action(t.event),
            expected: expected_statuses(&from),
        });
    }
    match (t.expect_owner, &current.op_owner) {
        (Some(expected), Some(actual)) if expected != actual => {
            Err(crate::error::Error::TenantBusy {
                slug: current.slug.to_string(),
                status: current.status.to_string(),
            })
        }
        _ => Ok(()),
    }
}

/// How a refused transition names what was attempted, from its journal event.
fn event_action(event: &str) -> &'static str {
    match event.split('.').next() {
        Some("provision") => "provisioning",
        Some("retry") => "retry",
        Some("delete") => "delete",
        Some("recover") => "recovery",
        _ => "this change",
    }
}

/// How a refused transition names the statuses it needed.
fn expected_statuses(from: &[&str]) -> &'static str {
    match from {
        ["failed"] => "failed",
        ["provisioning"] => "provisioning",
        ["deleting"] => "deleting",
        _ if from.contains(&"active") && from.contains(&"failed") => "active, suspended or failed",
        _ => "in another status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_carried_as_kinds_and_keys() {
        let (tenant, user) = (TenantId::generate(), UserId::generate());
        let rows = vec![
            Change::ApiKey("0123456789abcdef".into()),
            Change::Tenant(tenant),
            Change::Slug(Slug::parse("acme").unwrap()),
            Change::Member(tenant, user),
            Change::User(user),
            Change::Domain("raid.acme.gg".into()),
            Change::Settings(tenant),
        ];
        let mut read = Changes::none();
        for (kind, key) in Changes::of_write(&rows).encode() {
            read.add_encoded(kind, &key);
        }
        assert_eq!(read, Changes::Keys(rows.clone()));

        for (kind, key) in [("member", "not-a-pair"), ("quota", "acme"), (ALL_KIND, "")] {
            let mut read = Changes::none();
            read.add_encoded(kind, key);
            assert_eq!(read, Changes::All, "{kind} {key}");
        }
        let many = vec![Change::Tenant(tenant); CHANGES_MAX + 1];
        assert_eq!(Changes::of_write(&many), Changes::All);
        let mut since = Changes::of_write(&rows);
        since.extend(&Changes::of_write(&many[1..]));
        assert_eq!(since, Changes::All, "too many to name");
    }
}
