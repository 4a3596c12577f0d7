//! The engine's read cache of catalog lookups on the request path (API keys, tenants,
//! memberships, users).
//!
//! Every entry is tagged with the catalog generation it was read at, and is used only
//! while the generation is unchanged — any commit by any process invalidates everything.
//! So a revoked key, a suspended tenant or a removed member is refused on the very next
//! request, while an unchanged catalog costs no query. `last_used_at` of API keys is
//! buffered and written in batches so that key use does not invalidate the cache.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use moka::sync::Cache;

use crate::engine::{Engine, Inner};
use crate::error::{Error, Result};
use crate::identity::{ApiKey, Role, User, UserId};
use crate::slug::Slug;
use crate::tenant::{Tenant, TenantId};

/// How often buffered `last_used_at` times are written.
pub(crate) const TOUCH_FLUSH_INTERVAL: Duration = Duration::from_secs(30);

type Entry<V> = (u64, V);

pub(crate) struct ReadCache {
    api_keys: Cache<String, Entry<Option<(ApiKey, String)>>>,
    tenants: Cache<TenantId, Entry<Option<Tenant>>>,
    slugs: Cache<Slug, Entry<Option<Tenant>>>,
    roles: Cache<(TenantId, UserId), Entry<Option<Role>>>,
    users: Cache<UserId, Entry<Option<User>>>,
    /// `last_used_at` not yet written, by key id.
    pub(crate) touches: Mutex<HashMap<String, DateTime<Utc>>>,
}

fn cache<K: Hash + Eq + Send + Sync + 'static, V: Clone + Send + Sync + 'static>(
) -> Cache<K, Entry<V>> {
    Cache::builder().max_capacity(100_000).build()
}

impl ReadCache {
    pub(crate) fn new() -> ReadCache {
        ReadCache {
            api_keys: cache(),
            tenants: cache(),
            slugs: cache(),
            roles: cache(),
            users: cache(),
            touches: Mutex::new(HashMap::new()),
        }
    }
}

async fn cached<K, V, F, Fut>(
    cache: &Cache<K, Entry<V>>,
    generation: u64,
    key: K,
    load: F,
) -> Result<V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<V>>,
{
    if let Some((g, v)) = cache.get(&key) {
        if g == generation {
            return Ok(v);
        }
    }
    let value = load().await?;
    cache.insert(key, (generation, value.clone()));
    Ok(value)
}

impl Engine {
    fn generation(&self) -> Result<u64> {
        self.catalog().generation()
    }

    pub(crate) async fn lookup_api_key(&self, id: &str) -> Result<Option<(ApiKey, String)>> {
        let g = self.generation()?;
        cached(&self.inner.reads.api_keys, g, id.to_owned(), || {
            self.catalog().api_key(id)
        })
        .await
    }

    /// The tenant with this id (any status), through the read cache.
    pub async fn tenant_by_id(&self, id: TenantId) -> Result<Option<Tenant>> {
        let g = self.generation()?;
        cached(&self.inner.reads.tenants, g, id, || {
            self.catalog().tenant(id)
        })
        .await
    }

    /// The live tenant holding this slug, through the read cache.
    pub async fn find_tenant(&self, slug: &Slug) -> Result<Option<Tenant>> {
        let g = self.generation()?;
        cached(&self.inner.reads.slugs, g, slug.clone(), || {
            self.catalog().tenant_by_slug(slug)
        })
        .await
    }

    pub(crate) async fn lookup_role(&self, tenant: TenantId, user: UserId) -> Result<Option<Role>> {
        let g = self.generation()?;
        cached(&self.inner.reads.roles, g, (tenant, user), || {
            self.catalog().membership_role(tenant, user)
        })
        .await
    }

    pub(crate) async fn lookup_user(&self, id: UserId) -> Result<Option<User>> {
        let g = self.generation()?;
        cached(&self.inner.reads.users, g, id, || self.catalog().user(id)).await
    }

    /// Records a key's use; written by the next flush.
    pub(crate) fn buffer_touch(&self, id: &str, at: DateTime<Utc>) {
        if let Ok(mut t) = self.inner.reads.touches.lock() {
            t.insert(id.to_owned(), at);
        }
    }

    /// The buffered use of a key, newer than what the catalog has.
    pub(crate) fn pending_touch(&self, id: &str) -> Option<DateTime<Utc>> {
        self.inner.reads.touches.lock().ok()?.get(id).copied()
    }

    /// Writes buffered `last_used_at` times now (also done every 30 s, and on shutdown by
    /// `tenancy serve`).
    pub async fn flush(&self) -> Result<()> {
        flush(&self.inner).await
    }
}

async fn flush(inner: &Inner) -> Result<()> {
    let pending: Vec<(String, DateTime<Utc>)> = match inner.reads.touches.lock() {
        Ok(mut t) => t.drain().collect(),
        Err(_) => return Err(Error::Internal("touch buffer poisoned".into())),
    };
    if pending.is_empty() {
        return Ok(());
    }
    inner.catalog.touch_api_keys(&pending).await
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
