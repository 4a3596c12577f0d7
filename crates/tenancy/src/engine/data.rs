//! The data API's operations on a tenant, whichever store and mode hold it: each is handed
//! to the tenant's [`crate::store::TenantStore`], which runs the same [`crate::data::ops::Plan`]
//! (built once for every dialect by [`crate::sql::builder`]) on a SQLite handle or on
//! PostgreSQL in one pipelined round trip with the tenant context set, bounded by the
//! store's query timeout.

use std::sync::Arc;

use crate::data::value::Value;
pub use crate::data::{DataOp, DataOutput};
use crate::data::{Object, Schema};
use crate::engine::Engine;
use crate::error::{Error, Result};
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
        let done = self
            .inner
            .stores
            .of(tenant)?
            .data(tenant, schema, table, op)
            .await;
        match done {
            Ok(output) => Ok(output),
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

    /// What a failure of work on `tenant` means: if the tenant was deleted meanwhile (its
    /// file removed, its database or schema dropped under the request), the tenant's
    /// absence — the same [`Error::TenantNotFound`] as any request after the deletion —
    /// not a fault of the store.
    async fn unless_deleted(&self, tenant: &Tenant, e: Error) -> Error {
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
