//! A PostgreSQL store: one server, holding tenants in any of three modes (DESIGN §3).
//!
//! - `database`: a database per tenant, `<prefix>_<tenant id hex>`, created with
//!   `CREATE DATABASE` and migrated in one transaction. A database without a complete
//!   ledger is a half-created one: recovery drops it.
//! - `schema`: a schema per tenant, `t_<tenant id hex>`, in the store's database. The
//!   schema, its tables and its ledger are created in one transaction, so a schema that
//!   exists is complete.
//! - `shared`: every tenant's rows in the tables of the `tenancy_shared` schema, made
//!   multi-tenant by [`crate::transform`], behind row-level security. Migrations run once
//!   per store; a tenant is a catalog row.
//!
//! Every identifier the store puts in SQL is one it generated (from a tenant id) or read
//! from configuration, and is quoted; every value is bound as a parameter.

use std::sync::Arc;

use async_trait::async_trait;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::pgpool::{PgConn, PgPools};
use crate::config::PoolLimits;
use crate::data::ops::RowGuard;
use crate::data::schema::quote;
use crate::data::value::Value;
use crate::data::{postgres as data, DataOp, DataOutput, Object, Schema};
use crate::error::{Error, Result};
use crate::migrations::{Dialect, MigrationSet, Script};
use crate::pgconnect::PgConfig;
use crate::sql::Postgres;
use crate::store::LEDGER_TABLE;
use crate::tenant::{Mode, Tenant, TenantId};

/// The schema that holds the tables of `shared` tenants.
pub const SHARED_SCHEMA: &str = "tenancy_shared";

/// How a data role's comment says which deployment created it, before the mark.
const DATA_ROLE_MARK: &str = "tenancy data role of deployment ";

/// How to reach one PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStoreConfig {
    pub name: String,
    /// Connects as the role that creates databases, schemas and tables (migrations).
    pub url: String,
    /// The role `shared` tenants' requests run as: neither superuser nor BYPASSRLS.
    /// `None`: the engine creates one ([`PgStoreConfig::data_role`]).
    pub data_url: Option<String>,
    /// The data role to create when `data_url` is not given.
    pub data_role: String,
    /// Password of the created data role (generated and kept sealed in the catalog).
    pub data_password: String,
    /// This deployment's mark on the data role it creates (generated hex, kept in the
    /// catalog): a role that exists without this mark belongs to another deployment and
    /// is never taken over. `None`: a deployment from before marks, which adopts the
    /// unmarked role it created then.
    pub data_role_mark: Option<String>,
    /// Tenant databases are named `<prefix>_<tenant id hex>`.
    pub database_prefix: String,
    pub limits: PoolLimits,
}

/// A PostgreSQL store.
pub struct PgStore {
    pub name: String,
    admin: PgConfig,
    data: PgConfig,
    data_role: Option<String>,
    data_password: String,
    data_role_mark: Option<String>,
    prefix: String,
    pools: Arc<PgPools>,
    /// The audit of the shared schema: `None` until it ran, then why it failed (if it did).
    audit_failure: std::sync::Mutex<Option<Option<String>>>,
    /// The template database this process last found complete (database mode).
    template: std::sync::Mutex<Option<String>>,
    /// One template build at a time in this process (other processes may build too).
    template_build: tokio::sync::Mutex<()>,
    /// The data role made sure of, once per process.
    data_role_ready: tokio::sync::OnceCell<()>,
}

/// A transaction on a tenant's data with the tenant context set: `search_path` pinned to
/// the tenant's schema and, in `shared` mode, `tenancy.tenant_id` set, both local to the
/// transaction so that nothing outlives it. Dropped without [`TenantSession::commit`], the
/// connection is closed (and the transaction with it) rather than pooled.
pub struct TenantSession {
    /// Not reusable until the transaction ends ([`PgConn::discard`] / [`PgConn::reuse`]).
    conn: PgConn,
}

impl TenantSession {
    /// The connection, inside the session's transaction.
    pub fn client(&self) -> &Client {
        &self.conn
    }

    pub async fn commit(self) -> Result<()> {
        self.end("COMMIT").await
    }

    pub async fn rollback(self) -> Result<()> {
        self.end("ROLLBACK").await
    }

    async fn end(mut self, sql: &str) -> Result<()> {
        self.conn
            .batch_execute(sql)
            .await
            .map_err(|e| Error::TenantDb(e.to_string()))?;
        self.conn.reuse();
        Ok(())
    }
}

impl PgStore {
    pub fn open(config: PgStoreConfig) -> Result<PgStore> {
        let bad_url = |which: &str, e: String| Error::StoreUnavailable {
            store: config.name.clone(),
            reason: format!("its {which}: {e}"),
        };
        let admin = PgConfig::parse(&config.url).map_err(|e| bad_url("url", e))?;
        if admin.get_dbname().is_none() {
            return Err(Error::StoreUnavailable {
                store: config.name.clone(),
                reason: "its url names no database".into(),
            });
        }
        let (data, data_role) = match &config.data_url {
            Some(url) => (
                PgConfig::parse(url).map_err(|e| bad_url("data_url", e))?,
                None,
            ),
            None => {
                let mut data = admin.clone();
                data.user(&config.data_role);
                data.password(config.data_password.as_bytes());
                (data, Some(config.data_role.clone()))
            }
        };
        valid_generated_name(&config.database_prefix, "database_prefix")?;
        if let Some(role) = &data_role {
            valid_generated_name(role, "data_role")?;
        }
        Ok(PgStore {
            pools: PgPools::with_background_role(
                &config.name,
                config.limits.clone(),
                admin.get_user().unwrap_or(""),
            ),
            name: config.name,
            admin,
            data,
            data_role,
            data_password: config.data_password,
            data_role_mark: config.data_role_mark,
            prefix: config.database_prefix,
            audit_failure: std::sync::Mutex::new(None),
            template: std::sync::Mutex::new(None),
            template_build: tokio::sync::Mutex::new(()),
            data_role_ready: tokio::sync::OnceCell::new(),
        })
    }

    pub fn pools(&self) -> &Arc<PgPools> {
        &self.pools
    }

    /// Where a tenant of this mode lives in this store.
    pub fn location_of(&self, mode: Mode, id: TenantId) -> String {
        match mode {
            Mode::Database => format!("{}_{}", self.prefix, id.0.simple()),
            Mode::Schema => format!("t_{}", id.0.simple()),
            Mode::Shared => id.to_string(),
        }
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> Error {
        Error::StoreUnavailable {
            store: self.name.clone(),
            reason: e.to_string(),
        }
    }

    fn db_error(&self, e: tokio_postgres::Error) -> Error {
        if let Some(db) = e.as_db_error() {
            Error::TenantDb(format!("{} ({})", db.message(), db.code().code()))
        } else {
            self.unavailable(e)
        }
    }

    fn database_config(&self, database: &str) -> PgConfig {
        let mut config = self.admin.clone();
        config.dbname(database);
        config
    }

    /// A connection to a `database`-mode tenant's database for its data, as the data role:
    /// its schema is `public`, set once when the connection opens, so its requests need no
    /// context.
    fn tenant_database_config(&self, database: &str) -> PgConfig {
        let mut config = self.data.clone();
        config.dbname(database);
        let options = match config.get_options() {
            Some(own) => format!("{own} -c search_path=public"),
            None => "-c search_path=public".to_owned(),
        };
        config.options(&options);
        config
    }

    async fn admin_conn(&self) -> Result<PgConn> {
        self.pools.get(&self.admin).await
    }

    /// Creates the tenant's database, schema, or (shared) makes sure the shared tables are
    /// current. Returns the tenant's schema version. On error nothing is left behind.
    pub async fn provision(
        &self,
        mode: Mode,
        location: &str,
        migrations: &MigrationSet,
    ) -> Result<i64> {
        if mode != Mode::Shared {
            self.data_role_once().await?;
        }
        match mode {
            Mode::Database => {
                let version = self.copy_template(location, migrations).await?;
                crate::fault::pause_async(crate::fault::points::PROVISION_FILE_BUILT).await;
                Ok(version)
            }
            Mode::Schema => {
                let mut conn = self.admin_conn().await?;
                let (_, version) = self.apply(&mut conn, Some(location), migrations).await?;
                Ok(version)
            }
            Mode::Shared => self.migrate_shared(migrations).await.map(|(_, v)| v),
        }
    }

    /// Creates a tenant's database as a copy of the template. The copy is complete the
    /// moment it exists: CREATE DATABASE commits whole or not at all. A database of that
    /// name left by an earlier attempt for this tenant (its outcome unknown) is kept if
    /// complete and replaced otherwise.
    async fn copy_template(&self, location: &str, migrations: &MigrationSet) -> Result<i64> {
        for attempt in 0..2 {
            let (template, version) = self.template(migrations).await?;
            let created = self
                .admin_conn()
                .await?
                .batch_execute(&format!(
                    "CREATE DATABASE {} TEMPLATE {}",
                    quote(location),
                    quote(&template)
                ))
                .await;
            let Err(e) = created else {
                return Ok(version);
            };
            match e.code() {
                // Replaced by a newer process's template meanwhile: find it, and again.
                Some(c) if *c == SqlState::UNDEFINED_DATABASE && attempt == 0 => {
                    self.forget_template();
                }
                Some(c) if *c == SqlState::DUPLICATE_DATABASE && attempt == 0 => {
                    if self.inspect_location(Mode::Database, location).await? == Some(version) {
                        return Ok(version);
                    }
                    self.drop_database(location).await?;
                }
                Some(_) => return Err(self.db_error(e)),
                None => {
                    // The connection broke: the database may or may not exist. Nothing
                    // may stay behind for a tenant about to be marked failed.
                    let _ = self.drop_database(location).await;
                    return Err(self.db_error(e));
                }
            }
        }
        Err(Error::Internal(format!(
            "could not create database {location}"
        )))
    }

    /// The template database-mode tenants are copied from: a database migrated once per
    /// migration set and named `<prefix>_tpl_v<version>_<digest>` only when complete —
    /// it is built under a name of its own (`<prefix>_tpl_b<unix time>_<random>`),
    /// closed to connections, and renamed last, so a database with the final name is
    /// always whole (as a SQLite file is built under `.tmp` and renamed). Two processes
    /// may build at once: the first rename wins and the other build is dropped. One
    /// connection at a time, so a budget of one connection suffices. Once it exists,
    /// templates of lower versions are dropped, best effort.
    async fn template(&self, migrations: &MigrationSet) -> Result<(String, i64)> {
        let scripts = migrations.scripts(Dialect::Postgres)?;
        let version = scripts.last().map_or(0, |s| s.version);
        let family = format!("{}_tpl_", self.prefix);
        let name = format!(
            "{family}v{version}_{}",
            crate::migrations::scripts_digest(&scripts)
        );
        let known = || self.template.lock().ok().and_then(|t| t.clone()).as_ref() == Some(&name);
        if known() {
            return Ok((name, version));
        }
        let _building = self.template_build.lock().await;
        if known() {
            return Ok((name, version));
        }
        if !self.database_exists(&name).await? {
            self.build_template(&family, &name, migrations).await?;
            self.drop_older_templates(&family, version).await;
        }
        if let Ok(mut t) = self.template.lock() {
            *t = Some(name.clone());
        }
        Ok((name, version))
    }

    async fn database_exists(&self, name: &str) -> Result<bool> {
        Ok(self
            .admin_conn()
            .await?
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
            .await
            .map_err(|e| self.db_error(e))?
            .is_some())
    }

    async fn build_template(
        &self,
        family: &str,
        name: &str,
        migrations: &MigrationSet,
    ) -> Result<()> {
        let db = |e: tokio_postgres::Error| self.db_error(e);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let build = format!("{family}b{now}_{:08x}", rand::random::<u32>());
        self.data_role_once().await?;
        self.admin_conn()
            .await?
            .batch_execute(&format!("CREATE DATABASE {}", quote(&build)))
            .await
            .map_err(db)?;
        let built = async {
            let mut conn = self.pools.get(&self.database_config(&build)).await?;
            self.apply(&mut conn, None, migrations).await?;
            conn.discard();
            drop(conn);
            self.pools.close_database(&build);
            let admin = self.admin_conn().await?;
            admin
                .batch_execute(&format!(
                    "ALTER DATABASE {} WITH ALLOW_CONNECTIONS false",
                    quote(&build)
                ))
                .await
                .map_err(db)?;
            // Waits (up to PostgreSQL's 5 s) for the closed connection's backend to go.
            match admin
                .batch_execute(&format!(
                    "ALTER DATABASE {} RENAME TO {}",
                    quote(&build),
                    quote(name)
                ))
                .await
            {
                // Another build was renamed first: it is as good as ours. (Two renames
                // racing can also surface as a unique violation.)
                Err(e)
                    if e.code() == Some(&SqlState::DUPLICATE_DATABASE)
                        || e.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
                {
                    Ok(false)
                }
                other => other.map(|()| true).map_err(db),
            }
        }
        .await;
        if !matches!(built, Ok(true)) {
            let _ = self.drop_database(&build).await;
        }
        built.map(|_| ())
    }

    /// Drops the complete templates of lower versions, and builds that were abandoned
    /// (by a process that died mid-build) an hour ago or more. Best effort: a template
    /// in use by a copy at this moment stays for the next time.
    async fn drop_older_templates(&self, family: &str, version: i64) {
        let Ok(admin) = self.admin_conn().await else {
            return;
        };
        let Ok(rows) = admin
            .query(
                "SELECT datname FROM pg_database WHERE left(datname, length($1)) = $1",
                &[&family],
            )
            .await
        else {
            return;
        };
        drop(admin);
        let an_hour_ago = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_sub(3600);
        for row in rows {
            let datname: String = row.get(0);
            if stale_template(&datname[family.len()..], version, an_hour_ago) {
                if let Err(e) = self.drop_database(&datname).await {
                    tracing::warn!(database = %datname, error = %e, "could not drop an old template");
                }
            }
        }
    }

    fn forget_template(&self) {
        if let Ok(mut t) = self.template.lock() {
            *t = None;
        }
    }

    /// The schema version of a complete tenant, `None` if it has none (or half of one).
    pub async fn inspect_location(&self, mode: Mode, location: &str) -> Result<Option<i64>> {
        match mode {
            Mode::Database => {
                if !self.database_exists(location).await? {
                    return Ok(None);
                }
                let conn = self.pools.get(&self.database_config(location)).await?;
                self.ledger_version(&conn, "public").await
            }
            Mode::Schema => {
                let conn = self.admin_conn().await?;
                self.ledger_version(&conn, location).await
            }
            Mode::Shared => {
                let conn = self.admin_conn().await?;
                self.ledger_version(&conn, SHARED_SCHEMA).await
            }
        }
    }

    async fn ledger_version(&self, conn: &Client, schema: &str) -> Result<Option<i64>> {
        let exists = conn
            .query_opt(
                "SELECT 1 FROM pg_tables WHERE schemaname = $1 AND tablename = $2",
                &[&schema, &LEDGER_TABLE],
            )
            .await
            .map_err(|e| self.db_error(e))?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let row = conn
            .query_one(
                &format!(
                    "SELECT COALESCE(MAX(version), 0)::int8 FROM {}.{LEDGER_TABLE}",
                    quote(schema)
                ),
                &[],
            )
            .await
            .map_err(|e| self.db_error(e))?;
        Ok(Some(row.get(0)))
    }

    /// Removes a tenant's data: its database, its schema, or its rows in the shared tables.
    pub async fn remove_location(&self, mode: Mode, location: &str, id: TenantId) -> Result<()> {
        match mode {
            Mode::Database => self.drop_database(location).await,
            Mode::Schema => {
                let conn = self.admin_conn().await?;
                conn.batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {} CASCADE; DROP ROLE IF EXISTS {}",
                    quote(location),
                    quote(&self.tenant_role(location))
                ))
                .await
                .map_err(|e| self.db_error(e))
            }
            Mode::Shared => self.delete_shared_rows(id).await,
        }
    }

    async fn drop_database(&self, database: &str) -> Result<()> {
        self.pools.close_database(database);
        let admin = self.admin_conn().await?;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote(database)
            ))
            .await
            .map_err(|e| self.db_error(e))
    }

    /// Deletes one tenant's rows from every shared table, children before parents.
    async fn delete_shared_rows(&self, id: TenantId) -> Result<()> {
        let mut conn = self.admin_conn().await?;
        if self.ledger_version(&conn, SHARED_SCHEMA).await?.is_none() {
            return Ok(());
        }
        let tables = shared_tables_children_first(&conn)
            .await
            .map_err(|e| self.db_error(e))?;
        conn.discard();
        conn.batch_execute("BEGIN")
            .await
            .map_err(|e| self.db_error(e))?;
        conn.execute(
            "SELECT set_config('tenancy.tenant_id', $1, true)",
            &[&id.to_string()],
        )
        .await
        .map_err(|e| self.db_error(e))?;
        for table in tables {
            conn.execute(
                &format!(
                    "DELETE FROM {}.{} WHERE tenant_id = $1::text::uuid",
                    quote(SHARED_SCHEMA),
                    quote(&table)
                ),
                &[&id.to_string()],
            )
            .await
            .map_err(|e| self.db_error(e))?;
        }
        conn.batch_execute("COMMIT")
            .await
            .map_err(|e| self.db_error(e))
    }

    /// Brings one tenant (database or schema mode) to the latest migration, in one
    /// transaction. Returns `(from, to)`.
    pub async fn migrate_location(
        &self,
        mode: Mode,
        location: &str,
        migrations: &MigrationSet,
    ) -> Result<(i64, i64)> {
        if mode != Mode::Shared {
            self.data_role_once().await?;
        }
        match mode {
            Mode::Database => {
                let mut conn = self.pools.get(&self.database_config(location)).await?;
                self.apply(&mut conn, None, migrations).await
            }
            Mode::Schema => {
                let mut conn = self.admin_conn().await?;
                self.apply(&mut conn, Some(location), migrations).await
            }
            Mode::Shared => self.migrate_shared(migrations).await,
        }
    }

    /// Runs the pending scripts in one transaction. With `schema`, the schema is created
    /// in that transaction (if missing) and everything runs inside it.
    async fn apply(
        &self,
        conn: &mut PgConn,
        schema: Option<&str>,
        migrations: &MigrationSet,
    ) -> Result<(i64, i64)> {
        let schemas = [schema.unwrap_or("public")];
        self.apply_plain(conn, &schemas, schema.is_some(), migrations)
            .await
    }

    /// Creates many schema-mode tenants in one transaction (one commit for all of them):
    /// every schema exists whole, or none does. Returns their schema version.
    pub async fn provision_schemas(
        &self,
        locations: &[&str],
        migrations: &MigrationSet,
    ) -> Result<i64> {
        self.data_role_once().await?;
        let mut conn = self.admin_conn().await?;
        let (_, version) = self
            .apply_plain(&mut conn, locations, true, migrations)
            .await?;
        Ok(version)
    }

    /// [`PgStore::apply_statements`] with the scripts as written.
    async fn apply_plain(
        &self,
        conn: &mut PgConn,
        schemas: &[&str],
        create_schema: bool,
        migrations: &MigrationSet,
    ) -> Result<(i64, i64)> {
        let scripts = migrations.scripts(Dialect::Postgres)?;
        let statements: Vec<Vec<String>> = scripts.iter().map(|s| vec![s.sql.to_owned()]).collect();
        self.apply_statements(
            conn,
            schemas,
            create_schema,
            &scripts,
            &statements,
            Grants::Tenant,
        )
        .await
    }

    /// The transaction shared by every mode: for each schema lock, ledger, validation,
    /// scripts; then one commit. On failure (or cancellation) the connection, left
    /// mid-transaction, is closed rather than pooled. Returns the last schema's
    /// `(from, to)`.
    async fn apply_statements(
        &self,
        conn: &mut PgConn,
        schemas: &[&str],
        create_schema: bool,
        scripts: &[Script<'_>],
        statements: &[Vec<String>],
        grants: Grants<'_>,
    ) -> Result<(i64, i64)> {
        let db = |e: tokio_postgres::Error| self.db_error(e);
        // Until COMMIT, a cancelled task must not pool this connection mid-transaction.
        conn.discard();
        let result = async {
            conn.batch_execute("BEGIN").await.map_err(db)?;
            let (mut from, mut latest) = (0, 0);
            for schema in schemas {
                (from, latest) = self
                    .apply_within(conn, schema, create_schema, scripts, statements, grants)
                    .await?;
            }
            if latest > from {
                crate::fault::pause_async(crate::fault::points::MIGRATE_TENANT_APPLIED).await;
            }
            conn.batch_execute("COMMIT").await.map_err(db)?;
            Ok((from, latest))
        }
        .await;
        if result.is_ok() {
            conn.reuse();
        }
        result
    }

    /// The body of a schema's migration, inside the caller's transaction: lock, ledger,
    /// validation, scripts.
    async fn apply_within(
        &self,
        conn: &Client,
        schema: &str,
        create_schema: bool,
        scripts: &[Script<'_>],
        statements: &[Vec<String>],
        grants: Grants<'_>,
    ) -> Result<(i64, i64)> {
        let db = |e: tokio_postgres::Error| self.db_error(e);
        let schema_q = quote(schema);
        // One migration of this schema at a time, across processes: creating the schema,
        // granting on it and the ledger's check all happen under it (a second process
        // waits, then finds the schema current).
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('tenancy.migrate.' || $1))",
            &[&schema],
        )
        .await
        .map_err(db)?;
        if create_schema {
            conn.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema_q}"))
                .await
                .map_err(db)?;
        }
        if let Grants::Shared(sql) = grants {
            conn.batch_execute(sql).await.map_err(db)?;
        }
        conn.execute("SELECT set_config('search_path', $1, true)", &[&schema_q])
            .await
            .map_err(db)?;
        conn.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {schema_q}.{LEDGER_TABLE} (\
                version BIGINT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, \
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        ))
        .await
        .map_err(db)?;
        let applied: Vec<(i64, String, String)> = conn
            .query(
                &format!("SELECT version, name, checksum FROM {schema_q}.{LEDGER_TABLE} ORDER BY version"),
                &[],
            )
            .await
            .map_err(db)?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let from = crate::migrations::check_applied(&applied, scripts)?;
        let latest = scripts.last().map_or(0, |s| s.version);
        for (script, sqls) in scripts
            .iter()
            .zip(statements)
            .filter(|(s, _)| s.version > from)
        {
            for sql in sqls {
                conn.batch_execute(sql)
                    .await
                    .map_err(|e| match e.as_db_error() {
                        Some(d) => Error::MigrationFailed {
                            file: script.file.to_owned(),
                            reason: d.message().to_owned(),
                        },
                        None => self.unavailable(e),
                    })?;
            }
            conn.execute(
                &format!("INSERT INTO {schema_q}.{LEDGER_TABLE} (version, name, checksum) VALUES ($1, $2, $3)"),
                &[&script.version, &script.name, &script.checksum],
            )
            .await
            .map_err(db)?;
        }
        if let Grants::Tenant = grants {
            conn.batch_execute(&self.privileges_sql(schema))
                .await
                .map_err(db)?;
        }
        Ok((from, latest))
    }

    /// Migrates the shared tables once for the whole store: the scripts transformed for
    /// many tenants, the data role made (if the engine owns it), and the audit run.
    pub async fn migrate_shared(&self, migrations: &MigrationSet) -> Result<(i64, i64)> {
        let scripts = migrations.scripts(Dialect::Postgres)?;
        let latest = scripts.last().map_or(0, |s| s.version);
        // Current already (the common case: every shared tenant after the first): nothing
        // to transform, grant or lock.
        {
            let conn = self.admin_conn().await?;
            if self.ledger_version(&conn, SHARED_SCHEMA).await? == Some(latest) {
                return Ok((latest, latest));
            }
        }
        let role = self.data_role_name();
        let statements = crate::transform::shared_scripts(&role, &scripts).map_err(|e| {
            Error::MigrationFailed {
                file: e.file.clone(),
                reason: e.to_string(),
            }
        })?;
        let mut conn = self.admin_conn().await?;
        self.ensure_data_role(&conn).await?;
        let grant = format!(
            "GRANT USAGE ON SCHEMA {} TO {}",
            quote(SHARED_SCHEMA),
            quote(&role)
        );
        let result = self
            .apply_statements(
                &mut conn,
                &[SHARED_SCHEMA],
                true,
                &scripts,
                &statements,
                Grants::Shared(&grant),
            )
            .await?;
        drop(conn);
        self.audit().await?;
        Ok(result)
    }

    /// [`TenantStore::rehearse`]: the scripts (transformed, for `shared`) applied to a
    /// scratch schema in one transaction, then rolled back. The connection is closed
    /// after, never pooled.
    pub async fn rehearse(&self, mode: Mode, migrations: &MigrationSet) -> Result<()> {
        let scripts = migrations.scripts(Dialect::Postgres)?;
        let role = self.data_role_name();
        let scratch = format!("rehearse_{}", uuid::Uuid::now_v7().simple());
        let statements: Vec<Vec<String>> = if mode == Mode::Shared {
            crate::transform::shared_scripts(&role, &scripts).map_err(|e| {
                Error::MigrationFailed {
                    file: e.file.clone(),
                    reason: e.to_string(),
                }
            })?
        } else {
            scripts.iter().map(|s| vec![s.sql.to_owned()]).collect()
        };
        self.data_role_once().await?;
        let mut conn = self.admin_conn().await?;
        conn.discard();
        let grant = format!(
            "GRANT USAGE ON SCHEMA {} TO {}",
            quote(&scratch),
            quote(&role)
        );
        let grants = match mode {
            Mode::Shared => Grants::Shared(&grant),
            _ => Grants::Tenant,
        };
        let db = |e: tokio_postgres::Error| self.db_error(e);
        conn.batch_execute("BEGIN").await.map_err(db)?;
        let applied = self
            .apply_within(&conn, &scratch, true, &scripts, &statements, grants)
            .await;
        let rolled_back = conn.batch_execute("ROLLBACK").await.map_err(db);
        applied?;
        rolled_back
    }

    fn data_role_name(&self) -> String {
        self.data.get_user().unwrap_or("").to_owned()
    }

    /// The data role, made sure of once per process ([`PgStore::ensure_data_role`]); a
    /// role given by `data_url` must be NOINHERIT, or it would hold every tenant role's
    /// privileges at once.
    async fn data_role_once(&self) -> Result<()> {
        self.data_role_ready
            .get_or_try_init(|| async {
                let conn = self.admin_conn().await?;
                self.ensure_data_role(&conn).await?;
                let inherits = conn
                    .query_opt(
                        "SELECT rolinherit FROM pg_roles WHERE rolname = $1",
                        &[&self.data_role_name()],
                    )
                    .await
                    .map_err(|e| self.db_error(e))?
                    .map(|r| r.get::<_, bool>(0));
                match inherits {
                    Some(false) => Ok(()),
                    Some(true) => Err(self.unavailable(format!(
                        "its data role {} inherits the privileges of the roles it belongs \
                         to; make it NOINHERIT (ALTER ROLE … NOINHERIT)",
                        self.data_role_name()
                    ))),
                    None => Err(self.unavailable(format!(
                        "its data role {} does not exist",
                        self.data_role_name()
                    ))),
                }
            })
            .await
            .map(|_| ())
    }

    /// The role a `schema`-mode tenant's requests run as (`SET ROLE` from the data role,
    /// within each transaction): privileges on its own schema's tables and nothing else.
    fn tenant_role(&self, schema: &str) -> String {
        format!("{}_{schema}", self.prefix)
    }

    /// What the data role may do in a tenant, granted after every migration (in its
    /// transaction): read and write the tables and use their sequences — not the ledger,
    /// no DDL, no other schema. In `schema` mode through a role of the tenant's own
    /// (created here if missing), in `database` mode (`public`) directly.
    fn privileges_sql(&self, schema: &str) -> String {
        let data = quote(&self.data_role_name());
        let schema_q = quote(schema);
        let mut sql = String::new();
        let grantee = if schema == "public" {
            // Before PostgreSQL 15 everyone may create in `public`.
            sql.push_str("REVOKE CREATE ON SCHEMA public FROM PUBLIC;");
            data
        } else {
            let role = quote(&self.tenant_role(schema));
            sql.push_str(&format!(
                "DO $$BEGIN CREATE ROLE {role} NOLOGIN; \
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END$$;\
                 GRANT {role} TO {data};"
            ));
            role
        };
        sql.push_str(&format!(
            "GRANT USAGE ON SCHEMA {schema_q} TO {grantee};\
             GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema_q} TO {grantee};\
             GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {schema_q} TO {grantee};\
             REVOKE ALL ON {schema_q}.{LEDGER_TABLE} FROM {grantee};"
        ));
        sql
    }

    /// Grants a tenant's privileges where they are missing (a tenant provisioned before
    /// tenants had them), under the schema's migration lock.
    pub(crate) async fn ensure_privileges(&self, mode: Mode, location: &str) -> Result<()> {
        self.data_role_once().await?;
        let schema = match mode {
            Mode::Database => "public",
            Mode::Schema => location,
            Mode::Shared => return Ok(()),
        };
        let mut conn = match mode {
            Mode::Database => self.pools.get(&self.database_config(location)).await?,
            _ => self.admin_conn().await?,
        };
        let db = |e: tokio_postgres::Error| self.db_error(e);
        conn.discard();
        conn.batch_execute("BEGIN").await.map_err(db)?;
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('tenancy.migrate.' || $1))",
            &[&quote(schema)],
        )
        .await
        .map_err(db)?;
        conn.batch_execute(&self.privileges_sql(schema))
            .await
            .map_err(db)?;
        conn.batch_execute("COMMIT").await.map_err(db)?;
        conn.reuse();
        tracing::info!(store = %self.name, tenant = %location, "granted the tenant's privileges to the data role");
        Ok(())
    }

    /// Creates the data role the engine owns, if missing: LOGIN, NOINHERIT, not superuser,
    /// no BYPASSRLS. Its name comes from configuration (checked) and its password is
    /// generated hex, so both are safe to put in the statement.
    async fn ensure_data_role(&self, conn: &Client) -> Result<()> {
        let Some(role) = &self.data_role else {
            return Ok(());
        };
        let db = |e: tokio_postgres::Error| self.db_error(e);
        // Serialised across processes: two creating the role at once would collide.
        conn.batch_execute("SELECT pg_advisory_lock(hashtext('tenancy.data_role'))")
            .await
            .map_err(db)?;
        let result = async {
            // `Some(comment)`: the role exists, with this comment (if any).
            let existing: Option<Option<String>> = conn
                .query_opt(
                    "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
                    &[role],
                )
                .await
                .map_err(db)?
                .map(|r| r.get(0));
            let ours = self
                .data_role_mark
                .as_ref()
                .map(|mark| format!("{DATA_ROLE_MARK}{mark}"));
            let verb = match (&existing, &ours) {
                (None, _) => "CREATE",
                (Some(found), Some(ours)) if found.as_deref() == Some(ours.as_str()) => "ALTER",
                // A deployment from before marks, on the unmarked role it made then.
                (Some(None), None) => "ALTER",
                (Some(_), _) => {
                    return Err(self.unavailable(format!(
                        "its data role {role} exists but was not created by this deployment \
                         (another deployment on this server, or by hand): it is not taken \
                         over, which would change its password under its owner; set the \
                         store's data_role to a name of this deployment's own (or give a \
                         data_url)"
                    )))
                }
            };
            conn.batch_execute(&format!(
                "{verb} ROLE {} LOGIN NOINHERIT NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD '{}'",
                quote(role),
                self.data_password
            ))
            .await
            .map_err(db)?;
            if let (None, Some(ours)) = (&existing, &ours) {
                // Generated hex behind a constant: safe to put in the statement.
                conn.batch_execute(&format!("COMMENT ON ROLE {} IS '{ours}'", quote(role)))
                    .await
                    .map_err(db)?;
            }
            let database = self.admin.get_dbname().unwrap_or("");
            conn.batch_execute(&format!(
                "GRANT CONNECT ON DATABASE {} TO {}",
                quote(database),
                quote(role)
            ))
            .await
            .map_err(db)
        }
        .await;
        let _ = conn
            .batch_execute("SELECT pg_advisory_unlock(hashtext('tenancy.data_role'))")
            .await;
        result
    }

    /// The start-up audit of the shared tables: every table has `tenant_id`, row-level
    /// security enabled and forced and a policy, and the data role can bypass none of it.
    /// A store that fails is refused for `shared` tenants until a migration fixes it.
    pub async fn audit(&self) -> Result<()> {
        let conn = self.admin_conn().await?;
        if self.ledger_version(&conn, SHARED_SCHEMA).await?.is_none() {
            // No shared tables yet: nothing can be served from them, nothing to audit.
            return Ok(());
        }
        let failures = audit_shared(&conn, &self.data_role_name())
            .await
            .map_err(|e| self.db_error(e))?;
        let failure = (!failures.is_empty()).then(|| failures.join("; "));
        if let Some(why) = &failure {
            tracing::error!(store = %self.name, problems = %why, "shared tables failed the isolation audit; refusing shared tenants");
        }
        if let Ok(mut slot) = self.audit_failure.lock() {
            *slot = Some(failure);
        }
        Ok(())
    }

    /// Refuses `shared` work unless the shared tables passed their audit (run now if it
    /// has not run yet, e.g. because the server was down at start-up).
    async fn require_audited(&self) -> Result<()> {
        let state = self.audit_failure.lock().ok().and_then(|s| s.clone());
        let state = match state {
            Some(state) => state,
            None => {
                self.audit().await?;
                self.audit_failure
                    .lock()
                    .ok()
                    .and_then(|s| s.clone())
                    .unwrap_or(None)
            }
        };
        match state {
            None => Ok(()),
            Some(why) => Err(self.unavailable(format!(
                "the shared tables failed the isolation audit: {why}"
            ))),
        }
    }

    /// A connection for the tenant's data, as the data role, and the context its
    /// transactions must set (none in `database` mode, whose connections are the tenant's
    /// alone).
    pub(crate) async fn data_conn(
        &self,
        mode: Mode,
        location: &str,
    ) -> Result<(PgConn, Option<Context>)> {
        Ok(match mode {
            Mode::Database => (
                self.pools
                    .get(&self.tenant_database_config(location))
                    .await?,
                None,
            ),
            Mode::Schema => (
                self.pools.get(&self.data).await?,
                Some(Context {
                    search_path: quote(location),
                    tenant_id: String::new(),
                    role: self.tenant_role(location),
                }),
            ),
            Mode::Shared => {
                self.require_audited().await?;
                (
                    self.pools.get(&self.data).await?,
                    Some(Context {
                        search_path: quote(SHARED_SCHEMA),
                        tenant_id: location.to_owned(),
                        role: "none".into(),
                    }),
                )
            }
        })
    }

    /// Maps a connection-level failure of tenant work (not a statement's own error). A
    /// tenant role that does not exist yet is [`Error::PrivilegesMissing`].
    pub(crate) fn session_error(&self, e: tokio_postgres::Error) -> Error {
        if e.code().is_some_and(|c| {
            *c == SqlState::INVALID_PARAMETER_VALUE || *c == SqlState::INSUFFICIENT_PRIVILEGE
        }) {
            return Error::PrivilegesMissing {
                store: self.name.clone(),
            };
        }
        self.db_error(e)
    }

    /// A transaction on the tenant's data with its context set, as the data role (in
    /// `schema` mode as the tenant's own role).
    pub async fn session(&self, mode: Mode, location: &str) -> Result<TenantSession> {
        self.granting(mode, location, || self.open_session(mode, location))
            .await
    }

    async fn open_session(&self, mode: Mode, location: &str) -> Result<TenantSession> {
        let (mut conn, context) = self.data_conn(mode, location).await?;
        begin_with_context(&mut conn, context.as_ref())
            .await
            .map_err(|e| self.session_error(e))?;
        Ok(TenantSession { conn })
    }
}

#[async_trait]
impl super::TenantStore for PgStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn location_for(&self, mode: Mode, id: TenantId) -> Result<String> {
        Ok(self.location_of(mode, id))
    }

    /// At most half the connection budget, so that requests keep the other half.
    fn fleet_concurrency(&self, wanted: usize) -> usize {
        wanted.min(self.pools.limits().max_connections / 2)
    }

    fn schema_shape(&self, mode: Mode) -> &'static str {
        match mode {
            Mode::Database => "pg-database",
            Mode::Schema => "pg-schema",
            Mode::Shared => "pg-shared",
        }
    }

    async fn build(self: Arc<Self>, tenant: &Tenant, migrations: Arc<MigrationSet>) -> Result<i64> {
        self.provision(
            tenant.placement.mode,
            &tenant.placement.location,
            &migrations,
        )
        .await
    }

    /// Schema-mode tenants: every schema of the group in one transaction.
    async fn build_together(
        self: Arc<Self>,
        tenants: &[Tenant],
        migrations: Arc<MigrationSet>,
    ) -> Result<Option<i64>> {
        if !tenants.iter().all(|t| t.placement.mode == Mode::Schema) {
            return Ok(None);
        }
        let locations: Vec<&str> = tenants
            .iter()
            .map(|t| t.placement.location.as_str())
            .collect();
        self.provision_schemas(&locations, &migrations)
            .await
            .map(Some)
    }

    async fn inspect(self: Arc<Self>, tenant: &Tenant) -> Result<Option<i64>> {
        self.inspect_location(tenant.placement.mode, &tenant.placement.location)
            .await
    }

    async fn remove(self: Arc<Self>, tenant: &Tenant) -> Result<()> {
        self.remove_location(tenant.placement.mode, &tenant.placement.location, tenant.id)
            .await
    }

    async fn migrate(
        self: Arc<Self>,
        tenant: &Tenant,
        migrations: Arc<MigrationSet>,
    ) -> Result<(i64, i64)> {
        let migrated = self
            .migrate_location(
                tenant.placement.mode,
                &tenant.placement.location,
                &migrations,
            )
            .await;
        if migrated.is_ok() {
            crate::fault::pause_async(crate::fault::points::MIGRATE_TENANT_COMMITTED).await;
        }
        migrated
    }

    async fn introspect(self: Arc<Self>, tenant: &Tenant) -> Result<Schema> {
        let (schema_name, hidden): (&str, &'static [&'static str]) = match tenant.placement.mode {
            Mode::Database => ("public", &[]),
            Mode::Schema => (&tenant.placement.location, &[]),
            Mode::Shared => (SHARED_SCHEMA, &["tenant_id"]),
        };
        let version = tenant.placement.schema_version;
        self.within_timeout(async {
            let session = self
                .session(tenant.placement.mode, &tenant.placement.location)
                .await?;
            let schema = data::introspect(session.client(), schema_name, version, hidden).await?;
            session.commit().await?;
            Ok(schema)
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
        let placement = &tenant.placement;
        let t = schema.table(&table)?;
        let attempt = || async {
            let plan = crate::data::ops::Plan::guarded(&Postgres, t, &op, &guards)?;
            let (mut conn, context) = self.data_conn(placement.mode, &placement.location).await?;
            let check = |outcomes: &[crate::data::ops::Outcome]| plan.check(outcomes);
            let outcomes = data::run_pipelined(
                &mut conn,
                context.as_ref(),
                placement.schema_version,
                t,
                &plan.statements,
                plan.is_guarded()
                    .then_some(&check as &(dyn Fn(&[_]) -> Result<()> + Sync)),
                |e| self.session_error(e),
            )
            .await?;
            plan.finish(outcomes)
        };
        self.within_timeout(self.granting(placement.mode, &placement.location, attempt))
            .await
    }

    async fn query(
        self: Arc<Self>,
        tenant: &Tenant,
        sql: String,
        params: Vec<Value>,
    ) -> Result<Vec<Object>> {
        let placement = &tenant.placement;
        let attempt = || async {
            let (mut conn, context) = self.data_conn(placement.mode, &placement.location).await?;
            data::query(&mut conn, context.as_ref(), &sql, &params, |e| {
                self.session_error(e)
            })
            .await
        };
        self.within_timeout(self.granting(placement.mode, &placement.location, attempt))
            .await
    }

    async fn explain_list(
        self: Arc<Self>,
        tenant: &Tenant,
        schema: Arc<Schema>,
        table: String,
        params: Vec<(String, String)>,
    ) -> Result<Vec<String>> {
        let t = schema.table(&table)?;
        let q = crate::data::parse_list(t, &params)?;
        let list = crate::sql::builder::list(&Postgres, t, &q)?;
        let placement = &tenant.placement;
        let (mut conn, context) = self.data_conn(placement.mode, &placement.location).await?;
        data::explain(&mut conn, context.as_ref(), t, &list.page, |e| {
            self.session_error(e)
        })
        .await
    }

    async fn rehearse(self: Arc<Self>, mode: Mode, migrations: Arc<MigrationSet>) -> Result<()> {
        PgStore::rehearse(&self, mode, &migrations).await
    }

    async fn storage_bytes(self: Arc<Self>, tenant: &Tenant) -> Result<u64> {
        let location = tenant.placement.location.clone();
        let bytes: i64 = self
            .within_timeout(async {
                match tenant.placement.mode {
                    Mode::Database => {
                        let conn = self.admin_conn().await?;
                        let row = conn
                            .query_one("SELECT pg_database_size($1::text)::int8", &[&location])
                            .await
                            .map_err(|e| self.db_error(e))?;
                        Ok(row.get(0))
                    }
                    Mode::Schema => {
                        let conn = self.admin_conn().await?;
                        let row = conn
                            .query_one(
                                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::int8 \
                                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                                 WHERE n.nspname = $1 AND c.relkind IN ('r', 'm')",
                                &[&location],
                            )
                            .await
                            .map_err(|e| self.db_error(e))?;
                        Ok(row.get(0))
                    }
                    // Row-level security keeps the session to the tenant's rows.
                    Mode::Shared => {
                        let session = self.session(Mode::Shared, &location).await?;
                        let tables: Vec<String> = session
                            .client()
                            .query(
                                "SELECT c.relname::text FROM pg_class c \
                                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                                 WHERE n.nspname = $1 AND c.relkind = 'r' AND c.relname <> $2 \
                                 AND has_table_privilege(c.oid, 'SELECT') ORDER BY 1",
                                &[&SHARED_SCHEMA, &LEDGER_TABLE],
                            )
                            .await
                            .map_err(|e| self.session_error(e))?
                            .iter()
                            .map(|r| r.get(0))
                            .collect();
                        let mut bytes = 0i64;
                        if !tables.is_empty() {
                            let sums: Vec<String> = tables
                                .iter()
                                .map(|t| {
                                    format!(
                                        "(SELECT COALESCE(SUM(pg_column_size(r.*)), 0) FROM {}.{} r)",
                                        quote(SHARED_SCHEMA),
                                        quote(t)
                                    )
                                })
                                .collect();
                            let sql = format!("SELECT ({})::int8", sums.join(" + "));
                            let row = session
                                .client()
                                .query_one(&sql, &[])
                                .await
                                .map_err(|e| self.session_error(e))?;
                            bytes = row.get(0);
                        }
                        session.commit().await?;
                        Ok(bytes)
                    }
                }
            })
            .await?;
        Ok(u64::try_from(bytes).unwrap_or(0))
    }

    async fn check(self: Arc<Self>) -> Result<()> {
        self.within_timeout(async {
            let conn = self.admin_conn().await?;
            conn.simple_query("SELECT 1")
                .await
                .map_err(|e| self.unavailable(e))?;
            Ok(())
        })
        .await
    }
}

impl PgStore {
    /// `work`, or a store that stopped answering: `StoreUnavailable` after the query
    /// timeout.
    async fn within_timeout<T>(
        &self,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let limit = self.pools.limits().query_timeout;
        match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => Err(Error::StoreUnavailable {
                store: self.name.clone(),
                reason: format!("no answer within {} ms", limit.as_millis()),
            }),
        }
    }

    /// Runs `attempt`; a tenant from before tenants had privileges of their own is
    /// granted them, and `attempt` runs again.
    async fn granting<T, F, Fut>(&self, mode: Mode, location: &str, attempt: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        match attempt().await {
            Err(Error::PrivilegesMissing { .. }) => {
                self.ensure_privileges(mode, location).await?;
                attempt().await
            }
            other => other,
        }
    }
}

/// What a migration's transaction grants the data role.
#[derive(Clone, Copy)]
enum Grants<'a> {
    /// The shared schema: this statement once it exists (the transform grants the tables).
    Shared(&'a str),
    /// A tenant's database or schema: [`PgStore::privileges_sql`] after the scripts.
    Tenant,
}

/// Sets the tenant context for the rest of the transaction: the schema, the tenant of the
/// shared tables' row-level security, and the role.
pub(crate) const CONTEXT_SQL: &str = "SELECT set_config('search_path', $1, true), \
     set_config('tenancy.tenant_id', $2, true), set_config('role', $3, true)";

/// Opens a unit of tenant work on `conn`: not reusable until it ends (a cancelled one
/// closes its connection), `BEGIN`, and the tenant context when there is one.
pub(crate) async fn begin_with_context(
    conn: &mut PgConn,
    context: Option<&Context>,
) -> std::result::Result<(), tokio_postgres::Error> {
    conn.discard();
    conn.batch_execute("BEGIN").await?;
    if let Some(c) = context {
        conn.execute(CONTEXT_SQL, &[&c.search_path, &c.tenant_id, &c.role])
            .await?;
    }
    Ok(())
}

/// What a tenant's transaction sets ([`CONTEXT_SQL`]).
pub struct Context {
    pub search_path: String,
    /// Empty outside `shared` mode.
    pub tenant_id: String,
    /// The tenant's role in `schema` mode; `none` (the data role itself) in `shared` mode.
    pub role: String,
}

/// What makes the shared schema unsafe to serve, one line per problem (none: it passes).
async fn audit_shared(
    conn: &Client,
    role: &str,
) -> std::result::Result<Vec<String>, tokio_postgres::Error> {
    let rows = conn
        .query(crate::transform::AUDIT_SQL, &[&SHARED_SCHEMA, &role])
        .await?
        .iter()
        .map(crate::transform::AuditRow::try_from)
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(crate::transform::audit_failures(role, &rows))
}

/// Tables of the shared schema, children (referencing) before parents (referenced).
async fn shared_tables_children_first(
    conn: &Client,
) -> std::result::Result<Vec<String>, tokio_postgres::Error> {
    let tables: Vec<String> = conn
        .query(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1 AND tablename <> $2 ORDER BY tablename",
            &[&SHARED_SCHEMA, &LEDGER_TABLE],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let edges: Vec<(String, String)> = conn
        .query(
            "SELECT c.conrelid::regclass::text, c.confrelid::regclass::text \
             FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
             WHERE c.contype = 'f' AND n.nspname = $1",
            &[&SHARED_SCHEMA],
        )
        .await?
        .iter()
        .map(|r| (unqualify(r.get(0)), unqualify(r.get(1))))
        .collect();
    // Repeatedly take a table that nothing remaining references (self-references aside).
    let mut remaining = tables;
    let mut order = Vec::with_capacity(remaining.len());
    while !remaining.is_empty() {
        let pick = remaining
            .iter()
            .position(|t| {
                !edges
                    .iter()
                    .any(|(child, parent)| parent == t && child != t && remaining.contains(child))
            })
            .unwrap_or(0);
        order.push(remaining.remove(pick));
    }
    Ok(order)
}

/// `schema.table` or `"schema"."table"` as regclass prints it → the bare table name.
fn unqualify(name: String) -> String {
    let last = name.rsplit('.').next().unwrap_or(&name);
    last.trim_matches('"').replace("\"\"", "\"")
}

/// Names the engine builds SQL from: lower-case letters, digits and `_`, 1–30 characters.
/// Whether a database named `<prefix>_tpl_<rest>` is a template of a version below
/// `version` (`v<N>_<16 hex>`) or a build abandoned before `abandoned_before` (unix
/// seconds; `b<secs>_<8 hex>`). Anything else that merely starts like a template is not
/// ours to drop.
fn stale_template(rest: &str, version: i64, abandoned_before: u64) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let number = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some((v, digest)) = rest.strip_prefix('v').and_then(|r| r.split_once('_')) {
        return number(v) && hex(digest, 16) && v.parse::<i64>().is_ok_and(|v| v < version);
    }
    if let Some((at, tag)) = rest.strip_prefix('b').and_then(|r| r.split_once('_')) {
        return number(at)
            && hex(tag, 8)
            && at.parse::<u64>().is_ok_and(|at| at < abandoned_before);
    }
    false
}

fn valid_generated_name(name: &str, what: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 30
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "{what} {name:?} must be 1–30 characters of a–z, 0–9 and _, not starting with a digit"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::stale_template;

    #[test]
    fn only_older_templates_and_long_abandoned_builds_are_stale() {
        let digest = "0123456789abcdef";
        assert!(stale_template(&format!("v2_{digest}"), 3, 5000));
        assert!(!stale_template(&format!("v3_{digest}"), 3, 5000), "current");
        assert!(!stale_template(&format!("v4_{digest}"), 3, 5000), "newer");
        assert!(stale_template("b1000_0badc0de", 3, 5000));
        assert!(!stale_template("b9000_0badc0de", 3, 5000), "recent build");
        // Names that merely start like ours: another store's tenant database
        // (`<prefix>_tpl_<32 hex>`), odd suffixes.
        for other in [
            "b0123456789abcdef0123456789abcde",
            "v2_0123",
            "v_0123456789abcdef",
            "vx_0123456789abcdef",
            "b1000_xyz",
            "b_0badc0de",
            "main",
            "",
        ] {
            assert!(!stale_template(other, 3, 5000), "{other:?}");
        }
    }
}
