//! Usage on the engine: what the request path counts (requests, data operations, rows),
//! the flushes that write it to the catalog, the storage sampler, the usage reports, the
//! cost estimate and the budget alerts.
//!
//! Counting never touches the catalog: the [`Meter`] holds the counts in memory, and a
//! flush (every `[usage] flush_secs`, when a report is asked for, and on shutdown through
//! [`Engine::flush`]) writes everything counted in one catalog transaction. A flush that
//! fails keeps its counts for the next one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, PoisonError, Weak};

use chrono::{DateTime, NaiveDate, Utc};
use futures_util::StreamExt;

use super::*;
use crate::data::{DataOp, DataOutput};
use crate::engine::access::Principal;
use crate::plans::{Metric, Money};
use crate::usage::{
    estimate, month_key, month_start, thresholds_reached, BudgetAlert, CostEstimate, DayRange,
    Meter, StorageSample, UsageReport, BUDGET_THRESHOLDS,
};

/// Where the job that samples the tenants not sampled yet today is held: one process of a
/// fleet runs it (each process also samples the tenants it saw written to).
pub const STORAGE_SAMPLE_JOB: &str = "job:storage-sample";
/// Tenants not sampled today taken per pass of the sampler.
const DUE_PER_PASS: u32 = 1_000;
/// Tenants measured at once by the sampler.
const SAMPLE_CONCURRENCY: usize = 4;
/// How far back a refresh of other processes' samples reaches past the last one, for
/// clocks that disagree a little.
const REFRESH_OVERLAP: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// The usage state of an engine.
#[derive(Default)]
pub(crate) struct UsageState {
    meter: Meter,
    /// One flush at a time, so that batches reach the catalog in the order taken.
    flushing: tokio::sync::Mutex<()>,
    /// Each tenant's latest storage sample known to this process.
    samples: Mutex<HashMap<TenantId, StorageSample>>,
    /// When samples were last read from the catalog (`None`: never).
    refreshed: Mutex<Option<DateTime<Utc>>>,
    /// Alerts known raised this month, as (tenant, threshold): not asked for again.
    raised: Mutex<RaisedAlerts>,
}

/// The alerts of one month known raised; a new month starts empty.
#[derive(Default)]
struct RaisedAlerts {
    month: String,
    known: HashSet<(TenantId, u32)>,
}

impl RaisedAlerts {
    fn contains(&self, month: &str, tenant: TenantId, threshold: u32) -> bool {
        self.month == month && self.known.contains(&(tenant, threshold))
    }

    fn insert(&mut self, month: &str, tenant: TenantId, threshold: u32) {
        if self.month != month {
            self.month = month.to_owned();
            self.known.clear();
        }
        self.known.insert((tenant, threshold));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl UsageState {
    fn remember(&self, sample: StorageSample) {
        let mut samples = lock(&self.samples);
        match samples.get(&sample.tenant) {
            Some(held) if held.sampled_at >= sample.sampled_at => {}
            _ => {
                samples.insert(sample.tenant, sample);
            }
        }
    }
}

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// What a data operation counts as.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DataKind {
    Read,
    Insert,
    Update,
    Delete,
}

impl DataKind {
    pub(crate) fn of(op: &DataOp) -> DataKind {
        match op {
            DataOp::List(_) | DataOp::Get(_) => DataKind::Read,
            DataOp::Insert(_) => DataKind::Insert,
            DataOp::Update(..) | DataOp::UpdateFiltered(..) => DataKind::Update,
            DataOp::Delete(_) | DataOp::DeleteFiltered(_) => DataKind::Delete,
        }
    }
}

impl Engine {
    /// Counts `n` of a metric for the tenant today (for instance `rows_expired` by a
    /// retention job). `storage_bytes` records a sample (the day's value is the latest
    /// sample, not a sum); `active_users` are counted from requests only, and are ignored
    /// here. Written by the next flush.
    pub fn record_usage(&self, tenant: TenantId, metric: Metric, n: u64) {
        match metric {
            Metric::StorageBytes => {
                let sample = StorageSample {
                    tenant,
                    bytes: n,
                    sampled_at: Utc::now(),
                };
                self.inner.usage.meter.sample(sample);
                self.inner.usage.remember(sample);
            }
            Metric::ActiveUsers => {
                tracing::debug!("active users are counted from requests; ignored")
            }
            _ => self.inner.usage.meter.add(tenant, today(), metric, n),
        }
    }

    /// Counts one request that reached the tenant: per API key label (the key's id when
    /// it has none) for keys, and the user among the day's active users for users (not
    /// for platform operators acting on the tenant).
    pub fn record_request(&self, tenant: TenantId, principal: &Principal) {
        if !self.inner.config.usage.enabled {
            return;
        }
        let (label, user) = match principal {
            Principal::ApiKey(key) => (
                Some(
                    key.label
                        .as_deref()
                        .filter(|l| !l.is_empty())
                        .unwrap_or(&key.id),
                ),
                None,
            ),
            Principal::User { user, .. } if !user.is_superadmin => (None, Some(user.id)),
            _ => (None, None),
        };
        self.inner.usage.meter.request(tenant, today(), label, user);
    }

    /// Counts a data operation that succeeded: a read, or a write and the rows it changed.
    pub(crate) fn record_data(&self, tenant: TenantId, kind: DataKind, output: &DataOutput) {
        if !self.inner.config.usage.enabled {
            return;
        }
        let meter = &self.inner.usage.meter;
        let day = today();
        let rows = match output {
            DataOutput::Rows(rows) => rows.len() as u64,
            DataOutput::Deleted(n) => *n as u64,
            DataOutput::Row(_) | DataOutput::Done => 1,
            DataOutput::Page(_) => 0,
        };
        match kind {
            DataKind::Read => meter.add(tenant, day, Metric::Reads, 1),
            DataKind::Insert | DataKind::Update | DataKind::Delete => {
                meter.add(tenant, day, Metric::Writes, 1);
                let metric = match kind {
                    DataKind::Insert => Metric::RowsInserted,
                    DataKind::Update => Metric::RowsUpdated,
                    _ => Metric::RowsDeleted,
                };
                meter.add(tenant, day, metric, rows);
            }
        }
    }

    /// Writes the usage counted so far in one catalog transaction, then checks the budgets
    /// of the tenants it had anything of. On failure the counts stay for the next flush.
    pub async fn flush_usage(&self) -> Result<()> {
        flush_usage(&self.inner).await?;
        Ok(())
    }

    /// The tenant's usage over `range`, from the catalog once this process's counts are
    /// written (other processes' counts of the last `[usage] flush_secs` may not be yet).
    pub async fn usage(&self, tenant: &Tenant, range: DayRange) -> Result<UsageReport> {
        self.flush_usage().await?;
        let rows = self
            .catalog()
            .usage(tenant.id, range.from, range.to)
            .await?;
        Ok(UsageReport::new(tenant.slug.to_string(), range, rows))
    }

    /// What the tenant's month costs so far and is heading for, under its effective plan's
    /// price model, with the alerts raised this month (and any due now raised).
    pub async fn cost(&self, tenant: &Tenant) -> Result<CostEstimate> {
        self.flush_usage().await?;
        let mut cost = self.cost_as_of(tenant, today()).await?;
        self.raise_alerts(tenant, &cost).await?;
        cost.alerts = self
            .catalog()
            .budget_alerts(tenant.id, Some(&cost.month))
            .await?;
        Ok(cost)
    }

    /// The month-to-date cost as the catalog has it now, for the month of `today`.
    async fn cost_as_of(&self, tenant: &Tenant, today: NaiveDate) -> Result<CostEstimate> {
        let range = DayRange {
            from: month_start(today),
            to: today,
        };
        let rows = self
            .catalog()
            .usage(tenant.id, range.from, range.to)
            .await?;
        let report = UsageReport::new(tenant.slug.to_string(), range, rows);
        let mut quantities: BTreeMap<Metric, u64> = report.totals;
        if let (std::collections::btree_map::Entry::Vacant(slot), Some(bytes)) = (
            quantities.entry(Metric::StorageBytes),
            self.storage_sample(tenant.id),
        ) {
            slot.insert(bytes);
        }
        let effective = self.effective_plan(tenant);
        let plan = effective
            .as_ref()
            .and_then(|e| self.plans().get(&e.plan))
            .cloned();
        let price = plan.as_ref().map(|p| p.price.clone()).unwrap_or_default();
        Ok(estimate(
            tenant.slug.to_string(),
            plan.map(|p| p.name),
            &price,
            effective.and_then(|e| e.budget),
            today,
            &quantities,
        ))
    }

    /// Raises the budget alerts the tenant's month-to-date cost has reached and that are
    /// not raised yet (each once per month, whichever process gets there first); the
    /// alerts raised now.
    pub async fn check_budget(&self, tenant: &Tenant) -> Result<Vec<BudgetAlert>> {
        let Some(budget) = self.effective_plan(tenant).and_then(|e| e.budget) else {
            return Ok(Vec::new());
        };
        let today = today();
        let month = month_key(today);
        let all_known = {
            let raised = lock(&self.inner.usage.raised);
            BUDGET_THRESHOLDS
                .iter()
                .all(|t| raised.contains(&month, tenant.id, *t))
        };
        if all_known || budget <= Money::ZERO {
            return Ok(Vec::new());
        }
        let cost = self.cost_as_of(tenant, today).await?;
        self.raise_alerts(tenant, &cost).await
    }

    async fn raise_alerts(&self, tenant: &Tenant, cost: &CostEstimate) -> Result<Vec<BudgetAlert>> {
        let Some(budget) = cost.budget else {
            return Ok(Vec::new());
        };
        let mut raised_now = Vec::new();
        for threshold in thresholds_reached(cost.mtd, budget) {
            if lock(&self.inner.usage.raised).contains(&cost.month, tenant.id, threshold) {
                continue;
            }
            let alert = BudgetAlert {
                tenant_id: tenant.id,
                month: cost.month.clone(),
                threshold,
                cost: cost.mtd,
                budget,
                raised_at: Utc::now(),
            };
            if self.catalog().raise_budget_alert(&alert).await? {
                tracing::warn!(
                    tenant = %tenant.slug,
                    month = %alert.month,
                    threshold = alert.threshold,
                    cost = %alert.cost,
                    budget = %alert.budget,
                    "budget alert: the month-to-date cost reached {}% of the budget",
                    alert.threshold
                );
                telemetry::budget_alert(alert.threshold);
                raised_now.push(alert);
            }
            lock(&self.inner.usage.raised).insert(&cost.month, tenant.id, threshold);
        }
        Ok(raised_now)
    }

    /// The tenant's budget alerts, newest month first.
    pub async fn budget_alerts(&self, tenant: &Tenant) -> Result<Vec<BudgetAlert>> {
        self.catalog().budget_alerts(tenant.id, None).await
    }

    /// The tenant's storage in bytes as last sampled (by this process, or by another one
    /// and read from the catalog by the usage jobs), if it was.
    pub fn storage_sample(&self, tenant: TenantId) -> Option<u64> {
        lock(&self.inner.usage.samples)
            .get(&tenant)
            .map(|s| s.bytes)
    }

    /// Measures the tenant's storage now ([`crate::TenantStore::storage_bytes`]) and
    /// records the sample (written by the next flush).
    pub async fn sample_storage(&self, tenant: &Tenant) -> Result<u64> {
        let store = self.inner.stores.of(tenant)?;
        let bytes = match store.storage_bytes(tenant).await {
            Ok(bytes) => bytes,
            Err(e) => return Err(self.unless_deleted(tenant, e).await),
        };
        self.record_usage(tenant.id, Metric::StorageBytes, bytes);
        Ok(bytes)
    }

    /// One pass of the storage sampler: the tenants this process saw written to since the
    /// last pass and, with `due`, up to a thousand active tenants not sampled yet today;
    /// then one flush. The number of tenants sampled.
    pub async fn sample_storage_pass(&self, due: bool) -> Result<usize> {
        let mut tenants: BTreeMap<TenantId, Tenant> = BTreeMap::new();
        for id in self.inner.usage.meter.take_written() {
            if let Some(t) = self.tenant_by_id(id).await? {
                tenants.insert(id, t);
            }
        }
        if due {
            for t in self
                .catalog()
                .tenants_unsampled(today(), DUE_PER_PASS)
                .await?
            {
                tenants.insert(t.id, t);
            }
        }
        tenants.retain(|_, t| t.status == Active);
        let sampled = futures_util::stream::iter(tenants.into_values())
            .map(|t| async move {
                match self.sample_storage(&t).await {
                    Ok(_) => 1,
                    Err(e) => {
                        tracing::warn!(tenant = %t.slug, error = %e, "sampling storage failed");
                        0
                    }
                }
            })
            .buffer_unordered(SAMPLE_CONCURRENCY)
            .fold(0usize, |n, one| async move { n + one })
            .await;
        self.flush_usage().await?;
        Ok(sampled)
    }

    /// Reads the samples other processes wrote since the last read into memory, so that
    /// [`Engine::storage_sample`] answers for every tenant.
    pub async fn refresh_storage_samples(&self) -> Result<()> {
        let since = *lock(&self.inner.usage.refreshed);
        let started = Utc::now();
        let samples = self
            .catalog()
            .storage_samples(since.map(|t| t - REFRESH_OVERLAP))
            .await?;
        for s in samples {
            self.inner.usage.remember(s);
        }
        *lock(&self.inner.usage.refreshed) = Some(started);
        Ok(())
    }

    /// Starts the storage sampler: every `[usage] storage_sample_secs`, a pass of
    /// [`Engine::sample_storage_pass`] (the tenants not sampled today only while this
    /// process holds the job's lease: one process of a fleet) and a refresh of the samples
    /// other processes took. Stops with the engine. Usage flushes run from
    /// [`Engine::open`] on, whether or not this is started.
    pub fn spawn_usage_jobs(&self) {
        let every = self.inner.config.usage.storage_sample_every;
        self.spawn_leased(STORAGE_SAMPLE_JOB, every, |engine, holding| async move {
            if let Err(e) = engine.refresh_storage_samples().await {
                tracing::warn!(error = %e, "reading storage samples failed");
            }
            if let Err(e) = engine.sample_storage_pass(holding).await {
                tracing::warn!(error = %e, "sampling storage failed");
            }
        });
    }
}

async fn flush_usage(inner: &Arc<Inner>) -> Result<()> {
    let usage = &inner.usage;
    let tenants = {
        let _one = usage.flushing.lock().await;
        let batch = usage.meter.take();
        if batch.is_empty() {
            return Ok(());
        }
        let written = inner.catalog.add_usage(&batch).await;
        telemetry::usage_flushed(telemetry::outcome(&written));
        if let Err(e) = written {
            usage.meter.restore(batch);
            return Err(e);
        }
        batch.tenants()
    };
    if inner.config.plans.is_empty() {
        return Ok(());
    }
    let engine = Engine {
        inner: Arc::clone(inner),
    };
    for id in tenants {
        // Alerts are the flush's aftermath: a failure is logged and tried at the next one.
        let checked = match engine.tenant_by_id(id).await {
            Ok(Some(t)) => engine.check_budget(&t).await.map(|_| ()),
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            tracing::warn!(tenant = %id, error = %e, "checking the budget failed");
        }
    }
    Ok(())
}

/// Flushes usage every `[usage] flush_secs` for as long as the engine lives.
pub(super) fn spawn_flusher(inner: Weak<Inner>, every: std::time::Duration) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(inner) = inner.upgrade() else { return };
            if let Err(e) = flush_usage(&inner).await {
                tracing::warn!(error = %e, "writing usage failed; kept for the next flush");
            }
            drop(inner);
        }
    });
}
