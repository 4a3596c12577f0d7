//! Creating, retrying and deleting tenants: each transition recorded in the catalog before
//! and after its side effects, one tenant or a bulk file at a time.

use super::*;

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

impl Engine {
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
        self.create_tenant_bounded(slug, name, owner, place, None)
            .await
    }

    /// A tenant a user creates for themselves (self-service), on `plan` (`None`: the
    /// default), refused once they own `max_owned` tenants — or the plan's
    /// `owned_tenants`, when it sets one (`QuotaExceeded`) — however many requests race.
    pub async fn create_own_tenant(
        &self,
        slug: Slug,
        name: Option<String>,
        owner: UserId,
        max_owned: u32,
        plan: Option<String>,
    ) -> Result<Tenant> {
        let place = PlaceOptions {
            plan,
            ..PlaceOptions::default()
        };
        self.create_tenant_bounded(slug, name, Some(owner), &place, Some(max_owned))
            .await
    }

    async fn create_tenant_bounded(
        &self,
        slug: Slug,
        name: Option<String>,
        owner: Option<UserId>,
        place: &PlaceOptions,
        max_owned: Option<u32>,
    ) -> Result<Tenant> {
        let name = name.unwrap_or_else(|| slug.to_string());
        validate_name(&name)?;
        let (plan, store, mode) = self.inner.place_on_plan(place)?;
        let plan_limit = plan
            .as_deref()
            .and_then(|p| self.inner.config.plans.get(p))
            .and_then(|p| p.limits.owned_tenants);
        let store = store.as_str();
        let id = TenantId::generate();
        let location = self.inner.location_for(store, mode, id)?;
        self.check_migrations_unchanged().await?;
        let new = NewTenant {
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
            plan,
        };
        let tenant = match (max_owned, plan_limit) {
            (Some(_), Some(max)) => {
                let max32 = u32::try_from(max).unwrap_or(u32::MAX);
                match self.catalog().insert_tenant_capped(&new, max32).await {
                    Err(Error::TenantLimitReached { .. }) => {
                        return Err(Error::QuotaExceeded {
                            limit: "owned_tenants".into(),
                            current: max,
                            max,
                        })
                    }
                    other => other?,
                }
            }
            (Some(max), None) => self.catalog().insert_tenant_capped(&new, max).await?,
            (None, _) => self.catalog().insert_tenant(&new).await?,
        };
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
        let (plan, store, mode) = self.inner.place_on_plan(place)?;
        let store = store.as_str();
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
                        plan: plan.clone(),
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
                    telemetry::provisioned("ok", None);
                    done.push((tenant.id, v));
                    ready.push(tenant.slug.clone());
                }
                Err(reason) => {
                    telemetry::provisioned("failed", None);
                    let e = self.provisioning_failed(tenant, reason).await?;
                    outcomes.push((tenant.slug.clone(), Err(e)));
                }
            }
        }
        if !done.is_empty() {
            let dialect = self.inner.dialect_of_store(store)?;
            let migrations = self.migrations();
            let scripts = migrations.scripts(dialect)?;
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
        let started = std::time::Instant::now();
        let provisioned = self.provision_timed(tenant).await;
        telemetry::provisioned(telemetry::outcome(&provisioned), Some(started.elapsed()));
        provisioned
    }

    async fn provision_timed(&self, tenant: Tenant) -> Result<Tenant> {
        fault::pause_async(points::PROVISION_CATALOG_WRITTEN).await;
        let built = self.inner.build(&tenant).await;
        fault::pause_async(points::PROVISION_FILE_PLACED).await;
        let owner = self.catalog().owner().to_owned();
        match built {
            Ok(version) => {
                let dialect = self.dialect_of(&tenant)?;
                let migrations = self.migrations();
                let scripts = migrations.scripts(dialect)?;
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

    /// Deletes the tenant holding `slug`: `deleting`, its files removed, then `deleted`
    /// (the slug and its domains are free). For an operator, who needs no authorisation
    /// between finding the tenant and deleting it; a caller whose access was checked on a
    /// tenant deletes that one, by id ([`Engine::delete_tenant_by_id`]).
    pub async fn delete_tenant(&self, slug: &Slug) -> Result<Tenant> {
        let tenant = self.tenant(slug).await?;
        self.delete_tenant_by_id(tenant.id).await
    }

    /// Deletes the tenant with this id — the one whose access was checked, never whichever
    /// tenant holds its slug by now. A tenant deleted meanwhile is `TenantNotFound`.
    pub async fn delete_tenant_by_id(&self, id: TenantId) -> Result<Tenant> {
        let owner = self.catalog().owner().to_owned();
        let tenant = self
            .catalog()
            .transition(Transition {
                id,
                from: &[Active, Suspended, Failed],
                to: Deleting,
                expect_owner: None,
                new_owner: Some(&owner),
                error: None,
                schema_version: None,
                event: "delete.begin",
            })
            .await
            .map_err(|e| match e {
                Error::InvalidTransition { slug, status, .. } if status == Deleted.as_str() => {
                    Error::TenantNotFound { slug }
                }
                e => e,
            })?;
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
            let together = store.build_together(tenants, inner.migrations()).await;
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
