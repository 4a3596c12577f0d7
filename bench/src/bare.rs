//! Bare baselines: the data API's point read of a `members` row without tenancy — no key
//! check, no resolver, no introspection, no session — on the same tenant data, so that a
//! benchmark can divide the full stack's figures by the floor of the same work.
//!
//! `GET /t/{tenant}/members/{id}` reads from tenant number `tenant` of the fleet the
//! baseline was built for: on SQLite its file with rusqlite (one connection per file on
//! tokio's blocking pool, the engine's pragmas), on PostgreSQL with tokio-postgres, a
//! prepared statement per connection and a plain pool (deadpool-postgres).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row};
use serde_json::{json, Value};
use tokio_postgres::config::SslMode;
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

/// The SQLite read, the same the data API runs for a GET by key.
pub const SQLITE_SELECT: &str = "SELECT id, name, class, dkp, joined_at FROM members WHERE id = ?";

/// A connection to a tenant file with the pragmas the engine sets on its own (with the
/// default durability, `synchronous = FULL`).
pub fn open_sqlite(path: &std::path::Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {}", path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        tenancy::Durability::default().synchronous(),
    )?;
    Ok(conn)
}

/// A `members` row read by rusqlite, as JSON.
pub fn sqlite_member_json(r: &Row<'_>) -> rusqlite::Result<Value> {
    Ok(json!({
        "id": r.get::<_, String>(0)?,
        "name": r.get::<_, String>(1)?,
        "class": r.get::<_, Option<String>>(2)?,
        "dkp": r.get::<_, i64>(3)?,
        "joined_at": r.get::<_, String>(4)?,
    }))
}

/// Where the tenants of a PostgreSQL fleet keep their `members` table.
pub enum PgFleet {
    /// A database per tenant (these names), each with its own pool of
    /// `max(1, budget / tenants)` connections, so the fleet stays within the budget.
    Databases(Vec<String>),
    /// A schema per tenant (these names) in the server URL's database, one pool of `budget`
    /// connections; the table is schema-qualified.
    Schemas(Vec<String>),
    /// Rows of `tenancy_shared.members` of these tenant ids, one pool of `budget`
    /// connections as the URL's role, filtered by `tenant_id` in the query itself.
    Shared(Vec<uuid::Uuid>),
}

/// One tenant's way to its row: the pool, the query, and the tenant id bound first
/// (shared tables only).
struct PgTenant {
    pool: Pool,
    sql: String,
    tenant_id: Option<uuid::Uuid>,
}

enum Fleet {
    Sqlite(Vec<Mutex<Connection>>),
    Postgres(Vec<PgTenant>),
}

/// The bare app's state: the fleet by tenant index.
#[derive(Clone)]
pub struct Bare {
    fleet: Arc<Fleet>,
}

const COLUMNS: &str = "id, name, class, dkp, joined_at";

impl Bare {
    /// Over tenant files, one connection each.
    pub fn sqlite(paths: &[std::path::PathBuf]) -> Result<Bare> {
        let conns = paths
            .iter()
            .map(|p| open_sqlite(p).map(Mutex::new))
            .collect::<Result<_>>()?;
        Ok(Bare {
            fleet: Arc::new(Fleet::Sqlite(conns)),
        })
    }

    /// Over a PostgreSQL fleet on the server of `url` (its database holds the schemas or
    /// the shared tables), with at most `budget` connections in all. Connections open on
    /// first use and close when the last clone of the value drops.
    pub fn postgres(url: &str, fleet: PgFleet, budget: usize) -> Result<Bare> {
        let mut config: tokio_postgres::Config = url.parse().context("parsing the URL")?;
        // Plaintext, as the stack's connections in the benchmark.
        config.ssl_mode(SslMode::Disable);
        let pool = |config: tokio_postgres::Config, size: usize| {
            let manager = Manager::from_config(
                config,
                NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(manager)
                .max_size(size.max(1))
                .build()
                .context("building a pool")
        };
        let tenants = match fleet {
            PgFleet::Databases(names) => {
                let size = budget / names.len().max(1);
                let sql = format!("SELECT {COLUMNS} FROM members WHERE id = $1");
                names
                    .iter()
                    .map(|name| {
                        let mut config = config.clone();
                        config.dbname(name);
                        Ok(PgTenant {
                            pool: pool(config, size)?,
                            sql: sql.clone(),
                            tenant_id: None,
                        })
                    })
                    .collect::<Result<_>>()?
            }
            PgFleet::Schemas(names) => {
                let shared = pool(config, budget)?;
                names
                    .iter()
                    .map(|schema| PgTenant {
                        pool: shared.clone(),
                        sql: format!(
                            "SELECT {COLUMNS} FROM {}.members WHERE id = $1",
                            quote(schema)
                        ),
                        tenant_id: None,
                    })
                    .collect()
            }
            PgFleet::Shared(ids) => {
                let shared = pool(config, budget)?;
                let sql = format!(
                    "SELECT {COLUMNS} FROM tenancy_shared.members WHERE tenant_id = $1 AND id = $2"
                );
                ids.iter()
                    .map(|id| PgTenant {
                        pool: shared.clone(),
                        sql: sql.clone(),
                        tenant_id: Some(*id),
                    })
                    .collect()
            }
        };
        Ok(Bare {
            fleet: Arc::new(Fleet::Postgres(tenants)),
        })
    }

    /// `GET /t/{tenant}/members/{id}`.
    pub fn router(self) -> Router {
        Router::new()
            .route("/t/{tenant}/members/{id}", get(get_member))
            .with_state(self)
    }
}

/// `"name"`, for the schema names the engine generated (`t_<hex>`).
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn get_member(State(b): State<Bare>, Path((tenant, id)): Path<(usize, String)>) -> Response {
    let found = match &*b.fleet {
        Fleet::Sqlite(_) => sqlite_get(b, tenant, id).await,
        Fleet::Postgres(fleet) => match fleet.get(tenant) {
            Some(t) => pg_get(t, id).await,
            None => Err(StatusCode::NOT_FOUND),
        },
    };
    match found {
        Ok(Some(row)) => Json(row).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(status) => status.into_response(),
    }
}

/// The read on the tenant's connection on the blocking pool.
async fn sqlite_get(b: Bare, tenant: usize, id: String) -> Result<Option<Value>, StatusCode> {
    tokio::task::spawn_blocking(move || {
        let Fleet::Sqlite(conns) = &*b.fleet else {
            return Err(StatusCode::INTERNAL_SERVER_ERROR);
        };
        let conn = conns.get(tenant).ok_or(StatusCode::NOT_FOUND)?;
        let conn = conn.lock().map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        conn.prepare_cached(SQLITE_SELECT)
            .and_then(|mut s| s.query_row([id], sqlite_member_json).optional())
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
    })
    .await
    .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
}

/// One round trip once the connection has the statement prepared.
async fn pg_get(t: &PgTenant, id: String) -> Result<Option<Value>, StatusCode> {
    let failed = |e: &dyn std::fmt::Display| {
        eprintln!("  bare PostgreSQL read: {e}");
        StatusCode::INTERNAL_SERVER_ERROR
    };
    let client = t.pool.get().await.map_err(|e| failed(&e))?;
    let statement = client
        .prepare_cached(&t.sql)
        .await
        .map_err(|e| failed(&e))?;
    let row = match &t.tenant_id {
        Some(tenant_id) => {
            let params: [&(dyn ToSql + Sync); 2] = [tenant_id, &id];
            client.query_opt(&statement, &params).await
        }
        None => client.query_opt(&statement, &[&id]).await,
    }
    .map_err(|e| failed(&e))?;
    row.map(|r| pg_member_json(&r))
        .transpose()
        .map_err(|e| failed(&e))
}

/// A `members` row read by tokio-postgres, as JSON (times as the data API writes them).
fn pg_member_json(r: &tokio_postgres::Row) -> Result<Value, tokio_postgres::Error> {
    let joined: chrono::DateTime<chrono::Utc> = r.try_get(4)?;
    Ok(json!({
        "id": r.try_get::<_, String>(0)?,
        "name": r.try_get::<_, String>(1)?,
        "class": r.try_get::<_, Option<String>>(2)?,
        "dkp": r.try_get::<_, i32>(3)?,
        "joined_at": joined.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
    }))
}
