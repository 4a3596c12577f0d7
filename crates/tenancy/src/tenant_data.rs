//! The data API's operations on a tenant, whichever store and mode hold it: the same
//! [`Plan`] (built once for every dialect by [`crate::sql::builder`]) runs on the SQLite
//! tenant's cached handle ([`crate::data::sqlite`]) or on PostgreSQL in one pipelined round
//! trip with the tenant context set ([`crate::data::postgres::run_pipelined`]), bounded by
//! the store's query timeout.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio_postgres::Client;

use crate::data::ops::Plan;
use crate::data::{postgres as pg, sqlite, Schema};
pub use crate::data::{DataOp, DataOutput};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::sql::Postgres;
use crate::store::{PgStore, SHARED_SCHEMA};
use crate::tenant::{Mode, Tenant};

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
                    sqlite::execute(db, schema.table(&table)?, &op)
                })
                .await
            }
            Some(store) => {
                let placement = &tenant.placement;
                let t = schema.table(&table)?;
                let attempt = || async {
                    let plan = Plan::new(&Postgres, t, &op)?;
                    let (mut conn, context) =
                        store.data_conn(placement.mode, &placement.location).await?;
                    let outcomes = pg::run_pipelined(
                        &mut conn,
                        context.as_ref(),
                        placement.schema_version,
                        t,
                        &plan.statements,
                        |e| store.session_error(e),
                    )
                    .await?;
                    plan.finish(outcomes)
                };
                let work = async {
                    match attempt().await {
                        // A tenant from before tenants had privileges of their own.
                        Err(Error::PrivilegesMissing { .. }) => {
                            store
                                .ensure_privileges(placement.mode, &placement.location)
                                .await?;
                            attempt().await
                        }
                        other => other,
                    }
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
        let table = table.to_owned();
        let params = params.to_vec();
        match self.inner.pg_store_of(tenant)?.cloned() {
            None => {
                self.with_db(tenant, move |db| {
                    let t = schema.table(&table)?;
                    let q = crate::data::parse_list(t, &params)?;
                    let list = crate::sql::builder::list(&crate::sql::Sqlite, t, &q)?;
                    sqlite::explain(db, t, &list.page)
                })
                .await
            }
            Some(store) => {
                let t = schema.table(&table)?;
                let q = crate::data::parse_list(t, &params)?;
                let list = crate::sql::builder::list(&Postgres, t, &q)?;
                let placement = &tenant.placement;
                let (mut conn, context) =
                    store.data_conn(placement.mode, &placement.location).await?;
                pg::explain(&mut conn, context.as_ref(), t, &list.page, |e| {
                    store.session_error(e)
                })
                .await
            }
        }
    }
}
