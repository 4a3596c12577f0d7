//! The catalog on PostgreSQL, shared by any number of `tenancy serve` processes on any
//! number of machines. Same behaviour as [`super::SqliteCatalog`], method for method.
//!
//! Concurrency: a slug is unique among live tenants by a partial unique index; a
//! transition locks the tenant's row and applies as a compare-and-set on its status, with
//! its journal row in the same transaction; every other read-then-write locks what it read.
//!
//! Liveness: each [`PgCatalog`] value keeps one dedicated session that holds a
//! session-level advisory lock derived from its owner id. The server drops the lock when
//! the session ends, however the process ends (killed; or its machine gone, once TCP
//! keepalives give up), so "is this owner alive?" is a non-blocking attempt on that lock.
//!
//! Generation: every transaction that wrote something sends a notification on
//! `tenancy_catalog` as it commits, naming the rows readers cache that it changed; the same
//! dedicated session listens, counts other processes' notifications and keeps what they
//! name for [`Catalog::changes_since`] (notifications arrive in commit order). While that
//! session is down, [`Catalog::generation`] returns a new number on every call and
//! `changes_since` answers [`Changes::All`], so that nothing cached is trusted until it is
//! back; what changed meanwhile is unknown, so its return is [`Changes::All`] too. A
//! change made by anyone else (an operator's SQL on a cached table) is notified by the
//! catalog's own triggers, which skip the engine's sessions (`tenancy.catalog_writer`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use deadpool_postgres::{
    GenericClient, Hook, HookError, ManagerConfig, Object, Pool, PoolError, RecyclingMethod,
    Runtime, Transaction,
};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{AsyncMessage, Row};
use uuid::Uuid;

use super::{
    Catalog, Change, Changes, ChangesSince, JournalEntry, NewTenant, PlanState, QuotaCounts,
    RegisteredMigration, StatusCount, TenantFilter, TenantMigrationResult, Transition,
};
use super::{NewApiKey, NewInvitation, NewRefreshToken, NewUser};
use crate::domain::CustomDomain;
use crate::error::{Error, Result};
use crate::identity::{ApiKey, AuditEntry, Member, Membership, RefreshUse, Role, User, UserId};
use crate::migrations::{Dialect, Script};
use crate::pgconnect::{self, PgConfig};
use crate::plans::{Metric, Money};
use crate::settings::TenantSettings;
use crate::slug::Slug;
use crate::tenant::{Placement, Tenant, TenantId, TenantStatus};
use crate::usage::{BudgetAlert, StorageSample, UsageBatch, UsageCount, UsageRows};

/// The catalog's own schema, one entry per version. Append only. Text that is sorted is
/// `COLLATE "C"`: byte order, as in SQLite, whatever the database's locale.
const CATALOG_MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    slug        text COLLATE "C" NOT NULL,
    name        text NOT NULL,
    status      text COLLATE "C" NOT NULL,
    error       text,
    op_owner    text,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    deleted_at  timestamptz
);
-- A slug is unique among tenants that are not deleted: deleting frees it.
CREATE UNIQUE INDEX tenants_live_slug_key ON tenants (slug) WHERE status <> 'deleted';
CREATE INDEX tenants_status_idx ON tenants (status);

CREATE TABLE placements (
    tenant_id      uuid PRIMARY KEY REFERENCES tenants (id),
    store          text NOT NULL,
    mode           text NOT NULL,
    location       text NOT NULL,
    schema_version bigint NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL
);
CREATE INDEX placements_schema_version_idx ON placements (schema_version);

CREATE TABLE journal (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid NOT NULL,
    event       text NOT NULL,
    from_status text,
    to_status   text NOT NULL,
    owner       text,
    detail      text,
    at          timestamptz NOT NULL
);
CREATE INDEX journal_tenant_idx ON journal (tenant_id, seq);

CREATE TABLE migration_runs (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner          text NOT NULL,
    target_version bigint NOT NULL,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    ok             bigint,
    failed         bigint
);

CREATE TABLE tenant_migrations (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id       bigint NOT NULL REFERENCES migration_runs (id),
    tenant_id    uuid NOT NULL,
    slug         text COLLATE "C" NOT NULL,
    from_version bigint NOT NULL,
    to_version   bigint NOT NULL,
    ok           boolean NOT NULL,
    error        text,
    finished_at  timestamptz NOT NULL
);
CREATE INDEX tenant_migrations_tenant_idx ON tenant_migrations (tenant_id, id);

CREATE TABLE tenant_schema (
    dialect          text NOT NULL,
    version          bigint NOT NULL,
    file             text NOT NULL,
    checksum         text NOT NULL,
    first_applied_at timestamptz NOT NULL,
    PRIMARY KEY (dialect, version)
);

CREATE TABLE locks (
    name        text PRIMARY KEY,
    owner       text NOT NULL,
    acquired_at timestamptz NOT NULL
);

CREATE TABLE settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);
"#,
    r#"
CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL,
    email_norm    text COLLATE "C" NOT NULL,
    password_hash text NOT NULL,
    is_superadmin boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    CONSTRAINT users_email_norm_key UNIQUE (email_norm)
);

CREATE TABLE memberships (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    user_id    uuid NOT NULL REFERENCES users (id),
    role       text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX memberships_user_idx ON memberships (user_id);

-- Refresh tokens by hash. A family is one login's chain of rotations: presenting a token
-- that was already used revokes the whole family.
CREATE TABLE refresh_tokens (
    token_hash text PRIMARY KEY,
    family     text NOT NULL,
    user_id    uuid NOT NULL REFERENCES users (id),
    tenant_id  uuid,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family);

CREATE TABLE signing_keys (
    kid        text COLLATE "C" PRIMARY KEY,
    secret     text NOT NULL,
    created_at timestamptz NOT NULL,
    retired_at timestamptz
);
"#,
    r#"
-- API keys: `tny_<id>_<secret>`; only the secret's SHA-256 is kept. tenant_id NULL: a
-- platform key (superadmin automation).
CREATE TABLE api_keys (
    id           text COLLATE "C" PRIMARY KEY,
    tenant_id    uuid REFERENCES tenants (id),
    role         text NOT NULL,
    label        text,
    secret_hash  text NOT NULL,
    created_by   text,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);

CREATE TABLE invitations (
    token_hash  text PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    email_norm  text NOT NULL,
    role        text NOT NULL,
    created_by  text,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    accepted_at timestamptz
);

CREATE TABLE domains (
    domain     text COLLATE "C" PRIMARY KEY,
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    created_at timestamptz NOT NULL
);
CREATE INDEX domains_tenant_idx ON domains (tenant_id);

-- Append-only: nothing updates or deletes these rows.
CREATE TABLE audit (
    seq       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL,
    actor     text NOT NULL,
    tenant_id uuid,
    action    text NOT NULL,
    detail    text
);
CREATE INDEX audit_tenant_idx ON audit (tenant_id, seq);
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit is append-only';
END
$$;
CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
"#,
    r#"
-- Custom domains are claims: pending until the domain serves the claim's token
-- (`verified_at`), and routed only then. Several tenants may claim a domain; one verifies
-- it. Domains registered before claims existed were never verified: they are pending now,
-- with a token of their own; those of deleted tenants are released.
ALTER TABLE domains ADD COLUMN token text, ADD COLUMN verified_at timestamptz;
DELETE FROM domains d USING tenants t WHERE t.id = d.tenant_id AND t.status = 'deleted';
UPDATE domains SET token = md5(random()::text || clock_timestamp()::text || domain);
ALTER TABLE domains ALTER COLUMN token SET NOT NULL;
ALTER TABLE domains DROP CONSTRAINT domains_pkey;
ALTER TABLE domains ADD PRIMARY KEY (domain, tenant_id);
CREATE UNIQUE INDEX domains_verified_key ON domains (domain) WHERE verified_at IS NOT NULL;
-- Readers of an older version drop every domain they cached.
SELECT pg_notify('tenancy_catalog', E'catalog-migration\n* \n');
"#,
    r#"
-- A change to a row readers cache made by anyone but the engine (an operator's UPDATE or
-- DELETE in psql) notifies readers as the engine's commits do, naming the rows: a key
-- revoked by hand is refused on the next request. The engine's own sessions set
-- tenancy.catalog_writer and name their changes in their commit's notification.
CREATE FUNCTION tenancy_cached_rows(tbl text, r jsonb) RETURNS SETOF text
LANGUAGE sql IMMUTABLE AS $$
    SELECT 'api_key ' || (r->>'id') WHERE tbl = 'api_keys'
    UNION ALL SELECT 'tenant ' || (r->>'id') WHERE tbl = 'tenants'
    UNION ALL SELECT 'slug ' || (r->>'slug') WHERE tbl = 'tenants'
    UNION ALL SELECT 'tenant ' || (r->>'tenant_id') WHERE tbl = 'placements'
    UNION ALL SELECT 'member ' || (r->>'tenant_id') || ':' || (r->>'user_id')
        WHERE tbl = 'memberships'
    UNION ALL SELECT 'user ' || (r->>'id') WHERE tbl = 'users'
    UNION ALL SELECT 'domain ' || (r->>'domain') WHERE tbl = 'domains'
$$;

CREATE FUNCTION tenancy_notify_direct_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed text;
BEGIN
    IF current_setting('tenancy.catalog_writer', true) = 'engine' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        SELECT string_agg(DISTINCT k, E'\n') INTO changed
        FROM new_rows n, tenancy_cached_rows(TG_TABLE_NAME, to_jsonb(n)) k;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT string_agg(DISTINCT k, E'\n') INTO changed FROM (
            SELECT k FROM new_rows n, tenancy_cached_rows(TG_TABLE_NAME, to_jsonb(n)) k
            UNION ALL
            SELECT k FROM old_rows o, tenancy_cached_rows(TG_TABLE_NAME, to_jsonb(o)) k
        ) rows;
    ELSE
        SELECT string_agg(DISTINCT k, E'\n') INTO changed
        FROM old_rows o, tenancy_cached_rows(TG_TABLE_NAME, to_jsonb(o)) k;
    END IF;
    IF changed IS NULL THEN
        RETURN NULL;
    END IF;
    -- A notification holds at most 8000 bytes: more rows than fit are "everything".
    IF octet_length(changed) > 7900 THEN
        changed := '* ';
    END IF;
    PERFORM pg_notify('tenancy_catalog', E'direct-sql\n' || changed || E'\n');
    RETURN NULL;
END
$$;

CREATE FUNCTION tenancy_notify_direct_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('tenancy.catalog_writer', true) IS DISTINCT FROM 'engine' THEN
        PERFORM pg_notify('tenancy_catalog', E'direct-sql\n* \n');
    END IF;
    RETURN NULL;
END
$$;

DO $$
DECLARE
    tbl text;
BEGIN
    FOREACH tbl IN ARRAY ARRAY['api_keys', 'tenants', 'placements', 'memberships', 'users', 'domains']
    LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %I REFERENCING NEW TABLE AS new_rows '
            'FOR EACH STATEMENT EXECUTE FUNCTION tenancy_notify_direct_change()',
            tbl || '_direct_insert', tbl);
        EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %I '
            'REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows '
            'FOR EACH STATEMENT EXECUTE FUNCTION tenancy_notify_direct_change()',
            tbl || '_direct_update', tbl);
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS old_rows '
            'FOR EACH STATEMENT EXECUTE FUNCTION tenancy_notify_direct_change()',
            tbl || '_direct_delete', tbl);
        EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %I '
            'FOR EACH STATEMENT EXECUTE FUNCTION tenancy_notify_direct_truncate()',
            tbl || '_direct_truncate', tbl);
    END LOOP;
END
$$;
"#,
    r#"
-- Plans: a tenant's plan (NULL: the default), its overrides of the plan and the dates that
-- suspend it when reached.
ALTER TABLE tenants ADD COLUMN plan text;
ALTER TABLE tenants ADD COLUMN plan_overrides jsonb;
ALTER TABLE tenants ADD COLUMN trial_ends_at timestamptz;
ALTER TABLE tenants ADD COLUMN subscription_ends_at timestamptz;
CREATE INDEX tenants_trial_idx ON tenants (trial_ends_at) WHERE trial_ends_at IS NOT NULL;
CREATE INDEX tenants_subscription_idx ON tenants (subscription_ends_at)
    WHERE subscription_ends_at IS NOT NULL;
"#,
    r#"
-- Each tenant's settings: one JSON object (`json` keeps it as written), checked against
-- the settings schema by the engine before it is written. Readers cache it: the engine's
-- commits name the tenant, and a change made by anyone else notifies by these triggers.
CREATE TABLE tenant_settings (
    tenant_id  uuid PRIMARY KEY REFERENCES tenants (id),
    document   json NOT NULL CHECK (json_typeof(document) = 'object'),
    updated_at timestamptz NOT NULL,
    updated_by text NOT NULL
);

CREATE FUNCTION tenancy_notify_direct_settings() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed text;
BEGIN
    IF current_setting('tenancy.catalog_writer', true) = 'engine' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        SELECT string_agg(DISTINCT 'settings ' || tenant_id, E'\n') INTO changed FROM new_rows;
    ELSIF TG_OP = 'UPDATE' THEN
        SELECT string_agg(DISTINCT k, E'\n') INTO changed FROM (
            SELECT 'settings ' || tenant_id AS k FROM new_rows
            UNION ALL
            SELECT 'settings ' || tenant_id FROM old_rows
        ) rows;
    ELSE
        SELECT string_agg(DISTINCT 'settings ' || tenant_id, E'\n') INTO changed FROM old_rows;
    END IF;
    IF changed IS NULL THEN
        RETURN NULL;
    END IF;
    IF octet_length(changed) > 7900 THEN
        changed := '* ';
    END IF;
    PERFORM pg_notify('tenancy_catalog', E'direct-sql\n' || changed || E'\n');
    RETURN NULL;
END
$$;
CREATE TRIGGER tenant_settings_direct_insert AFTER INSERT ON tenant_settings
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy_notify_direct_settings();
CREATE TRIGGER tenant_settings_direct_update AFTER UPDATE ON tenant_settings
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy_notify_direct_settings();
CREATE TRIGGER tenant_settings_direct_delete AFTER DELETE ON tenant_settings
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy_notify_direct_settings();
CREATE TRIGGER tenant_settings_direct_truncate AFTER TRUNCATE ON tenant_settings
    FOR EACH STATEMENT EXECUTE FUNCTION tenancy_notify_direct_truncate();
"#,
    r#"
-- Usage metering: counts per tenant, UTC day, metric and label (requests per API key label;
-- '' otherwise), added to by each flush; the users seen per day (inserted or ignored, so
-- that replicas do not count one user twice); each tenant's latest storage sample; and the
-- budget alerts raised, one per tenant, month and threshold.
CREATE TABLE usage_daily (
    tenant_id uuid NOT NULL,
    day       date NOT NULL,
    metric    text NOT NULL,
    label     text NOT NULL DEFAULT '',
    value     bigint NOT NULL,
    PRIMARY KEY (tenant_id, day, metric, label)
);
CREATE TABLE usage_active_users (
    tenant_id uuid NOT NULL,
    day       date NOT NULL,
    user_id   uuid NOT NULL,
    PRIMARY KEY (tenant_id, day, user_id)
);
CREATE TABLE storage_samples (
    tenant_id  uuid PRIMARY KEY,
    bytes      bigint NOT NULL,
    sampled_at timestamptz NOT NULL
);
CREATE INDEX storage_samples_at_idx ON storage_samples (sampled_at);
CREATE TABLE budget_alerts (
    tenant_id     uuid NOT NULL,
    month         text NOT NULL,
    threshold     integer NOT NULL,
    cost_micros   bigint NOT NULL,
    budget_micros bigint NOT NULL,
    raised_at     timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, month, threshold)
);
"#,
];

/// Connections of the pool (the dedicated session is one more).
const POOL_SIZE: usize = 16;
/// How long opening one connection may take, handshake included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a query waits for a pooled connection.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnection delays of the dedicated session.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a reconnected session retries its liveness lock while the old session (not
/// yet reaped by the server) still holds it.
const RELOCK_EVERY: Duration = Duration::from_secs(1);

/// Every session's settings: lock waits give up after a while, like SQLite's busy
/// timeout; a session left idle inside a transaction (its client gone mid-way) is ended, so
/// its row locks do not outlive it; server-side keepalives notice a vanished client
/// within ~25 s, which also frees the liveness lock of a machine that disappeared; and the
/// catalog's triggers know the engine's writes, which notify by themselves (a write by
/// anyone else is notified by the triggers).
const SESSION_SETTINGS: &str = "SET lock_timeout = '10s'; \
     SET idle_in_transaction_session_timeout = '60s'; \
     SET tenancy.catalog_writer = 'engine'; \
     SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3";

/// The dedicated session listens for other processes' changes.
const LISTEN: &str = "LISTEN tenancy_catalog";

/// Sent before every commit. A transaction gets an id only once it writes, so a
/// transaction that changed nothing notifies nobody. The payload ([`notification`]) names
/// the sender, which has counted its own change already, and the cached rows changed.
const NOTIFY_IF_WROTE: &str = "SELECT pg_notify('tenancy_catalog', $1) \
     WHERE pg_current_xact_id_if_assigned() IS NOT NULL";

/// A notification payload's limit is 8000 bytes; a longer list of changes is sent as
/// "everything".
const NOTIFICATION_MAX: usize = 7_900;

/// Writes whose changes [`Catalog::changes_since`] keeps; a reader further behind is told
/// [`Changes::All`].
const FEED_KEEP: usize = 1_024;

/// Catalog migrations of several processes starting at once run one after the other.
const MIGRATION_LOCK: &str = "tenancy:catalog-migrations";

/// The catalog in a PostgreSQL database.
///
/// ```no_run
/// # async fn demo() -> tenancy::Result<()> {
/// use tenancy::catalog::{postgres::PgCatalog, Catalog};
///
/// let catalog = PgCatalog::connect("postgres://tenancy@db.internal/tenancy").await?;
/// // Each catalog value is one owner, alive (to every process) for as long as it lives.
/// assert!(catalog.is_alive(catalog.owner()).await?);
/// // Read caches are checked against this on every request.
/// let generation = catalog.generation()?;
/// # Ok(()) }
/// ```
pub struct PgCatalog {
    pool: Pool,
    owner: String,
    /// Connections taken from the pool (`query_count`).
    queries: AtomicU64,
    shared: Arc<Shared>,
    /// Keeps the dedicated session (liveness lock and listener); aborted on drop, which
    /// ends the session and frees the lock.
    session: JoinHandle<()>,
}

/// State shared with the dedicated session's task.
struct Shared {
    /// Bumped by this value's commits and by other processes' notifications.
    generation: AtomicU64,
    /// The dedicated session is up and listening.
    listening: AtomicBool,
    /// What the latest writes (this value's, and other processes' as notified) changed.
    feed: Mutex<Feed>,
}

/// The changes of the latest writes, in commit order, each at its position.
#[derive(Default)]
struct Feed {
    /// The position of `writes[0]`.
    first: u64,
    writes: VecDeque<Changes>,
}

impl Shared {
    /// Keeps what a write changed; before the generation moves, so that a reader who sees
    /// it move finds the change.
    fn heard(&self, changes: Changes) {
        let mut feed = self.feed.lock().unwrap_or_else(PoisonError::into_inner);
        feed.writes.push_back(changes);
        if feed.writes.len() > FEED_KEEP {
            feed.writes.pop_front();
            feed.first += 1;
        }
    }
}

impl Feed {
    fn head(&self) -> u64 {
        self.first + self.writes.len() as u64
    }

    fn since(&self, position: u64) -> Changes {
        if position < self.first || position > self.head() {
            return Changes::All;
        }
        let mut changes = Changes::none();
        for write in self.writes.iter().skip((position - self.first) as usize) {
            changes.extend(write);
        }
        changes
    }
}

/// The notification of a commit: the sender's owner id, then a `kind key` line per cached
/// row changed.
fn notification(owner: &str, changed: &[Change]) -> String {
    let mut lines = Changes::of_write(changed).encode();
    let size: usize = lines
        .iter()
        .map(|(kind, key)| kind.len() + key.len() + 2)
        .sum();
    // Keys are ids, slugs and domain names: never a line break.
    if owner.len() + size >= NOTIFICATION_MAX || lines.iter().any(|(_, key)| key.contains('\n')) {
        lines = Changes::All.encode();
    }
    let mut payload = format!("{owner}\n");
    for (kind, key) in lines {
        payload.push_str(&format!("{kind} {key}\n"));
    }
    payload
}

/// What inserting a tenant changes among cached rows.
fn new_tenant_changes(new: &NewTenant) -> Vec<Change> {
    let mut rows = vec![Change::Tenant(new.id), Change::Slug(new.slug.clone())];
    rows.extend(new.owner.map(|user| Change::Member(new.id, user)));
    rows
}

/// What another process's notification says changed; `None` for our own notifications,
/// whose changes were kept at commit.
fn heard_from(payload: &str, owner: &str) -> Option<Changes> {
    let Some((sender, lines)) = payload.split_once('\n') else {
        // A sender alone: a version that did not name its changes.
        return (payload != owner).then_some(Changes::All);
    };
    if sender == owner {
        return None;
    }
    let mut changes = Changes::none();
    for line in lines.lines() {
        let (kind, key) = line.split_once(' ').unwrap_or((line, ""));
        changes.add_encoded(kind, key);
    }
    Some(changes)
}

impl std::fmt::Debug for PgCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCatalog")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl Drop for PgCatalog {
    fn drop(&mut self) {
        self.session.abort();
    }
}

impl PgCatalog {
    /// Inserts a tenant; with `max_owned`, only while its owner owns fewer tenants that
    /// are not deleted (the owner's row is locked first, so concurrent creations by one user
    /// take turns and each counts the others' committed tenants).
    async fn insert_tenant_bounded(
        &self,
        new: &NewTenant,
        max_owned: Option<u32>,
    ) -> Result<Tenant> {
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        if let (Some(max), Some(user)) = (max_owned, new.owner) {
            query(
                &tx,
                "SELECT 1 FROM users WHERE id = $1 FOR UPDATE",
                &[&user.0],
            )
            .await?;
            let row = query_one(
                &tx,
                "SELECT count(*) FROM memberships m JOIN tenants t ON t.id = m.tenant_id \
                 WHERE m.user_id = $1 AND m.role = 'owner' AND t.status <> 'deleted'",
                &[&user.0],
            )
            .await?;
            let owned: i64 = get(&row, 0)?;
            if owned >= i64::from(max) {
                return Err(Error::TenantLimitReached { max });
            }
        }
        let slug = new.slug.as_str();
        let statement = tx
            .prepare_cached(
                "INSERT INTO tenants (id, slug, name, status, op_owner, created_at, updated_at, plan) \
                 VALUES ($1, $2, $3, 'provisioning', $4, now(), now(), $5)",
            )
            .await
            .map_err(db_error)?;
        match tx
            .execute(
                &statement,
                &[&new.id.0, &slug, &new.name, &self.owner, &new.plan],
            )
            .await
        {
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                return Err(Error::TenantExists {
                    slug: slug.to_owned(),
                })
            }
            other => other.map_err(db_error)?,
        };
        execute(
            &tx,
            "INSERT INTO placements (tenant_id, store, mode, location, schema_version, updated_at) \
             VALUES ($1, $2, $3, $4, $5, now())",
            &[
                &new.id.0,
                &new.placement.store,
                &new.placement.mode.as_str(),
                &new.placement.location,
                &new.placement.schema_version,
            ],
        )
        .await?;
        if let Some(user) = new.owner {
            execute(
                &tx,
                "INSERT INTO memberships (tenant_id, user_id, role, created_at) \
                 VALUES ($1, $2, 'owner', now())",
                &[&new.id.0, &user.0],
            )
            .await?;
        }
        execute(
            &tx,
            "INSERT INTO journal (tenant_id, event, from_status, to_status, owner, at) \
             VALUES ($1, 'provision.begin', NULL, 'provisioning', $2, now())",
            &[&new.id.0, &self.owner],
        )
        .await?;
        let tenant = select_tenant(&tx, "t.id = $1", &new.id.0)
            .await?
            .ok_or_else(|| Error::Internal("inserted tenant vanished".into()))?;
        self.commit(tx, &new_tenant_changes(new)).await?;
        Ok(tenant)
    }

    /// Connects to the catalog database at `url` and brings its schema up to date. Fails
    /// within a few seconds when the server is unreachable.
    pub async fn connect(url: &str) -> Result<PgCatalog> {
        let mut config =
            PgConfig::parse(url).map_err(|e| Error::Catalog(format!("the catalog URL: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.keepalives_idle(Duration::from_secs(10));
        config.keepalives_interval(Duration::from_secs(5));
        config.keepalives_retries(3);
        let mut session_config = config.clone();
        if config.get_application_name().is_none() {
            config.application_name("tenancy catalog");
            session_config.application_name("tenancy catalog session");
        }

        let manager = config.pool_manager(ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        });
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(CHECKOUT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .post_create(Hook::async_fn(|client, _| {
                Box::pin(async move {
                    client
                        .batch_execute(SESSION_SETTINGS)
                        .await
                        .map_err(HookError::Backend)
                })
            }))
            .build()
            .map_err(|e| Error::Internal(format!("cannot build the catalog pool: {e}")))?;

        let mut client = pool.get().await.map_err(pool_error)?;
        migrate_catalog(&mut client)
            .await
            .map_err(|e| Error::Catalog(format!("cannot bring the catalog up to date: {e}")))?;
        drop(client);

        let owner = format!("{}-{}", std::process::id(), Uuid::now_v7().simple());
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(1),
            listening: AtomicBool::new(false),
            feed: Mutex::new(Feed::default()),
        });
        let (ready, started) = oneshot::channel();
        let session = tokio::spawn(keep_session(
            session_config,
            owner.clone(),
            Arc::clone(&shared),
            ready,
        ));
        // From here on, dropping `catalog` (on an early return) stops the session.
        let catalog = PgCatalog {
            pool,
            owner,
            queries: AtomicU64::new(0),
            shared,
            session,
        };
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, started).await {
            Ok(Ok(Ok(()))) => Ok(catalog),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(Error::Internal("the catalog session stopped".into())),
            Err(_) => Err(unavailable("its listener session did not start in time")),
        }
    }

    async fn conn(&self) -> Result<Object> {
        self.queries.fetch_add(1, Ordering::Relaxed);
        self.pool.get().await.map_err(pool_error)
    }

    /// Commits, notifying the other processes if the transaction wrote anything, with the
    /// cached rows it changed.
    async fn commit(&self, tx: Transaction<'_>, changed: &[Change]) -> Result<()> {
        let payload = notification(&self.owner, changed);
        let wrote = execute(&tx, NOTIFY_IF_WROTE, &[&payload]).await? == 1;
        let committed = tx.commit().await.map_err(db_error);
        // Even if the outcome of the commit is unknown: a needless change costs one reload.
        if wrote {
            if !changed.is_empty() {
                self.shared.heard(Changes::of_write(changed));
            }
            self.shared.generation.fetch_add(1, Ordering::AcqRel);
        }
        committed
    }

    /// The tenants with these ids, by id.
    async fn tenants_by_id(
        &self,
        c: &impl GenericClient,
        ids: &HashSet<Uuid>,
    ) -> Result<HashMap<Uuid, Tenant>> {
        let ids: Vec<Uuid> = ids.iter().copied().collect();
        query(c, &format!("{TENANT_SELECT} WHERE t.id = ANY($1)"), &[&ids])
            .await?
            .iter()
            .map(|r| tenant_from_row(r).map(|t| (t.id.0, t)))
            .collect()
    }

    /// One statement in its own transaction; the number of rows it changed. If it changed
    /// any, it changed the cached rows `changed`.
    async fn write(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        changed: &[Change],
    ) -> Result<u64> {
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        let n = execute(&tx, sql, params).await?;
        self.commit(tx, if n > 0 { changed } else { &[] }).await?;
        Ok(n)
    }

    /// Like [`PgCatalog::write`], with a unique violation reported as `taken`.
    async fn write_unique(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        taken: fn() -> Error,
        changed: &[Change],
    ) -> Result<u64> {
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        let n = execute_unique(&tx, sql, params, taken).await?;
        self.commit(tx, if n > 0 { changed } else { &[] }).await?;
        Ok(n)
    }

    /// Changes (`Some`) or removes (`None`) a membership, keeping at least one owner.
    async fn change_member(
        &self,
        tenant: TenantId,
        user: UserId,
        role: Option<Role>,
    ) -> Result<bool> {
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        // Member changes of one tenant queue on its row, so that two processes cannot each
        // demote "the other" of its last two owners.
        query(
            &tx,
            "SELECT 1 FROM tenants WHERE id = $1 FOR NO KEY UPDATE",
            &[&tenant.0],
        )
        .await?;
        let current = query_opt(
            &tx,
            "SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2",
            &[&tenant.0, &user.0],
        )
        .await?;
        let Some(current) = current else {
            return Ok(false);
        };
        let current: String = get(&current, 0)?;
        if current == "owner" && role != Some(Role::Owner) {
            let owners = query_one(
                &tx,
                "SELECT COUNT(*) FROM memberships WHERE tenant_id = $1 AND role = 'owner'",
                &[&tenant.0],
            )
            .await?;
            if get::<i64>(&owners, 0)? <= 1 {
                return Err(Error::LastOwner);
            }
        }
        match role {
            Some(role) => {
                execute(
                    &tx,
                    "UPDATE memberships SET role = $3 WHERE tenant_id = $1 AND user_id = $2",
                    &[&tenant.0, &user.0, &role.as_str()],
                )
                .await?
            }
            None => {
                execute(
                    &tx,
                    "DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2",
                    &[&tenant.0, &user.0],
                )
                .await?
            }
        };
        self.commit(tx, &[Change::Member(tenant, user)]).await?;
        Ok(true)
    }
}

async fn migrate_catalog(client: &mut Object) -> Result<()> {
    let tx = begin(client).await?;
    execute(
        &tx,
        "SELECT pg_advisory_xact_lock($1)",
        &[&advisory_key(MIGRATION_LOCK)],
    )
    .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS catalog_migrations \
         (version bigint PRIMARY KEY, applied_at timestamptz NOT NULL)",
    )
    .await
    .map_err(db_error)?;
    let current: i64 = get(
        &query_one(
            &tx,
            "SELECT COALESCE(MAX(version), 0)::bigint FROM catalog_migrations",
            &[],
        )
        .await?,
        0,
    )?;
    for (i, sql) in CATALOG_MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version > current {
            tx.batch_execute(sql).await.map_err(db_error)?;
            execute(
                &tx,
                "INSERT INTO catalog_migrations (version, applied_at) VALUES ($1, now())",
                &[&version],
            )
            .await?;
        }
    }
    tx.commit().await.map_err(db_error)
}

/// Keeps the dedicated session up for as long as the catalog value lives: reports the
/// first session's start (or failure) on `ready`, then reconnects with backoff.
async fn keep_session(
    config: PgConfig,
    owner: String,
    shared: Arc<Shared>,
    ready: oneshot::Sender<Result<()>>,
) {
    let key = liveness_key(&owner);
    let mut ready = Some(ready);
    let mut backoff = MIN_BACKOFF;
    loop {
        let ended = run_session(&config, key, &owner, &shared, &mut ready).await;
        let was_up = shared.listening.swap(false, Ordering::AcqRel);
        if let Some(ready) = ready.take() {
            let _ = ready.send(Err(ended));
            return;
        }
        tracing::warn!(error = %ended, "the catalog session was lost; reconnecting");
        if was_up {
            backoff = MIN_BACKOFF;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Runs one dedicated session until it fails, and says why.
async fn run_session(
    config: &PgConfig,
    key: i64,
    owner: &str,
    shared: &Shared,
    ready: &mut Option<oneshot::Sender<Result<()>>>,
) -> Error {
    let (client, mut connection) =
        match tokio::time::timeout(CONNECT_TIMEOUT, pgconnect::connect(config)).await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => return db_error(e),
            Err(_) => return unavailable("connecting timed out"),
        };
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    // Drives the connection; ends when it does.
    let listen = async {
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if let Some(changes) = heard_from(n.payload(), owner) {
                        shared.heard(changes);
                        shared.generation.fetch_add(1, Ordering::AcqRel);
                    }
                }
                Ok(_) => {}
                Err(e) => return db_error(e),
            }
        }
        unavailable("the server closed the session")
    };
    let hold = async {
        for setup in [SESSION_SETTINGS, LISTEN] {
            if let Err(e) = client.batch_execute(setup).await {
                return db_error(e);
            }
        }
        let mut locked = match try_liveness_lock(&client, key).await {
            Ok(locked) => locked,
            Err(e) => return e,
        };
        if !locked && ready.is_some() {
            return Error::Internal(format!(
                "the liveness lock of the new owner {owner} is taken"
            ));
        }
        // Changes made while nobody listened are unknown: every cached read is stale.
        shared.heard(Changes::All);
        shared.generation.fetch_add(1, Ordering::AcqRel);
        shared.listening.store(true, Ordering::Release);
        if let Some(ready) = ready.take() {
            let _ = ready.send(Ok(()));
        }
        // After a reconnection, our previous session may hold the lock until the server
        // notices it is gone.
        while !locked {
            tokio::time::sleep(RELOCK_EVERY).await;
            locked = match try_liveness_lock(&client, key).await {
                Ok(locked) => locked,
                Err(e) => return e,
            };
        }
        std::future::pending::<Error>().await
    };
    tokio::select! {
        ended = listen => ended,
        ended = hold => ended,
    }
}

async fn try_liveness_lock(client: &tokio_postgres::Client, key: i64) -> Result<bool> {
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await
        .map_err(db_error)?;
    get(&row, 0)
}

/// A 64-bit advisory lock key for a name (stable across processes and versions).
fn advisory_key(name: &str) -> i64 {
    let digest = Sha256::digest(name.as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

fn liveness_key(owner: &str) -> i64 {
    advisory_key(&format!("tenancy:owner:{owner}"))
}

fn unavailable(reason: impl std::fmt::Display) -> Error {
    Error::CatalogUnavailable(reason.to_string())
}

/// A server's refusal is a catalog error; anything else (refused, reset, closed, timed
/// out, shutting down) means the catalog is unavailable.
fn db_error(e: tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) if !is_unavailable(db.code()) => Error::Catalog(db.to_string()),
        _ => unavailable(pgconnect::reason(&e)),
    }
}

/// No connection from the pool: the catalog is unavailable, and why.
fn pool_error(e: PoolError) -> Error {
    match e {
        PoolError::Backend(e) => unavailable(pgconnect::reason(&e)),
        e => unavailable(e),
    }
}

fn is_unavailable(code: &SqlState) -> bool {
    code.code().starts_with("08")
        || [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
        ]
        .contains(code)
}

/// Finds and spends an invitation (by token hash) for `email_norm`, in one statement: of
/// two redemptions at once, the second finds it spent. Its tenant and role;
/// `InvalidInvitation` if it is unknown, expired, spent, for another email, or for a
/// tenant that is deleted or suspended.
async fn redeem_invitation(
    tx: &Transaction<'_>,
    token_hash: &str,
    email_norm: &str,
) -> Result<(TenantId, String)> {
    let redeemed = query_opt(
        tx,
        "UPDATE invitations i SET accepted_at = now() FROM tenants t \
         WHERE i.token_hash = $1 AND i.email_norm = $2 \
           AND i.accepted_at IS NULL AND i.expires_at > now() \
           AND t.id = i.tenant_id AND t.status NOT IN ('deleted', 'suspended') \
         RETURNING i.tenant_id, i.role",
        &[&token_hash, &email_norm],
    )
    .await?
    .ok_or(Error::InvalidInvitation)?;
    Ok((TenantId(get(&redeemed, 0)?), get(&redeemed, 1)?))
}

/// Locks a tenant's row for the rest of the transaction: counts that decide a limit are
/// taken in turn.
async fn lock_tenant(tx: &Transaction<'_>, tenant: TenantId) -> Result<()> {
    query(
        tx,
        "SELECT 1 FROM tenants WHERE id = $1 FOR UPDATE",
        &[&tenant.0],
    )
    .await?;
    Ok(())
}

async fn select_settings(
    c: &impl GenericClient,
    tenant: TenantId,
) -> Result<Option<TenantSettings>> {
    let Some(row) = query_opt(
        c,
        "SELECT document, updated_at, updated_by FROM tenant_settings WHERE tenant_id = $1",
        &[&tenant.0],
    )
    .await?
    else {
        return Ok(None);
    };
    let document = match get::<serde_json::Value>(&row, 0)? {
        serde_json::Value::Object(document) => document,
        _ => {
            return Err(Error::Catalog(format!(
                "tenant {tenant}'s settings are not a JSON object"
            )))
        }
    };
    Ok(Some(TenantSettings {
        document,
        updated_at: Some(get(&row, 1)?),
        updated_by: Some(get(&row, 2)?),
    }))
}

async fn begin(conn: &mut Object) -> Result<Transaction<'_>> {
    conn.transaction().await.map_err(db_error)
}

async fn query(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>> {
    let statement = c.prepare_cached(sql).await.map_err(db_error)?;
    c.query(&statement, params).await.map_err(db_error)
}

async fn query_opt(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Row>> {
    let statement = c.prepare_cached(sql).await.map_err(db_error)?;
    c.query_opt(&statement, params).await.map_err(db_error)
}

async fn query_one(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Row> {
    let statement = c.prepare_cached(sql).await.map_err(db_error)?;
    c.query_one(&statement, params).await.map_err(db_error)
}

async fn execute(c: &impl GenericClient, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
    let statement = c.prepare_cached(sql).await.map_err(db_error)?;
    c.execute(&statement, params).await.map_err(db_error)
}

/// Like [`execute`], with a unique violation (SQLSTATE 23505) reported as `taken`.
async fn execute_unique(
    c: &impl GenericClient,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
    taken: fn() -> Error,
) -> Result<u64> {
    let statement = c.prepare_cached(sql).await.map_err(db_error)?;
    match c.execute(&statement, params).await {
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Err(taken()),
        other => other.map_err(db_error),
    }
}

/// A column of a row, or a catalog error (never a panic) if it does not convert.
fn get<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T> {
    row.try_get(idx)
        .map_err(|e| Error::Catalog(format!("unexpected value in catalog column {idx}: {e}")))
}

fn sample_from_row(r: &Row) -> Result<StorageSample> {
    Ok(StorageSample {
        tenant: TenantId(get(r, 0)?),
        bytes: u64::try_from(get::<i64>(r, 1)?).unwrap_or(0),
        sampled_at: get(r, 2)?,
    })
}

const DOMAIN_COLUMNS: &str = "domain, tenant_id, token, created_at, verified_at";

fn domain_from_row(r: &Row) -> Result<CustomDomain> {
    Ok(CustomDomain {
        domain: get(r, 0)?,
        tenant_id: TenantId(get(r, 1)?),
        token: get(r, 2)?,
        created_at: get(r, 3)?,
        verified_at: get(r, 4)?,
    })
}

async fn select_domain(
    c: &impl GenericClient,
    tenant: TenantId,
    domain: &str,
) -> Result<Option<CustomDomain>> {
    query_opt(
        c,
        &format!("SELECT {DOMAIN_COLUMNS} FROM domains WHERE domain = $1 AND tenant_id = $2"),
        &[&domain, &tenant.0],
    )
    .await?
    .as_ref()
    .map(domain_from_row)
    .transpose()
}

const TENANT_SELECT: &str =
    "SELECT t.id, t.slug, t.name, t.status, t.error, t.op_owner, t.created_at, t.updated_at, \
     p.store, p.mode, p.location, p.schema_version, \
     t.plan, t.plan_overrides, t.trial_ends_at, t.subscription_ends_at \
     FROM tenants t JOIN placements p ON p.tenant_id = t.id";

fn tenant_from_row(r: &Row) -> Result<Tenant> {
    let slug: &str = get(r, 1)?;
    Ok(Tenant {
        id: TenantId(get(r, 0)?),
        slug: Slug::parse(slug)
            .map_err(|e| Error::Catalog(format!("bad slug in the catalog: {e}")))?,
        name: get(r, 2)?,
        status: get::<&str>(r, 3)?.parse()?,
        error: get(r, 4)?,
        op_owner: get(r, 5)?,
        created_at: get(r, 6)?,
        updated_at: get(r, 7)?,
        placement: Placement {
            store: get(r, 8)?,
            mode: get::<&str>(r, 9)?.parse()?,
            location: get(r, 10)?,
            schema_version: get(r, 11)?,
        },
        plan: get(r, 12)?,
        plan_overrides: match get::<Option<serde_json::Value>>(r, 13)? {
            Some(json) => serde_json::from_value(json)
                .map_err(|e| Error::Catalog(format!("bad plan overrides in the catalog: {e}")))?,
            None => Default::default(),
        },
        trial_ends_at: get(r, 14)?,
        subscription_ends_at: get(r, 15)?,
    })
}

/// The tenant matching `clause` (which binds `$1` to `param`).
async fn select_tenant(
    c: &impl GenericClient,
    clause: &str,
    param: &(dyn ToSql + Sync),
) -> Result<Option<Tenant>> {
    query_opt(c, &format!("{TENANT_SELECT} WHERE {clause}"), &[param])
        .await?
        .map(|r| tenant_from_row(&r))
        .transpose()
}

async fn select_user(
    c: &impl GenericClient,
    clause: &str,
    param: &(dyn ToSql + Sync),
) -> Result<Option<(User, String)>> {
    let sql = format!(
        "SELECT id, email, is_superadmin, created_at, password_hash FROM users WHERE {clause}"
    );
    query_opt(c, &sql, &[param])
        .await?
        .map(|r| {
            Ok((
                User {
                    id: UserId(get(&r, 0)?),
                    email: get(&r, 1)?,
                    is_superadmin: get(&r, 2)?,
                    created_at: get(&r, 3)?,
                },
                get(&r, 4)?,
            ))
        })
        .transpose()
}

const API_KEY_COLUMNS: &str =
    "id, tenant_id, role, label, created_at, expires_at, revoked_at, last_used_at, secret_hash";

fn api_key_from_row(r: &Row) -> Result<(ApiKey, String)> {
    Ok((
        ApiKey {
            id: get(r, 0)?,
            tenant_id: get::<Option<Uuid>>(r, 1)?.map(TenantId),
            role: get(r, 2)?,
            label: get(r, 3)?,
            created_at: get(r, 4)?,
            expires_at: get(r, 5)?,
            revoked_at: get(r, 6)?,
            last_used_at: get(r, 7)?,
        },
        get(r, 8)?,
    ))
}

fn migration_result_from_row(r: &Row) -> Result<TenantMigrationResult> {
    Ok(TenantMigrationResult {
        run_id: get(r, 0)?,
        tenant_id: TenantId(get(r, 1)?),
        slug: get(r, 2)?,
        from_version: get(r, 3)?,
        to_version: get(r, 4)?,
        ok: get(r, 5)?,
        error: get(r, 6)?,
    })
}

#[async_trait]
impl Catalog for PgCatalog {
    fn owner(&self) -> &str {
        &self.owner
    }

    fn generation(&self) -> Result<u64> {
        if self.shared.listening.load(Ordering::Acquire) {
            Ok(self.shared.generation.load(Ordering::Acquire))
        } else {
            // Deaf to other processes: a new number every time, so no cached read is trusted.
            Ok(self.shared.generation.fetch_add(1, Ordering::AcqRel) + 1)
        }
    }

    fn hears_changes(&self) -> bool {
        self.shared.listening.load(Ordering::Acquire)
    }

    fn query_count(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    async fn changes_since(&self, position: Option<u64>) -> Result<ChangesSince> {
        let feed = self
            .shared
            .feed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let changes = match position {
            None => Changes::none(),
            // Deaf to other processes: anything may have changed.
            Some(_) if !self.shared.listening.load(Ordering::Acquire) => Changes::All,
            Some(position) => feed.since(position),
        };
        Ok(ChangesSince {
            position: feed.head(),
            changes,
        })
    }

    async fn touch_api_keys(&self, touches: &[(String, DateTime<Utc>)]) -> Result<()> {
        if touches.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = touches.iter().map(|(id, _)| id.as_str()).collect();
        let times: Vec<DateTime<Utc>> = touches.iter().map(|(_, at)| *at).collect();
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        // Rows are locked in one order, so two processes flushing at once cannot deadlock.
        query(
            &tx,
            "SELECT 1 FROM api_keys WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            &[&ids],
        )
        .await?;
        let touched = execute(
            &tx,
            "UPDATE api_keys k SET last_used_at = v.at \
             FROM (SELECT id, MAX(at) AS at FROM unnest($1::text[], $2::timestamptz[]) AS u (id, at) \
                   GROUP BY id) v \
             WHERE k.id = v.id AND (k.last_used_at IS NULL OR k.last_used_at < v.at)",
            &[&ids, &times],
        )
        .await?;
        if touched == 0 {
            // Nothing newer: roll back (dropping `tx`), so nobody is told of a change.
            return Ok(());
        }
        self.commit(tx, &[]).await
    }

    async fn is_alive(&self, owner: &str) -> Result<bool> {
        if owner == self.owner {
            return Ok(true);
        }
        let conn = self.conn().await?;
        // A shared attempt, released in the same statement: checkers never block each other
        // or leave a lock behind, and only the owner's session holds the lock exclusively.
        let row = query_one(
            &conn,
            "SELECT CASE WHEN pg_try_advisory_lock_shared($1) \
             THEN NOT pg_advisory_unlock_shared($1) ELSE true END",
            &[&liveness_key(owner)],
        )
        .await?;
        get(&row, 0)
    }

    async fn insert_tenant(&self, new: &NewTenant) -> Result<Tenant> {
        self.insert_tenant_bounded(new, None).await
    }

    async fn insert_tenant_capped(&self, new: &NewTenant, max_owned: u32) -> Result<Tenant> {
        self.insert_tenant_bounded(new, Some(max_owned)).await
    }

    async fn insert_tenants(&self, new: &[NewTenant]) -> Result<Vec<Result<Tenant>>> {
        let ids: Vec<Uuid> = new.iter().map(|n| n.id.0).collect();
        let slugs: Vec<&str> = new.iter().map(|n| n.slug.as_str()).collect();
        let names: Vec<&str> = new.iter().map(|n| n.name.as_str()).collect();
        let stores: Vec<&str> = new.iter().map(|n| n.placement.store.as_str()).collect();
        let modes: Vec<&str> = new.iter().map(|n| n.placement.mode.as_str()).collect();
        let locations: Vec<&str> = new.iter().map(|n| n.placement.location.as_str()).collect();
        let versions: Vec<i64> = new.iter().map(|n| n.placement.schema_version).collect();
        let owners: Vec<Option<Uuid>> = new.iter().map(|n| n.owner.map(|u| u.0)).collect();
        let plans: Vec<Option<&str>> = new.iter().map(|n| n.plan.as_deref()).collect();
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        // One statement for the whole batch: a taken slug (or one repeated in the batch)
        // is skipped by ON CONFLICT and reported below; the rest get their placement,
        // owner and journal row from the same statement.
        let inserted: HashSet<Uuid> = query(
            &tx,
            "WITH input AS ( \
                 SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], \
                     $5::text[], $6::text[], $7::int8[], $8::uuid[], $10::text[]) WITH ORDINALITY \
                     AS i (id, slug, name, store, mode, location, schema_version, owner_user, \
                         plan, ord) \
             ), ins AS ( \
                 INSERT INTO tenants (id, slug, name, status, op_owner, created_at, updated_at, plan) \
                 SELECT id, slug, name, 'provisioning', $9, now(), now(), plan FROM input \
                 ORDER BY ord \
                 ON CONFLICT (slug) WHERE status <> 'deleted' DO NOTHING \
                 RETURNING id \
             ), placed AS ( \
                 INSERT INTO placements (tenant_id, store, mode, location, schema_version, updated_at) \
                 SELECT i.id, i.store, i.mode, i.location, i.schema_version, now() \
                 FROM input i JOIN ins USING (id) \
             ), owned AS ( \
                 INSERT INTO memberships (tenant_id, user_id, role, created_at) \
                 SELECT i.id, i.owner_user, 'owner', now() FROM input i JOIN ins USING (id) \
                 WHERE i.owner_user IS NOT NULL \
             ), journaled AS ( \
                 INSERT INTO journal (tenant_id, event, from_status, to_status, owner, at) \
                 SELECT id, 'provision.begin', NULL, 'provisioning', $9, now() FROM ins \
             ) SELECT id FROM ins",
            &[
                &ids, &slugs, &names, &stores, &modes, &locations, &versions, &owners,
                &self.owner, &plans,
            ],
        )
        .await?
        .iter()
        .map(|r| get(r, 0))
        .collect::<Result<_>>()?;
        let mut tenants = self.tenants_by_id(&tx, &inserted).await?;
        let changed: Vec<Change> = new
            .iter()
            .filter(|n| inserted.contains(&n.id.0))
            .flat_map(new_tenant_changes)
            .collect();
        self.commit(tx, &changed).await?;
        Ok(new
            .iter()
            .map(|n| match tenants.remove(&n.id.0) {
                Some(t) => Ok(t),
                None => Err(Error::TenantExists {
                    slug: n.slug.to_string(),
                }),
            })
            .collect())
    }

    async fn activate_provisioned(&self, done: &[(TenantId, i64)]) -> Result<Vec<Result<Tenant>>> {
        let ids: Vec<Uuid> = done.iter().map(|(id, _)| id.0).collect();
        let versions: Vec<i64> = done.iter().map(|(_, v)| *v).collect();
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        // The status and owner checked are those replaced: UPDATE re-checks its WHERE on
        // each row it locks.
        let settled: HashSet<Uuid> = query(
            &tx,
            "WITH input AS ( \
                 SELECT * FROM unnest($1::uuid[], $2::int8[]) AS i (id, version) \
             ), settled AS ( \
                 UPDATE tenants t SET status = 'active', op_owner = NULL, error = NULL, \
                     updated_at = now() \
                 FROM input i \
                 WHERE t.id = i.id AND t.status = 'provisioning' \
                     AND (t.op_owner IS NULL OR t.op_owner = $3) \
                 RETURNING t.id, i.version \
             ), placed AS ( \
                 UPDATE placements p SET schema_version = s.version, updated_at = now() \
                 FROM settled s WHERE p.tenant_id = s.id \
             ), journaled AS ( \
                 INSERT INTO journal (tenant_id, event, from_status, to_status, owner, at) \
                 SELECT id, 'provision.done', 'provisioning', 'active', $3, now() FROM settled \
             ) SELECT id FROM settled",
            &[&ids, &versions, &self.owner],
        )
        .await?
        .iter()
        .map(|r| get(r, 0))
        .collect::<Result<_>>()?;
        let all: HashSet<Uuid> = ids.iter().copied().collect();
        let mut tenants = self.tenants_by_id(&tx, &all).await?;
        let changed: Vec<Change> = settled
            .iter()
            .map(|&id| Change::Tenant(TenantId(id)))
            .collect();
        self.commit(tx, &changed).await?;
        done.iter()
            .map(|(id, _)| {
                let tenant = tenants
                    .remove(&id.0)
                    .ok_or_else(|| Error::Internal(format!("tenant {id} vanished")))?;
                if settled.contains(&id.0) {
                    return Ok(Ok(tenant));
                }
                // Why it was not settled, in the words a single transition would use.
                let check = super::check_transition(
                    &tenant,
                    &Transition {
                        id: *id,
                        from: &[TenantStatus::Provisioning],
                        to: TenantStatus::Active,
                        expect_owner: Some(&self.owner),
                        new_owner: None,
                        error: None,
                        schema_version: None,
                        event: "provision.done",
                    },
                );
                Ok(Err(check.err().unwrap_or_else(|| {
                    Error::Internal(format!("tenant {id} changed while being settled"))
                })))
            })
            .collect()
    }

    async fn tenant(&self, id: TenantId) -> Result<Option<Tenant>> {
        select_tenant(&self.conn().await?, "t.id = $1", &id.0).await
    }

    async fn tenant_by_slug(&self, slug: &Slug) -> Result<Option<Tenant>> {
        select_tenant(
            &self.conn().await?,
            "t.slug = $1 AND t.status <> 'deleted'",
            &slug.as_str(),
        )
        .await
    }

    async fn list_tenants(&self, filter: &TenantFilter) -> Result<Vec<Tenant>> {
        let statuses: Option<Vec<&str>> = filter
            .statuses
            .as_ref()
            .map(|s| s.iter().map(|s| s.as_str()).collect());
        let sql = format!(
            "{TENANT_SELECT} WHERE ($1 OR t.status <> 'deleted') \
             AND ($2::text[] IS NULL OR t.status = ANY($2)) \
             AND ($3::bigint IS NULL OR p.schema_version < $3) \
             ORDER BY t.slug, t.created_at"
        );
        query(
            &self.conn().await?,
            &sql,
            &[&filter.include_deleted, &statuses, &filter.schema_below],
        )
        .await?
        .iter()
        .map(tenant_from_row)
        .collect()
    }

    async fn transition(&self, t: Transition<'_>) -> Result<Tenant> {
        let from: Vec<&'static str> = t.from.iter().map(|s| s.as_str()).collect();
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        // The row lock makes the status we check the one we replace (and journal).
        let current = select_tenant(&tx, "t.id = $1 FOR NO KEY UPDATE OF t", &t.id.0)
            .await?
            .ok_or_else(|| Error::Internal(format!("tenant {} vanished", t.id)))?;
        super::check_transition(&current, &t)?;
        let to = t.to.as_str();
        let updated = execute(
            &tx,
            "UPDATE tenants SET status = $2, op_owner = $3, error = $4, updated_at = now(), \
             deleted_at = CASE WHEN $2 = 'deleted' THEN now() ELSE deleted_at END \
             WHERE id = $1 AND status = ANY($5)",
            &[&t.id.0, &to, &t.new_owner, &t.error, &from],
        )
        .await?;
        if updated != 1 {
            return Err(Error::Internal(format!(
                "tenant {} changed under its row lock",
                t.id
            )));
        }
        if let Some(v) = t.schema_version {
            execute(
                &tx,
                "UPDATE placements SET schema_version = $2, updated_at = now() WHERE tenant_id = $1",
                &[&t.id.0, &v],
            )
            .await?;
        }
        let mut changed = vec![Change::Tenant(t.id)];
        if t.to == TenantStatus::Deleted {
            // A deleted tenant's domains are free for anyone to claim.
            let released = query(
                &tx,
                "DELETE FROM domains WHERE tenant_id = $1 RETURNING domain",
                &[&t.id.0],
            )
            .await?;
            for row in &released {
                changed.push(Change::Domain(get(row, 0)?));
            }
        }
        execute(
            &tx,
            "INSERT INTO journal (tenant_id, event, from_status, to_status, owner, detail, at) \
             VALUES ($1, $2, $3, $4, $5, $6, now())",
            &[
                &t.id.0,
                &t.event,
                &current.status.as_str(),
                &to,
                &t.new_owner.or(t.expect_owner),
                &t.error,
            ],
        )
        .await?;
        let tenant = select_tenant(&tx, "t.id = $1", &t.id.0)
            .await?
            .ok_or_else(|| Error::Internal(format!("tenant {} vanished", t.id)))?;
        self.commit(tx, &changed).await?;
        Ok(tenant)
    }

    async fn set_plan(&self, id: TenantId, state: &PlanState) -> Result<Tenant> {
        let overrides = if state.overrides.is_empty() {
            None
        } else {
            Some(
                serde_json::to_value(&state.overrides)
                    .map_err(|e| Error::Internal(e.to_string()))?,
            )
        };
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        let status: String = match query_opt(
            &tx,
            "UPDATE tenants SET plan = $2, plan_overrides = $3, trial_ends_at = $4, \
             subscription_ends_at = $5, updated_at = now() \
             WHERE id = $1 AND status <> 'deleted' RETURNING status",
            &[
                &id.0,
                &state.plan,
                &overrides,
                &state.trial_ends_at,
                &state.subscription_ends_at,
            ],
        )
        .await?
        {
            Some(row) => get(&row, 0)?,
            None => {
                return Err(Error::TenantNotFound {
                    slug: id.to_string(),
                })
            }
        };
        execute(
            &tx,
            "INSERT INTO journal (tenant_id, event, from_status, to_status, detail, at) \
             VALUES ($1, 'plan.update', $2, $2, $3, now())",
            &[&id.0, &status, &state.detail],
        )
        .await?;
        let tenant = select_tenant(&tx, "t.id = $1", &id.0)
            .await?
            .ok_or_else(|| Error::Internal(format!("tenant {id} vanished")))?;
        self.commit(tx, &[Change::Tenant(id)]).await?;
        Ok(tenant)
    }

    async fn quota_counts(&self, tenant: TenantId) -> Result<QuotaCounts> {
        let row = query_one(
            &self.conn().await?,
            "SELECT (SELECT count(*) FROM memberships WHERE tenant_id = $1) \
             + (SELECT count(*) FROM invitations WHERE tenant_id = $1 \
                AND accepted_at IS NULL AND expires_at > now()), \
             (SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL \
                AND (expires_at IS NULL OR expires_at > now()))",
            &[&tenant.0],
        )
        .await?;
        Ok(QuotaCounts {
            members: u64::try_from(get::<i64>(&row, 0)?).unwrap_or(0),
            api_keys: u64::try_from(get::<i64>(&row, 1)?).unwrap_or(0),
        })
    }

    async fn lapsed_tenants(&self, now: DateTime<Utc>) -> Result<Vec<Tenant>> {
        query(
            &self.conn().await?,
            &format!(
                "{TENANT_SELECT} WHERE t.status = 'active' \
                 AND (t.trial_ends_at <= $1 OR t.subscription_ends_at <= $1) ORDER BY t.slug"
            ),
            &[&now],
        )
        .await?
        .iter()
        .map(tenant_from_row)
        .collect()
    }

    async fn set_schema_version(&self, id: TenantId, version: i64) -> Result<()> {
        self.write(
            "UPDATE placements SET schema_version = $2, updated_at = now() \
             WHERE tenant_id = $1 AND schema_version < $2",
            &[&id.0, &version],
            &[Change::Tenant(id)],
        )
        .await?;
        Ok(())
    }

    async fn status_counts(&self) -> Result<Vec<StatusCount>> {
        let rows = query(
            &self.conn().await?,
            "SELECT t.status, p.schema_version, COUNT(*) FROM tenants t \
             JOIN placements p ON p.tenant_id = t.id WHERE t.status <> 'deleted' \
             GROUP BY t.status, p.schema_version ORDER BY t.status, p.schema_version",
            &[],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StatusCount {
                    status: get::<&str>(r, 0)?.parse()?,
                    schema_version: get(r, 1)?,
                    count: u64::try_from(get::<i64>(r, 2)?).unwrap_or(0),
                })
            })
            .collect()
    }

    async fn counts_by_status_and_mode(&self) -> Result<Vec<(TenantStatus, crate::Mode, u64)>> {
        let rows = query(
            &self.conn().await?,
            "SELECT t.status, p.mode, COUNT(*) FROM tenants t \
             JOIN placements p ON p.tenant_id = t.id WHERE t.status <> 'deleted' \
             GROUP BY t.status, p.mode",
            &[],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    get::<&str>(r, 0)?.parse()?,
                    get::<&str>(r, 1)?.parse()?,
                    u64::try_from(get::<i64>(r, 2)?).unwrap_or(0),
                ))
            })
            .collect()
    }

    async fn journal(&self, id: TenantId) -> Result<Vec<JournalEntry>> {
        let rows = query(
            &self.conn().await?,
            "SELECT seq, tenant_id, event, from_status, to_status, owner, detail, at \
             FROM journal WHERE tenant_id = $1 ORDER BY seq",
            &[&id.0],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(JournalEntry {
                    seq: get(r, 0)?,
                    tenant_id: TenantId(get(r, 1)?),
                    event: get(r, 2)?,
                    from_status: get(r, 3)?,
                    to_status: get(r, 4)?,
                    owner: get(r, 5)?,
                    detail: get(r, 6)?,
                    at: get(r, 7)?,
                })
            })
            .collect()
    }

    async fn acquire_lock(&self, name: &str) -> Result<()> {
        // Read the holder, check its liveness, then compare-and-set on the holder we saw.
        for _ in 0..3 {
            let holder = query_opt(
                &self.conn().await?,
                "SELECT owner, acquired_at FROM locks WHERE name = $1",
                &[&name],
            )
            .await?
            .map(|r| Ok::<_, Error>((get::<String>(&r, 0)?, get::<DateTime<Utc>>(&r, 1)?)))
            .transpose()?;
            if let Some((owner, since)) = &holder {
                if self.is_alive(owner).await? {
                    return Err(Error::OperationInProgress {
                        operation: name.to_owned(),
                        owner: owner.split('-').next().unwrap_or(owner).to_owned(),
                        since: since.to_rfc3339_opts(SecondsFormat::Micros, true),
                    });
                }
            }
            let taken = match &holder {
                None => {
                    self.write(
                        "INSERT INTO locks (name, owner, acquired_at) VALUES ($1, $2, now()) \
                         ON CONFLICT (name) DO NOTHING",
                        &[&name, &self.owner],
                        &[],
                    )
                    .await?
                }
                Some((dead, _)) => {
                    self.write(
                        "UPDATE locks SET owner = $2, acquired_at = now() \
                         WHERE name = $1 AND owner = $3",
                        &[&name, &self.owner, dead],
                        &[],
                    )
                    .await?
                }
            };
            if taken == 1 {
                return Ok(());
            }
        }
        Err(Error::Catalog(format!("could not take the {name} lock")))
    }

    async fn release_lock(&self, name: &str) -> Result<()> {
        self.write(
            "DELETE FROM locks WHERE name = $1 AND owner = $2",
            &[&name, &self.owner],
            &[],
        )
        .await?;
        Ok(())
    }

    async fn start_migration_run(&self, target: i64) -> Result<i64> {
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        let row = query_one(
            &tx,
            "INSERT INTO migration_runs (owner, target_version, started_at) \
             VALUES ($1, $2, now()) RETURNING id",
            &[&self.owner, &target],
        )
        .await?;
        let id = get(&row, 0)?;
        self.commit(tx, &[]).await?;
        Ok(id)
    }

    async fn record_tenant_migrations(&self, results: &[TenantMigrationResult]) -> Result<()> {
        let runs: Vec<i64> = results.iter().map(|r| r.run_id).collect();
        let ids: Vec<Uuid> = results.iter().map(|r| r.tenant_id.0).collect();
        let slugs: Vec<&str> = results.iter().map(|r| r.slug.as_str()).collect();
        let from: Vec<i64> = results.iter().map(|r| r.from_version).collect();
        let to: Vec<i64> = results.iter().map(|r| r.to_version).collect();
        let ok: Vec<bool> = results.iter().map(|r| r.ok).collect();
        let errors: Vec<Option<&str>> = results.iter().map(|r| r.error.as_deref()).collect();
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        let raised: Vec<Change> = query(
            &tx,
            "WITH input AS ( \
                 SELECT * FROM unnest($1::int8[], $2::uuid[], $3::text[], $4::int8[], \
                     $5::int8[], $6::bool[], $7::text[]) WITH ORDINALITY \
                     AS i (run_id, tenant_id, slug, from_version, to_version, ok, error, ord) \
             ), raised AS ( \
                 UPDATE placements p SET schema_version = i.to_version, updated_at = now() \
                 FROM input i \
                 WHERE p.tenant_id = i.tenant_id AND i.ok AND p.schema_version < i.to_version \
                 RETURNING p.tenant_id \
             ), recorded AS ( \
                 INSERT INTO tenant_migrations \
                     (run_id, tenant_id, slug, from_version, to_version, ok, error, finished_at) \
                 SELECT run_id, tenant_id, slug, from_version, to_version, ok, error, now() \
                 FROM input ORDER BY ord \
             ) SELECT tenant_id FROM raised",
            &[&runs, &ids, &slugs, &from, &to, &ok, &errors],
        )
        .await?
        .iter()
        .map(|r| Ok(Change::Tenant(TenantId(get(r, 0)?))))
        .collect::<Result<_>>()?;
        self.commit(tx, &raised).await
    }

    async fn finish_migration_run(&self, run_id: i64, ok: u64, failed: u64) -> Result<()> {
        let ok = i64::try_from(ok).unwrap_or(i64::MAX);
        let failed = i64::try_from(failed).unwrap_or(i64::MAX);
        self.write(
            "UPDATE migration_runs SET finished_at = now(), ok = $2, failed = $3 WHERE id = $1",
            &[&run_id, &ok, &failed],
            &[],
        )
        .await?;
        Ok(())
    }

    async fn failed_migrations(&self) -> Result<Vec<TenantMigrationResult>> {
        let rows = query(
            &self.conn().await?,
            "SELECT m.run_id, m.tenant_id, m.slug, m.from_version, m.to_version, m.ok, m.error \
             FROM tenant_migrations m \
             JOIN tenants t ON t.id = m.tenant_id AND t.status <> 'deleted' \
             JOIN placements p ON p.tenant_id = m.tenant_id AND p.schema_version < m.to_version \
             WHERE m.id = (SELECT MAX(id) FROM tenant_migrations l WHERE l.tenant_id = m.tenant_id) \
               AND NOT m.ok ORDER BY m.slug",
            &[],
        )
        .await?;
        rows.iter().map(migration_result_from_row).collect()
    }

    async fn failed_migration(&self, tenant: TenantId) -> Result<Option<TenantMigrationResult>> {
        let row = query_opt(
            &self.conn().await?,
            "SELECT m.run_id, m.tenant_id, m.slug, m.from_version, m.to_version, m.ok, m.error \
             FROM tenant_migrations m \
             JOIN placements p ON p.tenant_id = m.tenant_id AND p.schema_version < m.to_version \
             WHERE m.tenant_id = $1 AND NOT m.ok \
               AND m.id = (SELECT MAX(id) FROM tenant_migrations l WHERE l.tenant_id = $1)",
            &[&tenant.0],
        )
        .await?;
        row.as_ref().map(migration_result_from_row).transpose()
    }

    async fn registered_migrations(&self, dialect: Dialect) -> Result<Vec<RegisteredMigration>> {
        let rows = query(
            &self.conn().await?,
            "SELECT version, file, checksum FROM tenant_schema WHERE dialect = $1 ORDER BY version",
            &[&dialect.as_str()],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RegisteredMigration {
                    version: get(r, 0)?,
                    file: get(r, 1)?,
                    checksum: get(r, 2)?,
                })
            })
            .collect()
    }

    async fn register_migrations(&self, dialect: Dialect, scripts: &[Script<'_>]) -> Result<()> {
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        for s in scripts {
            execute(
                &tx,
                "INSERT INTO tenant_schema (dialect, version, file, checksum, first_applied_at) \
                 VALUES ($1, $2, $3, $4, now()) ON CONFLICT (dialect, version) DO NOTHING",
                &[&dialect.as_str(), &s.version, &s.file, &s.checksum],
            )
            .await?;
        }
        self.commit(tx, &[]).await
    }

    async fn insert_user(&self, new: &NewUser, invitation: Option<&str>) -> Result<User> {
        let email_norm = new.email.to_lowercase();
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        execute_unique(
            &tx,
            "INSERT INTO users \
             (id, email, email_norm, password_hash, is_superadmin, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, now(), now())",
            &[
                &new.id.0,
                &new.email,
                &email_norm,
                &new.password_hash,
                &new.is_superadmin,
            ],
            || Error::EmailTaken,
        )
        .await?;
        let mut changed = vec![Change::User(new.id)];
        if let Some(hash) = invitation {
            let (TenantId(tenant_id), role) = redeem_invitation(&tx, hash, &email_norm).await?;
            execute(
                &tx,
                "INSERT INTO memberships (tenant_id, user_id, role, created_at) \
                 VALUES ($1, $2, $3, now())",
                &[&tenant_id, &new.id.0, &role],
            )
            .await?;
            changed.push(Change::Member(TenantId(tenant_id), new.id));
        }
        let user = select_user(&tx, "id = $1", &new.id.0)
            .await?
            .map(|(u, _)| u)
            .ok_or_else(|| Error::Internal("inserted user vanished".into()))?;
        self.commit(tx, &changed).await?;
        Ok(user)
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        Ok(select_user(&self.conn().await?, "id = $1", &id.0)
            .await?
            .map(|(u, _)| u))
    }

    async fn user_by_email(&self, email_norm: &str) -> Result<Option<(User, String)>> {
        select_user(&self.conn().await?, "email_norm = $1", &email_norm).await
    }

    async fn memberships(&self, user: UserId) -> Result<Vec<Membership>> {
        let rows = query(
            &self.conn().await?,
            "SELECT t.id, t.slug, t.name, m.role FROM memberships m \
             JOIN tenants t ON t.id = m.tenant_id AND t.status <> 'deleted' \
             WHERE m.user_id = $1 ORDER BY t.slug",
            &[&user.0],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Membership {
                    tenant_id: TenantId(get(r, 0)?),
                    slug: get(r, 1)?,
                    name: get(r, 2)?,
                    role: get::<&str>(r, 3)?.parse()?,
                })
            })
            .collect()
    }

    async fn membership_role(&self, tenant: TenantId, user: UserId) -> Result<Option<Role>> {
        let row = query_opt(
            &self.conn().await?,
            "SELECT role FROM memberships WHERE tenant_id = $1 AND user_id = $2",
            &[&tenant.0, &user.0],
        )
        .await?;
        row.map(|r| get::<&str>(&r, 0)?.parse()).transpose()
    }

    async fn insert_refresh_token(&self, t: &NewRefreshToken) -> Result<()> {
        self.write(
            "INSERT INTO refresh_tokens (token_hash, family, user_id, tenant_id, expires_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, now())",
            &[
                &t.token_hash,
                &t.family,
                &t.user_id.0,
                &t.tenant_id.map(|id| id.0),
                &t.expires_at,
            ],
&[],
)
        .await?;
        Ok(())
    }

    async fn use_refresh_token(&self, token_hash: &str) -> Result<RefreshUse> {
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        // The row lock makes two presentations of one token take turns: the second sees
        // it used.
        let row = query_opt(
            &tx,
            "SELECT family, user_id, tenant_id, used_at IS NOT NULL OR revoked_at IS NOT NULL, \
                    expires_at <= now() \
             FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
            &[&token_hash],
        )
        .await?;
        let Some(row) = row else {
            return Ok(RefreshUse::Invalid);
        };
        let family: String = get(&row, 0)?;
        let user_id: Uuid = get(&row, 1)?;
        let tenant_id: Option<Uuid> = get(&row, 2)?;
        let spent: bool = get(&row, 3)?;
        let expired: bool = get(&row, 4)?;
        if spent {
            execute(
                &tx,
                "UPDATE refresh_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE family = $1",
                &[&family],
            )
            .await?;
            self.commit(tx, &[]).await?;
            return Ok(RefreshUse::Replayed);
        }
        if expired {
            return Ok(RefreshUse::Invalid);
        }
        execute(
            &tx,
            "UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1",
            &[&token_hash],
        )
        .await?;
        self.commit(tx, &[]).await?;
        Ok(RefreshUse::Valid {
            user_id: UserId(user_id),
            tenant_id: tenant_id.map(TenantId),
            family,
        })
    }

    async fn revoke_refresh_token(&self, token_hash: &str) -> Result<()> {
        self.write(
            "UPDATE refresh_tokens SET revoked_at = COALESCE(revoked_at, now()) \
             WHERE family = (SELECT family FROM refresh_tokens WHERE token_hash = $1)",
            &[&token_hash],
            &[],
        )
        .await?;
        Ok(())
    }

    async fn signing_keys(&self, since: DateTime<Utc>) -> Result<Vec<(String, String)>> {
        let rows = query(
            &self.conn().await?,
            "SELECT kid, secret FROM signing_keys \
             WHERE retired_at IS NULL OR retired_at > $1 ORDER BY created_at DESC, kid DESC",
            &[&since],
        )
        .await?;
        rows.iter().map(|r| Ok((get(r, 0)?, get(r, 1)?))).collect()
    }

    async fn add_signing_key(&self, kid: &str, secret_hex: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        // Two processes adding keys at once take turns, so exactly one key stays current.
        tx.batch_execute("LOCK TABLE signing_keys IN EXCLUSIVE MODE")
            .await
            .map_err(db_error)?;
        execute(
            &tx,
            "UPDATE signing_keys SET retired_at = now() WHERE retired_at IS NULL",
            &[],
        )
        .await?;
        execute(
            &tx,
            "INSERT INTO signing_keys (kid, secret, created_at) VALUES ($1, $2, now())",
            &[&kid, &secret_hex],
        )
        .await?;
        self.commit(tx, &[]).await
    }

    async fn seal_signing_key(&self, kid: &str, clear: &str, sealed: &str) -> Result<()> {
        execute(
            &self.conn().await?,
            "UPDATE signing_keys SET secret = $3 WHERE kid = $1 AND secret = $2",
            &[&kid, &clear, &sealed],
        )
        .await?;
        Ok(())
    }

    async fn insert_api_key(&self, k: &NewApiKey) -> Result<ApiKey> {
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        if let (Some(max), Some(tenant)) = (k.max, k.tenant_id) {
            // The tenant's row lock makes concurrent creations take turns.
            lock_tenant(&tx, tenant).await?;
            let row = query_one(
                &tx,
                "SELECT count(*) FROM api_keys WHERE tenant_id = $1 AND revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > now())",
                &[&tenant.0],
            )
            .await?;
            super::refuse_past("api_keys", get(&row, 0)?, max)?;
        }
        let row = query_one(
            &tx,
            &format!(
                "INSERT INTO api_keys \
                 (id, tenant_id, role, label, secret_hash, created_by, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, now(), $7) RETURNING {API_KEY_COLUMNS}"
            ),
            &[
                &k.id,
                &k.tenant_id.map(|t| t.0),
                &k.role,
                &k.label,
                &k.secret_hash,
                &k.created_by,
                &k.expires_at,
            ],
        )
        .await?;
        let (key, _) = api_key_from_row(&row)?;
        self.commit(tx, &[Change::ApiKey(k.id.clone())]).await?;
        Ok(key)
    }

    async fn api_key(&self, id: &str) -> Result<Option<(ApiKey, String)>> {
        query_opt(
            &self.conn().await?,
            &format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = $1"),
            &[&id],
        )
        .await?
        .map(|r| api_key_from_row(&r))
        .transpose()
    }

    async fn api_keys(&self, tenant: Option<TenantId>) -> Result<Vec<ApiKey>> {
        let rows = query(
            &self.conn().await?,
            &format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id IS NOT DISTINCT FROM $1 \
                 ORDER BY created_at DESC, id"
            ),
            &[&tenant.map(|t| t.0)],
        )
        .await?;
        rows.iter().map(|r| Ok(api_key_from_row(r)?.0)).collect()
    }

    async fn revoke_api_key(&self, tenant: Option<TenantId>, id: &str) -> Result<bool> {
        let n = self
            .write(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) \
                 WHERE id = $1 AND tenant_id IS NOT DISTINCT FROM $2",
                &[&id, &tenant.map(|t| t.0)],
                &[Change::ApiKey(id.to_owned())],
            )
            .await?;
        Ok(n == 1)
    }

    async fn members(&self, tenant: TenantId) -> Result<Vec<Member>> {
        let rows = query(
            &self.conn().await?,
            "SELECT u.id, u.email, m.role, m.created_at FROM memberships m \
             JOIN users u ON u.id = m.user_id WHERE m.tenant_id = $1 ORDER BY u.email_norm",
            &[&tenant.0],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Member {
                    user_id: UserId(get(r, 0)?),
                    email: get(r, 1)?,
                    role: get::<&str>(r, 2)?.parse()?,
                    created_at: get(r, 3)?,
                })
            })
            .collect()
    }

    async fn add_member(&self, tenant: TenantId, user: UserId, role: Role) -> Result<()> {
        self.write_unique(
            "INSERT INTO memberships (tenant_id, user_id, role, created_at) \
             VALUES ($1, $2, $3, now())",
            &[&tenant.0, &user.0, &role.as_str()],
            || Error::MemberExists,
            &[Change::Member(tenant, user)],
        )
        .await?;
        Ok(())
    }

    async fn set_member_role(&self, tenant: TenantId, user: UserId, role: Role) -> Result<bool> {
        self.change_member(tenant, user, Some(role)).await
    }

    async fn remove_member(&self, tenant: TenantId, user: UserId) -> Result<bool> {
        self.change_member(tenant, user, None).await
    }

    async fn insert_invitation(&self, inv: &NewInvitation) -> Result<()> {
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        if let Some(max) = inv.max_members {
            lock_tenant(&tx, inv.tenant_id).await?;
            let row = query_one(
                &tx,
                "SELECT (SELECT count(*) FROM memberships WHERE tenant_id = $1) \
                 + (SELECT count(*) FROM invitations WHERE tenant_id = $1 \
                    AND accepted_at IS NULL AND expires_at > now())",
                &[&inv.tenant_id.0],
            )
            .await?;
            super::refuse_past("members", get(&row, 0)?, max)?;
        }
        execute(
            &tx,
            "INSERT INTO invitations \
             (token_hash, tenant_id, email_norm, role, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, now(), $6)",
            &[
                &inv.token_hash,
                &inv.tenant_id.0,
                &inv.email_norm,
                &inv.role.as_str(),
                &inv.created_by,
                &inv.expires_at,
            ],
        )
        .await?;
        self.commit(tx, &[]).await?;
        Ok(())
    }

    async fn accept_invitation(
        &self,
        token_hash: &str,
        user: UserId,
        email_norm: &str,
    ) -> Result<TenantId> {
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        let (tenant, role) = redeem_invitation(&tx, token_hash, email_norm).await?;
        execute_unique(
            &tx,
            "INSERT INTO memberships (tenant_id, user_id, role, created_at) \
             VALUES ($1, $2, $3, now())",
            &[&tenant.0, &user.0, &role],
            || Error::MemberExists,
        )
        .await?;
        self.commit(tx, &[Change::Member(tenant, user)]).await?;
        Ok(tenant)
    }

    async fn insert_domain(
        &self,
        tenant: TenantId,
        domain: &str,
        token: &str,
    ) -> Result<CustomDomain> {
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        // A claim of this tenant's (primary key) or a verified one (checked here, and by
        // the unique index when both commit at once) takes the domain.
        let n = execute_unique(
            &tx,
            "INSERT INTO domains (domain, tenant_id, token, created_at) \
             SELECT $1, $2, $3, now() WHERE NOT EXISTS \
             (SELECT 1 FROM domains WHERE domain = $1 AND verified_at IS NOT NULL)",
            &[&domain, &tenant.0, &token],
            || Error::DomainTaken,
        )
        .await?;
        if n == 0 {
            return Err(Error::DomainTaken);
        }
        let claim = select_domain(&tx, tenant, domain)
            .await?
            .ok_or_else(|| Error::Internal("inserted domain vanished".into()))?;
        self.commit(tx, &[Change::Domain(domain.to_owned())])
            .await?;
        Ok(claim)
    }

    async fn domains(&self, tenant: TenantId) -> Result<Vec<CustomDomain>> {
        let rows = query(
            &self.conn().await?,
            &format!("SELECT {DOMAIN_COLUMNS} FROM domains WHERE tenant_id = $1 ORDER BY domain"),
            &[&tenant.0],
        )
        .await?;
        rows.iter().map(domain_from_row).collect()
    }

    async fn verify_domain(&self, tenant: TenantId, domain: &str) -> Result<Option<CustomDomain>> {
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        execute_unique(
            &tx,
            "UPDATE domains SET verified_at = now() \
             WHERE domain = $1 AND tenant_id = $2 AND verified_at IS NULL",
            &[&domain, &tenant.0],
            || Error::DomainTaken,
        )
        .await?;
        // Verified: the other claims can never be.
        execute(
            &tx,
            "DELETE FROM domains WHERE domain = $1 AND tenant_id <> $2 AND verified_at IS NULL",
            &[&domain, &tenant.0],
        )
        .await?;
        let claim = select_domain(&tx, tenant, domain).await?;
        self.commit(tx, &[Change::Domain(domain.to_owned())])
            .await?;
        Ok(claim)
    }

    async fn remove_domain(&self, tenant: TenantId, domain: &str) -> Result<bool> {
        let n = self
            .write(
                "DELETE FROM domains WHERE domain = $1 AND tenant_id = $2",
                &[&domain, &tenant.0],
                &[Change::Domain(domain.to_owned())],
            )
            .await?;
        Ok(n == 1)
    }

    async fn tenant_by_domain(&self, domain: &str) -> Result<Option<Tenant>> {
        select_tenant(
            &self.conn().await?,
            "t.id = (SELECT tenant_id FROM domains WHERE domain = $1 AND verified_at IS NOT NULL) \
             AND t.status <> 'deleted'",
            &domain,
        )
        .await
    }

    async fn append_audit(
        &self,
        actor: &str,
        tenant: Option<TenantId>,
        action: &str,
        detail: Option<&str>,
    ) -> Result<()> {
        self.write(
            "INSERT INTO audit (at, actor, tenant_id, action, detail) \
             VALUES (now(), $1, $2, $3, $4)",
            &[&actor, &tenant.map(|t| t.0), &action, &detail],
            &[],
        )
        .await?;
        Ok(())
    }

    async fn audit(&self, tenant: TenantId) -> Result<Vec<AuditEntry>> {
        let rows = query(
            &self.conn().await?,
            "SELECT seq, at, actor, tenant_id, action, detail FROM audit \
             WHERE tenant_id = $1 ORDER BY seq",
            &[&tenant.0],
        )
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    seq: get(r, 0)?,
                    at: get(r, 1)?,
                    actor: get(r, 2)?,
                    tenant_id: get::<Option<Uuid>>(r, 3)?.map(TenantId),
                    action: get(r, 4)?,
                    detail: get(r, 5)?,
                })
            })
            .collect()
    }

    async fn tenant_settings(&self, tenant: TenantId) -> Result<Option<TenantSettings>> {
        select_settings(&self.conn().await?, tenant).await
    }

    async fn put_tenant_settings(
        &self,
        tenant: TenantId,
        document: &serde_json::Map<String, serde_json::Value>,
        actor: &str,
    ) -> Result<TenantSettings> {
        let value = serde_json::Value::Object(document.clone());
        let detail = crate::settings::audit_detail(document);
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        execute(
            &tx,
            "INSERT INTO tenant_settings (tenant_id, document, updated_at, updated_by) \
             VALUES ($1, $2, now(), $3) ON CONFLICT (tenant_id) DO UPDATE SET \
             document = excluded.document, updated_at = excluded.updated_at, \
             updated_by = excluded.updated_by",
            &[&tenant.0, &value, &actor],
        )
        .await?;
        execute(
            &tx,
            "INSERT INTO audit (at, actor, tenant_id, action, detail) \
             VALUES (now(), $1, $2, $3, $4)",
            &[&actor, &tenant.0, &crate::settings::AUDIT_ACTION, &detail],
        )
        .await?;
        let stored = select_settings(&tx, tenant)
            .await?
            .ok_or_else(|| Error::Internal("written settings vanished".into()))?;
        self.commit(tx, &[Change::Settings(tenant)]).await?;
        Ok(stored)
    }

    async fn setting(&self, key: &str) -> Result<Option<String>> {
        query_opt(
            &self.conn().await?,
            "SELECT value FROM settings WHERE key = $1",
            &[&key],
        )
        .await?
        .map(|r| get(&r, 0))
        .transpose()
    }

    async fn add_usage(&self, batch: &UsageBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        if !batch.counts.is_empty() {
            let tenants: Vec<Uuid> = batch.counts.iter().map(|c| c.tenant.0).collect();
            let days: Vec<NaiveDate> = batch.counts.iter().map(|c| c.day).collect();
            let metrics: Vec<&str> = batch.counts.iter().map(|c| c.metric.as_str()).collect();
            let labels: Vec<&str> = batch.counts.iter().map(|c| c.label.as_str()).collect();
            let values: Vec<i64> = batch
                .counts
                .iter()
                .map(|c| i64::try_from(c.value).unwrap_or(i64::MAX))
                .collect();
            // Rows are taken in key order, so two processes adding at once cannot deadlock.
            execute(
                &tx,
                "INSERT INTO usage_daily (tenant_id, day, metric, label, value) \
                 SELECT t, d, m, l, sum(v)::int8 \
                 FROM unnest($1::uuid[], $2::date[], $3::text[], $4::text[], $5::int8[]) \
                   AS u (t, d, m, l, v) \
                 GROUP BY t, d, m, l ORDER BY t, d, m, l \
                 ON CONFLICT (tenant_id, day, metric, label) \
                 DO UPDATE SET value = usage_daily.value + excluded.value",
                &[&tenants, &days, &metrics, &labels, &values],
            )
            .await?;
        }
        if !batch.active_users.is_empty() {
            let tenants: Vec<Uuid> = batch.active_users.iter().map(|(t, _, _)| t.0).collect();
            let days: Vec<NaiveDate> = batch.active_users.iter().map(|(_, d, _)| *d).collect();
            let users: Vec<Uuid> = batch.active_users.iter().map(|(_, _, u)| u.0).collect();
            execute(
                &tx,
                "INSERT INTO usage_active_users (tenant_id, day, user_id) \
                 SELECT DISTINCT t, d, u FROM unnest($1::uuid[], $2::date[], $3::uuid[]) \
                   AS x (t, d, u) ORDER BY t, d, u \
                 ON CONFLICT DO NOTHING",
                &[&tenants, &days, &users],
            )
            .await?;
        }
        let mut samples = batch.samples.clone();
        samples.sort_by_key(|s| s.tenant);
        for sample in &samples {
            let bytes = i64::try_from(sample.bytes).unwrap_or(i64::MAX);
            let newer = execute(
                &tx,
                "INSERT INTO storage_samples (tenant_id, bytes, sampled_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (tenant_id) DO UPDATE SET bytes = excluded.bytes, \
                 sampled_at = excluded.sampled_at \
                 WHERE storage_samples.sampled_at < excluded.sampled_at",
                &[&sample.tenant.0, &bytes, &sample.sampled_at],
            )
            .await?;
            if newer > 0 {
                execute(
                    &tx,
                    "INSERT INTO usage_daily (tenant_id, day, metric, label, value) \
                     VALUES ($1, $2, 'storage_bytes', '', $3) \
                     ON CONFLICT (tenant_id, day, metric, label) DO UPDATE SET value = excluded.value",
                    &[&sample.tenant.0, &sample.sampled_at.date_naive(), &bytes],
                )
                .await?;
            }
        }
        // No row readers cache changed: nobody needs telling.
        tx.commit().await.map_err(db_error)
    }

    async fn usage(&self, tenant: TenantId, from: NaiveDate, to: NaiveDate) -> Result<UsageRows> {
        let conn = self.conn().await?;
        let rows = query(
            &conn,
            "SELECT day, metric, label, value FROM usage_daily \
             WHERE tenant_id = $1 AND day BETWEEN $2 AND $3 \
             UNION ALL SELECT day, 'active_users', '', count(*)::int8 FROM usage_active_users \
             WHERE tenant_id = $1 AND day BETWEEN $2 AND $3 GROUP BY day",
            &[&tenant.0, &from, &to],
        )
        .await?;
        let mut counts = Vec::new();
        for r in &rows {
            // A metric this version does not know (written by a newer one) is skipped.
            let Ok(metric) = get::<&str>(r, 1)?.parse::<Metric>() else {
                continue;
            };
            counts.push(UsageCount {
                tenant,
                day: get(r, 0)?,
                metric,
                label: get(r, 2)?,
                value: u64::try_from(get::<i64>(r, 3)?).unwrap_or(0),
            });
        }
        let distinct = query_one(
            &conn,
            "SELECT count(DISTINCT user_id)::int8 FROM usage_active_users \
             WHERE tenant_id = $1 AND day BETWEEN $2 AND $3",
            &[&tenant.0, &from, &to],
        )
        .await?;
        Ok(UsageRows {
            counts,
            distinct_users: u64::try_from(get::<i64>(&distinct, 0)?).unwrap_or(0),
        })
    }

    async fn storage_samples(&self, since: Option<DateTime<Utc>>) -> Result<Vec<StorageSample>> {
        query(
            &self.conn().await?,
            "SELECT tenant_id, bytes, sampled_at FROM storage_samples \
             WHERE $1::timestamptz IS NULL OR sampled_at >= $1",
            &[&since],
        )
        .await?
        .iter()
        .map(sample_from_row)
        .collect()
    }

    async fn storage_sample(&self, tenant: TenantId) -> Result<Option<StorageSample>> {
        query_opt(
            &self.conn().await?,
            "SELECT tenant_id, bytes, sampled_at FROM storage_samples WHERE tenant_id = $1",
            &[&tenant.0],
        )
        .await?
        .as_ref()
        .map(sample_from_row)
        .transpose()
    }

    async fn tenants_unsampled(&self, day: NaiveDate, limit: u32) -> Result<Vec<Tenant>> {
        let day_start = day
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .ok_or_else(|| Error::Internal(format!("no midnight on {day}")))?;
        query(
            &self.conn().await?,
            &format!(
                "{TENANT_SELECT} LEFT JOIN storage_samples s ON s.tenant_id = t.id \
                 WHERE t.status = 'active' AND (s.sampled_at IS NULL OR s.sampled_at < $1) \
                 ORDER BY t.id LIMIT $2"
            ),
            &[&day_start, &i64::from(limit)],
        )
        .await?
        .iter()
        .map(tenant_from_row)
        .collect()
    }

    async fn raise_budget_alert(&self, alert: &BudgetAlert) -> Result<bool> {
        let threshold = i32::try_from(alert.threshold).unwrap_or(i32::MAX);
        let mut conn = self.conn().await?;
        let tx = begin(&mut conn).await?;
        let n = execute(
            &tx,
            "INSERT INTO budget_alerts \
             (tenant_id, month, threshold, cost_micros, budget_micros, raised_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            &[
                &alert.tenant_id.0,
                &alert.month,
                &threshold,
                &alert.cost.micros(),
                &alert.budget.micros(),
                &alert.raised_at,
            ],
        )
        .await?;
        tx.commit().await.map_err(db_error)?;
        Ok(n == 1)
    }

    async fn budget_alerts(
        &self,
        tenant: TenantId,
        month: Option<&str>,
    ) -> Result<Vec<BudgetAlert>> {
        query(
            &self.conn().await?,
            "SELECT tenant_id, month, threshold, cost_micros, budget_micros, raised_at \
             FROM budget_alerts WHERE tenant_id = $1 AND ($2::text IS NULL OR month = $2) \
             ORDER BY month DESC, threshold",
            &[&tenant.0, &month],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(BudgetAlert {
                tenant_id: TenantId(get(r, 0)?),
                month: get(r, 1)?,
                threshold: u32::try_from(get::<i32>(r, 2)?).unwrap_or(0),
                cost: Money(get(r, 3)?),
                budget: Money(get(r, 4)?),
                raised_at: get(r, 5)?,
            })
        })
        .collect()
    }

    async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        self.write(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&key, &value],
            &[],
        )
        .await?;
        Ok(())
    }
}
