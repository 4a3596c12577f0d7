//! Stores: where tenant data lives. A SQLite store is a directory of files, one per tenant
//! (`database` mode); a PostgreSQL store is a server holding tenants in any mode.

mod cache;
mod pgpool;
mod postgres;
mod sqlite;

pub use cache::{CacheConfig, HandleCache};
pub use pgpool::{PgConn, PgPools, PoolLimits, HOT_WINDOW};
pub use postgres::{PgStore, PgStoreConfig, TenantSession, SHARED_SCHEMA};
pub use sqlite::{apply_migrations, SqliteStore, TenantDb, LEDGER_TABLE};
