//! Stores: where tenant data lives. A SQLite store is a directory of files, one per tenant
//! (`database` mode); a PostgreSQL store is a server holding tenants in any mode. Both are
//! a [`TenantStore`]: the engine asks a store to build, inspect, migrate, remove and serve
//! a tenant, and never asks which kind of store it is.

mod cache;
mod pgpool;
mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

pub use crate::config::{CacheConfig, PoolLimits};
pub use cache::{HandleCache, Open, Slot};
pub use pgpool::{PgConn, PgPools, HOT_WINDOW};
pub(crate) use postgres::{begin_with_context, CONTEXT_SQL};
pub use postgres::{Context, PgStore, PgStoreConfig, TenantSession, SHARED_SCHEMA};
pub use sqlite::{
    apply_migrations, set_heap_limit, synchronous_name, SqliteSettings, SqliteStore, TenantDb,
    LEDGER_TABLE,
};

use crate::data::value::Value;
use crate::data::{DataOp, DataOutput, Object, Schema};
use crate::error::Result;
use crate::migrations::{Dialect, MigrationSet};
use crate::tenant::{Mode, Tenant, TenantId};

/// The operations a store performs on the tenants it holds. Methods take the store as an
/// `Arc` so that blocking work (SQLite) can move it to a blocking thread.
#[async_trait]
pub trait TenantStore: Send + Sync + 'static {
    fn name(&self) -> &str;

    /// The SQL dialect of its tenants' migrations.
    fn dialect(&self) -> Dialect;

    /// Where a new tenant of this mode goes; refuses a mode the store cannot hold.
    fn location_for(&self, mode: Mode, id: TenantId) -> Result<String>;

    /// How many of its tenants a fleet operation may work on at once, of `wanted`.
    fn fleet_concurrency(&self, wanted: usize) -> usize {
        wanted
    }

    /// A name for the shape of a tenant's introspected schema in this mode: tenants of
    /// one shape and schema version have the same tables and columns.
    fn schema_shape(&self, mode: Mode) -> &'static str;

    /// Builds the tenant's data with every migration; its schema version.
    async fn build(self: Arc<Self>, tenant: &Tenant, migrations: Arc<MigrationSet>) -> Result<i64>;

    /// Builds many freshly registered tenants (one store and mode) at once where the store
    /// can — one transaction for all of them — and answers their schema version; `None`
    /// where it builds tenants one at a time.
    async fn build_together(
        self: Arc<Self>,
        _tenants: &[Tenant],
        _migrations: Arc<MigrationSet>,
    ) -> Result<Option<i64>> {
        Ok(None)
    }

    /// The schema version of the tenant's complete data, `None` if there is none.
    async fn inspect(self: Arc<Self>, tenant: &Tenant) -> Result<Option<i64>>;

    /// Removes every byte of the tenant's data.
    async fn remove(self: Arc<Self>, tenant: &Tenant) -> Result<()>;

    /// Brings the tenant (in `shared` mode: the store's shared tables) to the latest
    /// migration, in one transaction; `(from, to)`.
    async fn migrate(
        self: Arc<Self>,
        tenant: &Tenant,
        migrations: Arc<MigrationSet>,
    ) -> Result<(i64, i64)>;

    /// The tables and columns the data API serves for the tenant.
    async fn introspect(self: Arc<Self>, tenant: &Tenant) -> Result<Schema>;

    /// One data-API operation on `table` of the tenant.
    async fn data(
        self: Arc<Self>,
        tenant: &Tenant,
        schema: Arc<Schema>,
        table: String,
        op: DataOp,
        guards: Vec<crate::data::ops::RowGuard>,
    ) -> Result<DataOutput>;

    /// One statement of the application's own, with `$1, $2, …` placeholders, run on the
    /// tenant's data with its privileges and context; the rows it answers, as JSON.
    async fn query(
        self: Arc<Self>,
        tenant: &Tenant,
        sql: String,
        params: Vec<Value>,
    ) -> Result<Vec<Object>>;

    /// The plan the store chooses for a listing of `table` with `params`.
    async fn explain_list(
        self: Arc<Self>,
        tenant: &Tenant,
        schema: Arc<Schema>,
        table: String,
        params: Vec<(String, String)>,
    ) -> Result<Vec<String>>;

    /// Runs every migration for a new tenant of `mode` on a scratch place, in a
    /// transaction rolled back: what would fail on a tenant fails here first, and nothing
    /// is left behind.
    async fn rehearse(self: Arc<Self>, mode: Mode, migrations: Arc<MigrationSet>) -> Result<()>;

    /// Whether the store answers now (for readiness): an error says why not.
    async fn check(self: Arc<Self>) -> Result<()>;

    /// How many bytes the tenant's data takes, as cheaply as the store can tell: the
    /// sample behind the `storage_bytes` metric and limit. SQLite: the database file (its
    /// page count × page size) plus its WAL, read from the file system without opening
    /// it. PostgreSQL `database` mode: `pg_database_size`; `schema` mode: the
    /// `pg_total_relation_size` of the schema's tables (indexes and TOAST included);
    /// `shared` mode: the `pg_column_size` of the tenant's rows in every shared table — an
    /// estimate of the row bytes, without index or page overhead, which the tenants of a
    /// store share.
    async fn storage_bytes(self: Arc<Self>, tenant: &Tenant) -> Result<u64>;
}
