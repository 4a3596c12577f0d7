//! The engine: every tenant operation, on top of a [`Catalog`] and a store.
//!
//! Each lifecycle transition is recorded in the catalog before its side effects (with this
//! process as the operation's owner) and after them. [`Engine::open`] runs recovery: the
//! operations of owners that died are finished or rolled back, and store files the catalog
//! does not account for are removed.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::accounts::AccountState;
use crate::auth::AdminToken;
use crate::catalog::{
    Catalog, NewTenant, SqliteCatalog, StatusCount, TenantFilter, TenantMigrationResult, Transition,
};
pub use crate::config::{EngineConfig, MigrationSource, PlaceOptions, StoreSpec, DEFAULT_STORE};
use crate::data::schema::SchemaCache;
use crate::error::{Error, Result};
use crate::fault::{self, points};
use crate::identity::UserId;
use crate::migrations::{Dialect, MigrationSet};
use crate::slug::Slug;
use crate::store::{apply_migrations, PgStore, SqliteStore};
use crate::stores::Stores;
use crate::tenant::{validate_name, Mode, Placement, Tenant, TenantId, TenantStatus};

use TenantStatus::*;

const ADMIN_TOKEN_SETTING: &str = "admin_token_sha256";
const MIGRATE_LOCK: &str = "migrate";
/// Tenants per catalog transaction in [`Engine::create_tenants`].
const BULK_BATCH: usize = 500;
/// Schema-mode tenants created per store transaction in [`Engine::create_tenants`].
const SCHEMA_GROUP: usize = 10;
/// Shared tenants' migration outcomes per catalog transaction.
const SHARED_RECORD_BATCH: usize = 2_000;

/// What recovery did when the engine opened.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecoveryReport {
    /// Interrupted provisionings whose file was complete: now active.
    pub completed: Vec<String>,
    /// Interrupted provisionings rolled back: now failed and retriable.
    pub failed: Vec<String>,
    /// Interrupted deletions finished.
    pub deleted: Vec<String>,
    /// Files removed that no tenant accounts for.
    pub orphans_removed: usize,
}

impl RecoveryReport {
    pub fn is_empty(&self) -> bool {
        self.completed.is_empty()
            && self.failed.is_empty()
            && self.deleted.is_empty()
            && self.orphans_removed == 0
    }
}

/// Options of a fleet migration.
#[derive(Debug, Clone, Default)]
pub struct MigrateOptions {
    /// Only this tenant.
    pub tenant: Option<Slug>,
    /// Say what would run, change nothing.
    pub dry_run: bool,
    /// Overrides the configured concurrency.
    pub concurrency: Option<usize>,
    /// Migrate this many tenants first; if any fails, stop there.
    pub canary: Option<usize>,
}

/// Progress of a fleet migration, for the CLI's bar or lines.
#[derive(Debug, Clone)]
pub enum MigrateEvent {
    Started { total: usize, target: i64 },
    TenantDone { slug: String, from: i64, to: i64 },
    TenantFailed { slug: String, error: String },
}

/// The result of a fleet migration.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MigrateReport {
    pub target_version: i64,
    /// Tenants that needed migrating (or would, on a dry run).
    pub pending: Vec<String>,
    pub migrated: usize,
    pub failed: Vec<TenantMigrationResult>,
    /// Stopped early by [`Engine::migrate`]'s stop flag; a rerun continues.
    pub interrupted: bool,
    /// A canary tenant failed, so the rest of the fleet was left as it was.
    pub canary_failed: bool,
    pub dry_run: bool,
    /// On a dry run: what would run where, tenant by tenant.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<PlannedMigration>,
}

/// What a dry run says would happen to one tenant.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedMigration {
    pub slug: String,
    pub store: String,
    pub mode: Mode,
    pub from_version: i64,
    /// The migration files that would run, in order (for a `shared` tenant: on its
    /// store's shared tables, once for all of them).
    pub files: Vec<String>,
}

impl MigrateReport {
    fn add(&mut self, result: TenantMigrationResult) {
        if result.ok {
            self.migrated += 1;
        } else {
            self.failed.push(result);
        }
    }
}

/// One fleet migration in progress, shared by its workers.
struct Run {
    id: i64,
    stop: Arc<AtomicBool>,
    progress: Arc<dyn Fn(MigrateEvent) + Send + Sync>,
    /// Whether the scripts were registered in the catalog, by dialect (SQLite, PostgreSQL).
    registered: [AtomicBool; 2],
}

impl Run {
    /// Tells the progress callback about a recorded outcome.
    fn report(&self, r: &TenantMigrationResult) {
        (self.progress)(if r.ok {
            MigrateEvent::TenantDone {
                slug: r.slug.clone(),
                from: r.from_version,
                to: r.to_version,
            }
        } else {
            MigrateEvent::TenantFailed {
                slug: r.slug.clone(),
                error: r.error.clone().unwrap_or_default(),
            }
        });
    }
}

/// The outcome of [`Engine::create_tenants`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct BulkReport {
    pub created: Vec<Tenant>,
    /// `(slug, why)` of each tenant that was not created.
    pub failed: Vec<(String, String)>,
}

impl BulkReport {
    fn add(&mut self, (slug, created): (Slug, Result<Tenant>)) {
        match created {
            Ok(tenant) => self.created.push(tenant),
            Err(e) => self.failed.push((slug.to_string(), e.to_string())),
        }
    }
}

/// Fleet overview for `tenancy status`.
#[derive(Debug, Clone, Serialize)]
pub struct FleetStatus {
    pub latest_version: i64,
    pub total: u64,
    pub counts: Vec<StatusCount>,
    pub failed_migrations: Vec<TenantMigrationResult>,
}

pub(crate) struct Inner {
    pub(crate) config: EngineConfig,
    pub(crate) catalog: Arc<dyn Catalog>,
    pub(crate) stores: Stores,
    pub(crate) migrations: Arc<MigrationSet>,
    pub(crate) recovery: RecoveryReport,
    pub(crate) accounts: AccountState,
    pub(crate) schemas: SchemaCache,
    pub(crate) reads: crate::lookup::ReadCache,
}

/// The tenancy engine. Cheap to clone; every clone shares the catalog and the caches.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

impl Engine {
    /// Opens the catalog and the store under `config.data_dir`, loads the tenant schema,
    /// and recovers what dead processes left half-done.
    pub async fn open(config: EngineConfig) -> Result<Engine> {
        let migrations = match &config.migrations {
            MigrationSource::BuiltinGuild => MigrationSet::builtin_guild(),
            MigrationSource::Folder(dir) => MigrationSet::load_dir(dir)?,
        };
        migrations.scripts(Dialect::Sqlite)?;
        let catalog: Arc<dyn Catalog> = match &config.catalog_url {
            Some(url) => Arc::new(crate::catalog::postgres::PgCatalog::connect(url).await?),
            None => Arc::new(SqliteCatalog::open(&config.data_dir.join("catalog.db")).await?),
        };
        let stores = Stores::open(&config, catalog.as_ref()).await?;
        if stores.any_of(Dialect::Postgres) {
            migrations.scripts(Dialect::Postgres)?;
        }
        let accounts = AccountState::load(catalog.as_ref(), &config).await?;
        let reads = crate::lookup::ReadCache::new(
            catalog.generation()?,
            catalog.changes_since(None).await?.position,
        );
        let mut inner = Inner {
            accounts,
            config,
            catalog,
            stores,
            migrations: Arc::new(migrations),
            recovery: RecoveryReport::default(),
            schemas: SchemaCache::default(),
            reads,
        };
        inner.recovery = recover(&inner).await?;
        // The start-up audit of shared tables; a store that is down is audited on first use.
        for store in inner.stores.postgres_stores() {
            if let Err(e) = store.audit().await {
                tracing::warn!(store = %store.name, error = %e, "could not audit the shared tables at start-up");
            }
        }
        let inner = Arc::new(inner);
        crate::lookup::spawn_flusher(Arc::downgrade(&inner));
        Ok(Engine { inner })
    }

    pub fn catalog(&self) -> &dyn Catalog {
        self.inner.catalog.as_ref()
    }

    pub fn migrations(&self) -> &MigrationSet {
        &self.inner.migrations
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn store(&self) -> &SqliteStore {
        self.inner.stores.sqlite()
    }

    /// A transaction on a PostgreSQL tenant's data with its context set: `search_path`
    /// pinned to its schema, and in `shared` mode `tenancy.tenant_id` set, both local to
    /// the transaction. Commit it, or drop it to roll back (the connection is then closed,
    /// not pooled). SQLite tenants use [`Engine::with_db`].
    pub async fn session(&self, tenant: &Tenant) -> Result<crate::store::TenantSession> {
        self.inner.session(tenant).await
    }

    /// A PostgreSQL store by name.
    pub fn pg_store(&self, name: &str) -> Option<&Arc<PgStore>> {
        self.inner.stores.postgres(name)
    }

    /// What recovery did when this engine opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// Creates a tenant and provisions its database with the full schema. On failure the
    /// tenant is left `failed` (retriable) and its error says why.
    pub async fn create_tenant(&self, slug: Slug, name: Option<String>) -> Result<Tenant> {
        self.create_tenant_owned_by(slug, name, None).await
    }

    /// Like [`Engine::create_tenant`], with `owner` made the tenant's `owner` member in the
    /// same catalog transaction that creates it.
    pub async fn create_tenant_owned_by(
        &self,
        slug: Slug,
        name: Option<String>,
        owner: Option<UserId>,
    ) -> Result<Tenant> {
        self.create_tenant_with(slug, name, owner, &PlaceOptions::default())
            .await
    }

    /// Creates a tenant in the given store and mode (the configured defaults where `None`).
    pub async fn create_tenant_with(
        &self,
        slug: Slug,
        name: Option<String>,
        owner: Option<UserId>,
        place: &PlaceOptions,
    ) -> Result<Tenant> {
        let name = name.unwrap_or_else(|| slug.to_string());
        validate_name(&name)?;
        let config = &self.inner.config;
        let store = place.store.as_deref().unwrap_or(&config.default_store);
        let mode = place.mode.unwrap_or(config.default_mode);
        let id = TenantId::generate();
        let location = self.inner.location_for(store, mode, id)?;
        self.check_migrations_unchanged().await?;
        let tenant = self
            .catalog()
            .insert_tenant(&NewTenant {
                id,
                slug,
                name,
                placement: Placement {
                    store: store.to_owned(),
                    mode,
                    location,
                    schema_version: 0,
                },
                owner,
            })
            .await?;
        self.provision(tenant).await
    }

    /// Creates many tenants in batches. Each batch is one catalog transaction that
    /// registers its tenants as `provisioning`, their data built `concurrency` at a time
    /// (shared tenants: the store's shared tables made current once), and one catalog
    /// transaction that settles them `active`. Crash safety is that of a single create: a
    /// tenant is `active` only once its data is complete, and recovery finishes or
    /// removes the `provisioning` ones a dead process left. One tenant's failure (a slug
    /// taken, a store refusing) is reported and the others go on. `progress` sees each
    /// outcome.
    ///
    /// `concurrency` defaults to `migrate_concurrency` on SQLite and to half the store's
    /// connection budget on PostgreSQL, which it never exceeds.
    pub async fn create_tenants(
        &self,
        slugs: Vec<Slug>,
        place: &PlaceOptions,
        concurrency: Option<usize>,
        progress: impl Fn(&Slug, Result<&Tenant, &Error>) + Send + Sync + 'static,
    ) -> Result<BulkReport> {
        let config = &self.inner.config;
        let store = place.store.as_deref().unwrap_or(&config.default_store);
        let mode = place.mode.unwrap_or(config.default_mode);
        // A store that does not exist or cannot hold the mode refuses the whole file.
        self.inner.location_for(store, mode, TenantId::generate())?;
        let concurrency = match (concurrency, self.inner.dialect_of_store(store)?) {
            (Some(n), _) => self.store_workers(store, n)?,
            (None, Dialect::Sqlite) => config.migrate_concurrency.max(1),
            (None, Dialect::Postgres) => self.store_workers(store, usize::MAX)?,
        };
        self.check_migrations_unchanged().await?;
        let mut report = BulkReport::default();
        for batch in slugs.chunks(BULK_BATCH) {
            let new = batch
                .iter()
                .map(|slug| {
                    let id = TenantId::generate();
                    Ok(NewTenant {
                        id,
                        slug: slug.clone(),
                        name: slug.to_string(),
                        placement: Placement {
                            store: store.to_owned(),
                            mode,
                            location: self.inner.location_for(store, mode, id)?,
                            schema_version: 0,
                        },
                        owner: None,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let mut outcomes: Vec<(Slug, Result<Tenant>)> = Vec::with_capacity(new.len());
            let mut registered = Vec::with_capacity(new.len());
            for (n, inserted) in new.iter().zip(self.catalog().insert_tenants(&new).await?) {
                match inserted {
                    Ok(tenant) => registered.push(tenant),
                    Err(e) => outcomes.push((n.slug.clone(), Err(e))),
                }
            }
            fault::pause_async(points::PROVISION_CATALOG_WRITTEN).await;
            match self.settle_batch(&registered, store, concurrency).await {
                Ok(settled) => outcomes.extend(settled),
                Err(e) => {
                    // Nothing of this batch stays `provisioning` under a live process:
                    // each tenant not yet settled is `failed`, and retriable.
                    for tenant in &registered {
                        let _ = self.provisioning_failed(tenant, e.to_string()).await;
                    }
                    return Err(e);
                }
            }
            for (slug, outcome) in outcomes {
                progress(&slug, outcome.as_ref());
                report.add((slug, outcome));
            }
        }
        report.created.sort_by(|a, b| a.slug.cmp(&b.slug));
        Ok(report)
    }

    /// Builds a registered batch's data and settles each tenant: `active` (one catalog
    /// transaction for all) or `failed` with its reason.
    async fn settle_batch(
        &self,
        registered: &[Tenant],
        store: &str,
        concurrency: usize,
    ) -> Result<Vec<(Slug, Result<Tenant>)>> {
        let built = self.build_many(registered, concurrency).await?;
        fault::pause_async(points::PROVISION_FILE_PLACED).await;
        let mut outcomes = Vec::with_capacity(registered.len());
        let mut done = Vec::with_capacity(registered.len());
        let mut ready = Vec::with_capacity(registered.len());
        for (tenant, version) in registered.iter().zip(built) {
            match version {
                Ok(v) => {
                    done.push((tenant.id, v));
                    ready.push(tenant.slug.clone());
                }
                Err(reason) => {
                    let e = self.provisioning_failed(tenant, reason).await?;
                    outcomes.push((tenant.slug.clone(), Err(e)));
                }
            }
        }
        if !done.is_empty() {
            let dialect = self.inner.dialect_of_store(store)?;
            let scripts = self.migrations().scripts(dialect)?;
            self.catalog()
                .register_migrations(dialect, &scripts)
                .await?;
            let settled = self.catalog().activate_provisioned(&done).await?;
            outcomes.extend(ready.into_iter().zip(settled));
        }
        Ok(outcomes)
    }

    /// Builds the data of freshly registered tenants of one store and mode, `concurrency`
    /// at a time; the outcomes in order. Shared tenants have no data of their own: the
    /// store's shared tables are made current once for all of them.
    async fn build_many(
        &self,
        tenants: &[Tenant],
        concurrency: usize,
    ) -> Result<Vec<std::result::Result<i64, String>>> {
        let Some(first) = tenants.first() else {
            return Ok(Vec::new());
        };
        if first.placement.mode == Mode::Shared {
            let built = self.inner.build(first).await.map_err(|e| e.to_string());
            return Ok(tenants.iter().map(|_| built.clone()).collect());
        }
        // Schemas go a group per transaction (one commit for the group); the others, and
        // the tenants of a group that failed, one by one.
        let group = match first.placement.mode {
            Mode::Schema => SCHEMA_GROUP,
            _ => 1,
        };
        let permits = Arc::new(Semaphore::new(concurrency.max(1)));
        let mut tasks = JoinSet::new();
        for (g, chunk) in tenants.chunks(group).enumerate() {
            let permit = Arc::clone(&permits)
                .acquire_owned()
                .await
                .map_err(|e| Error::Internal(e.to_string()))?;
            let (inner, chunk) = (Arc::clone(&self.inner), chunk.to_vec());
            tasks.spawn(async move {
                let built = build_group(&inner, &chunk).await;
                drop(permit);
                (g, built)
            });
        }
        let mut built: Vec<Vec<std::result::Result<i64, String>>> =
            (0..tenants.len().div_ceil(group))
                .map(|_| Vec::new())
                .collect();
        while let Some(done) = tasks.join_next().await {
            let (g, outcomes) = done?;
            built[g] = outcomes;
        }
        Ok(built.into_iter().flatten().collect())
    }

    /// Provisions a `failed` tenant again.
    pub async fn retry_tenant(&self, slug: &Slug) -> Result<Tenant> {
        let tenant = self.tenant(slug).await?;
        self.check_migrations_unchanged().await?;
        let owner = self.catalog().owner().to_owned();
        let tenant = self
            .catalog()
            .transition(Transition {
                id: tenant.id,
                from: &[Failed],
                to: Provisioning,
                expect_owner: None,
                new_owner: Some(&owner),
                error: None,
                schema_version: None,
                event: "retry.begin",
            })
            .await?;
        self.provision(tenant).await
    }

    async fn provision(&self, tenant: Tenant) -> Result<Tenant> {
        fault::pause_async(points::PROVISION_CATALOG_WRITTEN).await;
        let built = self.inner.build(&tenant).await;
        fault::pause_async(points::PROVISION_FILE_PLACED).await;
        let owner = self.catalog().owner().to_owned();
        match built {
            Ok(version) => {
                let dialect = self.dialect_of(&tenant)?;
                let scripts = self.migrations().scripts(dialect)?;
                self.catalog()
                    .register_migrations(dialect, &scripts)
                    .await?;
                self.catalog()
                    .transition(Transition {
                        id: tenant.id,
                        from: &[Provisioning],
                        to: Active,
                        expect_owner: Some(&owner),
                        new_owner: None,
                        error: None,
                        schema_version: Some(version),
                        event: "provision.done",
                    })
                    .await
            }
            Err(e) => Err(self.provisioning_failed(&tenant, e.to_string()).await?),
        }
    }

    /// Records a provisioning that failed (`provisioning` → `failed`, retriable) and
    /// returns the error to report.
    async fn provisioning_failed(&self, tenant: &Tenant, reason: String) -> Result<Error> {
        tracing::warn!(slug = %tenant.slug, error = %reason, "provisioning failed");
        let owner = self.catalog().owner().to_owned();
        self.catalog()
            .transition(Transition {
                id: tenant.id,
                from: &[Provisioning],
                to: Failed,
                expect_owner: Some(&owner),
                new_owner: None,
                error: Some(reason.clone()),
                schema_version: None,
                event: "provision.failed",
            })
            .await?;
        Ok(Error::ProvisioningFailed {
            slug: tenant.slug.to_string(),
            reason,
        })
    }

    /// The tenant holding `slug` (not `deleted`).
    pub async fn tenant(&self, slug: &Slug) -> Result<Tenant> {
        self.find_tenant(slug)
            .await?
            .ok_or_else(|| Error::TenantNotFound {
                slug: slug.to_string(),
            })
    }

    /// Every tenant that is not deleted, in slug order.
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        self.catalog().list_tenants(&TenantFilter::default()).await
    }

    /// Deletes a tenant: `deleting`, its files removed, then `deleted` (the slug is free).
    pub async fn delete_tenant(&self, slug: &Slug) -> Result<Tenant> {
        let tenant = self.tenant(slug).await?;
        let owner = self.catalog().owner().to_owned();
        let tenant = self
            .catalog()
            .transition(Transition {
                id: tenant.id,
                from: &[Active, Suspended, Failed],
                to: Deleting,
                expect_owner: None,
                new_owner: Some(&owner),
                error: None,
                schema_version: None,
                event: "delete.begin",
            })
            .await?;
        self.finish_delete(tenant, Some(owner)).await
    }

    async fn finish_delete(&self, tenant: Tenant, expect_owner: Option<String>) -> Result<Tenant> {
        fault::pause_async(points::DELETE_MARKED).await;
        self.inner.remove_data(&tenant).await?;
        fault::pause_async(points::DELETE_FILE_REMOVED).await;
        self.catalog()
            .transition(Transition {
                id: tenant.id,
                from: &[Deleting],
                to: Deleted,
                expect_owner: expect_owner.as_deref(),
                new_owner: None,
                error: None,
                schema_version: None,
                event: "delete.done",
            })
            .await
    }

    /// Runs `f` on the tenant's database connection, on a blocking thread. The tenant must
    /// be `active`.
    pub async fn with_tenant_db<T, F>(&self, slug: &Slug, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> Result<T> + Send + 'static,
    {
        let tenant = self.tenant(slug).await?;
        if tenant.status != Active {
            return Err(Error::InvalidTransition {
                slug: tenant.slug.to_string(),
                status: tenant.status.to_string(),
                action: "data access",
                expected: "active",
            });
        }
        self.with_db(&tenant, f).await
    }

    /// Runs `f` on this tenant's database (status checks are the caller's), on a blocking
    /// thread, through the handle cache.
    pub async fn with_db<T, F>(&self, tenant: &Tenant, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> Result<T> + Send + 'static,
    {
        let Some(store) = self.inner.stores.sqlite_of(tenant) else {
            self.inner.stores.named(&tenant.placement.store)?;
            return Err(Error::ModeNotSupported {
                store: tenant.placement.store.clone(),
                kind: "PostgreSQL",
                mode: "a SQLite connection (use Engine::session or Engine::query)".into(),
            });
        };
        Arc::clone(store).on_handle(tenant, f).await
    }

    /// The shape of the configured tenant schema (every migration applied), built once on
    /// a private in-memory database: what `/openapi.json` describes.
    pub async fn configured_schema(&self) -> Result<Arc<crate::data::Schema>> {
        let latest = self.migrations().latest();
        if let Some(schema) = self.cached_schema("sqlite", latest) {
            return Ok(schema);
        }
        let migrations = Arc::clone(&self.inner.migrations);
        let schema = tokio::task::spawn_blocking(move || {
            let mut conn = rusqlite::Connection::open_in_memory()
                .map_err(|e| Error::TenantDb(e.to_string()))?;
            apply_migrations(&mut conn, &migrations)?;
            crate::data::schema::introspect(&conn, latest)
        })
        .await??;
        Ok(self.inner.schemas.insert("sqlite", latest, schema))
    }

    pub(crate) fn cached_schema(
        &self,
        shape: &'static str,
        version: i64,
    ) -> Option<Arc<crate::data::Schema>> {
        self.inner.schemas.get(shape, version)
    }

    /// The dialect of the store holding the tenant.
    pub(crate) fn dialect_of(&self, tenant: &Tenant) -> Result<Dialect> {
        self.inner.dialect_of_store(&tenant.placement.store)
    }

    /// Refuses a migration set in which a file that was already applied somewhere changed.
    pub async fn check_migrations_unchanged(&self) -> Result<()> {
        self.check_dialect_unchanged(Dialect::Sqlite).await?;
        if self.inner.stores.any_of(Dialect::Postgres) {
            self.check_dialect_unchanged(Dialect::Postgres).await?;
        }
        Ok(())
    }

    async fn check_dialect_unchanged(&self, dialect: Dialect) -> Result<()> {
        let registered = self.catalog().registered_migrations(dialect).await?;
        for applied in registered {
            let Some(migration) = self.migrations().get(applied.version) else {
                if applied.version > self.migrations().latest() {
                    return Err(Error::UnknownSchemaVersion {
                        applied: applied.version,
                        latest: self.migrations().latest(),
                    });
                }
                return Err(Error::InvalidMigrations(format!(
                    "migration {} was applied but is missing from {}",
                    applied.file,
                    self.migrations().origin
                )));
            };
            let script = migration.script(dialect)?;
            if script.checksum != applied.checksum {
                return Err(Error::MigrationChanged {
                    file: script.file.to_owned(),
                    applied: applied.checksum.chars().take(12).collect(),
                    current: script.checksum.chars().take(12).collect(),
                });
            }
        }
        Ok(())
    }

    /// Brings every `active` and `suspended` tenant behind the latest version up to it, a
    /// bounded number at a time. Which tenants are behind is read from the catalog; each
    /// tenant migrates in one transaction; one tenant's failure is recorded and the others
    /// go on. Setting `stop` ends the run after the tenants in flight (a rerun continues).
    /// Two runs at once on one catalog: the second is refused.
    pub async fn migrate(
        &self,
        options: MigrateOptions,
        stop: Arc<AtomicBool>,
        progress: impl Fn(MigrateEvent) + Send + Sync + 'static,
    ) -> Result<MigrateReport> {
        self.check_migrations_unchanged().await?;
        let target = self.migrations().latest();
        let mut tenants = self
            .catalog()
            .list_tenants(&TenantFilter {
                statuses: Some(vec![Active, Suspended]),
                schema_below: Some(target),
                include_deleted: false,
            })
            .await?;
        if let Some(slug) = &options.tenant {
            let tenant = self.tenant(slug).await?;
            tenants.retain(|t| t.id == tenant.id);
        }
        let mut report = MigrateReport {
            target_version: target,
            pending: tenants.iter().map(|t| t.slug.to_string()).collect(),
            dry_run: options.dry_run,
            ..MigrateReport::default()
        };
        if options.dry_run {
            report.plan = self.plan(&tenants)?;
            return Ok(report);
        }

        self.catalog().acquire_lock(MIGRATE_LOCK).await?;
        let progress: Arc<dyn Fn(MigrateEvent) + Send + Sync> = Arc::new(progress);
        progress(MigrateEvent::Started {
            total: tenants.len(),
            target,
        });
        let result = async {
            let mut rest = tenants;
            if let Some(n) = options.canary.filter(|n| *n > 0) {
                let canaries: Vec<Tenant> = rest.drain(..n.min(rest.len())).collect();
                self.migrate_locked(
                    canaries,
                    &options,
                    Arc::clone(&stop),
                    Arc::clone(&progress),
                    &mut report,
                )
                .await?;
                if !report.failed.is_empty() {
                    // A canary failed: the rest of the fleet is not touched.
                    report.canary_failed = true;
                    return Ok(());
                }
            }
            if !rest.is_empty() && !report.interrupted {
                self.migrate_locked(rest, &options, stop, progress, &mut report)
                    .await?;
            }
            Ok::<_, Error>(())
        }
        .await;
        let released = self.catalog().release_lock(MIGRATE_LOCK).await;
        result?;
        released?;
        Ok(report)
    }

    fn plan(&self, tenants: &[Tenant]) -> Result<Vec<PlannedMigration>> {
        tenants
            .iter()
            .map(|t| {
                let scripts = self.migrations().scripts(self.dialect_of(t)?)?;
                Ok(PlannedMigration {
                    slug: t.slug.to_string(),
                    store: t.placement.store.clone(),
                    mode: t.placement.mode,
                    from_version: t.placement.schema_version,
                    files: scripts
                        .iter()
                        .filter(|s| s.version > t.placement.schema_version)
                        .map(|s| s.file.to_owned())
                        .collect(),
                })
            })
            .collect()
    }

    async fn migrate_locked(
        &self,
        tenants: Vec<Tenant>,
        options: &MigrateOptions,
        stop: Arc<AtomicBool>,
        progress: Arc<dyn Fn(MigrateEvent) + Send + Sync>,
        report: &mut MigrateReport,
    ) -> Result<()> {
        fault::pause_async(points::MIGRATE_LOCKED).await;
        let run = Arc::new(Run {
            id: self
                .catalog()
                .start_migration_run(report.target_version)
                .await?,
            stop,
            progress,
            registered: [AtomicBool::new(false), AtomicBool::new(false)],
        });
        let concurrency = options
            .concurrency
            .unwrap_or(self.inner.config.migrate_concurrency)
            .max(1);
        // Shared tenants: their store's tables migrate once, then the catalog moves them
        // all. The others: per store, a queue and as many workers as the store allows.
        let mut shared: BTreeMap<String, Vec<Tenant>> = BTreeMap::new();
        let mut own: BTreeMap<String, VecDeque<Tenant>> = BTreeMap::new();
        for tenant in tenants {
            let store = tenant.placement.store.clone();
            match tenant.placement.mode {
                Mode::Shared => shared.entry(store).or_default().push(tenant),
                _ => own.entry(store).or_default().push_back(tenant),
            }
        }
        let mut workers = JoinSet::new();
        let mut queues = Vec::new();
        for (store, queue) in own {
            // A store this process does not know: one worker, whose tenants each fail
            // with the reason (the rest of the fleet goes on).
            let n = self
                .store_workers(&store, concurrency)
                .unwrap_or(1)
                .min(queue.len());
            let queue = Arc::new(std::sync::Mutex::new(queue));
            for _ in 0..n {
                let (engine, queue, run) = (self.clone(), Arc::clone(&queue), Arc::clone(&run));
                workers.spawn(async move { engine.migrate_worker(&queue, &run).await });
            }
            queues.push(queue);
        }
        for group in shared.into_values() {
            if run.stop.load(Ordering::SeqCst) {
                report.interrupted = true;
                break;
            }
            for result in self.migrate_shared_tenants(&run, group).await? {
                report.add(result);
            }
        }
        while let Some(done) = workers.join_next().await {
            for result in done?? {
                report.add(result);
            }
        }
        let left = queues
            .iter()
            .any(|q| q.lock().map_or(true, |q| !q.is_empty()));
        report.interrupted |= left;
        self.catalog()
            .finish_migration_run(run.id, report.migrated as u64, report.failed.len() as u64)
            .await?;
        Ok(())
    }

    /// How many tenants of a store are migrated or provisioned at once: `concurrency`,
    /// and on PostgreSQL at most half the store's connection budget, so requests keep
    /// the other half.
    fn store_workers(&self, store: &str, concurrency: usize) -> Result<usize> {
        Ok(self
            .inner
            .stores
            .named(store)?
            .fleet_concurrency(concurrency)
            .max(1))
    }

    /// Migrates tenants from the queue one after another until it is empty or the run
    /// is stopped; their outcomes.
    async fn migrate_worker(
        &self,
        queue: &std::sync::Mutex<VecDeque<Tenant>>,
        run: &Run,
    ) -> Result<Vec<TenantMigrationResult>> {
        let mut results = Vec::new();
        loop {
            if run.stop.load(Ordering::SeqCst) {
                return Ok(results);
            }
            let next = queue
                .lock()
                .map_err(|_| Error::Internal("migration queue poisoned".into()))?
                .pop_front();
            let Some(tenant) = next else {
                return Ok(results);
            };
            let result = self.migrate_one(run, &tenant).await?;
            self.catalog()
                .record_tenant_migrations(std::slice::from_ref(&result))
                .await?;
            run.report(&result);
            results.push(result);
        }
    }

    /// Migrates a store's shared tables once (one transaction for the store) and records
    /// the outcome for each of its shared tenants, a batch per catalog transaction.
    async fn migrate_shared_tenants(
        &self,
        run: &Run,
        tenants: Vec<Tenant>,
    ) -> Result<Vec<TenantMigrationResult>> {
        let Some(first) = tenants.first() else {
            return Ok(Vec::new());
        };
        let outcome = self.migrate_one(run, first).await?;
        let results: Vec<TenantMigrationResult> = tenants
            .iter()
            .map(|t| TenantMigrationResult {
                tenant_id: t.id,
                slug: t.slug.to_string(),
                from_version: t.placement.schema_version,
                ..outcome.clone()
            })
            .collect();
        for batch in results.chunks(SHARED_RECORD_BATCH) {
            self.catalog().record_tenant_migrations(batch).await?;
            for result in batch {
                run.report(result);
            }
        }
        Ok(results)
    }

    /// Brings one tenant's data to the latest migration, in one transaction (shared
    /// tenants: their store's shared tables). Returns `(from, to)`; the outer error is
    /// an internal failure, the inner one the migration's.
    async fn apply_tenant_migrations(&self, tenant: &Tenant) -> Result<Result<(i64, i64)>> {
        let store = match self.inner.stores.of(tenant) {
            Ok(store) => store,
            // A store this process does not know fails this tenant, not the run.
            Err(e) => return Ok(Err(e)),
        };
        let applied = store
            .migrate(tenant, Arc::clone(&self.inner.migrations))
            .await;
        Ok(applied)
    }

    /// The tenant, at the latest schema version: a tenant whose schema is behind is
    /// migrated on the spot when `migrate_on_request` is set, and otherwise refused with
    /// `TenantMigrating` — a request never runs against a schema it was not built for.
    pub async fn ensure_current(&self, tenant: &Tenant) -> Result<Tenant> {
        let latest = self.migrations().latest();
        if tenant.placement.schema_version >= latest {
            return Ok(tenant.clone());
        }
        let behind = || Error::TenantMigrating {
            slug: tenant.slug.to_string(),
        };
        if !self.inner.config.migrate_on_request || !matches!(tenant.status, Active | Suspended) {
            return Err(behind());
        }
        self.check_migrations_unchanged().await?;
        let (_, to) = match self.apply_tenant_migrations(tenant).await? {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(slug = %tenant.slug, error = %e, "migrating a tenant on request failed");
                return Err(behind());
            }
        };
        let dialect = self.dialect_of(tenant)?;
        let scripts = self.migrations().scripts(dialect)?;
        self.catalog()
            .register_migrations(dialect, &scripts)
            .await?;
        self.catalog().set_schema_version(tenant.id, to).await?;
        let mut current = tenant.clone();
        current.placement.schema_version = to;
        Ok(current)
    }

    /// Migrates one tenant's data (shared: its store's tables) and registers the scripts
    /// the first time one succeeds; the outcome, not yet recorded.
    async fn migrate_one(&self, run: &Run, tenant: &Tenant) -> Result<TenantMigrationResult> {
        let applied = self.apply_tenant_migrations(tenant).await?;
        let mut result = TenantMigrationResult {
            run_id: run.id,
            tenant_id: tenant.id,
            slug: tenant.slug.to_string(),
            from_version: tenant.placement.schema_version,
            to_version: tenant.placement.schema_version,
            ok: true,
            error: None,
        };
        match applied {
            Ok((from, to)) => {
                // Shared tables are migrated once per store; the tenant moved from where
                // the catalog had it.
                if tenant.placement.mode != Mode::Shared {
                    result.from_version = from;
                }
                result.to_version = to;
                let dialect = self.dialect_of(tenant)?;
                let flag = &run.registered[usize::from(dialect == Dialect::Postgres)];
                if !flag.swap(true, Ordering::SeqCst) {
                    let scripts = self.migrations().scripts(dialect)?;
                    self.catalog()
                        .register_migrations(dialect, &scripts)
                        .await?;
                }
            }
            Err(e) => {
                result.ok = false;
                result.to_version = self.migrations().latest();
                result.error = Some(e.to_string());
            }
        }
        Ok(result)
    }

    /// Counts by status and schema version, and the tenants whose last migration failed.
    pub async fn status(&self) -> Result<FleetStatus> {
        let counts = self.catalog().status_counts().await?;
        Ok(FleetStatus {
            latest_version: self.migrations().latest(),
            total: counts.iter().map(|c| c.count).sum(),
            counts,
            failed_migrations: self.catalog().failed_migrations().await?,
        })
    }

    /// The platform admin token. `configured` (from the environment) wins; otherwise the
    /// stored hash; otherwise a new token is generated, its hash stored, and the token
    /// returned so that it can be shown once.
    pub async fn admin_token(
        &self,
        configured: Option<&str>,
    ) -> Result<(AdminToken, Option<String>)> {
        if let Some(secret) = configured.filter(|s| !s.is_empty()) {
            return Ok((AdminToken::from_secret(secret), None));
        }
        if let Some(hash) = self.catalog().setting(ADMIN_TOKEN_SETTING).await? {
            if let Some(token) = AdminToken::from_hash_hex(&hash) {
                return Ok((token, None));
            }
        }
        self.rotate_admin_token().await.map(|(t, s)| (t, Some(s)))
    }

    /// Replaces the stored admin token with a new one, returned once.
    pub async fn rotate_admin_token(&self) -> Result<(AdminToken, String)> {
        let (token, secret) = AdminToken::generate();
        self.catalog()
            .set_setting(ADMIN_TOKEN_SETTING, &token.hash_hex())
            .await?;
        Ok((token, secret))
    }
}

/// Builds a group of freshly registered tenants: schema-mode tenants of a PostgreSQL store
/// in one transaction, falling back to one at a time if the group fails (so one bad
/// tenant fails alone); anything else one at a time.
async fn build_group(
    inner: &Arc<Inner>,
    tenants: &[Tenant],
) -> Vec<std::result::Result<i64, String>> {
    if let [first, _, ..] = tenants {
        if let Ok(store) = inner.stores.of(first) {
            let together = store
                .build_together(tenants, Arc::clone(&inner.migrations))
                .await;
            if let Ok(Some(version)) = together {
                return tenants.iter().map(|_| Ok(version)).collect();
            }
        }
    }
    let mut outcomes = Vec::with_capacity(tenants.len());
    for tenant in tenants {
        outcomes.push(inner.build(tenant).await.map_err(|e| e.to_string()));
    }
    outcomes
}

/// Finishes or rolls back what dead owners left in transition, then removes store files
/// that no tenant accounts for.
async fn recover(inner: &Inner) -> Result<RecoveryReport> {
    let catalog = inner.catalog.as_ref();
    let mut report = RecoveryReport::default();
    // List files before reading the catalog: a tenant row is always written before its
    // file, so every file seen here has its row in the listing below.
    let sweep = inner.config.sweep_store_files;
    let on_disk = if sweep {
        inner.stores.sqlite().tenant_ids_on_disk()?
    } else {
        HashSet::new()
    };
    let tenants = catalog
        .list_tenants(&TenantFilter {
            include_deleted: sweep,
            statuses: (!sweep).then(|| vec![Provisioning, Moving, Deleting]),
            ..TenantFilter::default()
        })
        .await?;

    // Tenants that were in transition, and whether their owner lives.
    let mut live_ops: HashMap<TenantId, bool> = HashMap::new();
    for tenant in tenants.iter().filter(|t| t.status.is_transitional()) {
        let owner_alive = match &tenant.op_owner {
            Some(owner) => catalog.is_alive(owner).await?,
            None => false,
        };
        live_ops.insert(tenant.id, owner_alive);
        if owner_alive {
            continue;
        }
        let recovered = match tenant.status {
            Provisioning => recover_provisioning(inner, tenant, &mut report).await,
            Deleting => recover_deletion(inner, tenant, &mut report).await,
            _ => Ok(()),
        };
        match recovered {
            // A store that is down now: its tenants are recovered by a later start.
            Err(Error::StoreUnavailable { store, reason }) => {
                tracing::warn!(slug = %tenant.slug, %store, %reason, "store unavailable; recovery of this tenant postponed");
            }
            other => other?,
        }
    }

    let by_id: HashMap<TenantId, &Tenant> = tenants.iter().map(|t| (t.id, t)).collect();
    for (id, is_tmp) in on_disk {
        let keep = match by_id.get(&id) {
            None => false,
            // In transition: a live owner's files are its business; a dead owner's were
            // settled above.
            Some(_) if live_ops.contains_key(&id) => true,
            Some(t) => {
                !is_tmp
                    && t.placement.store == DEFAULT_STORE
                    && matches!(t.status, Active | Suspended)
            }
        };
        if !keep {
            let location = SqliteStore::file_name(id);
            if is_tmp {
                inner.stores.sqlite().remove_tmp(&location)?;
            } else {
                inner.stores.sqlite().remove_files(id, &location)?;
            }
            report.orphans_removed += 1;
        }
    }
    if !report.is_empty() {
        tracing::info!(?report, "recovered interrupted operations");
    }
    Ok(report)
}

/// Removes a tenant's data during recovery (before the engine's `Arc` exists).
async fn remove_data(inner: &Inner, tenant: &Tenant) -> Result<()> {
    inner.stores.of(tenant)?.remove(tenant).await
}

async fn recover_deletion(
    inner: &Inner,
    tenant: &Tenant,
    report: &mut RecoveryReport,
) -> Result<()> {
    remove_data(inner, tenant).await?;
    inner
        .catalog
        .transition(Transition {
            id: tenant.id,
            from: &[Deleting],
            to: Deleted,
            expect_owner: tenant.op_owner.as_deref(),
            new_owner: None,
            error: None,
            schema_version: None,
            event: "recover.delete_done",
        })
        .await?;
    report.deleted.push(tenant.slug.to_string());
    Ok(())
}

async fn recover_provisioning(
    inner: &Inner,
    tenant: &Tenant,
    report: &mut RecoveryReport,
) -> Result<()> {
    // A placed file is complete by construction (built under a temporary name, renamed
    // last), as is a PostgreSQL database or schema with a ledger (created with it in one
    // transaction); anything else is rolled back.
    let placed = match inner.inspect(tenant).await {
        Err(e @ Error::StoreUnavailable { .. }) => return Err(e),
        other => other.unwrap_or(None),
    };
    let (to, error, version, event) = match placed {
        Some(version) if version > 0 => (Active, None, Some(version), "recover.provision_done"),
        _ => {
            remove_data(inner, tenant).await?;
            (
                Failed,
                Some(format!(
                    "provisioning was interrupted; retry with `tenancy tenant retry {}`",
                    tenant.slug
                )),
                None,
                "recover.provision_failed",
            )
        }
    };
    inner
        .catalog
        .transition(Transition {
            id: tenant.id,
            from: &[Provisioning],
            to,
            expect_owner: tenant.op_owner.as_deref(),
            new_owner: None,
            error,
            schema_version: version,
            event,
        })
        .await?;
    match to {
        Active => report.completed.push(tenant.slug.to_string()),
        _ => report.failed.push(tenant.slug.to_string()),
    }
    Ok(())
}

impl Inner {
    /// Where a new tenant of this mode goes in this store; refuses modes it cannot hold.
    pub(crate) fn location_for(&self, store: &str, mode: Mode, id: TenantId) -> Result<String> {
        self.stores.named(store)?.location_for(mode, id)
    }

    /// The SQL dialect of a store's tenants.
    pub(crate) fn dialect_of_store(&self, store: &str) -> Result<Dialect> {
        Ok(self.stores.named(store)?.dialect())
    }

    /// Builds the tenant's data with every migration; its schema version.
    pub(crate) async fn build(&self, tenant: &Tenant) -> Result<i64> {
        self.stores
            .of(tenant)?
            .build(tenant, Arc::clone(&self.migrations))
            .await
    }

    /// The schema version of the tenant's complete data, `None` if there is none.
    pub(crate) async fn inspect(&self, tenant: &Tenant) -> Result<Option<i64>> {
        self.stores.of(tenant)?.inspect(tenant).await
    }

    /// Removes every byte of the tenant's data from its store.
    pub(crate) async fn remove_data(&self, tenant: &Tenant) -> Result<()> {
        remove_data(self, tenant).await
    }

    /// A transaction on a PostgreSQL tenant's data, context set.
    pub(crate) async fn session(&self, tenant: &Tenant) -> Result<crate::store::TenantSession> {
        match self.stores.postgres_of(tenant) {
            Some(pg) => {
                pg.session(tenant.placement.mode, &tenant.placement.location)
                    .await
            }
            None => {
                self.stores.named(&tenant.placement.store)?;
                Err(Error::ModeNotSupported {
                    store: tenant.placement.store.clone(),
                    kind: "files",
                    mode: "a PostgreSQL session (use Engine::with_db or Engine::query)".into(),
                })
            }
        }
    }
}
