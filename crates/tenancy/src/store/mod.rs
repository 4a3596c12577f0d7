//! Stores: where tenant data lives. This store is a directory of SQLite files,
//! one per tenant (`database` mode); PostgreSQL stores implement the same operations.

mod cache;
mod sqlite;

pub use cache::{CacheConfig, HandleCache};
pub use sqlite::{apply_migrations, SqliteStore, TenantDb, LEDGER_TABLE};
