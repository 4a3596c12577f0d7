//! The SQLite store: a directory holding one database file per tenant, `<tenant-id>.db`.
//!
//! A tenant file is built under a temporary name (`<tenant-id>.db.tmp`), migrated to the
//! full schema, synced, and only then renamed into place. So a file named `<id>.db`
//! always holds a complete schema, and recovery can decide from the file system alone
//! whether an interrupted provisioning got that far.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use super::cache::{HandleCache, Open, Slot};
use crate::config::{CacheConfig, Durability, EngineConfig, STATEMENT_CACHE};
use crate::data::ops::RowGuard;
use crate::data::value::Value;
use crate::data::{DataOp, DataOutput, Object, Schema};
use crate::error::{is_sqlite_full, Error, Result};
use crate::fault::{self, points};
use crate::migrations::{Dialect, MigrationSet, Script};
use crate::tenant::{Mode, Tenant, TenantId};

/// The per-tenant migration ledger. Internal tables start with `_` and are never exposed.
pub const LEDGER_TABLE: &str = "_tenancy_migrations";

/// One open tenant database.
pub struct TenantDb {
    conn: Mutex<Connection>,
}

impl TenantDb {
    /// Runs `f` on the connection. Blocking: call from a blocking thread.
    pub fn with_conn<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| Error::Internal("tenant connection poisoned".into()))?;
        f(&mut conn)
    }
}

/// How a SQLite store opens tenant databases.
#[derive(Debug, Clone, Copy)]
pub struct SqliteSettings {
    pub cache: CacheConfig,
    pub durability: Durability,
    /// Each open tenant database's page cache (KiB).
    pub page_cache_kib: u64,
}

impl SqliteSettings {
    pub fn of(config: &EngineConfig) -> SqliteSettings {
        SqliteSettings {
            cache: config.cache,
            durability: config.durability,
            page_cache_kib: config.memory.page_cache_kib(config.cache.max_open),
        }
    }
}

impl Default for SqliteSettings {
    fn default() -> Self {
        SqliteSettings::of(&EngineConfig::new(""))
    }
}

/// Sets SQLite's soft heap limit, which holds for every SQLite database of this process:
/// above it, SQLite frees cached pages before it allocates more.
pub fn set_heap_limit(bytes: u64) -> Result<()> {
    let conn = Connection::open_in_memory()?;
    conn.pragma_update(
        None,
        "soft_heap_limit",
        i64::try_from(bytes).unwrap_or(i64::MAX),
    )?;
    Ok(())
}

/// The name of a value of SQLite's `synchronous` pragma as it reads back.
pub fn synchronous_name(level: i64) -> &'static str {
    match level {
        0 => "OFF",
        1 => "NORMAL",
        2 => "FULL",
        3 => "EXTRA",
        _ => "unknown",
    }
}

/// A directory of tenant files with its handle cache.
pub struct SqliteStore {
    pub name: String,
    dir: PathBuf,
    settings: SqliteSettings,
    handles: HandleCache<TenantDb>,
    /// One template build at a time in this process.
    template_lock: Mutex<()>,
}

impl SqliteStore {
    pub fn open(name: &str, dir: &Path, settings: SqliteSettings) -> Result<SqliteStore> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating store folder {}", dir.display()), e))?;
        Ok(SqliteStore {
            name: name.to_owned(),
            dir: dir.to_path_buf(),
            settings,
            handles: HandleCache::new(name, settings.cache),
            template_lock: Mutex::new(()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file name a tenant's database has in this store.
    pub fn file_name(id: TenantId) -> String {
        format!("{id}.db")
    }

    pub fn path(&self, location: &str) -> PathBuf {
        self.dir.join(location)
    }

    fn tmp_path(&self, location: &str) -> PathBuf {
        self.dir.join(format!("{location}.tmp"))
    }

    pub fn settings(&self) -> &SqliteSettings {
        &self.settings
    }

    /// The tenant's cached handle, opening the file if needed (waiting for a slot when
    /// `max_open` are open). Never creates a file.
    pub async fn handle(&self, id: TenantId, location: &str) -> Result<Arc<Open<TenantDb>>> {
        let (path, settings) = (self.path(location), self.settings);
        self.handles
            .get_or_open(id, move || {
                Ok(TenantDb {
                    conn: Mutex::new(open_existing(&path, &settings)?),
                })
            })
            .await
    }

    /// The cached handle if open, else a fresh connection that is not cached (fleet
    /// operations must not flush the working set of hot tenants) but holds a slot of
    /// the bound while it is open. `f` runs on a blocking thread.
    pub async fn with_tenant_conn<T, F>(
        self: Arc<Self>,
        id: TenantId,
        location: String,
        f: F,
    ) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = match self.handles.get(id)? {
            Some(db) => Ok(db),
            None => Err(self.handles.slot().await?),
        };
        tokio::task::spawn_blocking(move || match conn {
            Ok(db) => db.with_conn(f),
            Err(_slot) => f(&mut open_existing(&self.path(&location), &self.settings)?),
        })
        .await?
    }

    /// Tenant databases open now (never more than `cache.max_open`).
    pub fn open_handles(&self) -> u64 {
        self.handles.open_count()
    }

    /// A slot of the open-handle bound, for a database opened outside the cache.
    async fn slot(&self) -> Result<Slot> {
        self.handles.slot().await
    }

    /// Builds the tenant's database with every migration and places it at its final name.
    /// Returns the schema version. On error nothing is left on disk.
    ///
    /// The file is a copy of a template: a database migrated once per migration set (named
    /// by the checksum of its scripts, in `templates/` beside the store's folder), so provisioning costs a file
    /// copy rather than running every migration again.
    pub fn build_file(&self, location: &str, migrations: &MigrationSet) -> Result<i64> {
        let scripts = migrations.scripts(Dialect::Sqlite)?;
        let (template, version) = self.template(&scripts)?;
        let tmp = self.tmp_path(location);
        let done = self.path(location);
        let result = (|| {
            remove_db_files(&tmp)?;
            // On a full disk the copy stops part-way (ENOSPC): the partial file is
            // removed below, so only complete files ever sit in the store.
            std::fs::copy(&template, &tmp)
                .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
            sync_file(&tmp)?;
            fault::pause(points::PROVISION_FILE_BUILT);
            std::fs::rename(&tmp, &done)
                .map_err(|e| Error::io(format!("placing {}", done.display()), e))?;
            sync_dir(&self.dir)?;
            Ok(version)
        })();
        if result.is_err() {
            let _ = remove_db_files(&tmp);
        }
        result
    }

    /// The template database of these scripts, built (under a temporary name, renamed
    /// when complete) if it does not exist yet, and its schema version.
    fn template(&self, scripts: &[Script<'_>]) -> Result<(PathBuf, i64)> {
        let version = scripts.last().map_or(0, |s| s.version);
        let digest = crate::migrations::scripts_digest(scripts);
        // Beside the store's folder, not in it: the store holds tenant files only.
        let dir = match self.dir.parent() {
            Some(parent) => parent.join("templates"),
            None => self.dir.join("templates"),
        };
        let path = dir.join(format!("v{version}-{digest}.db"));
        if path.exists() {
            return Ok((path, version));
        }
        let _guard = self
            .template_lock
            .lock()
            .map_err(|_| Error::Internal("template lock poisoned".into()))?;
        if path.exists() {
            return Ok((path, version));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        // Unique per process: two processes building the same template each place a
        // complete file; the second rename replaces the first with an identical one.
        let tmp = dir.join(format!("{digest}.{}.tmp", std::process::id()));
        let result = (|| {
            remove_db_files(&tmp)?;
            let mut conn = Connection::open_with_flags(
                &tmp,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
            )
            .map_err(|e| Error::store_sqlite(&tmp, e))?;
            configure(&conn, &self.settings).map_err(|e| Error::store_sqlite(&tmp, e))?;
            apply_scripts(&mut conn, scripts, None)?;
            // Closing checkpoints the WAL into the file, so one file holds everything.
            conn.close()
                .map_err(|(_, e)| Error::store_sqlite(&tmp, e))?;
            sync_file(&tmp)?;
            std::fs::rename(&tmp, &path)
                .map_err(|e| Error::io(format!("placing {}", path.display()), e))?;
            sync_dir(&dir)
        })();
        if result.is_err() {
            let _ = remove_db_files(&tmp);
        }
        result.map(|()| (path, version))
    }

    /// The schema version of a placed tenant file, or `None` if there is none.
    pub fn inspect_file(&self, location: &str) -> Result<Option<i64>> {
        let path = self.path(location);
        if !path.exists() {
            return Ok(None);
        }
        let conn = open_existing(&path, &self.settings)?;
        let version = ledger_version(&conn).map_err(|e| Error::store_sqlite(&path, e))?;
        Ok(Some(version))
    }

    /// Closes and removes every file of a tenant (its database, WAL, temporary build).
    pub fn remove_files(&self, id: TenantId, location: &str) -> Result<()> {
        self.handles.evict(id);
        remove_db_files(&self.path(location))?;
        remove_db_files(&self.tmp_path(location))?;
        sync_dir(&self.dir)
    }

    /// The tenants that have files in this store, each with whether the file is a
    /// temporary build (`<id>.db.tmp…`) rather than a placed database.
    pub fn tenant_ids_on_disk(&self) -> Result<HashSet<(TenantId, bool)>> {
        let mut found = HashSet::new();
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("listing {}", self.dir.display()), e))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| Error::io(format!("listing {}", self.dir.display()), e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some((stem, rest)) = name.split_once(".db") else {
                continue;
            };
            let Ok(id) = stem.parse::<TenantId>() else {
                continue;
            };
            found.insert((id, rest.starts_with(".tmp")));
        }
        Ok(found)
    }

    /// Removes a leftover temporary build.
    pub fn remove_tmp(&self, location: &str) -> Result<()> {
        remove_db_files(&self.tmp_path(location))
    }
}

#[async_trait]
impl super::TenantStore for SqliteStore {
    fn name(&self) -> &str {
        &self.name
    }

    async fn storage_bytes(self: Arc<Self>, tenant: &Tenant) -> Result<u64> {
        let path = self.path(&tenant.placement.location);
        tokio::task::spawn_blocking(move || {
            let db = std::fs::metadata(&path)
                .map_err(|e| Error::io(format!("measuring {}", path.display()), e))?;
            let mut wal = path.clone().into_os_string();
            wal.push("-wal");
            // No WAL file: everything is checkpointed into the database.
            let wal = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
            Ok(db.len() + wal)
        })
        .await?
    }

    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    fn location_for(&self, mode: Mode, id: TenantId) -> Result<String> {
        match mode {
            Mode::Database => Ok(SqliteStore::file_name(id)),
            mode => Err(Error::ModeNotSupported {
                store: self.name.clone(),
                kind: "files",
                mode: mode.to_string(),
            }),
        }
    }

    fn schema_shape(&self, _: Mode) -> &'static str {
        "sqlite"
    }

    async fn build(self: Arc<Self>, tenant: &Tenant, migrations: Arc<MigrationSet>) -> Result<i64> {
        let location = tenant.placement.location.clone();
        tokio::task::spawn_blocking(move || self.build_file(&location, &migrations)).await?
    }

    async fn inspect(self: Arc<Self>, tenant: &Tenant) -> Result<Option<i64>> {
        let location = tenant.placement.location.clone();
        let slot = self.slot().await?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            self.inspect_file(&location)
        })
        .await?
    }

    async fn remove(self: Arc<Self>, tenant: &Tenant) -> Result<()> {
        let (id, location) = (tenant.id, tenant.placement.location.clone());
        tokio::task::spawn_blocking(move || self.remove_files(id, &location)).await?
    }

    async fn migrate(
        self: Arc<Self>,
        tenant: &Tenant,
        migrations: Arc<MigrationSet>,
    ) -> Result<(i64, i64)> {
        let (id, location) = (tenant.id, tenant.placement.location.clone());
        self.with_tenant_conn(id, location, move |conn| {
            apply_migrations(conn, &migrations)
                .inspect(|_| fault::pause(points::MIGRATE_TENANT_COMMITTED))
        })
        .await
    }

    async fn introspect(self: Arc<Self>, tenant: &Tenant) -> Result<Schema> {
        let version = tenant.placement.schema_version;
        self.on_handle(tenant, move |conn| {
            crate::data::schema::introspect(conn, version)
        })
        .await
    }

    async fn data(
        self: Arc<Self>,
        tenant: &Tenant,
        schema: Arc<Schema>,
        table: String,
        op: DataOp,
        guards: Vec<RowGuard>,
    ) -> Result<DataOutput> {
        self.on_handle(tenant, move |conn| {
            crate::data::sqlite::execute(conn, schema.table(&table)?, &op, &guards)
        })
        .await
    }

    async fn query(
        self: Arc<Self>,
        tenant: &Tenant,
        sql: String,
        params: Vec<Value>,
    ) -> Result<Vec<Object>> {
        self.on_handle(tenant, move |conn| {
            crate::data::sqlite::query(conn, &sql, &params)
        })
        .await
    }

    async fn explain_list(
        self: Arc<Self>,
        tenant: &Tenant,
        schema: Arc<Schema>,
        table: String,
        params: Vec<(String, String)>,
    ) -> Result<Vec<String>> {
        self.on_handle(tenant, move |conn| {
            let t = schema.table(&table)?;
            let q = crate::data::parse_list(t, &params)?;
            let list = crate::sql::builder::list(&crate::sql::Sqlite, t, &q)?;
            crate::data::sqlite::explain(conn, t, &list.page)
        })
        .await
    }

    async fn rehearse(self: Arc<Self>, _mode: Mode, migrations: Arc<MigrationSet>) -> Result<()> {
        tokio::task::spawn_blocking(move || {
            let mut scratch = Connection::open_in_memory()
                .map_err(|e| Error::tenant_db("opening a scratch database", e))?;
            let scripts = migrations.scripts(Dialect::Sqlite)?;
            apply_scripts(&mut scratch, &scripts, None).map(|_| ())
        })
        .await?
    }

    async fn check(self: Arc<Self>) -> Result<()> {
        match std::fs::metadata(&self.dir) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(Error::Store {
                path: self.dir.clone(),
                reason: "not a folder".into(),
            }),
            Err(e) => Err(Error::io(format!("store folder {}", self.dir.display()), e)),
        }
    }
}

impl SqliteStore {
    /// Runs `f` on the tenant's cached handle, on a blocking thread.
    pub(crate) async fn on_handle<T, F>(self: Arc<Self>, tenant: &Tenant, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let db = self.handle(tenant.id, &tenant.placement.location).await?;
        tokio::task::spawn_blocking(move || db.with_conn(f)).await?
    }
}

/// The settings of every connection to a tenant database: WAL, the configured
/// durability, foreign keys, and a page cache and statement cache of bounded size.
fn configure(conn: &Connection, settings: &SqliteSettings) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", settings.durability.synchronous())?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    let kib = i64::try_from(settings.page_cache_kib).unwrap_or(i64::MAX);
    conn.pragma_update(None, "cache_size", -kib)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

fn open_existing(path: &Path, settings: &SqliteSettings) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::store_sqlite(path, e))?;
    configure(&conn, settings).map_err(|e| Error::store_sqlite(path, e))?;
    Ok(conn)
}

fn ledger_version(conn: &Connection) -> rusqlite::Result<i64> {
    let exists: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [LEDGER_TABLE],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(0);
    }
    conn.query_row(
        &format!("SELECT COALESCE(MAX(version), 0) FROM {LEDGER_TABLE}"),
        [],
        |r| r.get(0),
    )
}

/// Brings one tenant database up to the latest migration, in one transaction: either every
/// pending migration is applied and recorded in the ledger, or none is.
/// Returns `(from, to)` versions.
pub fn apply_migrations(conn: &mut Connection, migrations: &MigrationSet) -> Result<(i64, i64)> {
    let scripts = migrations.scripts(Dialect::Sqlite)?;
    apply_scripts(conn, &scripts, Some(points::MIGRATE_TENANT_APPLIED))
}

fn apply_scripts(
    conn: &mut Connection,
    scripts: &[Script<'_>],
    pause_before_commit: Option<&str>,
) -> Result<(i64, i64)> {
    // A full disk rolls the transaction back: the tenant stays whole at its old version.
    let sqlite = |e: rusqlite::Error| Error::tenant_db("migrating a tenant database", e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite)?;
    tx.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} (\
            version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at TEXT NOT NULL)"
    ))
    .map_err(sqlite)?;
    let applied: Vec<(i64, String, String)> = {
        let mut stmt = tx
            .prepare(&format!(
                "SELECT version, name, checksum FROM {LEDGER_TABLE} ORDER BY version"
            ))
            .map_err(sqlite)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(sqlite)?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sqlite)?;
        rows
    };
    let from = crate::migrations::check_applied(&applied, scripts)?;
    let latest = scripts.last().map_or(0, |s| s.version);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    for script in scripts.iter().filter(|s| s.version > from) {
        tx.execute_batch(script.sql).map_err(|e| {
            if is_sqlite_full(&e) {
                return Error::StorageFull {
                    context: format!("applying migration {}", script.file),
                };
            }
            Error::MigrationFailed {
                file: script.file.to_owned(),
                reason: one_line(&e.to_string()),
            }
        })?;
        tx.execute(
            &format!(
                "INSERT INTO {LEDGER_TABLE} (version, name, checksum, applied_at) VALUES (?1, ?2, ?3, ?4)"
            ),
            params![script.version, script.name, script.checksum, now],
        )
        .map_err(sqlite)?;
    }
    if let Some(point) = pause_before_commit {
        if latest > from {
            fault::pause(point);
        }
    }
    tx.commit().map_err(sqlite)?;
    Ok((from, latest))
}

/// SQLite quotes the failing SQL in its messages; keep them on one line for logs and lists.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn remove_db_files(path: &Path) -> Result<()> {
    let mut paths = vec![path.to_path_buf()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        paths.push(PathBuf::from(p));
    }
    for p in paths {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing {}", p.display()), e)),
        }
    }
    Ok(())
}

fn sync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(format!("syncing {}", path.display()), e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(format!("syncing {}", dir.display()), e))
}
