//! Fleet migrations: every tenant behind the latest schema brought up to it, per-store
//! workers, canaries, dry-run plans, and the fleet's status.

use std::sync::Weak;

use super::*;
use crate::catalog::RegisteredMigration;

/// Options of a fleet migration.
#[derive(Debug, Clone, Default)]
pub struct MigrateOptions {
    /// Only this tenant.
    pub tenant: Option<Slug>,
    /// Say what would run, change nothing.
    pub dry_run: bool,
    /// Overrides the configured concurrency.
    pub concurrency: Option<usize>,
    /// Migrate this many tenants first; if any fails, stop there. `None`: the configured
    /// [`EngineConfig::migrate_canary`]; `Some(0)`: no canary.
    pub canary: Option<usize>,
    /// Stop taking new tenants after this many failed. `None`: the configured
    /// [`EngineConfig::migrate_max_failures`]; `Some(0)`: never stop.
    pub max_failures: Option<usize>,
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
    /// The run stopped taking tenants after the maximum number of failures.
    pub failure_limit_reached: bool,
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
    /// Tenants failed so far, and how many end the run (`0`: none do).
    failures: std::sync::atomic::AtomicUsize,
    max_failures: usize,
}

impl Run {
    /// Whether workers should take no new tenant: stopped, or too many failed.
    fn halted(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || self.too_many_failures()
    }

    fn too_many_failures(&self) -> bool {
        self.max_failures > 0 && self.failures.load(Ordering::SeqCst) >= self.max_failures
    }

    /// Tells the progress callback about a recorded outcome.
    fn report(&self, r: &TenantMigrationResult) {
        if !r.ok {
            self.failures.fetch_add(1, Ordering::SeqCst);
        }
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

/// Fleet overview for `tenancy status`.
#[derive(Debug, Clone, Serialize)]
pub struct FleetStatus {
    pub latest_version: i64,
    pub total: u64,
    pub counts: Vec<StatusCount>,
    pub failed_migrations: Vec<TenantMigrationResult>,
}

/// How often a process compares its migration set with the catalog's, so that it follows
/// a `tenancy migrate` run by another process (and says so when it cannot).
const FOLLOW_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Follows the fleet in the background while the engine lives.
pub(crate) fn spawn_follower(inner: Weak<Inner>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(FOLLOW_INTERVAL).await;
            let Some(inner) = inner.upgrade() else { return };
            // Being behind is logged by `follow_fleet`; a catalog that does not answer is
            // the readiness check's to report.
            let _ = Engine { inner }.follow_fleet().await;
        }
    });
}

impl Engine {
    /// Refuses a migration set in which a file that was already applied somewhere changed
    /// or is missing; follows the fleet first when another process migrated it further.
    pub async fn check_migrations_unchanged(&self) -> Result<()> {
        self.follow_fleet().await.map(drop)
    }

    fn dialects_in_use(&self) -> Vec<Dialect> {
        let mut dialects = vec![Dialect::Sqlite];
        if self.inner.stores.any_of(Dialect::Postgres) {
            dialects.push(Dialect::Postgres);
        }
        dialects
    }

    /// Follows the fleet: when the catalog shows migrations past this process's latest (a
    /// `tenancy migrate` run by another process with newer files), reloads the migrations
    /// folder and serves the new version — up to the fleet's, never beyond, so files
    /// deployed ahead of their migration wait for it. When the folder does not have them,
    /// or they differ from what was applied, answers [`Error::BehindFleet`] and logs it
    /// (once per change). Refuses a set in which a migration applied somewhere changed or
    /// is missing. Returns the set in force.
    pub async fn follow_fleet(&self) -> Result<Arc<MigrationSet>> {
        let current = self.migrations();
        let mut fleet = 0;
        let mut registered = Vec::new();
        for dialect in self.dialects_in_use() {
            let applied = self.catalog().registered_migrations(dialect).await?;
            fleet = fleet.max(applied.iter().map(|m| m.version).max().unwrap_or(0));
            registered.push((dialect, applied));
        }
        if fleet <= current.latest() {
            self.set_behind(None);
            for (dialect, applied) in &registered {
                check_unchanged(&current, applied, *dialect)?;
            }
            return Ok(current);
        }
        let followed = self.reload_migrations(fleet).and_then(|set| {
            for (dialect, applied) in &registered {
                check_unchanged(&set, applied, *dialect)?;
                set.scripts(*dialect)?;
            }
            Ok(set)
        });
        match followed {
            Ok(set) => {
                let set = Arc::new(set);
                tracing::info!(
                    from = current.latest(),
                    to = set.latest(),
                    origin = %set.origin,
                    "following the fleet: another process migrated it; serving the new schema version"
                );
                *self
                    .inner
                    .migrations
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Arc::clone(&set);
                self.set_behind(None);
                Ok(set)
            }
            Err(e) => {
                let reason = match e {
                    Error::InvalidMigrations(m) => m,
                    other => other.to_string(),
                };
                let behind = Error::BehindFleet {
                    here: current.latest(),
                    fleet,
                    reason,
                };
                if self.set_behind(Some(fleet)) {
                    tracing::error!(error = %behind, "this server is behind the fleet");
                }
                Err(behind)
            }
        }
    }

    /// The configured migrations again, up to `version`; fails when they do not reach it.
    fn reload_migrations(&self, version: i64) -> Result<MigrationSet> {
        let set = self.inner.config.migrations.load()?.up_to(version);
        if set.latest() < version {
            return Err(Error::InvalidMigrations(format!(
                "{} reaches version {} only",
                set.origin,
                set.latest()
            )));
        }
        Ok(set)
    }

    /// Records whether this process is behind the fleet (at which fleet version); true
    /// when that changed.
    fn set_behind(&self, fleet: Option<i64>) -> bool {
        let mut behind = self
            .inner
            .behind
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let changed = *behind != fleet;
        *behind = fleet;
        changed
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
        // Before any tenant is touched (and on a dry run too): the set must run wherever
        // it will.
        self.rehearse(&tenants).await?;
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
            let canary = options.canary.unwrap_or(self.inner.config.migrate_canary);
            if let Some(n) = Some(canary).filter(|n| *n > 0) {
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

    /// Rehearses the migration set once for each store and mode among `tenants`
    /// ([`TenantStore::rehearse`](crate::TenantStore::rehearse)): parsed, transformed for
    /// `shared` tenants, run on a scratch place and rolled back. A store this process does
    /// not know is left to fail its tenants one by one.
    async fn rehearse(&self, tenants: &[Tenant]) -> Result<()> {
        let places: BTreeSet<(&str, Mode)> = tenants
            .iter()
            .map(|t| (t.placement.store.as_str(), t.placement.mode))
            .collect();
        for (name, mode) in places {
            let Ok(store) = self.inner.stores.named(name) else {
                continue;
            };
            let rehearsed = Arc::clone(store).rehearse(mode, self.migrations()).await;
            match rehearsed {
                Ok(()) => {}
                Err(e @ (Error::MigrationFailed { .. } | Error::InvalidMigrations(_))) => {
                    return Err(Error::RehearsalFailed {
                        store: name.to_owned(),
                        mode: mode.to_string(),
                        reason: e.to_string(),
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn plan(&self, tenants: &[Tenant]) -> Result<Vec<PlannedMigration>> {
        tenants
            .iter()
            .map(|t| {
                let migrations = self.migrations();
                let scripts = migrations.scripts(self.dialect_of(t)?)?;
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
            failures: Default::default(),
            max_failures: options
                .max_failures
                .unwrap_or(self.inner.config.migrate_max_failures),
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
            if run.halted() {
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
        report.failure_limit_reached = left && run.too_many_failures();
        self.catalog()
            .finish_migration_run(run.id, report.migrated as u64, report.failed.len() as u64)
            .await?;
        Ok(())
    }

    /// How many tenants of a store are migrated or provisioned at once: `concurrency`,
    /// and on PostgreSQL at most half the store's connection budget, so requests keep
    /// the other half.
    pub(super) fn store_workers(&self, store: &str, concurrency: usize) -> Result<usize> {
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
            if run.halted() {
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
        let started = std::time::Instant::now();
        let applied = store.migrate(tenant, self.migrations()).await;
        telemetry::tenant_migrated(telemetry::outcome(&applied), started.elapsed());
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
            // A failed migration is not something a retry fixes: say so.
            if let Some(failed) = self.catalog().failed_migration(tenant.id).await? {
                return Err(Error::TenantMigrationFailed {
                    slug: tenant.slug.to_string(),
                    version: failed.to_version,
                    reason: failed.error.unwrap_or_default(),
                });
            }
            return Err(behind());
        }
        self.check_migrations_unchanged().await?;
        let (_, to) = match self.apply_tenant_migrations(tenant).await? {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(slug = %tenant.slug, error = %e, "migrating a tenant on request failed");
                return Err(match e {
                    Error::MigrationFailed { .. } => Error::TenantMigrationFailed {
                        slug: tenant.slug.to_string(),
                        version: latest,
                        reason: e.to_string(),
                    },
                    _ => behind(),
                });
            }
        };
        let dialect = self.dialect_of(tenant)?;
        let migrations = self.migrations();
        let scripts = migrations.scripts(dialect)?;
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
                    let migrations = self.migrations();
                    let scripts = migrations.scripts(dialect)?;
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
        let failed_migrations = self.standing_failures().await?;
        Ok(FleetStatus {
            latest_version: self.migrations().latest(),
            total: counts.iter().map(|c| c.count).sum(),
            counts,
            failed_migrations,
        })
    }
}

impl Engine {
    /// The tenants whose last migration failed and who are still behind it. A failure
    /// aimed at a version the migration set no longer has (its file was removed) no
    /// longer stands once the tenant is at the set's latest.
    pub(super) async fn standing_failures(&self) -> Result<Vec<TenantMigrationResult>> {
        let latest = self.migrations().latest();
        let mut failed = self.catalog().failed_migrations().await?;
        failed.retain(|f| f.from_version < latest);
        Ok(failed)
    }
}

/// Refuses `migrations` when a migration `applied` somewhere (in `dialect`) is missing from
/// it or changed since.
fn check_unchanged(
    migrations: &MigrationSet,
    applied: &[RegisteredMigration],
    dialect: Dialect,
) -> Result<()> {
    for applied in applied {
        let Some(migration) = migrations.get(applied.version) else {
            if applied.version > migrations.latest() {
                return Err(Error::UnknownSchemaVersion {
                    applied: applied.version,
                    latest: migrations.latest(),
                });
            }
            return Err(Error::InvalidMigrations(format!(
                "migration {} was applied but is missing from {}",
                applied.file, migrations.origin
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
