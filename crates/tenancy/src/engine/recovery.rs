//! Recovery at open: finishes or rolls back what dead processes left in transition, and
//! removes store files no tenant accounts for.

use super::*;

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

/// Finishes or rolls back what dead owners left in transition, then removes store files
/// that no tenant accounts for.
pub(super) async fn recover(inner: &Inner) -> Result<RecoveryReport> {
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
pub(super) async fn remove_data(inner: &Inner, tenant: &Tenant) -> Result<()> {
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
