//! The bounded cache of open tenant handles: LRU with idle expiry.
//!
//! Registered tenants cost nothing here; only tenants used recently hold an open handle.
//! Eviction drops the cache's reference, and the handle closes when the last request
//! using it finishes.

use std::sync::Arc;

use moka::sync::Cache;

use crate::config::CacheConfig;
use crate::tenant::TenantId;

/// Open handles by tenant, bounded.
pub struct HandleCache<H: Send + Sync + 'static> {
    cache: Cache<TenantId, Arc<H>>,
}

impl<H: Send + Sync + 'static> HandleCache<H> {
    pub fn new(config: CacheConfig) -> Self {
        HandleCache {
            cache: Cache::builder()
                .max_capacity(config.max_open)
                .time_to_idle(config.idle)
                .build(),
        }
    }

    /// The cached handle, or the one `open` makes (cached if it succeeds). Two callers
    /// racing on a cold tenant may both open it; one handle wins the cache, the other is
    /// closed after its single use.
    pub fn get_or_open<E>(
        &self,
        id: TenantId,
        open: impl FnOnce() -> Result<H, E>,
    ) -> Result<Arc<H>, E> {
        if let Some(h) = self.cache.get(&id) {
            return Ok(h);
        }
        let handle = Arc::new(open()?);
        self.cache.insert(id, Arc::clone(&handle));
        Ok(handle)
    }

    /// The handle if it is open, without opening it.
    pub fn get(&self, id: TenantId) -> Option<Arc<H>> {
        self.cache.get(&id)
    }

    /// Closes the tenant's handle (once in-flight users finish).
    pub fn evict(&self, id: TenantId) {
        self.cache.invalidate(&id);
    }

    /// How many handles are open now (approximate until pending maintenance runs).
    pub fn open_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }
}
