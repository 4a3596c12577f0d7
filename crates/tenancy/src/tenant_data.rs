//! The data API's operations on a tenant, whichever store and mode hold it: SQLite
//! tenants run [`crate::data::exec`] on their cached handle, PostgreSQL tenants run
//! [`crate::data::pg`] in a [`TenantSession`] (a transaction with the tenant context set),
//! bounded by the store's query timeout.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio_postgres::Client;

use crate::data::query::Filter;
use crate::data::{exec, pg, ListQuery, Object, Page, Schema};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::store::{PgStore, SHARED_SCHEMA};
use crate::tenant::{Mode, Tenant};

/// One data operation, in a form both dialects run.
pub enum DataOp {
    List(ListQuery),
    Get(String),
    Insert(Vec<Object>),
    Update(String, Object),
    UpdateFiltered(Vec<Filter>, Object),
    Delete(String),
    DeleteFiltered(Vec<Filter>),
}

/// What a [`DataOp`] answers.
pub enum DataOutput {
    Page(Page),
    Row(Object),
    Rows(Vec<Object>),
    Deleted(usize),
    Done,
}

fn shape(tenant: &Tenant, pg: bool) -> &'static str {
    match (pg, tenant.placement.mode) {
        (false, _) => "sqlite",
        (true, Mode::Database) => "pg-database",
        (true, Mode::Schema) => "pg-schema",
        (true, Mode::Shared) => "pg-shared",
    }
}

impl Engine {
    /// Runs `op` in a session on a PostgreSQL tenant, committing on success, within the
    /// store's query timeout.
    async fn on_pg<T>(
        &self,
        store: &PgStore,
        tenant: &Tenant,
        op: impl for<'c> FnOnce(&'c Client) -> BoxFuture<'c, Result<T>>,
    ) -> Result<T> {
        let work = async {
            let session = store
                .session(tenant.placement.mode, &tenant.placement.location)
                .await?;
            let out = op(session.client()).await?;
            session.commit().await?;
            Ok(out)
        };
        let limit = store.pools().limits().query_timeout;
        match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => Err(Error::StoreUnavailable {
                store: store.name.clone(),
                reason: format!("no answer within {} ms", limit.as_millis()),
            }),
        }
    }

    /// The tables and columns of the tenant's schema, introspected once per schema
    /// version and shape of store.
    pub async fn data_schema(&self, tenant: &Tenant) -> Result<Arc<Schema>> {
        let version = tenant.placement.schema_version;
        let pg = self.inner.pg_store_of(tenant)?.cloned();
        let shape = shape(tenant, pg.is_some());
        if let Some(schema) = self.cached_schema(shape, version) {
            return Ok(schema);
        }
        let schema = match &pg {
            None => {
                self.with_db(tenant, move |conn| {
                    crate::data::schema::introspect(conn, version)
                })
                .await?
            }
            Some(store) => {
                let (schema_name, hidden): (String, &'static [&'static str]) =
                    match tenant.placement.mode {
                        Mode::Database => ("public".into(), &[]),
                        Mode::Schema => (tenant.placement.location.clone(), &[]),
                        Mode::Shared => (SHARED_SCHEMA.into(), &["tenant_id"]),
                    };
                self.on_pg(store, tenant, move |c| {
                    Box::pin(async move { pg::introspect(c, &schema_name, version, hidden).await })
                })
                .await?
            }
        };
        let schema = Arc::new(schema);
        if let Ok(mut cache) = self.inner.schemas.lock() {
            cache.insert((shape, version), Arc::clone(&schema));
        }
        Ok(schema)
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
        match self.inner.pg_store_of(tenant)?.cloned() {
            None => {
                self.with_db(tenant, move |db| {
                    let t = schema.table(&table)?;
                    Ok(match op {
                        DataOp::List(q) => DataOutput::Page(exec::list(db, t, &q)?),
                        DataOp::Get(id) => DataOutput::Row(exec::get(db, t, &id)?),
                        DataOp::Insert(rows) => DataOutput::Rows(exec::insert(db, t, &rows)?),
                        DataOp::Update(id, patch) => {
                            DataOutput::Row(exec::update(db, t, &id, &patch)?)
                        }
                        DataOp::UpdateFiltered(filters, patch) => {
                            DataOutput::Rows(exec::update_filtered(db, t, &filters, &patch)?)
                        }
                        DataOp::Delete(id) => {
                            exec::delete(db, t, &id)?;
                            DataOutput::Done
                        }
                        DataOp::DeleteFiltered(filters) => {
                            DataOutput::Deleted(exec::delete_filtered(db, t, &filters)?)
                        }
                    })
                })
                .await
            }
            Some(store) => {
                self.on_pg(&store, tenant, move |c| {
                    Box::pin(async move {
                        let t = schema.table(&table)?;
                        Ok(match op {
                            DataOp::List(q) => DataOutput::Page(pg::list(c, t, &q).await?),
                            DataOp::Get(id) => DataOutput::Row(pg::get(c, t, &id).await?),
                            DataOp::Insert(rows) => {
                                DataOutput::Rows(pg::insert(c, t, &rows).await?)
                            }
                            DataOp::Update(id, patch) => {
                                DataOutput::Row(pg::update(c, t, &id, &patch).await?)
                            }
                            DataOp::UpdateFiltered(filters, patch) => {
                                DataOutput::Rows(pg::update_filtered(c, t, &filters, &patch).await?)
                            }
                            DataOp::Delete(id) => {
                                pg::delete(c, t, &id).await?;
                                DataOutput::Done
                            }
                            DataOp::DeleteFiltered(filters) => {
                                DataOutput::Deleted(pg::delete_filtered(c, t, &filters).await?)
                            }
                        })
                    })
                })
                .await
            }
        }
    }
}
