//! The data API's operations on a tenant, whichever store and mode hold it: each is handed
//! to the tenant's [`crate::store::TenantStore`], which runs the same [`crate::data::ops::Plan`]
//! (built once for every dialect by [`crate::sql::builder`]) on a SQLite handle or on
//! PostgreSQL in one pipelined round trip with the tenant context set, bounded by the
//! store's query timeout.

use std::sync::Arc;

use crate::data::ops::RowGuard;
use crate::data::value::Value;
pub use crate::data::{DataOp, DataOutput};
use crate::data::{Object, Schema};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::plans::RowLimit;
use crate::tenant::{Tenant, TenantStatus};

impl Engine {
    /// The tables and columns of the tenant's schema, introspected once per schema
    /// version and shape of store.
    pub async fn data_schema(&self, tenant: &Tenant) -> Result<Arc<Schema>> {
        let version = tenant.placement.schema_version;
        let store = self.inner.stores.of(tenant)?;
        let shape = store.schema_shape(tenant.placement.mode);
        if let Some(schema) = self.cached_schema(shape, version) {
            return Ok(schema);
        }
        let schema = match store.introspect(tenant).await {
            Ok(schema) => schema,
            Err(e) => return Err(self.unless_deleted(tenant, e).await),
        };
        Ok(self.inner.schemas.insert(shape, version, schema))
    }

    /// Runs one data-API operation on `table` of the tenant.
    pub async fn data(
        &self,
        tenant: &Tenant,
        schema: Arc<Schema>,
        table: String,
        op: DataOp,
    ) -> Result<DataOutput> {
        schema.table(&table)?;
        let guards = self.plan_checks(tenant, &table, &op)?;
        let kind = super::usage::DataKind::of(&op);
        let done = self
            .inner
            .stores
            .of(tenant)?
            .data(tenant, schema, table, op, guards)
            .await;
        match done {
            Ok(output) => {
                self.record_data(tenant.id, kind, &output);
                Ok(output)
            }
            Err(e) => Err(self.unless_deleted(tenant, e).await),
        }
    }

    /// Runs one statement of the application's own on the tenant's data, in whichever
    /// store and mode holds it: placeholders are `$1, $2, …` (on SQLite too), values are
    /// bound as parameters, and the statement runs in its own transaction with the
    /// tenant's context and privileges (on PostgreSQL as the data role, in `schema` mode as
    /// the tenant's own role). Answers the rows it returns, as JSON objects by column name.
    ///
    /// ```no_run
    /// # async fn demo(engine: tenancy::Engine, tenant: tenancy::Tenant) -> tenancy::Result<()> {
    /// use tenancy::data::value::Value;
    /// let top = engine
    ///     .query(&tenant, "SELECT name, dkp FROM members WHERE dkp >= $1 ORDER BY dkp DESC",
    ///            vec![Value::Integer(100)])
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn query(
        &self,
        tenant: &Tenant,
        sql: &str,
        params: Vec<Value>,
    ) -> Result<Vec<Object>> {
        let done = self
            .inner
            .stores
            .of(tenant)?
            .query(tenant, sql.to_owned(), params)
            .await;
        match done {
            Ok(rows) => Ok(rows),
            Err(e) => Err(self.unless_deleted(tenant, e).await),
        }
    }

    /// What the tenant's plan asks of `op` on `table`, with one look at the plan: a table
    /// gated by a flag that is off is refused (`FeatureDisabled`); a write that may add rows
    /// is refused while the last storage sample is at the plan's `storage_bytes` (deletes
    /// go on, so that the tenant can get under it again; samples are periodic, so writes
    /// between two samples may pass the limit by what they add), and it must keep the row
    /// limits on `table`, returned as guards for the store to check in its transaction.
    fn plan_checks(&self, tenant: &Tenant, table: &str, op: &DataOp) -> Result<Vec<RowGuard>> {
        if self.plans().is_empty() {
            return Ok(Vec::new());
        }
        let effective = self.inner.effective(tenant);
        // Flags nobody set are off: a tenant on no plan has none.
        let on = |flag: &str| effective.as_ref().is_some_and(|e| e.feature(flag));
        if let Some(flag) = self.plans().gate(table).filter(|f| !on(f)) {
            return Err(Error::FeatureDisabled {
                feature: flag.to_owned(),
                what: format!("table {table:?}"),
            });
        }
        let Some(effective) = effective else {
            return Ok(Vec::new());
        };
        if op.rows_it_may_add().is_none() {
            return Ok(Vec::new());
        }
        let storage = effective.limit(crate::plans::LimitKind::StorageBytes);
        if let (Some(max), Some(current)) = (storage, self.storage_sample(tenant.id)) {
            if current >= max {
                return Err(Error::QuotaExceeded {
                    limit: "storage_bytes".into(),
                    current,
                    max,
                });
            }
        }
        let mut limits = effective
            .rows
            .iter()
            .filter(|(limit, _)| limit.table == table)
            .peekable();
        if limits.peek().is_none() {
            return Ok(Vec::new());
        }
        let lock_key = lock_key(tenant, table);
        Ok(limits
            .filter_map(|(limit, max)| {
                Some(RowGuard {
                    name: limit.name.clone(),
                    filter: limit_filter(limit.filter.as_deref()),
                    max: (*max)?,
                    lock_key,
                })
            })
            .collect())
    }

    /// The rows a row limit counts now.
    pub(crate) async fn count_limited_rows(
        &self,
        tenant: &Tenant,
        limit: &RowLimit,
    ) -> Result<u64> {
        let schema = self.data_schema(tenant).await?;
        let table = schema.table(&limit.table)?;
        let mut params = limit_filter(limit.filter.as_deref());
        params.push(("limit".into(), "1".into()));
        params.push(("count".into(), "exact".into()));
        let q = crate::data::parse_list(table, &params)?;
        let page = self
            .inner
            .stores
            .of(tenant)?
            .data(
                tenant,
                schema.clone(),
                limit.table.clone(),
                DataOp::List(q),
                Vec::new(),
            )
            .await?
            .into_page()?;
        Ok(page.count.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
    }

    /// What a failure of work on `tenant` means: if the tenant was deleted meanwhile (its
    /// file removed, its database or schema dropped under the request), the tenant's
    /// absence — the same [`Error::TenantNotFound`] as any request after the deletion —
    /// not a fault of the store.
    pub(crate) async fn unless_deleted(&self, tenant: &Tenant, e: Error) -> Error {
        if matches!(e, Error::TenantNotFound { .. }) {
            return e;
        }
        match self.tenant_by_id(tenant.id).await {
            Ok(Some(now))
                if !matches!(now.status, TenantStatus::Deleting | TenantStatus::Deleted) =>
            {
                e
            }
            Ok(_) => Error::TenantNotFound {
                slug: tenant.slug.to_string(),
            },
            // The catalog cannot tell: the original failure stands.
            Err(_) => e,
        }
    }

    /// The plan the tenant's store chooses for a listing of `table` with `params` (the
    /// data API's query string): `EXPLAIN` on PostgreSQL, `EXPLAIN QUERY PLAN` on SQLite,
    /// one line a step. For checking that an ordering or a filter is served by an index.
    pub async fn explain_list(
        &self,
        tenant: &Tenant,
        table: &str,
        params: &[(String, String)],
    ) -> Result<Vec<String>> {
        let schema = self.data_schema(tenant).await?;
        self.inner
            .stores
            .of(tenant)?
            .explain_list(tenant, schema, table.to_owned(), params.to_vec())
            .await
    }
}

/// A row limit's filter (`status=eq.active&kind=eq.x`) as the data API's parameters.
pub(crate) fn limit_filter(filter: Option<&str>) -> Vec<(String, String)> {
    filter
        .map(|f| {
            f.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (k.trim().to_owned(), v.trim().to_owned()),
                    None => (p.trim().to_owned(), String::new()),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The key writers of one tenant's table take turns on while they check its limits.
fn lock_key(tenant: &Tenant, table: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"tenancy.limit:")
        .chain_update(tenant.id.to_string())
        .chain_update(b":")
        .chain_update(table)
        .finalize();
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}
