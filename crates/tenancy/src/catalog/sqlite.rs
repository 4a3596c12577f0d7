//! The catalog in one SQLite file, shared safely by several processes on one machine
//! (WAL, busy timeout, `BEGIN IMMEDIATE` for every write).
//!
//! Liveness: each process instance holds an exclusive lock on `run/<owner>.lock` next to
//! the catalog for as long as it lives. The kernel drops the lock when the process dies,
//! however it dies, so "is this owner alive?" is a non-blocking lock attempt.
//!
//! Rows readers may cache are logged to `catalog_changes` by triggers, in the transaction
//! that changes them, whoever writes (this version, an older one, an operator by hand).
//! Sequence numbers follow commit order (writes hold the database's one write lock), so a
//! reader remembers the last one it read and reads only newer rows.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use serde_json::{Map, Value};

use super::{
    Catalog, Changes, ChangesSince, JournalEntry, NewTenant, PlanState, QuotaCounts,
    RegisteredMigration, StatusCount, TenantFilter, TenantMigrationResult, Transition,
};
use super::{NewApiKey, NewInvitation, NewRefreshToken, NewUser};
use crate::config::Durability;
use crate::domain::CustomDomain;
use crate::error::{Error, Result};
use crate::identity::{ApiKey, AuditEntry, Member, Membership, RefreshUse, Role, User, UserId};
use crate::migrations::{Dialect, Script};
use crate::plans::{Metric, Money};
use crate::settings::TenantSettings;
use crate::slug::Slug;
use crate::tenant::{Mode, Placement, Tenant, TenantId, TenantStatus};
use crate::usage::{BudgetAlert, StorageSample, UsageBatch, UsageCount, UsageRows};

/// The catalog's own schema, one entry per version. Append only.
const CATALOG_MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    slug        TEXT NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    error       TEXT,
    op_owner    TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    deleted_at  TEXT
);
-- A slug is unique among tenants that are not deleted: deleting frees it.
CREATE UNIQUE INDEX tenants_live_slug_key ON tenants (slug) WHERE status <> 'deleted';
CREATE INDEX tenants_status_idx ON tenants (status);

CREATE TABLE placements (
    tenant_id      TEXT PRIMARY KEY REFERENCES tenants (id),
    store          TEXT NOT NULL,
    mode           TEXT NOT NULL,
    location       TEXT NOT NULL,
    schema_version INTEGER NOT NULL DEFAULT 0,
    updated_at     TEXT NOT NULL
);
CREATE INDEX placements_schema_version_idx ON placements (schema_version);

CREATE TABLE journal (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id   TEXT NOT NULL,
    event       TEXT NOT NULL,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    owner       TEXT,
    detail      TEXT,
    at          TEXT NOT NULL
);
CREATE INDEX journal_tenant_idx ON journal (tenant_id, seq);

CREATE TABLE migration_runs (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    owner          TEXT NOT NULL,
    target_version INTEGER NOT NULL,
    started_at     TEXT NOT NULL,
    finished_at    TEXT,
    ok             INTEGER,
    failed         INTEGER
);

CREATE TABLE tenant_migrations (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id       INTEGER NOT NULL REFERENCES migration_runs (id),
    tenant_id    TEXT NOT NULL,
    slug         TEXT NOT NULL,
    from_version INTEGER NOT NULL,
    to_version   INTEGER NOT NULL,
    ok           INTEGER NOT NULL,
    error        TEXT,
    finished_at  TEXT NOT NULL
);
CREATE INDEX tenant_migrations_tenant_idx ON tenant_migrations (tenant_id, id);

CREATE TABLE tenant_schema (
    dialect          TEXT NOT NULL,
    version          INTEGER NOT NULL,
    file             TEXT NOT NULL,
    checksum         TEXT NOT NULL,
    first_applied_at TEXT NOT NULL,
    PRIMARY KEY (dialect, version)
);

CREATE TABLE locks (
    name        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    acquired_at TEXT NOT NULL
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#,
    r#"
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    email         TEXT NOT NULL,
    email_norm    TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    is_superadmin INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    CONSTRAINT users_email_norm_key UNIQUE (email_norm)
);

CREATE TABLE memberships (
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    user_id    TEXT NOT NULL REFERENCES users (id),
    role       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX memberships_user_idx ON memberships (user_id);

-- Refresh tokens by hash. A family is one login's chain of rotations: presenting a token
-- that was already used revokes the whole family.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family     TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id),
    tenant_id  TEXT,
    expires_at TEXT NOT NULL,
    used_at    TEXT,
    revoked_at TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family);

CREATE TABLE signing_keys (
    kid        TEXT PRIMARY KEY,
    secret     TEXT NOT NULL,
    created_at TEXT NOT NULL,
    retired_at TEXT
);
"#,
    r#"
-- API keys: `tny_<id>_<secret>`; only the secret's SHA-256 is kept. tenant_id NULL: a
-- platform key (superadmin automation).
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    tenant_id    TEXT REFERENCES tenants (id),
    role         TEXT NOT NULL,
    label        TEXT,
    secret_hash  TEXT NOT NULL,
    created_by   TEXT,
    created_at   TEXT NOT NULL,
    expires_at   TEXT,
    revoked_at   TEXT,
    last_used_at TEXT
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);

CREATE TABLE invitations (
    token_hash  TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    email_norm  TEXT NOT NULL,
    role        TEXT NOT NULL,
    created_by  TEXT,
    created_at  TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    accepted_at TEXT
);

CREATE TABLE domains (
    domain     TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants (id),
    created_at TEXT NOT NULL
);
CREATE INDEX domains_tenant_idx ON domains (tenant_id);

-- Append-only: nothing updates or deletes these rows.
CREATE TABLE audit (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    tenant_id TEXT,
    action    TEXT NOT NULL,
    detail    TEXT
);
CREATE INDEX audit_tenant_idx ON audit (tenant_id, seq);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
"#,
    r#"
-- The rows readers cache that each write changed (`Catalog::changes_since`): a kind and a
-- key as `Change` encodes them. Logged by triggers, so that no writer can skip it; every
-- 1000th row prunes all but the latest 10,000.
CREATE TABLE catalog_changes (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    key  TEXT NOT NULL
);
CREATE TRIGGER catalog_changes_prune AFTER INSERT ON catalog_changes WHEN NEW.seq % 1000 = 0
BEGIN DELETE FROM catalog_changes WHERE seq <= NEW.seq - 10000; END;

-- Not `last_used_at`: readers keep it themselves.
CREATE TRIGGER api_keys_insert_change AFTER INSERT ON api_keys
BEGIN INSERT INTO catalog_changes (kind, key) VALUES ('api_key', NEW.id); END;
CREATE TRIGGER api_keys_update_change
AFTER UPDATE OF id, tenant_id, role, label, secret_hash, created_by, created_at, expires_at, revoked_at ON api_keys
BEGIN INSERT INTO catalog_changes (kind, key) SELECT 'api_key', OLD.id UNION SELECT 'api_key', NEW.id; END;
CREATE TRIGGER api_keys_delete_change AFTER DELETE ON api_keys
BEGIN INSERT INTO catalog_changes (kind, key) VALUES ('api_key', OLD.id); END;

-- A slug is logged when a tenant takes or leaves it; its status is the tenant's.
CREATE TRIGGER tenants_insert_change AFTER INSERT ON tenants
BEGIN INSERT INTO catalog_changes (kind, key) VALUES ('tenant', NEW.id), ('slug', NEW.slug); END;
CREATE TRIGGER tenants_update_change AFTER UPDATE ON tenants
BEGIN
    INSERT INTO catalog_changes (kind, key)
    SELECT 'tenant', OLD.id UNION SELECT 'tenant', NEW.id
    UNION SELECT 'slug', OLD.slug WHERE OLD.slug IS NOT NEW.slug
    UNION SELECT 'slug', NEW.slug WHERE OLD.slug IS NOT NEW.slug;
END;
CREATE TRIGGER tenants_delete_change AFTER DELETE ON tenants
BEGIN INSERT INTO catalog_changes (kind, key) VALUES ('tenant', OLD.id), ('slug', OLD.slug); END;

CREATE TRIGGER placements_insert_change AFTER INSERT ON placements
BEGIN INSERT INTO catalog_changes (kind, key) VALUES ('tenant', NEW.tenant_id); END;
CREATE TRIGGER placements_update_change AFTER UPDATE ON placements
BEGIN
    INSERT INTO catalog_changes (kind, key)
    SELECT 'tenant', OLD.tenant_id UNION SELECT 'tenant', NEW.tenant_id;
END;
CREATE TRIGGER placements_delete_change AFTER DELETE ON placements
BEGIN INSERT INTO catalog_changes (kind, key) VALUES ('tenant', OLD.tenant_id); END;

CREATE TRIGGER memberships_insert_change AFTER INSERT ON memberships
BEGIN INSERT INTO catalog_changes (kind, key) VALUES ('member', NEW.tenant_id || ':' || NEW.user_id); END;
CREATE TRIGGER memberships_update_change AFTER UPDATE ON memberships
BEGIN
    INSERT INTO catalog_changes (kind, key)
    SELECT 'member', OLD.tenant_id || ':' || OLD.user_id
    UNION SELECT 'member', NEW.tenant_id || ':' || NEW.user_id;
END;
CREATE TRIGGER memberships_delete_change AFTER DELETE ON memberships
BEGIN INSERT INTO catalog_changes (kind, key) VALUES ('member', OLD.tenant_id || ':' || OLD.user_id); END;

CREATE TRIGGER users_insert_change AFTER INSERT ON users
BEGIN INSERT INTO catalog_changes (kind, key) VALUES ('user', NEW.id); END;
CREATE TRIGGER users_update_change AFTER UPDATE ON users
BEGIN INSERT INTO catalog_changes (kind, key) SELECT 'user', OLD.id UNION SELECT 'user', NEW.id; END;
CREATE TRIGGER users_delete_change AFTER DELETE ON users
BEGIN INSERT INTO catalog_changes (kind, key) VALUES ('user', OLD.id); END;

CREATE TRIGGER domains_insert_change AFTER INSERT ON domains
BEGIN INSERT INTO catalog_changes (kind, key) VALUES ('domain', NEW.domain); END;
CREATE TRIGGER domains_update_change AFTER UPDATE ON domains
BEGIN
    INSERT INTO catalog_changes (kind, key)
    SELECT 'domain', OLD.domain UNION SELECT 'domain', NEW.domain;
END;
CREATE TRIGGER domains_delete_change AFTER DELETE ON domains
BEGIN INSERT INTO catalog_changes (kind, key) VALUES ('domain', OLD.domain); END;
"#,
    r#"
-- Custom domains are claims: pending until the domain serves the claim's token
-- (`verified_at`), and routed only then. Several tenants may claim a domain; one verifies
-- it. Domains registered before claims existed were never verified: they are pending now,
-- with a token of their own; those of deleted tenants are released.
CREATE TABLE domain_claims (
    domain      TEXT NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    token       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    verified_at TEXT,
    PRIMARY KEY (domain, tenant_id)
);
INSERT INTO domain_claims (domain, tenant_id, token, created_at)
    SELECT d.domain, d.tenant_id, lower(hex(randomblob(16))), d.created_at
    FROM domains d JOIN tenants t ON t.id = d.tenant_id WHERE t.status <> 'deleted';
INSERT INTO catalog_changes (kind, key) SELECT 'domain', domain FROM domains;
DROP TABLE domains;
ALTER TABLE domain_claims RENAME TO domains;
CREATE UNIQUE INDEX domains_verified_key ON domains (domain) WHERE verified_at IS NOT NULL;
CREATE INDEX domains_tenant_idx ON domains (tenant_id);
CREATE TRIGGER domains_insert_change AFTER INSERT ON domains
BEGIN INSERT INTO catalog_changes (kind, key) VALUES ('domain', NEW.domain); END;
CREATE TRIGGER domains_update_change AFTER UPDATE ON domains
BEGIN
    INSERT INTO catalog_changes (kind, key)
    SELECT 'domain', OLD.domain UNION SELECT 'domain', NEW.domain;
END;
CREATE TRIGGER domains_delete_change AFTER DELETE ON domains
BEGIN INSERT INTO catalog_changes (kind, key) VALUES ('domain', OLD.domain); END;
"#,
    r#"
-- Plans: a tenant's plan (NULL: the default), its overrides of the plan (JSON) and the
-- dates that suspend it when reached.
ALTER TABLE tenants ADD COLUMN plan TEXT;
ALTER TABLE tenants ADD COLUMN plan_overrides TEXT;
ALTER TABLE tenants ADD COLUMN trial_ends_at TEXT;
ALTER TABLE tenants ADD COLUMN subscription_ends_at TEXT;
CREATE INDEX tenants_trial_idx ON tenants (trial_ends_at) WHERE trial_ends_at IS NOT NULL;
CREATE INDEX tenants_subscription_idx ON tenants (subscription_ends_at)
    WHERE subscription_ends_at IS NOT NULL;
"#,
    r#"
-- Each tenant's settings: one JSON object, checked against the settings schema by the
-- engine before it is written. Readers cache it, so every change is logged.
CREATE TABLE tenant_settings (
    tenant_id  TEXT PRIMARY KEY REFERENCES tenants (id),
    document   TEXT NOT NULL CHECK (json_valid(document) AND json_type(document) = 'object'),
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL
);
CREATE TRIGGER tenant_settings_insert_change AFTER INSERT ON tenant_settings
BEGIN INSERT INTO catalog_changes (kind, key) VALUES ('settings', NEW.tenant_id); END;
CREATE TRIGGER tenant_settings_update_change AFTER UPDATE ON tenant_settings
BEGIN
    INSERT INTO catalog_changes (kind, key)
    SELECT 'settings', OLD.tenant_id UNION SELECT 'settings', NEW.tenant_id;
END;
CREATE TRIGGER tenant_settings_delete_change AFTER DELETE ON tenant_settings
BEGIN INSERT INTO catalog_changes (kind, key) VALUES ('settings', OLD.tenant_id); END;
"#,
    r#"
-- Usage metering: counts per tenant, UTC day, metric and label (requests per API key label;
-- '' otherwise), added to by each flush; the users seen per day (inserted or ignored, so
-- that processes do not count one user twice); each tenant's latest storage sample; and
-- the budget alerts raised, one per tenant, month and threshold.
CREATE TABLE usage_daily (
    tenant_id TEXT NOT NULL,
    day       TEXT NOT NULL,
    metric    TEXT NOT NULL,
    label     TEXT NOT NULL DEFAULT '',
    value     INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, day, metric, label)
) WITHOUT ROWID;
CREATE TABLE usage_active_users (
    tenant_id TEXT NOT NULL,
    day       TEXT NOT NULL,
    user_id   TEXT NOT NULL,
    PRIMARY KEY (tenant_id, day, user_id)
) WITHOUT ROWID;
CREATE TABLE storage_samples (
    tenant_id  TEXT PRIMARY KEY,
    bytes      INTEGER NOT NULL,
    sampled_at TEXT NOT NULL
);
CREATE INDEX storage_samples_at_idx ON storage_samples (sampled_at);
CREATE TABLE budget_alerts (
    tenant_id     TEXT NOT NULL,
    month         TEXT NOT NULL,
    threshold     INTEGER NOT NULL,
    cost_micros   INTEGER NOT NULL,
    budget_micros INTEGER NOT NULL,
    raised_at     TEXT NOT NULL,
    PRIMARY KEY (tenant_id, month, threshold)
);
"#,
];

/// How stale another process's catalog change may be when the read cache is checked.
const REMOTE_POLL: std::time::Duration = std::time::Duration::from_millis(2);

/// The embedded catalog.
pub struct SqliteCatalog {
    conn: Arc<Mutex<Connection>>,
    /// A second connection, only for `PRAGMA data_version`: it changes when another
    /// process commits.
    watch: Mutex<Connection>,
    /// Commits made through this catalog value (seen at once by `generation`).
    local_writes: Arc<AtomicU64>,
    /// Calls to the database (`query_count`).
    queries: AtomicU64,
    /// The last polled `data_version` and when it was polled (ns since `epoch`).
    remote: AtomicU64,
    polled_at: AtomicU64,
    epoch: std::time::Instant,
    run_dir: PathBuf,
    owner: String,
    /// Held for the life of this value: our liveness lock.
    _liveness: File,
}

impl SqliteCatalog {
    /// Opens (creating if needed) the catalog at `path` and brings its schema up to date,
    /// with the default durability.
    pub async fn open(path: &Path) -> Result<SqliteCatalog> {
        Self::open_with(path, Durability::default()).await
    }

    /// [`SqliteCatalog::open`] with commits as durable as `durability` says.
    pub async fn open_with(path: &Path, durability: Durability) -> Result<SqliteCatalog> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(&path, durability)).await?
    }

    fn open_blocking(path: &Path, durability: Durability) -> Result<SqliteCatalog> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let run_dir = dir.join("run");
        std::fs::create_dir_all(&run_dir)
            .map_err(|e| Error::io(format!("creating {}", run_dir.display()), e))?;

        sweep_dead_lock_files(&run_dir);
        let (owner, liveness) = create_liveness_file(&run_dir)?;

        let mut conn = Connection::open(path)
            .map_err(|e| Error::Catalog(format!("cannot open {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", durability.synchronous())?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate_catalog(&mut conn).map_err(|e| {
            Error::Catalog(format!(
                "cannot bring the catalog {} up to date: {e}",
                path.display()
            ))
        })?;

        let watch = Connection::open(path)
            .map_err(|e| Error::Catalog(format!("cannot open {}: {e}", path.display())))?;
        watch.busy_timeout(std::time::Duration::from_secs(10))?;
        Ok(SqliteCatalog {
            conn: Arc::new(Mutex::new(conn)),
            watch: Mutex::new(watch),
            local_writes: Arc::new(AtomicU64::new(0)),
            queries: AtomicU64::new(0),
            remote: AtomicU64::new(0),
            polled_at: AtomicU64::new(0),
            epoch: std::time::Instant::now(),
            run_dir,
            owner,
            _liveness: liveness,
        })
    }

    /// Runs `f` with the connection on a blocking thread.
    async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let local_writes = Arc::clone(&self.local_writes);
        self.queries.fetch_add(1, Ordering::Relaxed);
        let (result, wrote) = tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| Error::Internal("catalog connection poisoned".into()))?;
            let before = guard.total_changes();
            let result = f(&mut guard);
            let wrote = guard.total_changes() != before;
            if wrote {
                local_writes.fetch_add(1, Ordering::SeqCst);
            }
            Ok::<_, Error>((result, wrote))
        })
        .await??;
        if wrote {
            // Our commit moves `data_version` too: seen now, it is not taken for another
            // process's commit at the next poll (which would make readers look again).
            if let Err(e) = self.poll_remote() {
                tracing::warn!(error = %e, "polling the catalog's data version failed");
            }
        }
        result
    }

    /// Reads `PRAGMA data_version`, which moves when another connection commits.
    fn poll_remote(&self) -> Result<()> {
        let watch = self
            .watch
            .lock()
            .map_err(|_| Error::Internal("catalog watch connection poisoned".into()))?;
        let version: i64 = watch
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))?;
        let now = self.epoch.elapsed().as_nanos() as u64;
        self.remote.store(version as u64, Ordering::Release);
        self.polled_at.store(now.max(1), Ordering::Release);
        Ok(())
    }

    fn lock_file(&self, owner: &str) -> Option<PathBuf> {
        // Owners are generated by us as `<pid>-<hex>`; anything else cannot be a lock file.
        let safe = !owner.is_empty() && owner.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
        safe.then(|| self.run_dir.join(format!("{owner}.lock")))
    }
}

impl Drop for SqliteCatalog {
    fn drop(&mut self) {
        // Still locked while we remove it, so no one sees a stale file of a live owner.
        let _ = std::fs::remove_file(self.run_dir.join(format!("{}.lock", self.owner)));
    }
}

/// Creates and locks this process's `<owner>.lock`. It is locked under a temporary name
/// (`.lock.new`) and then renamed, so a `*.lock` file is always locked while its process
/// lives. A sweeper may remove the temporary file in the instant before it is locked; the
/// rename then fails and we start again.
fn create_liveness_file(run_dir: &Path) -> Result<(String, File)> {
    let mut last_error = None;
    for _ in 0..5 {
        let owner = format!("{}-{}", std::process::id(), uuid::Uuid::now_v7().simple());
        let lock_path = run_dir.join(format!("{owner}.lock"));
        let new_path = run_dir.join(format!("{owner}.lock.new"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&new_path)
            .map_err(|e| Error::io(format!("creating {}", new_path.display()), e))?;
        file.try_lock()
            .map_err(|e| Error::Catalog(format!("cannot lock {}: {e}", new_path.display())))?;
        match std::fs::rename(&new_path, &lock_path) {
            Ok(()) => return Ok((owner, file)),
            Err(e) => last_error = Some(Error::io(format!("creating {}", lock_path.display()), e)),
        }
    }
    Err(last_error.unwrap_or_else(|| Error::Internal("no liveness file".into())))
}

/// Removes the lock files of processes that died without tidying up (killed ones), and
/// the temporary files of processes killed while creating theirs.
fn sweep_dead_lock_files(run_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !(name.ends_with(".lock") || name.ends_with(".lock.new")) {
            continue;
        }
        if let Ok(file) = OpenOptions::new().write(true).open(&path) {
            if file.try_lock().is_ok() {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

fn migrate_catalog(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS catalog_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)",
    )?;
    let current: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM catalog_migrations",
        [],
        |r| r.get(0),
    )?;
    for (i, sql) in CATALOG_MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version > current {
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO catalog_migrations (version, applied_at) VALUES (?1, ?2)",
                params![version, now()],
            )?;
        }
    }
    tx.commit()
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn sample_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StorageSample> {
    Ok(StorageSample {
        tenant: r.get::<_, String>(0)?.parse().map_err(conversion)?,
        bytes: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
        sampled_at: parse_time(&r.get::<_, String>(2)?)?,
    })
}

fn parse_time(s: &str) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
}

fn conversion<E: std::error::Error + Send + Sync + 'static>(e: E) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

fn select_settings(conn: &Connection, tenant: TenantId) -> Result<Option<TenantSettings>> {
    let row = conn
        .query_row(
            "SELECT document, updated_at, updated_by FROM tenant_settings WHERE tenant_id = ?1",
            [tenant.to_string()],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    parse_time(&r.get::<_, String>(1)?)?,
                    r.get::<_, String>(2)?,
                ))
            },
        )
        .optional()?;
    row.map(|(document, updated_at, updated_by)| {
        let document = serde_json::from_str(&document).map_err(|e| {
            Error::Catalog(format!(
                "tenant {tenant}'s settings are not a JSON object: {e}"
            ))
        })?;
        Ok(TenantSettings {
            document,
            updated_at: Some(updated_at),
            updated_by: Some(updated_by),
        })
    })
    .transpose()
}

const TENANT_COLUMNS: &str =
    "t.id, t.slug, t.name, t.status, t.error, t.op_owner, t.created_at, t.updated_at, \
     p.store, p.mode, p.location, p.schema_version, \
     t.plan, t.plan_overrides, t.trial_ends_at, t.subscription_ends_at";

fn tenant_from_row(row: &Row<'_>) -> rusqlite::Result<Tenant> {
    let id: String = row.get(0)?;
    let slug: String = row.get(1)?;
    let status: String = row.get(3)?;
    let mode: String = row.get(9)?;
    Ok(Tenant {
        id: id.parse().map_err(conversion)?,
        slug: Slug::parse(&slug).map_err(conversion)?,
        name: row.get(2)?,
        status: status.parse().map_err(conversion)?,
        error: row.get(4)?,
        op_owner: row.get(5)?,
        created_at: parse_time(&row.get::<_, String>(6)?)?,
        updated_at: parse_time(&row.get::<_, String>(7)?)?,
        placement: Placement {
            store: row.get(8)?,
            mode: mode.parse::<Mode>().map_err(conversion)?,
            location: row.get(10)?,
            schema_version: row.get(11)?,
        },
        plan: row.get(12)?,
        plan_overrides: match row.get::<_, Option<String>>(13)? {
            Some(json) => serde_json::from_str(&json).map_err(conversion)?,
            None => Default::default(),
        },
        trial_ends_at: opt_time(row.get(14)?)?,
        subscription_ends_at: opt_time(row.get(15)?)?,
    })
}

/// Inserts one tenant (`provisioning`, owned by `owner`) with its placement, its owner
/// membership and its journal row, inside the caller's transaction.
fn insert_tenant_in(conn: &Connection, new: &NewTenant, owner: &str, at: &str) -> Result<Tenant> {
    let id = new.id.to_string();
    let inserted = conn.execute(
        "INSERT INTO tenants (id, slug, name, status, op_owner, created_at, updated_at, plan) \
         VALUES (?1, ?2, ?3, 'provisioning', ?4, ?5, ?5, ?6)",
        params![id, new.slug.as_str(), new.name, owner, at, new.plan],
    );
    match inserted {
        Err(e) if is_unique_violation(&e) => {
            return Err(Error::TenantExists {
                slug: new.slug.to_string(),
            })
        }
        other => other?,
    };
    conn.execute(
        "INSERT INTO placements (tenant_id, store, mode, location, schema_version, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            id,
            new.placement.store,
            new.placement.mode.as_str(),
            new.placement.location,
            new.placement.schema_version,
            at
        ],
    )?;
    if let Some(user) = new.owner {
        conn.execute(
            "INSERT INTO memberships (tenant_id, user_id, role, created_at) VALUES (?1, ?2, 'owner', ?3)",
            params![id, user.to_string(), at],
        )?;
    }
    conn.execute(
        "INSERT INTO journal (tenant_id, event, from_status, to_status, owner, at) \
         VALUES (?1, 'provision.begin', NULL, 'provisioning', ?2, ?3)",
        params![id, owner, at],
    )?;
    select_tenant(conn, "t.id = ?1", &id)?
        .ok_or_else(|| Error::Internal("inserted tenant vanished".into()))
}

/// Applies one journaled compare-and-set inside the caller's (immediate) transaction.
fn transition_in(conn: &Connection, t: &Transition<'_>, at: &str) -> Result<Tenant> {
    let id = t.id.to_string();
    let current = select_tenant(conn, "t.id = ?1", &id)?
        .ok_or_else(|| Error::Internal(format!("tenant {id} vanished")))?;
    super::check_transition(&current, t)?;
    conn.execute(
        "UPDATE tenants SET status = ?2, op_owner = ?3, error = ?4, updated_at = ?5, \
         deleted_at = CASE WHEN ?2 = 'deleted' THEN ?5 ELSE deleted_at END WHERE id = ?1",
        params![id, t.to.as_str(), t.new_owner, t.error, at],
    )?;
    if let Some(v) = t.schema_version {
        conn.execute(
            "UPDATE placements SET schema_version = ?2, updated_at = ?3 WHERE tenant_id = ?1",
            params![id, v, at],
        )?;
    }
    if t.to == TenantStatus::Deleted {
        // A deleted tenant's domains are free for anyone to claim.
        conn.execute("DELETE FROM domains WHERE tenant_id = ?1", [&id])?;
    }
    conn.execute(
        "INSERT INTO journal (tenant_id, event, from_status, to_status, owner, detail, at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            id,
            t.event,
            current.status.as_str(),
            t.to.as_str(),
            t.new_owner.or(t.expect_owner),
            t.error,
            at
        ],
    )?;
    select_tenant(conn, "t.id = ?1", &id)?
        .ok_or_else(|| Error::Internal(format!("tenant {id} vanished")))
}

const DOMAIN_COLUMNS: &str = "domain, tenant_id, token, created_at, verified_at";

fn domain_from_row(r: &Row<'_>) -> rusqlite::Result<CustomDomain> {
    Ok(CustomDomain {
        domain: r.get(0)?,
        tenant_id: r
            .get::<_, String>(1)?
            .parse::<TenantId>()
            .map_err(conversion)?,
        token: r.get(2)?,
        created_at: parse_time(&r.get::<_, String>(3)?)?,
        verified_at: r
            .get::<_, Option<String>>(4)?
            .map(|t| parse_time(&t))
            .transpose()?,
    })
}

fn select_domain(
    conn: &Connection,
    tenant: TenantId,
    domain: &str,
) -> rusqlite::Result<Option<CustomDomain>> {
    conn.query_row(
        &format!("SELECT {DOMAIN_COLUMNS} FROM domains WHERE domain = ?1 AND tenant_id = ?2"),
        params![domain, tenant.to_string()],
        domain_from_row,
    )
    .optional()
}

fn select_tenant(conn: &Connection, clause: &str, param: &str) -> rusqlite::Result<Option<Tenant>> {
    conn.query_row(
        &format!("SELECT {TENANT_COLUMNS} FROM tenants t JOIN placements p ON p.tenant_id = t.id WHERE {clause}"),
        [param],
        tenant_from_row,
    )
    .optional()
}

fn select_user(
    conn: &Connection,
    clause: &str,
    param: &str,
) -> rusqlite::Result<Option<(User, String)>> {
    conn.query_row(
        &format!(
            "SELECT id, email, is_superadmin, created_at, password_hash FROM users WHERE {clause}"
        ),
        [param],
        |r| {
            Ok((
                User {
                    id: r
                        .get::<_, String>(0)?
                        .parse::<UserId>()
                        .map_err(conversion)?,
                    email: r.get(1)?,
                    is_superadmin: r.get(2)?,
                    created_at: parse_time(&r.get::<_, String>(3)?)?,
                },
                r.get(4)?,
            ))
        },
    )
    .optional()
}

const API_KEY_COLUMNS: &str =
    "id, tenant_id, role, label, created_at, expires_at, revoked_at, last_used_at, secret_hash";

fn opt_time(s: Option<String>) -> rusqlite::Result<Option<DateTime<Utc>>> {
    s.map(|s| parse_time(&s)).transpose()
}

fn api_key_from_row(r: &Row<'_>) -> rusqlite::Result<(ApiKey, String)> {
    Ok((
        ApiKey {
            id: r.get(0)?,
            tenant_id: r
                .get::<_, Option<String>>(1)?
                .map(|t| t.parse().map_err(conversion))
                .transpose()?,
            role: r.get(2)?,
            label: r.get(3)?,
            created_at: parse_time(&r.get::<_, String>(4)?)?,
            expires_at: opt_time(r.get(5)?)?,
            revoked_at: opt_time(r.get(6)?)?,
            last_used_at: opt_time(r.get(7)?)?,
        },
        r.get(8)?,
    ))
}

fn select_api_key(conn: &Connection, id: &str) -> rusqlite::Result<Option<(ApiKey, String)>> {
    conn.query_row(
        &format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = ?1"),
        [id],
        api_key_from_row,
    )
    .optional()
}

/// Changes (`Some`) or removes (`None`) a membership, keeping at least one owner.
fn change_member(
    conn: &mut Connection,
    tenant: TenantId,
    user: UserId,
    role: Option<Role>,
) -> Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (t, u) = (tenant.to_string(), user.to_string());
    let current: Option<String> = tx
        .query_row(
            "SELECT role FROM memberships WHERE tenant_id = ?1 AND user_id = ?2",
            [&t, &u],
            |r| r.get(0),
        )
        .optional()?;
    let Some(current) = current else {
        return Ok(false);
    };
    if current == "owner" && role != Some(Role::Owner) {
        let owners: i64 = tx.query_row(
            "SELECT COUNT(*) FROM memberships WHERE tenant_id = ?1 AND role = 'owner'",
            [&t],
            |r| r.get(0),
        )?;
        if owners <= 1 {
            return Err(Error::LastOwner);
        }
    }
    match role {
        Some(role) => tx.execute(
            "UPDATE memberships SET role = ?3 WHERE tenant_id = ?1 AND user_id = ?2",
            params![t, u, role.as_str()],
        )?,
        None => tx.execute(
            "DELETE FROM memberships WHERE tenant_id = ?1 AND user_id = ?2",
            params![t, u],
        )?,
    };
    tx.commit()?;
    Ok(true)
}

/// The change-log rows after `position` (see [`Catalog::changes_since`]), from one snapshot.
fn read_changes(conn: &mut Connection, position: Option<u64>) -> Result<ChangesSince> {
    let tx = conn.transaction()?;
    let (first, last): (i64, i64) = tx.query_row(
        "SELECT COALESCE(MIN(seq), 0), COALESCE(MAX(seq), 0) FROM catalog_changes",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let head = u64::try_from(last).unwrap_or(0);
    let Some(after) = position else {
        return Ok(ChangesSince {
            position: head,
            changes: Changes::none(),
        });
    };
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    // Rows were pruned past the position (sequence numbers of committed rows have no
    // gaps), or the log is not the one the position is from, or there is too much to name.
    let changes = if after == last {
        Changes::none()
    } else if after > last
        || first > after.saturating_add(1)
        || last - after > super::CHANGES_MAX as i64
    {
        Changes::All
    } else {
        let mut changes = Changes::none();
        let mut stmt =
            tx.prepare_cached("SELECT kind, key FROM catalog_changes WHERE seq > ?1 ORDER BY seq")?;
        let mut rows = stmt.query([after])?;
        while let Some(row) = rows.next()? {
            let (kind, key): (String, String) = (row.get(0)?, row.get(1)?);
            changes.add_encoded(&kind, &key);
        }
        changes
    };
    Ok(ChangesSince {
        position: head,
        changes,
    })
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

#[async_trait]
impl Catalog for SqliteCatalog {
    fn owner(&self) -> &str {
        &self.owner
    }

    async fn is_alive(&self, owner: &str) -> Result<bool> {
        if owner == self.owner {
            return Ok(true);
        }
        let Some(path) = self.lock_file(owner) else {
            return Ok(false);
        };
        tokio::task::spawn_blocking(move || {
            let file = match OpenOptions::new().write(true).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
            };
            match file.try_lock() {
                Ok(()) => {
                    // Nobody holds it: the owner is gone. Tidy its lock file.
                    let _ = std::fs::remove_file(&path);
                    Ok(false)
                }
                Err(std::fs::TryLockError::WouldBlock) => Ok(true),
                Err(std::fs::TryLockError::Error(e)) => {
                    Err(Error::io(format!("locking {}", path.display()), e))
                }
            }
        })
        .await?
    }

    async fn insert_tenant(&self, new: &NewTenant) -> Result<Tenant> {
        let new = new.clone();
        let owner = self.owner.clone();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let tenant = insert_tenant_in(&tx, &new, &owner, &now())?;
            tx.commit()?;
            Ok(tenant)
        })
        .await
    }

    async fn insert_tenant_capped(&self, new: &NewTenant, max_owned: u32) -> Result<Tenant> {
        let new = new.clone();
        let owner = self.owner.clone();
        self.call(move |conn| {
            // `BEGIN IMMEDIATE` holds the write lock: the count and the insert are atomic.
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(user) = new.owner {
                let owned: i64 = tx.query_row(
                    "SELECT count(*) FROM memberships m JOIN tenants t ON t.id = m.tenant_id \
                     WHERE m.user_id = ?1 AND m.role = 'owner' AND t.status <> 'deleted'",
                    [user.to_string()],
                    |r| r.get(0),
                )?;
                if owned >= i64::from(max_owned) {
                    return Err(Error::TenantLimitReached { max: max_owned });
                }
            }
            let tenant = insert_tenant_in(&tx, &new, &owner, &now())?;
            tx.commit()?;
            Ok(tenant)
        })
        .await
    }

    async fn insert_tenants(&self, new: &[NewTenant]) -> Result<Vec<Result<Tenant>>> {
        let new = new.to_vec();
        let owner = self.owner.clone();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let at = now();
            let mut outcomes = Vec::with_capacity(new.len());
            for n in &new {
                // A taken slug fails its own statement only; the transaction goes on.
                match insert_tenant_in(&tx, n, &owner, &at) {
                    Err(e @ Error::TenantExists { .. }) => outcomes.push(Err(e)),
                    other => outcomes.push(Ok(other?)),
                }
            }
            tx.commit()?;
            Ok(outcomes)
        })
        .await
    }

    async fn activate_provisioned(&self, done: &[(TenantId, i64)]) -> Result<Vec<Result<Tenant>>> {
        let done = done.to_vec();
        let owner = self.owner.clone();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let at = now();
            let mut outcomes = Vec::with_capacity(done.len());
            for (id, version) in done {
                let settled = transition_in(
                    &tx,
                    &Transition {
                        id,
                        from: &[TenantStatus::Provisioning],
                        to: TenantStatus::Active,
                        expect_owner: Some(&owner),
                        new_owner: None,
                        error: None,
                        schema_version: Some(version),
                        event: "provision.done",
                    },
                    &at,
                );
                match settled {
                    Err(e @ (Error::InvalidTransition { .. } | Error::TenantBusy { .. })) => {
                        outcomes.push(Err(e))
                    }
                    other => outcomes.push(Ok(other?)),
                }
            }
            tx.commit()?;
            Ok(outcomes)
        })
        .await
    }

    async fn tenant(&self, id: TenantId) -> Result<Option<Tenant>> {
        self.call(move |conn| Ok(select_tenant(conn, "t.id = ?1", &id.to_string())?))
            .await
    }

    async fn tenant_by_slug(&self, slug: &Slug) -> Result<Option<Tenant>> {
        let slug = slug.to_string();
        self.call(move |conn| {
            Ok(select_tenant(
                conn,
                "t.slug = ?1 AND t.status <> 'deleted'",
                &slug,
            )?)
        })
        .await
    }

    async fn list_tenants(&self, filter: &TenantFilter) -> Result<Vec<Tenant>> {
        let filter = filter.clone();
        self.call(move |conn| {
            let mut sql = format!(
                "SELECT {TENANT_COLUMNS} FROM tenants t JOIN placements p ON p.tenant_id = t.id WHERE 1 = 1"
            );
            let mut values: Vec<rusqlite::types::Value> = Vec::new();
            if !filter.include_deleted {
                sql.push_str(" AND t.status <> 'deleted'");
            }
            if let Some(statuses) = &filter.statuses {
                let marks = vec!["?"; statuses.len()].join(", ");
                sql.push_str(&format!(" AND t.status IN ({marks})"));
                values.extend(statuses.iter().map(|s| s.as_str().to_owned().into()));
            }
            if let Some(v) = filter.schema_below {
                sql.push_str(" AND p.schema_version < ?");
                values.push(v.into());
            }
            sql.push_str(" ORDER BY t.slug, t.created_at");
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(values), tenant_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn transition(&self, t: Transition<'_>) -> Result<Tenant> {
        let (id, from, to, error, schema_version) =
            (t.id, t.from.to_vec(), t.to, t.error, t.schema_version);
        let expect_owner = t.expect_owner.map(str::to_owned);
        let new_owner = t.new_owner.map(str::to_owned);
        let event = t.event.to_owned();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let t = Transition {
                id,
                from: &from,
                to,
                expect_owner: expect_owner.as_deref(),
                new_owner: new_owner.as_deref(),
                error,
                schema_version,
                event: &event,
            };
            let tenant = transition_in(&tx, &t, &now())?;
            tx.commit()?;
            Ok(tenant)
        })
        .await
    }

    async fn set_schema_version(&self, id: TenantId, version: i64) -> Result<()> {
        self.call(move |conn| {
            conn.execute(
                "UPDATE placements SET schema_version = ?2, updated_at = ?3 \
                 WHERE tenant_id = ?1 AND schema_version < ?2",
                params![id.to_string(), version, now()],
            )?;
            Ok(())
        })
        .await
    }

    async fn set_plan(&self, id: TenantId, state: &PlanState) -> Result<Tenant> {
        let state = state.clone();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let id = id.to_string();
            let at = now();
            let overrides = if state.overrides.is_empty() {
                None
            } else {
                Some(
                    serde_json::to_string(&state.overrides)
                        .map_err(|e| Error::Internal(e.to_string()))?,
                )
            };
            let time = |t: Option<DateTime<Utc>>| {
                t.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
            };
            let status: Option<String> = tx
                .query_row(
                    "UPDATE tenants SET plan = ?2, plan_overrides = ?3, trial_ends_at = ?4, \
                     subscription_ends_at = ?5, updated_at = ?6 \
                     WHERE id = ?1 AND status <> 'deleted' RETURNING status",
                    params![
                        id,
                        state.plan,
                        overrides,
                        time(state.trial_ends_at),
                        time(state.subscription_ends_at),
                        at
                    ],
                    |r| r.get(0),
                )
                .optional()?;
            let status = status.ok_or_else(|| Error::TenantNotFound { slug: id.clone() })?;
            tx.execute(
                "INSERT INTO journal (tenant_id, event, from_status, to_status, detail, at) \
                 VALUES (?1, 'plan.update', ?2, ?2, ?3, ?4)",
                params![id, status, state.detail, at],
            )?;
            let tenant = select_tenant(&tx, "t.id = ?1", &id)?
                .ok_or_else(|| Error::Internal(format!("tenant {id} vanished")))?;
            tx.commit()?;
            Ok(tenant)
        })
        .await
    }

    async fn quota_counts(&self, tenant: TenantId) -> Result<QuotaCounts> {
        self.call(move |conn| {
            let (members, api_keys): (i64, i64) = conn.query_row(
                "SELECT (SELECT count(*) FROM memberships WHERE tenant_id = ?1) \
                 + (SELECT count(*) FROM invitations WHERE tenant_id = ?1 \
                    AND accepted_at IS NULL AND expires_at > ?2), \
                 (SELECT count(*) FROM api_keys WHERE tenant_id = ?1 AND revoked_at IS NULL \
                    AND (expires_at IS NULL OR expires_at > ?2))",
                params![tenant.to_string(), now()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok(QuotaCounts {
                members: u64::try_from(members).unwrap_or(0),
                api_keys: u64::try_from(api_keys).unwrap_or(0),
            })
        })
        .await
    }

    async fn lapsed_tenants(&self, now: DateTime<Utc>) -> Result<Vec<Tenant>> {
        let at = now.to_rfc3339_opts(SecondsFormat::Micros, true);
        self.call(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {TENANT_COLUMNS} FROM tenants t JOIN placements p ON p.tenant_id = t.id \
                 WHERE t.status = 'active' AND (t.trial_ends_at <= ?1 OR t.subscription_ends_at <= ?1) \
                 ORDER BY t.slug"
            ))?;
            let rows = stmt
                .query_map([at], tenant_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn status_counts(&self) -> Result<Vec<StatusCount>> {
        self.call(|conn| {
            let mut stmt = conn.prepare(
                "SELECT t.status, p.schema_version, COUNT(*) FROM tenants t \
                 JOIN placements p ON p.tenant_id = t.id WHERE t.status <> 'deleted' \
                 GROUP BY t.status, p.schema_version ORDER BY t.status, p.schema_version",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    let status: String = r.get(0)?;
                    Ok(StatusCount {
                        status: status.parse().map_err(conversion)?,
                        schema_version: r.get(1)?,
                        count: r.get::<_, i64>(2)? as u64,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn counts_by_status_and_mode(&self) -> Result<Vec<(TenantStatus, Mode, u64)>> {
        self.call(|conn| {
            let mut stmt = conn.prepare(
                "SELECT t.status, p.mode, COUNT(*) FROM tenants t \
                 JOIN placements p ON p.tenant_id = t.id WHERE t.status <> 'deleted' \
                 GROUP BY t.status, p.mode",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    let status: String = r.get(0)?;
                    let mode: String = r.get(1)?;
                    Ok((
                        status.parse().map_err(conversion)?,
                        mode.parse().map_err(conversion)?,
                        r.get::<_, i64>(2)? as u64,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn journal(&self, id: TenantId) -> Result<Vec<JournalEntry>> {
        self.call(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT seq, tenant_id, event, from_status, to_status, owner, detail, at \
                 FROM journal WHERE tenant_id = ?1 ORDER BY seq",
            )?;
            let rows = stmt
                .query_map([id.to_string()], |r| {
                    Ok(JournalEntry {
                        seq: r.get(0)?,
                        tenant_id: r.get::<_, String>(1)?.parse().map_err(conversion)?,
                        event: r.get(2)?,
                        from_status: r.get(3)?,
                        to_status: r.get(4)?,
                        owner: r.get(5)?,
                        detail: r.get(6)?,
                        at: parse_time(&r.get::<_, String>(7)?)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn acquire_lock(&self, name: &str) -> Result<()> {
        // Read the holder, check its liveness outside the transaction (it touches the
        // file system), then compare-and-set on the holder we saw.
        for _ in 0..3 {
            let lock_name = name.to_owned();
            let holder: Option<(String, String)> = self
                .call(move |conn| {
                    Ok(conn
                        .query_row(
                            "SELECT owner, acquired_at FROM locks WHERE name = ?1",
                            [lock_name],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .optional()?)
                })
                .await?;
            if let Some((owner, since)) = &holder {
                if self.is_alive(owner).await? {
                    return Err(Error::OperationInProgress {
                        operation: name.to_owned(),
                        owner: owner.split('-').next().unwrap_or(owner).to_owned(),
                        since: since.clone(),
                    });
                }
            }
            let lock_name = name.to_owned();
            let me = self.owner.clone();
            let seen = holder.map(|(o, _)| o);
            let taken = self
                .call(move |conn| {
                    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                    let n = match &seen {
                        None => tx.execute(
                            "INSERT OR IGNORE INTO locks (name, owner, acquired_at) VALUES (?1, ?2, ?3)",
                            params![lock_name, me, now()],
                        )?,
                        Some(dead) => tx.execute(
                            "UPDATE locks SET owner = ?2, acquired_at = ?3 WHERE name = ?1 AND owner = ?4",
                            params![lock_name, me, now(), dead],
                        )?,
                    };
                    tx.commit()?;
                    Ok(n == 1)
                })
                .await?;
            if taken {
                return Ok(());
            }
        }
        Err(Error::Catalog(format!("could not take the {name} lock")))
    }

    async fn release_lock(&self, name: &str) -> Result<()> {
        let name = name.to_owned();
        let me = self.owner.clone();
        self.call(move |conn| {
            conn.execute(
                "DELETE FROM locks WHERE name = ?1 AND owner = ?2",
                params![name, me],
            )?;
            Ok(())
        })
        .await
    }

    async fn start_migration_run(&self, target: i64) -> Result<i64> {
        let me = self.owner.clone();
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO migration_runs (owner, target_version, started_at) VALUES (?1, ?2, ?3)",
                params![me, target, now()],
            )?;
            Ok(conn.last_insert_rowid())
        })
        .await
    }

    async fn record_tenant_migrations(&self, results: &[TenantMigrationResult]) -> Result<()> {
        let results = results.to_vec();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let at = now();
            {
                let mut record = tx.prepare_cached(
                    "INSERT INTO tenant_migrations (run_id, tenant_id, slug, from_version, to_version, ok, error, finished_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                let mut raise = tx.prepare_cached(
                    "UPDATE placements SET schema_version = ?2, updated_at = ?3 \
                     WHERE tenant_id = ?1 AND schema_version < ?2",
                )?;
                for r in &results {
                    let id = r.tenant_id.to_string();
                    record.execute(params![
                        r.run_id,
                        id,
                        r.slug,
                        r.from_version,
                        r.to_version,
                        r.ok,
                        r.error,
                        at
                    ])?;
                    if r.ok {
                        raise.execute(params![id, r.to_version, at])?;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn finish_migration_run(&self, run_id: i64, ok: u64, failed: u64) -> Result<()> {
        self.call(move |conn| {
            conn.execute(
                "UPDATE migration_runs SET finished_at = ?2, ok = ?3, failed = ?4 WHERE id = ?1",
                params![run_id, now(), ok as i64, failed as i64],
            )?;
            Ok(())
        })
        .await
    }

    async fn failed_migrations(&self) -> Result<Vec<TenantMigrationResult>> {
        self.call(|conn| {
            let mut stmt = conn.prepare(
                "SELECT m.run_id, m.tenant_id, m.slug, m.from_version, m.to_version, m.ok, m.error \
                 FROM tenant_migrations m \
                 JOIN tenants t ON t.id = m.tenant_id AND t.status <> 'deleted' \
                 JOIN placements p ON p.tenant_id = m.tenant_id AND p.schema_version < m.to_version \
                 WHERE m.id = (SELECT MAX(id) FROM tenant_migrations l WHERE l.tenant_id = m.tenant_id) \
                   AND m.ok = 0 ORDER BY m.slug",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(TenantMigrationResult {
                        run_id: r.get(0)?,
                        tenant_id: r.get::<_, String>(1)?.parse().map_err(conversion)?,
                        slug: r.get(2)?,
                        from_version: r.get(3)?,
                        to_version: r.get(4)?,
                        ok: r.get(5)?,
                        error: r.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn failed_migration(&self, tenant: TenantId) -> Result<Option<TenantMigrationResult>> {
        let id = tenant.to_string();
        self.call(move |conn| {
            conn.query_row(
                "SELECT m.run_id, m.slug, m.from_version, m.to_version, m.error \
                 FROM tenant_migrations m \
                 JOIN placements p ON p.tenant_id = m.tenant_id AND p.schema_version < m.to_version \
                 WHERE m.tenant_id = ?1 AND m.ok = 0 \
                   AND m.id = (SELECT MAX(id) FROM tenant_migrations l WHERE l.tenant_id = ?1)",
                [&id],
                |r| {
                    Ok(TenantMigrationResult {
                        run_id: r.get(0)?,
                        tenant_id: tenant,
                        slug: r.get(1)?,
                        from_version: r.get(2)?,
                        to_version: r.get(3)?,
                        ok: false,
                        error: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(Error::from)
        })
        .await
    }

    async fn registered_migrations(&self, dialect: Dialect) -> Result<Vec<RegisteredMigration>> {
        self.call(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT version, file, checksum FROM tenant_schema WHERE dialect = ?1 ORDER BY version",
            )?;
            let rows = stmt
                .query_map([dialect.as_str()], |r| {
                    Ok(RegisteredMigration {
                        version: r.get(0)?,
                        file: r.get(1)?,
                        checksum: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn register_migrations(&self, dialect: Dialect, scripts: &[Script<'_>]) -> Result<()> {
        let rows: Vec<(i64, String, String)> = scripts
            .iter()
            .map(|s| (s.version, s.file.to_owned(), s.checksum.to_owned()))
            .collect();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let at = now();
            for (version, file, checksum) in rows {
                tx.execute(
                    "INSERT OR IGNORE INTO tenant_schema (dialect, version, file, checksum, first_applied_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![dialect.as_str(), version, file, checksum, at],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn insert_user(&self, new: &NewUser, invitation: Option<&str>) -> Result<User> {
        let new = new.clone();
        let invitation = invitation.map(str::to_owned);
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let at = now();
            let email_norm = new.email.to_lowercase();
            let inserted = tx.execute(
                "INSERT INTO users (id, email, email_norm, password_hash, is_superadmin, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                params![
                    new.id.to_string(),
                    new.email,
                    email_norm,
                    new.password_hash,
                    new.is_superadmin,
                    at
                ],
            );
            match inserted {
                Err(e) if is_unique_violation(&e) => return Err(Error::EmailTaken),
                other => other?,
            };
            if let Some(hash) = invitation {
                let found: Option<(String, String)> = tx
                    .query_row(
                        "SELECT i.tenant_id, i.role FROM invitations i \
                         JOIN tenants t ON t.id = i.tenant_id AND t.status NOT IN ('deleted', 'suspended') \
                         WHERE i.token_hash = ?1 AND i.email_norm = ?2 \
                           AND i.accepted_at IS NULL AND i.expires_at > ?3",
                        params![hash, email_norm, at],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                let Some((tenant_id, role)) = found else {
                    return Err(Error::InvalidInvitation);
                };
                tx.execute(
                    "UPDATE invitations SET accepted_at = ?2 WHERE token_hash = ?1",
                    params![hash, at],
                )?;
                tx.execute(
                    "INSERT INTO memberships (tenant_id, user_id, role, created_at) VALUES (?1, ?2, ?3, ?4)",
                    params![tenant_id, new.id.to_string(), role, at],
                )?;
            }
            let user = select_user(&tx, "id = ?1", &new.id.to_string())?
                .map(|(u, _)| u)
                .ok_or_else(|| Error::Internal("inserted user vanished".into()))?;
            tx.commit()?;
            Ok(user)
        })
        .await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        self.call(move |conn| Ok(select_user(conn, "id = ?1", &id.to_string())?.map(|(u, _)| u)))
            .await
    }

    async fn user_by_email(&self, email_norm: &str) -> Result<Option<(User, String)>> {
        let email = email_norm.to_owned();
        self.call(move |conn| Ok(select_user(conn, "email_norm = ?1", &email)?))
            .await
    }

    async fn memberships(&self, user: UserId) -> Result<Vec<Membership>> {
        self.call(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT t.id, t.slug, t.name, m.role FROM memberships m \
                 JOIN tenants t ON t.id = m.tenant_id AND t.status <> 'deleted' \
                 WHERE m.user_id = ?1 ORDER BY t.slug",
            )?;
            let rows = stmt
                .query_map([user.to_string()], |r| {
                    Ok(Membership {
                        tenant_id: r.get::<_, String>(0)?.parse().map_err(conversion)?,
                        slug: r.get(1)?,
                        name: r.get(2)?,
                        role: r.get::<_, String>(3)?.parse::<Role>().map_err(conversion)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn membership_role(&self, tenant: TenantId, user: UserId) -> Result<Option<Role>> {
        self.call(move |conn| {
            let role: Option<String> = conn
                .query_row(
                    "SELECT role FROM memberships WHERE tenant_id = ?1 AND user_id = ?2",
                    [tenant.to_string(), user.to_string()],
                    |r| r.get(0),
                )
                .optional()?;
            role.map(|r| r.parse()).transpose()
        })
        .await
    }

    async fn insert_refresh_token(&self, token: &NewRefreshToken) -> Result<()> {
        let t = token.clone();
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO refresh_tokens (token_hash, family, user_id, tenant_id, expires_at, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    t.token_hash,
                    t.family,
                    t.user_id.to_string(),
                    t.tenant_id.map(|id| id.to_string()),
                    t.expires_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                    now()
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn use_refresh_token(&self, token_hash: &str) -> Result<RefreshUse> {
        let hash = token_hash.to_owned();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let row: Option<(String, String, Option<String>, String, Option<String>, Option<String>)> = tx
                .query_row(
                    "SELECT family, user_id, tenant_id, expires_at, used_at, revoked_at \
                     FROM refresh_tokens WHERE token_hash = ?1",
                    [&hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
                )
                .optional()?;
            let Some((family, user_id, tenant_id, expires_at, used_at, revoked_at)) = row else {
                return Ok(RefreshUse::Invalid);
            };
            let at = now();
            if used_at.is_some() || revoked_at.is_some() {
                tx.execute(
                    "UPDATE refresh_tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE family = ?1",
                    params![family, at],
                )?;
                tx.commit()?;
                return Ok(RefreshUse::Replayed);
            }
            if parse_time(&expires_at)? <= Utc::now() {
                return Ok(RefreshUse::Invalid);
            }
            tx.execute(
                "UPDATE refresh_tokens SET used_at = ?2 WHERE token_hash = ?1",
                params![hash, at],
            )?;
            tx.commit()?;
            Ok(RefreshUse::Valid {
                user_id: user_id.parse()?,
                tenant_id: tenant_id.map(|t| t.parse()).transpose()?,
                family,
            })
        })
        .await
    }

    async fn revoke_refresh_token(&self, token_hash: &str) -> Result<()> {
        let hash = token_hash.to_owned();
        self.call(move |conn| {
            conn.execute(
                "UPDATE refresh_tokens SET revoked_at = COALESCE(revoked_at, ?2) \
                 WHERE family = (SELECT family FROM refresh_tokens WHERE token_hash = ?1)",
                params![hash, now()],
            )?;
            Ok(())
        })
        .await
    }

    async fn signing_keys(&self, since: DateTime<Utc>) -> Result<Vec<(String, String)>> {
        let since = since.to_rfc3339_opts(SecondsFormat::Micros, true);
        self.call(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT kid, secret FROM signing_keys \
                 WHERE retired_at IS NULL OR retired_at > ?1 ORDER BY created_at DESC, kid DESC",
            )?;
            let rows = stmt
                .query_map([since], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn add_signing_key(&self, kid: &str, secret_hex: &str) -> Result<()> {
        let (kid, secret) = (kid.to_owned(), secret_hex.to_owned());
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let at = now();
            tx.execute(
                "UPDATE signing_keys SET retired_at = ?1 WHERE retired_at IS NULL",
                [&at],
            )?;
            tx.execute(
                "INSERT INTO signing_keys (kid, secret, created_at) VALUES (?1, ?2, ?3)",
                params![kid, secret, at],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn seal_signing_key(&self, kid: &str, clear: &str, sealed: &str) -> Result<()> {
        let (kid, clear, sealed) = (kid.to_owned(), clear.to_owned(), sealed.to_owned());
        self.call(move |conn| {
            conn.execute(
                "UPDATE signing_keys SET secret = ?3 WHERE kid = ?1 AND secret = ?2",
                params![kid, clear, sealed],
            )?;
            Ok(())
        })
        .await
    }

    async fn insert_api_key(&self, key: &NewApiKey) -> Result<ApiKey> {
        let k = key.clone();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let at = now();
            if let (Some(max), Some(tenant)) = (k.max, k.tenant_id) {
                let live: i64 = tx.query_row(
                    "SELECT count(*) FROM api_keys WHERE tenant_id = ?1 AND revoked_at IS NULL \
                     AND (expires_at IS NULL OR expires_at > ?2)",
                    params![tenant.to_string(), at],
                    |r| r.get(0),
                )?;
                super::refuse_past("api_keys", live, max)?;
            }
            tx.execute(
                "INSERT INTO api_keys (id, tenant_id, role, label, secret_hash, created_by, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    k.id,
                    k.tenant_id.map(|t| t.to_string()),
                    k.role,
                    k.label,
                    k.secret_hash,
                    k.created_by,
                    at,
                    k.expires_at.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true)),
                ],
            )?;
            let key = select_api_key(&tx, &k.id)?
                .map(|(key, _)| key)
                .ok_or_else(|| Error::Internal("inserted key vanished".into()))?;
            tx.commit()?;
            Ok(key)
        })
        .await
    }

    async fn api_key(&self, id: &str) -> Result<Option<(ApiKey, String)>> {
        let id = id.to_owned();
        self.call(move |conn| Ok(select_api_key(conn, &id)?)).await
    }

    async fn api_keys(&self, tenant: Option<TenantId>) -> Result<Vec<ApiKey>> {
        self.call(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id IS ?1 ORDER BY created_at DESC, id"
            ))?;
            let rows = stmt
                .query_map([tenant.map(|t| t.to_string())], |r| Ok(api_key_from_row(r)?.0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn revoke_api_key(&self, tenant: Option<TenantId>, id: &str) -> Result<bool> {
        let id = id.to_owned();
        self.call(move |conn| {
            let n = conn.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?3) WHERE id = ?1 AND tenant_id IS ?2",
                params![id, tenant.map(|t| t.to_string()), now()],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// Our own commits count at once; other processes' commits are polled from
    /// `PRAGMA data_version` at most every `REMOTE_POLL` (a poll costs file locking).
    fn generation(&self) -> Result<u64> {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let polled = self.polled_at.load(Ordering::Acquire);
        if polled == 0 || now.saturating_sub(polled) >= REMOTE_POLL.as_nanos() as u64 {
            self.poll_remote()?;
        }
        Ok(self
            .remote
            .load(Ordering::Acquire)
            .wrapping_add(self.local_writes.load(Ordering::SeqCst)))
    }

    fn query_count(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    async fn changes_since(&self, position: Option<u64>) -> Result<ChangesSince> {
        self.call(move |conn| read_changes(conn, position)).await
    }

    async fn touch_api_keys(&self, touches: &[(String, DateTime<Utc>)]) -> Result<()> {
        let touches: Vec<(String, String)> = touches
            .iter()
            .map(|(id, at)| (id.clone(), at.to_rfc3339_opts(SecondsFormat::Micros, true)))
            .collect();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for (id, at) in touches {
                tx.execute(
                    "UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
                    params![id, at],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn members(&self, tenant: TenantId) -> Result<Vec<Member>> {
        self.call(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT u.id, u.email, m.role, m.created_at FROM memberships m \
                 JOIN users u ON u.id = m.user_id WHERE m.tenant_id = ?1 ORDER BY u.email_norm",
            )?;
            let rows = stmt
                .query_map([tenant.to_string()], |r| {
                    Ok(Member {
                        user_id: r
                            .get::<_, String>(0)?
                            .parse::<UserId>()
                            .map_err(conversion)?,
                        email: r.get(1)?,
                        role: r.get::<_, String>(2)?.parse::<Role>().map_err(conversion)?,
                        created_at: parse_time(&r.get::<_, String>(3)?)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn add_member(&self, tenant: TenantId, user: UserId, role: Role) -> Result<()> {
        self.call(move |conn| {
            let inserted = conn.execute(
                "INSERT INTO memberships (tenant_id, user_id, role, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![tenant.to_string(), user.to_string(), role.as_str(), now()],
            );
            match inserted {
                Err(e) if is_unique_violation(&e) => Err(Error::MemberExists),
                other => other.map(|_| ()).map_err(Error::from),
            }
        })
        .await
    }

    async fn set_member_role(&self, tenant: TenantId, user: UserId, role: Role) -> Result<bool> {
        self.call(move |conn| change_member(conn, tenant, user, Some(role)))
            .await
    }

    async fn remove_member(&self, tenant: TenantId, user: UserId) -> Result<bool> {
        self.call(move |conn| change_member(conn, tenant, user, None))
            .await
    }

    async fn insert_invitation(&self, inv: &NewInvitation) -> Result<()> {
        let inv = inv.clone();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let at = now();
            if let Some(max) = inv.max_members {
                let taken: i64 = tx.query_row(
                    "SELECT (SELECT count(*) FROM memberships WHERE tenant_id = ?1) \
                     + (SELECT count(*) FROM invitations WHERE tenant_id = ?1 \
                        AND accepted_at IS NULL AND expires_at > ?2)",
                    params![inv.tenant_id.to_string(), at],
                    |r| r.get(0),
                )?;
                super::refuse_past("members", taken, max)?;
            }
            tx.execute(
                "INSERT INTO invitations (token_hash, tenant_id, email_norm, role, created_by, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    inv.token_hash,
                    inv.tenant_id.to_string(),
                    inv.email_norm,
                    inv.role.as_str(),
                    inv.created_by,
                    at,
                    inv.expires_at.to_rfc3339_opts(SecondsFormat::Micros, true)
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn accept_invitation(
        &self,
        token_hash: &str,
        user: UserId,
        email_norm: &str,
    ) -> Result<TenantId> {
        let (hash, email) = (token_hash.to_owned(), email_norm.to_owned());
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let at = now();
            let found: Option<(String, String)> = tx
                .query_row(
                    "SELECT i.tenant_id, i.role FROM invitations i \
                     JOIN tenants t ON t.id = i.tenant_id \
                       AND t.status NOT IN ('deleted', 'suspended') \
                     WHERE i.token_hash = ?1 AND i.email_norm = ?2 \
                       AND i.accepted_at IS NULL AND i.expires_at > ?3",
                    params![hash, email, at],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((tenant_id, role)) = found else {
                return Err(Error::InvalidInvitation);
            };
            let inserted = tx.execute(
                "INSERT INTO memberships (tenant_id, user_id, role, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![tenant_id, user.to_string(), role, at],
            );
            match inserted {
                Err(e) if is_unique_violation(&e) => return Err(Error::MemberExists),
                other => other?,
            };
            tx.execute(
                "UPDATE invitations SET accepted_at = ?2 WHERE token_hash = ?1",
                params![hash, at],
            )?;
            tx.commit()?;
            tenant_id.parse()
        })
        .await
    }

    async fn insert_domain(
        &self,
        tenant: TenantId,
        domain: &str,
        token: &str,
    ) -> Result<CustomDomain> {
        let (domain, token) = (domain.to_owned(), token.to_owned());
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let taken: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM domains WHERE domain = ?1 \
                 AND (tenant_id = ?2 OR verified_at IS NOT NULL))",
                params![domain, tenant.to_string()],
                |r| r.get(0),
            )?;
            if taken {
                return Err(Error::DomainTaken);
            }
            tx.execute(
                "INSERT INTO domains (domain, tenant_id, token, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![domain, tenant.to_string(), token, now()],
            )?;
            let claim = select_domain(&tx, tenant, &domain)?
                .ok_or_else(|| Error::Internal("inserted domain vanished".into()))?;
            tx.commit()?;
            Ok(claim)
        })
        .await
    }

    async fn domains(&self, tenant: TenantId) -> Result<Vec<CustomDomain>> {
        self.call(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {DOMAIN_COLUMNS} FROM domains WHERE tenant_id = ?1 ORDER BY domain"
            ))?;
            let rows = stmt
                .query_map([tenant.to_string()], domain_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn verify_domain(&self, tenant: TenantId, domain: &str) -> Result<Option<CustomDomain>> {
        let domain = domain.to_owned();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let updated = tx.execute(
                "UPDATE domains SET verified_at = ?3 \
                 WHERE domain = ?1 AND tenant_id = ?2 AND verified_at IS NULL",
                params![domain, tenant.to_string(), now()],
            );
            match updated {
                Err(e) if is_unique_violation(&e) => return Err(Error::DomainTaken),
                other => other?,
            };
            // Verified: the other claims can never be.
            tx.execute(
                "DELETE FROM domains WHERE domain = ?1 AND tenant_id <> ?2 AND verified_at IS NULL",
                params![domain, tenant.to_string()],
            )?;
            let claim = select_domain(&tx, tenant, &domain)?;
            tx.commit()?;
            Ok(claim)
        })
        .await
    }

    async fn remove_domain(&self, tenant: TenantId, domain: &str) -> Result<bool> {
        let domain = domain.to_owned();
        self.call(move |conn| {
            let n = conn.execute(
                "DELETE FROM domains WHERE domain = ?1 AND tenant_id = ?2",
                params![domain, tenant.to_string()],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn tenant_by_domain(&self, domain: &str) -> Result<Option<Tenant>> {
        let domain = domain.to_owned();
        self.call(move |conn| {
            Ok(select_tenant(
                conn,
                "t.id = (SELECT tenant_id FROM domains WHERE domain = ?1 AND verified_at IS NOT NULL) \
                 AND t.status <> 'deleted'",
                &domain,
            )?)
        })
        .await
    }

    async fn append_audit(
        &self,
        actor: &str,
        tenant: Option<TenantId>,
        action: &str,
        detail: Option<&str>,
    ) -> Result<()> {
        let (actor, action, detail) = (
            actor.to_owned(),
            action.to_owned(),
            detail.map(str::to_owned),
        );
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO audit (at, actor, tenant_id, action, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![now(), actor, tenant.map(|t| t.to_string()), action, detail],
            )?;
            Ok(())
        })
        .await
    }

    async fn audit(&self, tenant: TenantId) -> Result<Vec<AuditEntry>> {
        self.call(move |conn| {
            let mut stmt = conn.prepare(
                "SELECT seq, at, actor, tenant_id, action, detail FROM audit WHERE tenant_id = ?1 ORDER BY seq",
            )?;
            let rows = stmt
                .query_map([tenant.to_string()], |r| {
                    Ok(AuditEntry {
                        seq: r.get(0)?,
                        at: parse_time(&r.get::<_, String>(1)?)?,
                        actor: r.get(2)?,
                        tenant_id: r
                            .get::<_, Option<String>>(3)?
                            .map(|t| t.parse().map_err(conversion))
                            .transpose()?,
                        action: r.get(4)?,
                        detail: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn tenant_settings(&self, tenant: TenantId) -> Result<Option<TenantSettings>> {
        self.call(move |conn| select_settings(conn, tenant)).await
    }

    async fn put_tenant_settings(
        &self,
        tenant: TenantId,
        document: &Map<String, Value>,
        actor: &str,
    ) -> Result<TenantSettings> {
        let text = serde_json::to_string(document)
            .map_err(|e| Error::Internal(format!("settings do not serialize: {e}")))?;
        let detail = crate::settings::audit_detail(document);
        let actor = actor.to_owned();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let at = now();
            tx.execute(
                "INSERT INTO tenant_settings (tenant_id, document, updated_at, updated_by) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (tenant_id) DO UPDATE SET \
                 document = excluded.document, updated_at = excluded.updated_at, \
                 updated_by = excluded.updated_by",
                params![tenant.to_string(), text, at, actor],
            )?;
            tx.execute(
                "INSERT INTO audit (at, actor, tenant_id, action, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    at,
                    actor,
                    tenant.to_string(),
                    crate::settings::AUDIT_ACTION,
                    detail
                ],
            )?;
            let stored = select_settings(&tx, tenant)?
                .ok_or_else(|| Error::Internal("written settings vanished".into()))?;
            tx.commit()?;
            Ok(stored)
        })
        .await
    }

    async fn setting(&self, key: &str) -> Result<Option<String>> {
        let key = key.to_owned();
        self.call(move |conn| {
            Ok(conn
                .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| {
                    r.get(0)
                })
                .optional()?)
        })
        .await
    }

    async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        let key = key.to_owned();
        let value = value.to_owned();
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )?;
            Ok(())
        })
        .await
    }

    async fn add_usage(&self, batch: &UsageBatch) -> Result<()> {
        let batch = batch.clone();
        self.call(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut add = tx.prepare_cached(
                    "INSERT INTO usage_daily (tenant_id, day, metric, label, value) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (tenant_id, day, metric, label) \
                     DO UPDATE SET value = value + excluded.value",
                )?;
                for c in &batch.counts {
                    add.execute(params![
                        c.tenant.to_string(),
                        c.day.to_string(),
                        c.metric.as_str(),
                        c.label,
                        i64::try_from(c.value).unwrap_or(i64::MAX)
                    ])?;
                }
                let mut seen = tx.prepare_cached(
                    "INSERT INTO usage_active_users (tenant_id, day, user_id) VALUES (?1, ?2, ?3) \
                     ON CONFLICT DO NOTHING",
                )?;
                for (tenant, day, user) in &batch.active_users {
                    seen.execute(params![tenant.to_string(), day.to_string(), user.to_string()])?;
                }
                let mut latest = tx.prepare_cached(
                    "INSERT INTO storage_samples (tenant_id, bytes, sampled_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (tenant_id) DO UPDATE SET bytes = excluded.bytes, \
                     sampled_at = excluded.sampled_at WHERE excluded.sampled_at > sampled_at",
                )?;
                let mut day_value = tx.prepare_cached(
                    "INSERT INTO usage_daily (tenant_id, day, metric, label, value) \
                     VALUES (?1, ?2, 'storage_bytes', '', ?3) \
                     ON CONFLICT (tenant_id, day, metric, label) DO UPDATE SET value = excluded.value",
                )?;
                for sample in &batch.samples {
                    let bytes = i64::try_from(sample.bytes).unwrap_or(i64::MAX);
                    let tenant = sample.tenant.to_string();
                    let at = sample.sampled_at.to_rfc3339_opts(SecondsFormat::Micros, true);
                    if latest.execute(params![tenant, bytes, at])? > 0 {
                        day_value.execute(params![
                            tenant,
                            sample.sampled_at.date_naive().to_string(),
                            bytes
                        ])?;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn usage(&self, tenant: TenantId, from: NaiveDate, to: NaiveDate) -> Result<UsageRows> {
        self.call(move |conn| {
            let args = params![tenant.to_string(), from.to_string(), to.to_string()];
            let mut stmt = conn.prepare_cached(
                "SELECT day, metric, label, value FROM usage_daily \
                 WHERE tenant_id = ?1 AND day >= ?2 AND day <= ?3 \
                 UNION ALL SELECT day, 'active_users', '', count(*) FROM usage_active_users \
                 WHERE tenant_id = ?1 AND day >= ?2 AND day <= ?3 GROUP BY day",
            )?;
            let mut counts = Vec::new();
            let mut rows = stmt.query(args)?;
            while let Some(r) = rows.next()? {
                let day: String = r.get(0)?;
                let metric: String = r.get(1)?;
                // A metric this version does not know (written by a newer one) is skipped.
                let Ok(metric) = metric.parse::<Metric>() else {
                    continue;
                };
                counts.push(UsageCount {
                    tenant,
                    day: day
                        .parse()
                        .map_err(|e| Error::Catalog(format!("usage day {day:?}: {e}")))?,
                    metric,
                    label: r.get(2)?,
                    value: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                });
            }
            let distinct: i64 = conn.query_row(
                "SELECT count(DISTINCT user_id) FROM usage_active_users \
                 WHERE tenant_id = ?1 AND day >= ?2 AND day <= ?3",
                args,
                |r| r.get(0),
            )?;
            Ok(UsageRows {
                counts,
                distinct_users: u64::try_from(distinct).unwrap_or(0),
            })
        })
        .await
    }

    async fn storage_samples(&self, since: Option<DateTime<Utc>>) -> Result<Vec<StorageSample>> {
        let since = since
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
            .unwrap_or_default();
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT tenant_id, bytes, sampled_at FROM storage_samples WHERE sampled_at >= ?1",
            )?;
            let rows = stmt
                .query_map([since], sample_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn storage_sample(&self, tenant: TenantId) -> Result<Option<StorageSample>> {
        self.call(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT tenant_id, bytes, sampled_at FROM storage_samples WHERE tenant_id = ?1",
                    [tenant.to_string()],
                    sample_from_row,
                )
                .optional()?)
        })
        .await
    }

    async fn tenants_unsampled(&self, day: NaiveDate, limit: u32) -> Result<Vec<Tenant>> {
        let day_start = format!("{day}T00:00:00.000000Z");
        self.call(move |conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {TENANT_COLUMNS} FROM tenants t JOIN placements p ON p.tenant_id = t.id \
                 LEFT JOIN storage_samples s ON s.tenant_id = t.id \
                 WHERE t.status = 'active' AND (s.sampled_at IS NULL OR s.sampled_at < ?1) \
                 ORDER BY t.id LIMIT ?2"
            ))?;
            let rows = stmt
                .query_map(params![day_start, limit], tenant_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn raise_budget_alert(&self, alert: &BudgetAlert) -> Result<bool> {
        let alert = alert.clone();
        self.call(move |conn| {
            let n = conn.execute(
                "INSERT INTO budget_alerts \
                 (tenant_id, month, threshold, cost_micros, budget_micros, raised_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                params![
                    alert.tenant_id.to_string(),
                    alert.month,
                    alert.threshold,
                    alert.cost.micros(),
                    alert.budget.micros(),
                    alert.raised_at.to_rfc3339_opts(SecondsFormat::Micros, true)
                ],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn budget_alerts(
        &self,
        tenant: TenantId,
        month: Option<&str>,
    ) -> Result<Vec<BudgetAlert>> {
        let month = month.map(str::to_owned);
        self.call(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT tenant_id, month, threshold, cost_micros, budget_micros, raised_at \
                 FROM budget_alerts WHERE tenant_id = ?1 AND (?2 IS NULL OR month = ?2) \
                 ORDER BY month DESC, threshold",
            )?;
            let rows = stmt
                .query_map(params![tenant.to_string(), month], |r| {
                    Ok(BudgetAlert {
                        tenant_id: r.get::<_, String>(0)?.parse().map_err(conversion)?,
                        month: r.get(1)?,
                        threshold: r.get(2)?,
                        cost: Money(r.get(3)?),
                        budget: Money(r.get(4)?),
                        raised_at: parse_time(&r.get::<_, String>(5)?)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .await
    }

    async fn sqlite_synchronous(&self) -> Result<Option<String>> {
        self.call(|conn| {
            let level: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
            Ok(Some(crate::store::synchronous_name(level).to_owned()))
        })
        .await
    }
}
