//! Connections to one PostgreSQL server, pooled per database and role, under one budget.
//!
//! A `database`-mode store has a database per tenant, so a pool per database with its own
//! maximum cannot bound the server's connections: a thousand hot tenants would open a
//! thousand pools' worth. Here every open connection, idle or busy, holds a permit of the
//! server's budget (`max_connections`), so the budget is never exceeded, however many
//! tenants are hot.
//!
//! # Sharing the budget
//!
//! Opening a connection costs a server process and several round trips — far more than a
//! point read — so the pool must not close a connection it is about to need again. A
//! database (with its role: one pool) is *hot* while a checkout of it is under way or one
//! of its connections is checked out, and for [`HOT_WINDOW`] after its last use; its
//! *share* is the budget divided by the number of hot databases, at least one. A checkout:
//!
//! 1. reuses an idle connection of its own pool, the most recently returned;
//! 2. waits if its pool already holds its share while another hot database waits holding
//!    less: what frees up goes to the poorer one;
//! 3. opens a connection under a free permit of the budget;
//! 4. or closes the idle connection of a cold database (least recently used first) and
//!    opens one under its permit;
//! 5. or, if its pool holds less than its share, does the same with the idle connection of
//!    a hot database holding more than its share (the most over first) — or, when more
//!    databases are hot than the budget has connections, of one with no checkout waiting;
//! 6. otherwise waits — for a connection of its own pool to come back, a permit to free
//!    up, or a database to go cold — up to `acquire_timeout`, then `StoreBusy`.
//!
//! A connection coming back is closed instead of pooled when its pool holds more than its
//! share (or, oversubscribed, has nobody waiting) and another hot database waits below its
//! share, so a busy database cannot starve one that just became hot.
//!
//! So while the budget covers the hot databases, each keeps at least one connection, and a
//! checkout that finds its pool's connections all busy waits for one of them rather than
//! closing another hot database's connection to open its own — which made every checkout
//! pay a connect when tenants spread. One hot database alone grows to the whole budget
//! once the others have gone cold; others that become hot take their shares back from its
//! idle connections. When more databases are hot than the budget holds, they take turns,
//! least recently used first.
//!
//! Idle connections close after the idle timeout; a connection marked
//! [`PgConn::discard`], or broken, is closed, not pooled; a database with no connection and
//! no checkout has no entry, so an idle tenant costs nothing.

mod shares;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use std::collections::HashMap;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_postgres::{Client, Config};

use crate::config::PoolLimits;
use crate::error::{Error, Result};
use crate::pgconnect::{self, PgConfig};
use crate::telemetry;
pub use shares::HOT_WINDOW;
use shares::{Returned, Shares, Step};

/// How often a waiting checkout looks again even if nothing signalled it (a database may
/// have gone cold meanwhile).
const RECHECK: Duration = Duration::from_millis(100);

/// The statements prepared on one connection, by schema version and SQL text: they live
/// as long as the connection, so they travel with it in and out of the pool. Looked up by
/// `&str`, so a hit allocates nothing.
#[derive(Default)]
pub struct StatementCache {
    by_version: HashMap<i64, HashMap<String, tokio_postgres::Statement>>,
    len: usize,
}

impl StatementCache {
    pub fn get(&self, version: i64, sql: &str) -> Option<&tokio_postgres::Statement> {
        self.by_version.get(&version)?.get(sql)
    }

    pub fn insert(&mut self, version: i64, sql: &str, statement: tokio_postgres::Statement) {
        let known = self.by_version.entry(version).or_default();
        if known.insert(sql.to_owned(), statement).is_none() {
            self.len += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every statement but those of `version`.
    pub fn keep_only(&mut self, version: i64) {
        self.by_version.retain(|v, _| *v == version);
        self.len = self.by_version.values().map(HashMap::len).sum();
    }
}

/// A pooled connection: the client and the statements prepared on it.
pub(crate) struct Pooled {
    client: Client,
    statements: StatementCache,
}

impl shares::Conn for Pooled {
    fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

/// The pools of one server, keyed by `database/role`.
pub struct PgPools {
    store: String,
    limits: PoolLimits,
    budget: Arc<Semaphore>,
    shares: Mutex<Shares<Pooled>>,
    /// Signalled whenever a connection closes (its permit is free) or a checkout gives up.
    changed: Notify,
    opened: AtomicU64,
    /// Connections checked out now.
    in_use: AtomicUsize,
    last_sweep: Mutex<Instant>,
    /// The role of background work (migrations, provisioning): its pools count as hot only
    /// while in use, so their idle connections give way to requests at once.
    background_role: Option<String>,
}

/// A checked-out connection. Dropped, it goes back to its pool, unless it was marked
/// [`PgConn::discard`] or is broken, in which case it is closed.
pub struct PgConn {
    client: Option<Pooled>,
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
        &self
            .client
            .as_ref()
            .expect("a checked-out connection has its client")
            .client
    }
}

impl PgConn {
    /// Closes the connection instead of pooling it (its session state is unknown).
    pub fn discard(&mut self) {
        self.reusable = false;
    }

    /// The statements prepared on this connection.
    pub fn statements(&mut self) -> &mut StatementCache {
        // The client is taken out only by `Drop`.
        #[allow(clippy::expect_used)]
        &mut self
            .client
            .as_mut()
            .expect("a checked-out connection has its client")
            .statements
    }

    /// Undoes [`PgConn::discard`] once the session is known clean again (after a
    /// COMMIT). A unit of work discards its connection before `BEGIN` and reuses it after
    /// `COMMIT`, so a task cancelled in between closes the connection (the server rolls
    /// the transaction back) instead of pooling it mid-transaction.
    pub fn reuse(&mut self) {
        self.reusable = true;
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        self.pools.in_use.fetch_sub(1, Ordering::Relaxed);
        let conn = match (self.client.take(), self.permit.take()) {
            (Some(client), Some(permit)) if self.reusable => Some((client, permit)),
            // Closed here, its permit freed before the pools hear of it.
            _ => None,
        };
        self.pools.check_in(&self.key, conn);
    }
}

impl PgPools {
    pub fn new(store: &str, limits: PoolLimits) -> Arc<PgPools> {
        Self::build(store, limits, None)
    }

    /// Pools whose connections log in as `role` serve background work (migrations,
    /// provisioning): hot only while in use, so their idle connections give way to
    /// requests at once.
    pub fn with_background_role(store: &str, limits: PoolLimits, role: &str) -> Arc<PgPools> {
        Self::build(store, limits, Some(role.to_owned()))
    }

    fn build(store: &str, limits: PoolLimits, background_role: Option<String>) -> Arc<PgPools> {
        let budget = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        Arc::new(PgPools {
            store: store.to_owned(),
            shares: Mutex::new(Shares::new(Arc::clone(&budget), limits.max_connections)),
            budget,
            limits,
            changed: Notify::new(),
            opened: AtomicU64::new(0),
            in_use: AtomicUsize::new(0),
            last_sweep: Mutex::new(Instant::now()),
            background_role,
        })
    }

    pub fn limits(&self) -> &PoolLimits {
        &self.limits
    }

    /// Connections open now (idle and checked out).
    pub fn open_connections(&self) -> usize {
        self.limits.max_connections.max(1) - self.budget.available_permits()
    }

    /// Connections checked out now (the others open are idle).
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Connections opened since the pools were created: a measure of churn (a pool that
    /// reuses its connections opens about as many as the budget holds, however long it
    /// serves).
    pub fn connections_opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// A connection to the database and role of `config`, by the policy of the module doc.
    pub async fn get(self: &Arc<Self>, config: &PgConfig) -> Result<PgConn> {
        let key = pool_key(config);
        let wait = self.limits.acquire_timeout;
        let started = tokio::time::Instant::now();
        let deadline = started + wait;
        let background = self
            .background_role
            .as_deref()
            .is_some_and(|role| config.get_user() == Some(role));
        let returned = self.shares().enter_as(&key, Instant::now(), background);
        let mut checkout = Checkout {
            pools: self,
            key: &key,
            served: false,
        };
        loop {
            // Registered before deciding, so that whatever happens meanwhile wakes us.
            let own = returned.notified();
            let any = self.changed.notified();
            tokio::pin!(own, any);
            own.as_mut().enable();
            any.as_mut().enable();
            let step = self.shares().step(&key, Instant::now());
            match step {
                Step::Reuse(client, permit) => {
                    checkout.served = true;
                    telemetry::acquire_wait(&self.store, started.elapsed());
                    return Ok(self.wrap(key.clone(), Some(client), permit));
                }
                Step::Open { permit, closed } => {
                    drop(closed);
                    checkout.served = true;
                    telemetry::acquire_wait(&self.store, started.elapsed());
                    // Checked out before connecting: if connecting fails or is cancelled,
                    // dropping it gives the permit back.
                    let mut conn = self.wrap(key.clone(), None, permit);
                    conn.client = Some(Pooled {
                        client: self.connect(config).await?,
                        statements: StatementCache::default(),
                    });
                    self.opened.fetch_add(1, Ordering::Relaxed);
                    return Ok(conn);
                }
                Step::Wait => tokio::select! {
                    _ = &mut own => {}
                    _ = &mut any => {}
                    _ = tokio::time::sleep(RECHECK) => {}
                    _ = tokio::time::sleep_until(deadline) => {
                        telemetry::store_busy(&self.store);
                        return Err(Error::StoreBusy {
                            store: self.store.clone(),
                            waited_ms: wait.as_millis() as u64,
                        })
                    }
                },
            }
        }
    }

    fn wrap(
        self: &Arc<Self>,
        key: String,
        client: Option<Pooled>,
        permit: OwnedSemaphorePermit,
    ) -> PgConn {
        self.in_use.fetch_add(1, Ordering::Relaxed);
        PgConn {
            client,
            permit: Some(permit),
            key,
            pools: Arc::clone(self),
            reusable: true,
        }
    }

    async fn connect(&self, config: &PgConfig) -> Result<Client> {
        let unavailable = |reason: String| {
            telemetry::store_unavailable(&self.store);
            Error::StoreUnavailable {
                store: self.store.clone(),
                reason,
            }
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

    /// The pools' bookkeeping. A panic while it was held cannot leave a permit unaccounted
    /// for (permits live in connections and drop with them), so a poisoned lock is used as
    /// is rather than failing every checkout after it.
    fn shares(&self) -> MutexGuard<'_, Shares<Pooled>> {
        self.shares
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn check_in(&self, key: &str, conn: Option<(Pooled, OwnedSemaphorePermit)>) {
        let returned = self.shares().check_in(key, conn, Instant::now());
        match returned {
            Returned::Pooled(own) => own.notify_waiters(),
            Returned::Closed(conn) => {
                drop(conn);
                self.changed.notify_waiters();
            }
        }
        self.sweep_if_due();
    }

    /// Closes the idle connections `close` picks (by pool key and idle time), and those
    /// the server closed.
    fn close_idle_where(&self, close: impl FnMut(&str, Duration) -> bool) {
        let closing = self.shares().take_idle_where(Instant::now(), close);
        if !closing.is_empty() {
            drop(closing);
            self.changed.notify_waiters();
        }
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
        self.close_idle_where(|_, idle| idle >= age);
    }

    /// Closes the idle connections of one database (before it is dropped).
    pub fn close_database(&self, database: &str) {
        self.close_idle_where(|key, _| key.split('/').next() == Some(database));
    }
}

/// A checkout under way: it counts as its pool's demand until it ends, served or not.
struct Checkout<'a> {
    pools: &'a PgPools,
    key: &'a str,
    served: bool,
}

impl Drop for Checkout<'_> {
    fn drop(&mut self) {
        self.pools.shares().leave(self.key);
        if !self.served {
            // Gave up (timed out or cancelled): whoever waited behind it looks again.
            self.pools.changed.notify_waiters();
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
