//! The engine: every tenant operation, on top of a [`Catalog`] and a store.
//!
//! Each lifecycle transition is recorded in the catalog before its side effects (with this
//! process as the operation's owner) and after them. [`Engine::open`] runs recovery: the
//! operations of owners that died are finished or rolled back, and store files the catalog
//! does not account for are removed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub(crate) mod access;
pub(crate) mod accounts;
mod data;
mod fleet;
mod lifecycle;
pub(crate) mod plans;
mod read_cache;
mod recovery;
mod retention;
mod settings;
mod usage;

pub use fleet::{FleetStatus, MigrateEvent, MigrateOptions, MigrateReport, PlannedMigration};
pub use lifecycle::BulkReport;
pub use plans::{LimitUse, MoveDue, PlanChange, PlanChanged};
pub use recovery::RecoveryReport;
use recovery::{recover, remove_data};
pub use retention::RetentionReport;
pub use usage::STORAGE_SAMPLE_JOB;

use self::accounts::AccountState;
use self::read_cache::ReadCache;
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
use crate::settings::SettingsSchema;
use crate::slug::Slug;
use crate::store::{apply_migrations, PgStore, SqliteStore};
use crate::stores::Stores;
use crate::telemetry;
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

/// The engine's shared state. Its parts own their invariants (the stores, the caches, the
/// account state); only the engine and its submodules see them.
struct Inner {
    config: EngineConfig,
    catalog: Arc<dyn Catalog>,
    stores: Stores,
    /// The migration set this process serves: the one it started with, replaced when the
    /// catalog shows another process migrated the fleet further and the migrations folder
    /// has the new files ([`Engine::follow_fleet`]).
    migrations: std::sync::RwLock<Arc<MigrationSet>>,
    /// Whether this process was last found behind the fleet (logged once per change).
    behind: std::sync::Mutex<Option<i64>>,
    recovery: RecoveryReport,
    accounts: AccountState,
    schemas: SchemaCache,
    reads: ReadCache,
    usage: usage::UsageState,
    /// What every tenant's settings document must satisfy.
    settings_schema: SettingsSchema,
}

/// The tenancy engine. Cheap to clone; every clone shares the catalog and the caches.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// What [`Engine::readiness`] found: the error of the catalog and of each store that did
/// not answer.
#[derive(Debug)]
pub struct Readiness {
    pub catalog: Option<Error>,
    /// Every store by name, with its error if it did not answer.
    pub stores: Vec<(String, Option<Error>)>,
    /// Tenants whose migration failed and still stands (they answer
    /// `TenantMigrationFailed`): the fleet is degraded, though this process is ready.
    pub failed_migrations: usize,
    /// The schema version this process serves.
    pub schema_version: i64,
    /// Set when another process migrated the fleet further than this process can follow
    /// (its migrations folder lacks the new files): the fleet's version and why. It refuses
    /// what would build tenants at its older version ([`Error::BehindFleet`]).
    pub behind_fleet: Option<(i64, String)>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.catalog.is_none() && self.stores.iter().all(|(_, e)| e.is_none())
    }

    /// The names of the stores that did not answer.
    pub fn stores_down(&self) -> impl Iterator<Item = &str> {
        self.stores
            .iter()
            .filter(|(_, e)| e.is_some())
            .map(|(name, _)| name.as_str())
    }
}

impl Engine {
    /// Opens the catalog and the store under `config.data_dir`, loads the tenant schema,
    /// and recovers what dead processes left half-done.
    pub async fn open(config: EngineConfig) -> Result<Engine> {
        // Before anything is opened: a schema that does not compile is a configuration
        // error, and says which file.
        let settings_schema = SettingsSchema::compile(&config.settings_schema)?;
        let migrations = config.migrations.load()?;
        migrations.scripts(Dialect::Sqlite)?;
        crate::store::set_heap_limit(config.memory.sqlite_heap_limit())?;
        let catalog: Arc<dyn Catalog> = match &config.catalog_url {
            Some(url) => Arc::new(crate::catalog::postgres::PgCatalog::connect(url).await?),
            None => Arc::new(
                SqliteCatalog::open_with(&config.data_dir.join("catalog.db"), config.durability)
                    .await?,
            ),
        };
        let stores = Stores::open(&config, catalog.as_ref()).await?;
        if stores.any_of(Dialect::Postgres) {
            migrations.scripts(Dialect::Postgres)?;
        }
        let accounts = AccountState::load(catalog.as_ref(), &config).await?;
        let reads = ReadCache::new(
            catalog.generation()?,
            catalog.changes_since(None).await?.position,
        );
        let mut inner = Inner {
            accounts,
            config,
            catalog,
            stores,
            migrations: std::sync::RwLock::new(Arc::new(migrations)),
            behind: std::sync::Mutex::new(None),
            recovery: RecoveryReport::default(),
            schemas: SchemaCache::default(),
            reads,
            usage: usage::UsageState::default(),
            settings_schema,
        };
        inner.recovery = recover(&inner).await?;
        // The start-up audit of shared tables; a store that is down is audited on first use.
        for store in inner.stores.postgres_stores() {
            if let Err(e) = store.audit().await {
                tracing::warn!(store = %store.name, error = %e, "could not audit the shared tables at start-up");
            }
        }
        let inner = Arc::new(inner);
        read_cache::spawn_flusher(Arc::downgrade(&inner));
        usage::spawn_flusher(Arc::downgrade(&inner), inner.config.usage.flush_every);
        fleet::spawn_follower(Arc::downgrade(&inner));
        Ok(Engine { inner })
    }

    /// Whether the catalog and every store answer now, each checked at once (what
    /// `/readyz` reports).
    pub async fn readiness(&self) -> Readiness {
        let catalog = async {
            match self.standing_failures().await {
                Ok(failed) => (None, failed.len()),
                Err(e) => (Some(e), 0),
            }
        };
        let stores = futures_util::future::join_all(self.inner.stores.all().into_iter().map(
            |store| async move {
                let name = store.name().to_owned();
                (name, Arc::clone(store).check().await.err())
            },
        ));
        let ((catalog, failed_migrations), stores) = tokio::join!(catalog, stores);
        // Behind the fleet is reported, not "not ready": this process still serves the
        // data of every tenant; the catalog being down is reported above.
        let behind_fleet = match self.follow_fleet().await {
            Err(e @ Error::BehindFleet { fleet, .. }) => Some((fleet, e.to_string())),
            _ => None,
        };
        Readiness {
            catalog,
            stores,
            failed_migrations,
            schema_version: self.migrations().latest(),
            behind_fleet,
        }
    }

    /// Runs `pass` every `every` for as long as the engine lives, telling it whether this
    /// process holds the job's lease: the catalog lock `lease`, taken on the first tick it
    /// is free and held while the process lives — so one process of a fleet holds it, and
    /// another takes it over when that one dies.
    pub(crate) fn spawn_leased<F, Fut>(
        &self,
        lease: &'static str,
        every: std::time::Duration,
        pass: F,
    ) where
        F: Fn(Engine, bool) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut holding = false;
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let engine = Engine { inner };
                if !holding {
                    holding = engine.catalog().acquire_lock(lease).await.is_ok();
                }
                pass(engine, holding).await;
            }
        });
    }

    pub fn catalog(&self) -> &dyn Catalog {
        self.inner.catalog.as_ref()
    }

    /// The migration set this process serves now (it moves on when the fleet does).
    pub fn migrations(&self) -> Arc<MigrationSet> {
        self.inner.migrations()
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

    /// Every PostgreSQL store.
    pub fn postgres_stores(&self) -> impl Iterator<Item = &Arc<PgStore>> {
        self.inner.stores.postgres_stores()
    }

    /// A PostgreSQL store by name.
    pub fn pg_store(&self, name: &str) -> Option<&Arc<PgStore>> {
        self.inner.stores.postgres(name)
    }

    /// What recovery did when this engine opened.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.inner.recovery
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
        let migrations = self.migrations();
        let latest = migrations.latest();
        if let Some(schema) = self.cached_schema("sqlite", latest) {
            return Ok(schema);
        }
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

impl Inner {
    fn migrations(&self) -> Arc<MigrationSet> {
        Arc::clone(
            &self
                .migrations
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Where a new tenant of this mode goes in this store; refuses modes it cannot hold.
    pub(crate) fn location_for(&self, store: &str, mode: Mode, id: TenantId) -> Result<String> {
        self.stores.named(store)?.location_for(mode, id)
    }

    /// The SQL dialect of a store's tenants.
    pub(crate) fn dialect_of_store(&self, store: &str) -> Result<Dialect> {
        Ok(self.stores.named(store)?.dialect())
    }

    /// The mode of a new tenant in `store`: the one asked for, else the configured default
    /// — except in a SQLite store, which holds tenants in one mode only (`database`), so
    /// `--store default` works whatever the default mode of the PostgreSQL stores is.
    pub(crate) fn mode_for(&self, store: &str, asked: Option<Mode>) -> Result<Mode> {
        Ok(match asked {
            Some(mode) => mode,
            None if self.dialect_of_store(store)? == Dialect::Sqlite => Mode::Database,
            None => self.config.default_mode,
        })
    }

    /// Builds the tenant's data with every migration; its schema version.
    pub(crate) async fn build(&self, tenant: &Tenant) -> Result<i64> {
        self.stores
            .of(tenant)?
            .build(tenant, self.migrations())
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
