//! Retention: a plan may keep the rows of some tables only so long (`[[plans.retention]]`:
//! `table`, timestamp `column`, `days`). A background job deletes older rows, a batch per
//! statement so that no transaction holds a tenant's table for long, in every store and
//! mode (with the tenant's own context and privileges, like the application's own SQL).

use chrono::{Duration as Days, Utc};

use super::*;
use crate::data::value::Value;
use crate::plans::Retention;

/// Where the retention job is held: one process of a fleet runs it.
pub const RETENTION_JOB: &str = "job:retention";
/// Rows deleted per statement.
pub const RETENTION_BATCH: i64 = 1_000;

/// What one pass of the retention job did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionReport {
    /// `(slug, table, rows deleted)`.
    pub deleted: Vec<(String, String, u64)>,
    /// `(slug, why)` of the tenants the pass could not finish.
    pub failed: Vec<(String, String)>,
}

impl Engine {
    /// Deletes the tenant's rows older than its plan keeps them; the rows deleted per
    /// table. A rule naming a table or column the tenant's schema lacks is refused.
    pub async fn expire_rows(&self, tenant: &Tenant) -> Result<Vec<(String, u64)>> {
        let Some(plan) = self
            .inner
            .effective(tenant)
            .and_then(|e| self.plans().get(&e.plan).cloned())
        else {
            return Ok(Vec::new());
        };
        let mut done = Vec::new();
        for rule in &plan.retention {
            let n = self.expire_table(tenant, rule).await?;
            done.push((rule.table.clone(), n));
        }
        Ok(done)
    }

    async fn expire_table(&self, tenant: &Tenant, rule: &Retention) -> Result<u64> {
        let schema = self.data_schema(tenant).await?;
        let table = schema.table(&rule.table)?;
        if table.column(&rule.column).is_none() {
            return Err(Error::ColumnNotFound {
                column: format!("{}.{}", rule.table, rule.column),
            });
        }
        let cutoff = (Utc::now() - Days::days(i64::from(rule.days)))
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let (t, c) = (
            crate::data::schema::quote(&rule.table),
            crate::data::schema::quote(&rule.column),
        );
        // The row identity of each dialect bounds a batch; timestamps compare as instants.
        let sql = match self.inner.dialect_of_store(&tenant.placement.store)? {
            Dialect::Sqlite => format!(
                "DELETE FROM {t} WHERE rowid IN (SELECT rowid FROM {t} \
                 WHERE julianday({c}) < julianday($1) LIMIT $2) RETURNING 1 AS gone"
            ),
            Dialect::Postgres => format!(
                "DELETE FROM {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {t} \
                 WHERE {c} < $1::text::timestamptz LIMIT $2)) RETURNING 1 AS gone"
            ),
        };
        let mut total = 0u64;
        loop {
            let gone = self
                .query(
                    tenant,
                    &sql,
                    vec![Value::Text(cutoff.clone()), Value::Integer(RETENTION_BATCH)],
                )
                .await?
                .len() as u64;
            total += gone;
            if gone < RETENTION_BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// One pass over every active tenant whose plan keeps rows only so long.
    pub async fn run_retention(&self) -> Result<RetentionReport> {
        let mut report = RetentionReport::default();
        if self.plans().all().iter().all(|p| p.retention.is_empty()) {
            return Ok(report);
        }
        let tenants = self
            .catalog()
            .list_tenants(&crate::catalog::TenantFilter {
                statuses: Some(vec![Active]),
                ..Default::default()
            })
            .await?;
        for tenant in tenants {
            let keeps = self
                .inner
                .effective(&tenant)
                .and_then(|e| self.plans().get(&e.plan))
                .is_some_and(|p| !p.retention.is_empty());
            if !keeps {
                continue;
            }
            match self.expire_rows(&tenant).await {
                Ok(done) => {
                    for (table, n) in done {
                        if n > 0 {
                            self.record_usage(tenant.id, crate::plans::Metric::RowsExpired, n);
                            report.deleted.push((tenant.slug.to_string(), table, n));
                        }
                    }
                }
                Err(e) => report.failed.push((tenant.slug.to_string(), e.to_string())),
            }
        }
        Ok(report)
    }

    /// Runs [`Engine::run_retention`] every `every` while this process holds the job's
    /// lease (see [`Engine::spawn_lapse_job`]).
    pub fn spawn_retention_job(&self, every: std::time::Duration) {
        self.spawn_leased(RETENTION_JOB, every, |engine, holding| async move {
            if !holding {
                return;
            }
            match engine.run_retention().await {
                Ok(report) => {
                    for (slug, table, n) in &report.deleted {
                        tracing::info!(tenant = %slug, table = %table, rows = n, "retention deleted old rows");
                    }
                    for (slug, why) in &report.failed {
                        tracing::warn!(tenant = %slug, error = %why, "retention failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "the retention pass failed"),
            }
        });
    }
}
