//! The engine's read cache of catalog lookups on the request path: API keys, tenants (by
//! id, slug and custom domain), roles, users and tenant settings.
//!
//! An entry stays until a write changes its row. Every catalog write names the cached rows
//! it changed ([`Change`]) in its own transaction — on SQLite in a change log its triggers
//! write, on PostgreSQL in the commit's notification — and when the catalog's generation
//! moves (at once for this process's writes, within milliseconds for other processes') the
//! cache reads what changed since it last looked ([`Catalog::changes_since`]) and drops
//! exactly those entries. A bulk write, a change log pruned past that point or a listener
//! that was down drop everything. So a revoked key, a suspended tenant, a removed member or
//! domain is refused on the very next request, while logins, refreshes, audit rows and key
//! use evict nothing.
//!
//! A load under way while its row changes may finish after the change is applied: entries
//! carry the epoch of applied changes their load began at, and an entry older than a change
//! to its row is never used ([`Validity`]). Concurrent misses of one key share one catalog
//! query. Slugs and domains map to tenant ids, tenants are cached by id: a tenant's change
//! drops one entry, however the tenant is found. Unknown keys, slugs and domains are cached
//! as such. `last_used_at` of API keys is buffered and written in batches (every 30 s and on
//! shutdown), and is no change.
//!
//! While the catalog cannot hear every change (its PostgreSQL listener is down, as it is
//! during an outage of the catalog's server), entries are checked against the catalog on
//! each use; when the catalog is unreachable the entry already held is served, so a
//! request whose key and tenant are cached keeps working on a store that is up. The first
//! look after the listener is back drops everything.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use moka::future::Cache;
use moka::ops::compute::Op;

use crate::catalog::{Catalog, Change, Changes};
use crate::engine::access::KEY_TOUCH_INTERVAL;
use crate::engine::{Engine, Inner};
use crate::error::{Error, Result};
use crate::identity::{ApiKey, Role, User, UserId};
use crate::settings::TenantSettings;
use crate::slug::Slug;
use crate::telemetry;
use crate::tenant::{Tenant, TenantId, TenantStatus};

/// How often buffered `last_used_at` times are written.
pub(crate) const TOUCH_FLUSH_INTERVAL: Duration = Duration::from_secs(30);
/// Entries per kind of lookup.
const CAPACITY: u64 = 100_000;
/// Applied changes remembered to tell stale entries; an entry older than the oldest one
/// remembered is reloaded.
const REMEMBERED_CHANGES: usize = 10_000;
/// While the catalog is unreachable, how long cached entries are served before it is
/// tried again.
const UNREACHABLE_RETRY_MS: u64 = 1_000;

/// A cached value and the epoch it is known valid at.
struct Entry<V> {
    epoch: AtomicU64,
    value: V,
}

type Slot<V> = Arc<Entry<V>>;

pub(crate) struct ReadCache {
    api_keys: Cache<String, Slot<Option<(ApiKey, String)>>>,
    tenants: Cache<TenantId, Slot<Option<Tenant>>>,
    /// The live tenant holding a slug.
    slugs: Cache<Slug, Slot<Option<TenantId>>>,
    /// The tenant a custom domain names.
    domains: Cache<String, Slot<Option<TenantId>>>,
    roles: Cache<(TenantId, UserId), Slot<Option<Role>>>,
    users: Cache<UserId, Slot<Option<User>>>,
    /// Each tenant's settings (an empty document for a tenant that has none).
    settings: Cache<TenantId, Slot<Arc<TenantSettings>>>,
    validity: Validity,
    /// The catalog generation whose changes are applied.
    synced: AtomicU64,
    /// Where the catalog's change feed was last read; held while catching up.
    position: tokio::sync::Mutex<u64>,
    /// The latest use of keys, by key id.
    touches: Mutex<HashMap<String, Touch>>,
    /// The catalog did not hear every change at the last look: entries are checked
    /// against it, and kept while it is unreachable.
    unheard: AtomicBool,
    /// When the catalog was last found unreachable, in milliseconds since `born`.
    unreachable_at: AtomicU64,
    born: Instant,
}

/// A key's latest use seen here, and whether the catalog has it yet.
#[derive(Debug, Clone, Copy)]
struct Touch {
    at: DateTime<Utc>,
    written: bool,
}

fn cache<K, V>() -> Cache<K, Slot<V>>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    Cache::builder().max_capacity(CAPACITY).build()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; should it, the data is still whole.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ReadCache {
    /// An empty cache, caught up with the catalog at `generation` and feed `position`.
    pub(crate) fn new(generation: u64, position: u64) -> ReadCache {
        ReadCache {
            api_keys: cache(),
            tenants: cache(),
            slugs: cache(),
            domains: cache(),
            roles: cache(),
            users: cache(),
            settings: cache(),
            validity: Validity::default(),
            synced: AtomicU64::new(generation),
            position: tokio::sync::Mutex::new(position),
            touches: Mutex::new(HashMap::new()),
            unheard: AtomicBool::new(false),
            unreachable_at: AtomicU64::new(0),
            born: Instant::now(),
        }
    }

    /// Catches up with the catalog: when its generation moved, drops what changed since the
    /// last look. Concurrent callers wait for one catch-up.
    async fn catch_up(&self, catalog: &dyn Catalog) -> Result<()> {
        // Deaf to other processes' changes: nothing to apply, every read checks the
        // catalog itself (`get`); once it hears again, the first change it reports drops
        // everything cached.
        let unheard = !catalog.hears_changes();
        self.unheard.store(unheard, Ordering::Release);
        if unheard {
            return Ok(());
        }
        if catalog.generation()? == self.synced.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut position = self.position.lock().await;
        let generation = catalog.generation()?;
        if generation == self.synced.load(Ordering::Acquire) {
            return Ok(());
        }
        let since = catalog.changes_since(Some(*position)).await?;
        self.apply(since.changes).await;
        *position = since.position;
        self.synced.store(generation, Ordering::Release);
        Ok(())
    }

    async fn apply(&self, changes: Changes) {
        let rows = match changes {
            Changes::All => {
                self.validity.apply_all();
                self.api_keys.invalidate_all();
                self.tenants.invalidate_all();
                self.slugs.invalidate_all();
                self.domains.invalidate_all();
                self.roles.invalidate_all();
                self.users.invalidate_all();
                self.settings.invalidate_all();
                return;
            }
            Changes::Keys(rows) if rows.is_empty() => return,
            Changes::Keys(rows) => rows,
        };
        // First the epochs (entries of loads still under way are refused), then the entries.
        self.validity.apply(&rows);
        for row in rows {
            match row {
                Change::ApiKey(id) => self.api_keys.invalidate(&id).await,
                Change::Tenant(id) => self.tenants.invalidate(&id).await,
                Change::Slug(slug) => self.slugs.invalidate(&slug).await,
                Change::Member(tenant, user) => self.roles.invalidate(&(tenant, user)).await,
                Change::User(id) => self.users.invalidate(&id).await,
                Change::Domain(domain) => self.domains.invalidate(&domain).await,
                Change::Settings(id) => self.settings.invalidate(&id).await,
            }
        }
    }

    /// The value cached under `key` (whose catalog row is `row`), loaded by `load` when
    /// missing or stale. Concurrent misses of one key share one load.
    async fn get<K, V, F, Fut>(
        &self,
        kind: &'static str,
        cache: &Cache<K, Slot<V>>,
        key: K,
        row: Change,
        load: F,
    ) -> Result<V>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<V>>,
    {
        if self.unheard.load(Ordering::Acquire) {
            telemetry::catalog_lookup(kind, false);
            return self.get_unheard(cache, key, row, load).await;
        }
        let loaded = AtomicBool::new(false);
        for _ in 0..3 {
            let slot = cache
                .try_get_with(key.clone(), async {
                    loaded.store(true, Ordering::Relaxed);
                    let epoch = self.validity.epoch();
                    let value = load().await?;
                    Ok(Arc::new(Entry {
                        epoch: AtomicU64::new(epoch),
                        value,
                    }))
                })
                .await
                .map_err(shared_error)?;
            if self.validity.is_fresh(&slot, &row) {
                telemetry::catalog_lookup(kind, !loaded.load(Ordering::Relaxed));
                return Ok(slot.value.clone());
            }
            // Loaded before a change to its row was applied: drop this entry (not one loaded
            // since) and load again.
            cache
                .entry(key.clone())
                .and_compute_with(|current| async move {
                    match current {
                        Some(c) if Arc::ptr_eq(c.value(), &slot) => Op::Remove,
                        _ => Op::Nop,
                    }
                })
                .await;
        }
        // Its row changed during every load: answer from the catalog itself.
        telemetry::catalog_lookup(kind, false);
        load().await
    }

    /// `get` while the catalog does not hear every change: what it answers is cached and
    /// returned; while it cannot be reached, what was cached before is served (stale at
    /// most by the changes made during the outage, which nobody can make through this
    /// catalog), and for a second after each failed attempt it is not asked again.
    async fn get_unheard<K, V, F, Fut>(
        &self,
        cache: &Cache<K, Slot<V>>,
        key: K,
        row: Change,
        load: F,
    ) -> Result<V>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<V>>,
    {
        let cached = cache
            .get(&key)
            .await
            .filter(|slot| self.validity.is_fresh(slot, &row));
        if let Some(slot) = &cached {
            if self.unreachable_recently() {
                return Ok(slot.value.clone());
            }
        }
        let epoch = self.validity.epoch();
        match load().await {
            Ok(value) => {
                let entry = Entry {
                    epoch: AtomicU64::new(epoch),
                    value: value.clone(),
                };
                cache.insert(key, Arc::new(entry)).await;
                Ok(value)
            }
            Err(e @ Error::CatalogUnavailable(_)) => {
                self.unreachable_at
                    .store(self.millis_since_born().max(1), Ordering::Release);
                match cached {
                    Some(slot) => Ok(slot.value.clone()),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn millis_since_born(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the catalog was found unreachable within the last second.
    fn unreachable_recently(&self) -> bool {
        let at = self.unreachable_at.load(Ordering::Acquire);
        at != 0 && self.millis_since_born().saturating_sub(at) < UNREACHABLE_RETRY_MS
    }

    /// Caches a tenant read by another lookup (by slug or domain) at `epoch`, taken before
    /// the read, and returns its id.
    async fn keep_tenant(&self, epoch: u64, tenant: Option<Tenant>) -> Option<TenantId> {
        let tenant = tenant?;
        let id = tenant.id;
        let entry = Entry {
            epoch: AtomicU64::new(epoch),
            value: Some(tenant),
        };
        self.tenants.insert(id, Arc::new(entry)).await;
        Some(id)
    }
}

/// The error of a load shared by concurrent misses, for each of them.
fn shared_error(e: Arc<Error>) -> Error {
    Arc::try_unwrap(e).unwrap_or_else(|e| match e.as_ref() {
        Error::Catalog(m) => Error::Catalog(m.clone()),
        Error::CatalogUnavailable(m) => Error::CatalogUnavailable(m.clone()),
        Error::Sqlite(m) => Error::Sqlite(m.clone()),
        Error::Internal(m) => Error::Internal(m.clone()),
        other => Error::Catalog(other.to_string()),
    })
}

/// Which entries may be used. Each batch of changes applied opens a new epoch; an entry
/// carries the epoch its load began at, and is stale if its row changed at a later one.
#[derive(Default)]
struct Validity {
    epoch: AtomicU64,
    applied: Mutex<Applied>,
}

#[derive(Default)]
struct Applied {
    /// Entries from before this epoch are stale: the changes before it are forgotten.
    floor: u64,
    /// The changes remembered, oldest first, with the epoch each was applied at.
    recent: VecDeque<(u64, Change)>,
    /// The epoch of each remembered row's latest change.
    latest: HashMap<Change, u64>,
}

impl Validity {
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Whether an entry of `row` may be used. One that may is marked valid at the current
    /// epoch, which spares the next check the lock.
    fn is_fresh<V>(&self, entry: &Entry<V>, row: &Change) -> bool {
        let at = entry.epoch.load(Ordering::Acquire);
        if at == self.epoch() {
            return true;
        }
        let applied = lock(&self.applied);
        let now = self.epoch();
        let fresh =
            at >= applied.floor && applied.latest.get(row).is_none_or(|&changed| changed <= at);
        if fresh {
            entry.epoch.fetch_max(now, Ordering::AcqRel);
        }
        fresh
    }

    fn apply(&self, rows: &[Change]) {
        let mut applied = lock(&self.applied);
        let epoch = self.epoch() + 1;
        self.epoch.store(epoch, Ordering::Release);
        for row in rows {
            applied.recent.push_back((epoch, row.clone()));
            applied.latest.insert(row.clone(), epoch);
        }
        while applied.recent.len() > REMEMBERED_CHANGES {
            let Some((at, row)) = applied.recent.pop_front() else {
                break;
            };
            if applied.latest.get(&row) == Some(&at) {
                applied.latest.remove(&row);
            }
            applied.floor = at + 1;
        }
    }

    fn apply_all(&self) {
        let mut applied = lock(&self.applied);
        let epoch = self.epoch() + 1;
        self.epoch.store(epoch, Ordering::Release);
        applied.floor = epoch;
        applied.recent.clear();
        applied.latest.clear();
    }
}

impl Engine {
    /// Applies the catalog's changes not yet applied to the read cache.
    async fn catch_up(&self) -> Result<()> {
        self.inner.reads.catch_up(self.catalog()).await
    }

    pub(crate) async fn lookup_api_key(&self, id: &str) -> Result<Option<(ApiKey, String)>> {
        self.catch_up().await?;
        let reads = &self.inner.reads;
        let row = Change::ApiKey(id.to_owned());
        reads
            .get("api_key", &reads.api_keys, id.to_owned(), row, || {
                self.catalog().api_key(id)
            })
            .await
    }

    /// The tenant with this id (any status), through the read cache.
    pub async fn tenant_by_id(&self, id: TenantId) -> Result<Option<Tenant>> {
        self.catch_up().await?;
        self.cached_tenant(id).await
    }

    async fn cached_tenant(&self, id: TenantId) -> Result<Option<Tenant>> {
        let reads = &self.inner.reads;
        reads
            .get("tenant", &reads.tenants, id, Change::Tenant(id), || {
                self.catalog().tenant(id)
            })
            .await
    }

    /// The live tenant holding this slug, through the read cache.
    pub async fn find_tenant(&self, slug: &Slug) -> Result<Option<Tenant>> {
        self.catch_up().await?;
        let reads = &self.inner.reads;
        let row = Change::Slug(slug.clone());
        let id = reads
            .get("slug", &reads.slugs, slug.clone(), row, || async move {
                let epoch = reads.validity.epoch();
                let found = self.catalog().tenant_by_slug(slug).await?;
                Ok(reads.keep_tenant(epoch, found).await)
            })
            .await?;
        // A deletion frees the slug without changing which id it names here.
        Ok(self.live_tenant(id).await?.filter(|t| t.slug == *slug))
    }

    /// The live tenant that registered this custom domain (a host as
    /// [`Domain::from_host_header`](crate::Domain::from_host_header) gives it), through the
    /// read cache: a domain nobody registered is cached as such too.
    pub async fn tenant_by_domain(&self, host: &str) -> Result<Option<Tenant>> {
        self.catch_up().await?;
        let reads = &self.inner.reads;
        let row = Change::Domain(host.to_owned());
        let id = reads
            .get(
                "domain",
                &reads.domains,
                host.to_owned(),
                row,
                || async move {
                    let epoch = reads.validity.epoch();
                    let found = self.catalog().tenant_by_domain(host).await?;
                    Ok(reads.keep_tenant(epoch, found).await)
                },
            )
            .await?;
        self.live_tenant(id).await
    }

    async fn live_tenant(&self, id: Option<TenantId>) -> Result<Option<Tenant>> {
        let Some(id) = id else { return Ok(None) };
        Ok(self
            .cached_tenant(id)
            .await?
            .filter(|t| t.status != TenantStatus::Deleted))
    }

    pub(crate) async fn lookup_role(&self, tenant: TenantId, user: UserId) -> Result<Option<Role>> {
        self.catch_up().await?;
        let reads = &self.inner.reads;
        reads
            .get(
                "role",
                &reads.roles,
                (tenant, user),
                Change::Member(tenant, user),
                || self.catalog().membership_role(tenant, user),
            )
            .await
    }

    pub(crate) async fn lookup_user(&self, id: UserId) -> Result<Option<User>> {
        self.catch_up().await?;
        let reads = &self.inner.reads;
        reads
            .get("user", &reads.users, id, Change::User(id), || {
                self.catalog().user(id)
            })
            .await
    }

    /// The tenant's settings through the read cache; an empty document when it has none.
    pub(crate) async fn lookup_settings(&self, tenant: TenantId) -> Result<Arc<TenantSettings>> {
        self.catch_up().await?;
        let reads = &self.inner.reads;
        let row = Change::Settings(tenant);
        reads
            .get("settings", &reads.settings, tenant, row, || async move {
                let stored = self.catalog().tenant_settings(tenant).await?;
                Ok(Arc::new(stored.unwrap_or_default()))
            })
            .await
    }

    /// Records a key's use; written by the next flush.
    pub(crate) fn buffer_touch(&self, id: &str, at: DateTime<Utc>) {
        let touch = Touch { at, written: false };
        lock(&self.inner.reads.touches).insert(id.to_owned(), touch);
    }

    /// The latest use of a key seen by this process, written or not: newer than what its
    /// cached entry says.
    pub(crate) fn last_touch(&self, id: &str) -> Option<DateTime<Utc>> {
        lock(&self.inner.reads.touches).get(id).map(|t| t.at)
    }

    /// Writes buffered `last_used_at` times and counted usage now (also done every 30 s
    /// and every `[usage] flush_secs`, and on shutdown by `tenancy serve`). Both are
    /// tried; the first error is answered, and what failed is kept for the next flush.
    pub async fn flush(&self) -> Result<()> {
        let touches = flush(&self.inner).await;
        let usage = self.flush_usage().await;
        touches.and(usage)
    }
}

async fn flush(inner: &Inner) -> Result<()> {
    let pending: Vec<(String, DateTime<Utc>)> = lock(&inner.reads.touches)
        .iter()
        .filter(|(_, t)| !t.written)
        .map(|(id, t)| (id.clone(), t.at))
        .collect();
    if !pending.is_empty() {
        inner.catalog.touch_api_keys(&pending).await?;
    }
    let now = Utc::now();
    let mut touches = lock(&inner.reads.touches);
    for (id, at) in pending {
        if let Some(t) = touches.get_mut(&id).filter(|t| t.at == at) {
            t.written = true;
        }
    }
    // A written use older than the touch interval no longer matters: a key's next use is
    // recorded anyway, whatever its cached entry says.
    touches.retain(|_, t| {
        !t.written || (now - t.at).to_std().unwrap_or_default() < KEY_TOUCH_INTERVAL
    });
    Ok(())
}

/// Flushes buffered touches periodically for as long as the engine lives.
pub(crate) fn spawn_flusher(inner: Weak<Inner>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(TOUCH_FLUSH_INTERVAL).await;
            let Some(inner) = inner.upgrade() else { return };
            if let Err(e) = flush(&inner).await {
                tracing::warn!(error = %e, "writing API key last_used_at failed");
            }
            drop(inner);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry_at(epoch: u64) -> Entry<()> {
        Entry {
            epoch: AtomicU64::new(epoch),
            value: (),
        }
    }

    #[test]
    fn an_entry_loaded_before_a_change_to_its_row_is_stale() {
        let validity = Validity::default();
        let (row, other) = (
            Change::User(UserId::generate()),
            Change::User(UserId::generate()),
        );
        // A load begins, the row changes, the load ends.
        let loaded = entry_at(validity.epoch());
        validity.apply(std::slice::from_ref(&row));
        assert!(!validity.is_fresh(&loaded, &row));
        assert!(validity.is_fresh(&loaded, &other), "other rows keep theirs");
        assert_eq!(loaded.epoch.load(Ordering::Relaxed), validity.epoch());

        let reloaded = entry_at(validity.epoch());
        assert!(validity.is_fresh(&reloaded, &row));
        validity.apply_all();
        assert!(!validity.is_fresh(&reloaded, &row));
        assert!(!validity.is_fresh(&loaded, &other));
        assert!(validity.is_fresh(&entry_at(validity.epoch()), &row));
    }

    #[test]
    fn entries_older_than_the_changes_remembered_are_stale() {
        let validity = Validity::default();
        let user = || Change::User(UserId::generate());
        let (old, read_since, row) = (entry_at(0), entry_at(0), user());
        validity.apply(&[user()]);
        let many: Vec<Change> = (1..REMEMBERED_CHANGES).map(|_| user()).collect();
        validity.apply(&many);
        assert!(
            validity.is_fresh(&read_since, &row),
            "checked at the latest epoch"
        );
        // One more: the oldest change is forgotten.
        validity.apply(&[user()]);
        assert!(
            !validity.is_fresh(&old, &row),
            "it may have missed that change"
        );
        assert!(validity.is_fresh(&read_since, &row));
    }
}
