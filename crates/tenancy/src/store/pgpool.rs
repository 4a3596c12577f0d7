//! Connections to one PostgreSQL server, pooled per database and role, under one budget.
//!
//! A `database`-mode store has a database per tenant, so a pool per database with its own
//! maximum cannot bound the server's connections: a thousand hot tenants would open a
//! thousand pools' worth. Here every open connection, idle or busy, holds a permit of the
//! server's budget. A checkout reuses an idle connection of its database; otherwise it
//! takes a permit, closing the oldest idle connection of another database when the budget
//! is spent, and otherwise waits — for a permit, or for a connection to come back to any
//! pool, to reuse or close — up to the acquire timeout (then `StoreBusy`). Idle connections close after the idle timeout. So the budget is never
//! exceeded, however many tenants are hot, and an idle tenant costs nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, Config};

use crate::error::{Error, Result};
use crate::pgconnect::{self, PgConfig};

/// Limits of one server's pool.
#[derive(Debug, Clone)]
pub struct PoolLimits {
    /// Connections open at once to the server, idle ones included.
    pub max_connections: usize,
    /// How long a checkout waits for a connection before `StoreBusy`.
    pub acquire_timeout: Duration,
    /// How long connecting may take before `StoreUnavailable`.
    pub connect_timeout: Duration,
    /// Idle connections older than this are closed.
    pub idle_timeout: Duration,
    /// How long one data operation may take before `StoreUnavailable` (a server that
    /// stopped answering must not hang requests).
    pub query_timeout: Duration,
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            max_connections: 20,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(30 * 60),
            query_timeout: Duration::from_secs(10),
        }
    }
}

/// The statements prepared on one connection, by schema version and SQL text: they live
/// as long as the connection, so they travel with it in and out of the pool.
pub type StatementCache = HashMap<(i64, String), tokio_postgres::Statement>;

struct Idle {
    client: Client,
    statements: StatementCache,
    permit: OwnedSemaphorePermit,
    since: Instant,
}

/// The pools of one server, keyed by `database/role`.
pub struct PgPools {
    store: String,
    limits: PoolLimits,
    budget: Arc<Semaphore>,
    idle: Mutex<HashMap<String, Vec<Idle>>>,
    /// Signalled whenever a connection goes back to a pool.
    returned: tokio::sync::Notify,
    last_sweep: Mutex<Instant>,
}

/// A checked-out connection. Dropped, it goes back to its pool, unless it was marked
/// [`PgConn::discard`] or is broken, in which case it is closed.
pub struct PgConn {
    client: Option<Client>,
    statements: StatementCache,
    permit: Option<OwnedSemaphorePermit>,
    key: String,
    pools: Arc<PgPools>,
    reusable: bool,
}

impl std::ops::Deref for PgConn {
    type Target = Client;
    fn deref(&self) -> &Client {
        // The client is taken out only by `Drop`.
        #[allow(clippy::expect_used)]
        self.client
            .as_ref()
            .expect("a checked-out connection has its client")
    }
}

impl PgConn {
    /// Closes the connection instead of pooling it (its session state is unknown).
    pub fn discard(&mut self) {
        self.reusable = false;
    }

    /// Undoes [`PgConn::discard`] once the session is known clean again (after a
    /// COMMIT). A unit of work discards its connection before `BEGIN` and reuses it after
    /// `COMMIT`, so a task cancelled in between closes the connection (the server rolls
    /// the transaction back) instead of pooling it mid-transaction.
    pub fn reuse(&mut self) {
        self.reusable = true;
    }

    /// The statements prepared on this connection.
    pub fn statements(&mut self) -> &mut StatementCache {
        &mut self.statements
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        if let (Some(client), Some(permit)) = (self.client.take(), self.permit.take()) {
            if self.reusable && !client.is_closed() {
                let statements = std::mem::take(&mut self.statements);
                self.pools.check_in(&self.key, client, statements, permit);
            }
        }
    }
}

impl PgPools {
    pub fn new(store: &str, limits: PoolLimits) -> Arc<PgPools> {
        Arc::new(PgPools {
            store: store.to_owned(),
            budget: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            limits,
            idle: Mutex::new(HashMap::new()),
            returned: tokio::sync::Notify::new(),
            last_sweep: Mutex::new(Instant::now()),
        })
    }

    pub fn limits(&self) -> &PoolLimits {
        &self.limits
    }

    /// Connections open now (idle and checked out).
    pub fn open_connections(&self) -> usize {
        self.limits.max_connections.max(1) - self.budget.available_permits()
    }

    /// A connection to the database and role of `config`.
    pub async fn get(self: &Arc<Self>, config: &PgConfig) -> Result<PgConn> {
        let key = pool_key(config);
        let wait = self.limits.acquire_timeout;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so that a connection returned meanwhile wakes us.
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some((client, statements, permit)) = self.take_idle(&key) {
                return Ok(self.wrap(key, client, statements, permit));
            }
            let permit = match Arc::clone(&self.budget).try_acquire_owned() {
                Ok(permit) => Some(permit),
                // The budget is spent: an idle connection of another database gives way.
                Err(_) if self.shed_one() => Arc::clone(&self.budget).try_acquire_owned().ok(),
                Err(_) => None,
            };
            let permit = match permit {
                Some(permit) => permit,
                None => tokio::select! {
                    acquired = Arc::clone(&self.budget).acquire_owned() => match acquired {
                        Ok(permit) => permit,
                        Err(_) => return Err(Error::Internal("connection budget closed".into())),
                    },
                    // A connection went back to some pool: reuse it or shed it.
                    _ = &mut returned => continue,
                    _ = tokio::time::sleep_until(deadline) => {
                        return Err(Error::StoreBusy {
                            store: self.store.clone(),
                            waited_ms: wait.as_millis() as u64,
                        })
                    }
                },
            };
            let client = self.connect(config).await?;
            return Ok(self.wrap(key, client, StatementCache::new(), permit));
        }
    }

    fn wrap(
        self: &Arc<Self>,
        key: String,
        client: Client,
        statements: StatementCache,
        permit: OwnedSemaphorePermit,
    ) -> PgConn {
        PgConn {
            client: Some(client),
            statements,
            permit: Some(permit),
            key,
            pools: Arc::clone(self),
            reusable: true,
        }
    }

    async fn connect(&self, config: &PgConfig) -> Result<Client> {
        let unavailable = |reason: String| Error::StoreUnavailable {
            store: self.store.clone(),
            reason,
        };
        let mut config = config.clone();
        config.connect_timeout(self.limits.connect_timeout);
        // Times written by SQL defaults (`CURRENT_TIMESTAMP` into `timestamp`) are UTC, as
        // on SQLite, whatever the server's own time zone.
        let options = match config.get_options() {
            Some(own) => format!("{own} -c TimeZone=UTC"),
            None => "-c TimeZone=UTC".to_owned(),
        };
        config.options(&options);
        let connecting = pgconnect::connect(&config);
        let (client, connection) =
            match tokio::time::timeout(self.limits.connect_timeout, connecting).await {
                Ok(Ok(pair)) => pair,
                Ok(Err(e)) => return Err(unavailable(pgconnect::reason(&e))),
                Err(_) => return Err(unavailable("connecting timed out".into())),
            };
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "store connection closed");
            }
        });
        Ok(client)
    }

    fn take_idle(&self, key: &str) -> Option<(Client, StatementCache, OwnedSemaphorePermit)> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(key)?;
        while let Some(conn) = list.pop() {
            if !conn.client.is_closed() {
                if list.is_empty() {
                    idle.remove(key);
                }
                return Some((conn.client, conn.statements, conn.permit));
            }
        }
        idle.remove(key);
        None
    }

    fn check_in(
        &self,
        key: &str,
        client: Client,
        statements: StatementCache,
        permit: OwnedSemaphorePermit,
    ) {
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        idle.entry(key.to_owned()).or_default().push(Idle {
            client,
            statements,
            permit,
            since: Instant::now(),
        });
        drop(idle);
        self.returned.notify_waiters();
        self.sweep_if_due();
    }

    /// Closes the oldest idle connection (of any database); false if none is idle.
    fn shed_one(&self) -> bool {
        let Ok(mut idle) = self.idle.lock() else {
            return false;
        };
        let oldest = idle
            .iter()
            .filter_map(|(k, list)| list.first().map(|c| (k.clone(), c.since)))
            .min_by_key(|(_, since)| *since);
        if let Some((key, _)) = oldest {
            if let Some(list) = idle.get_mut(&key) {
                list.remove(0);
                if list.is_empty() {
                    idle.remove(&key);
                }
            }
            return true;
        }
        false
    }

    /// Closes idle connections past the idle timeout, at most once a second.
    fn sweep_if_due(&self) {
        let now = Instant::now();
        {
            let Ok(mut last) = self.last_sweep.lock() else {
                return;
            };
            if now.duration_since(*last) < Duration::from_secs(1) {
                return;
            }
            *last = now;
        }
        self.close_idle_older_than(self.limits.idle_timeout);
    }

    /// Closes idle connections idle for longer than `age` (zero: all of them).
    pub fn close_idle_older_than(&self, age: Duration) {
        let now = Instant::now();
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|_, list| {
                list.retain(|c| now.duration_since(c.since) < age && !c.client.is_closed());
                !list.is_empty()
            });
        }
    }

    /// Closes the idle connections of one database (before it is dropped).
    pub fn close_database(&self, database: &str) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|key, _| key.split('/').next() != Some(database));
        }
    }
}

fn pool_key(config: &Config) -> String {
    format!(
        "{}/{}",
        config.get_dbname().unwrap_or(""),
        config.get_user().unwrap_or("")
    )
}
