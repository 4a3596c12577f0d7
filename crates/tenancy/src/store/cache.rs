//! The bounded cache of open tenant handles: LRU with idle expiry, and a hard bound.
//!
//! Registered tenants cost nothing here; only tenants used recently hold an open handle.
//! The bound is a count of *slots*: every open handle holds one for as long as it is
//! open — cached, being opened, evicted but still finishing a request, or opened outside
//! the cache for fleet work ([`HandleCache::slot`]) — so at most `max_open` are open at
//! any instant. Opening when every slot is taken first closes the least recently used
//! handle nobody is using; when all are in use it asks the least recently used one to close
//! as soon as its request finishes and waits, at most `open_wait`, then answers
//! [`Error::StoreBusy`].
//!
//! Handles are closed on the blocking pool (closing a database may checkpoint its WAL),
//! never on an async worker.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::config::CacheConfig;
use crate::error::{Error, Result};
use crate::telemetry;
use crate::tenant::TenantId;

/// The right to keep one tenant database open; closing the database gives it back.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

/// An open handle and its slot. The handle is declared first, so it is dropped (closed)
/// before the slot is given back.
pub struct Open<H> {
    handle: H,
    _slot: Slot,
}

impl<H> std::ops::Deref for Open<H> {
    type Target = H;

    fn deref(&self) -> &H {
        &self.handle
    }
}

struct Entry<H> {
    open: Arc<Open<H>>,
    /// Position in `Lru::order` (larger: used more recently).
    tick: u64,
    used: Instant,
}

struct Lru<H> {
    entries: HashMap<TenantId, Entry<H>>,
    order: BTreeMap<u64, TenantId>,
    next_tick: u64,
    /// Handles removed while a request was using them: open until it finishes. A request
    /// for the same tenant meanwhile takes this handle back rather than opening a second
    /// one (two connections to one file in a process keep each other's descriptors open).
    retiring: HashMap<TenantId, Weak<Open<H>>>,
    /// One opening at a time per tenant: others wait for its handle.
    opening: HashMap<TenantId, Arc<tokio::sync::Mutex<()>>>,
}

impl<H> Lru<H> {
    fn touch(&mut self, id: TenantId, now: Instant) -> Option<Arc<Open<H>>> {
        if !self.entries.contains_key(&id) {
            let open = self.retiring.remove(&id)?.upgrade()?;
            self.insert(id, Arc::clone(&open), now);
            return Some(open);
        }
        let entry = self.entries.get_mut(&id)?;
        self.order.remove(&entry.tick);
        self.next_tick += 1;
        entry.tick = self.next_tick;
        entry.used = now;
        self.order.insert(entry.tick, id);
        Some(Arc::clone(&entry.open))
    }

    fn insert(&mut self, id: TenantId, open: Arc<Open<H>>, now: Instant) -> Option<Arc<Open<H>>> {
        let replaced = self.remove(id);
        self.next_tick += 1;
        self.order.insert(self.next_tick, id);
        self.entries.insert(
            id,
            Entry {
                open,
                tick: self.next_tick,
                used: now,
            },
        );
        replaced
    }

    fn remove(&mut self, id: TenantId) -> Option<Arc<Open<H>>> {
        let entry = self.entries.remove(&id)?;
        self.order.remove(&entry.tick);
        Some(entry.open)
    }

    /// Removes a handle to free its slot: closed at once if unused, else when its
    /// request finishes (retiring until then).
    fn retire(&mut self, id: TenantId) -> Option<Arc<Open<H>>> {
        let open = self.remove(id)?;
        if Arc::strong_count(&open) > 1 {
            if self.retiring.len() >= self.entries.len().max(64) {
                self.retiring.retain(|_, w| w.strong_count() > 0);
            }
            self.retiring.insert(id, Arc::downgrade(&open));
        }
        Some(open)
    }

    /// The least recently used handle no request is using, else the least recently used.
    fn victim(&self) -> Option<TenantId> {
        let mut oldest = None;
        for id in self.order.values() {
            let entry = self.entries.get(id)?;
            // Only the cache holds it (new holders clone it under this lock).
            if Arc::strong_count(&entry.open) == 1 {
                return Some(*id);
            }
            oldest = oldest.or(Some(*id));
        }
        oldest
    }

    /// Removes the unused handles idle longer than `idle`, oldest first.
    fn expire(&mut self, idle: std::time::Duration, now: Instant) -> Vec<Arc<Open<H>>> {
        let mut expired = Vec::new();
        while let Some((_, id)) = self.order.first_key_value() {
            let id = *id;
            let Some(entry) = self.entries.get(&id) else {
                break;
            };
            if now.duration_since(entry.used) < idle || Arc::strong_count(&entry.open) > 1 {
                break;
            }
            expired.extend(self.remove(id));
        }
        expired
    }
}

/// Open handles by tenant, bounded.
pub struct HandleCache<H: Send + Sync + 'static> {
    store: String,
    config: CacheConfig,
    /// `max_open`, as the number of slots.
    capacity: usize,
    slots: Arc<Semaphore>,
    lru: Mutex<Lru<H>>,
    /// A handle joined the cache: one waiting opener may close another.
    inserted: Notify,
}

impl<H: Send + Sync + 'static> HandleCache<H> {
    pub fn new(store: &str, config: CacheConfig) -> Self {
        let capacity = usize::try_from(config.max_open)
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        HandleCache {
            store: store.to_owned(),
            config,
            capacity,
            slots: Arc::new(Semaphore::new(capacity)),
            lru: Mutex::new(Lru {
                entries: HashMap::new(),
                order: BTreeMap::new(),
                next_tick: 0,
                retiring: HashMap::new(),
                opening: HashMap::new(),
            }),
            inserted: Notify::new(),
        }
    }

    fn lru(&self) -> Result<MutexGuard<'_, Lru<H>>> {
        self.lru
            .lock()
            .map_err(|_| Error::Internal("tenant handle cache poisoned".into()))
    }

    /// The cached handle, or the one `open` makes on a blocking thread (then cached).
    /// Callers racing on a cold tenant wait for the first one's handle.
    pub async fn get_or_open<F>(&self, id: TenantId, open: F) -> Result<Arc<Open<H>>>
    where
        F: FnOnce() -> Result<H> + Send + 'static,
    {
        if let Some(h) = self.get(id)? {
            telemetry::handle_lookup(&self.store, true);
            return Ok(h);
        }
        telemetry::handle_lookup(&self.store, false);
        let gate = Arc::clone(self.lru()?.opening.entry(id).or_default());
        let opened = self.open_once(id, &gate, open).await;
        let mut lru = self.lru()?;
        drop(gate);
        if lru
            .opening
            .get(&id)
            .is_some_and(|g| Arc::strong_count(g) == 1)
        {
            lru.opening.remove(&id);
        }
        opened
    }

    async fn open_once<F>(
        &self,
        id: TenantId,
        gate: &tokio::sync::Mutex<()>,
        open: F,
    ) -> Result<Arc<Open<H>>>
    where
        F: FnOnce() -> Result<H> + Send + 'static,
    {
        let _turn = gate.lock().await;
        if let Some(h) = self.get(id)? {
            return Ok(h);
        }
        let slot = self.slot().await?;
        let open = tokio::task::spawn_blocking(move || {
            open().map(|handle| {
                Arc::new(Open {
                    handle,
                    _slot: slot,
                })
            })
        })
        .await??;
        let replaced = self.lru()?.insert(id, Arc::clone(&open), Instant::now());
        close(replaced);
        self.inserted.notify_one();
        Ok(open)
    }

    /// The handle if it is open, without opening it.
    pub fn get(&self, id: TenantId) -> Result<Option<Arc<Open<H>>>> {
        let now = Instant::now();
        let (found, expired) = {
            let mut lru = self.lru()?;
            let found = lru.touch(id, now);
            (found, lru.expire(self.config.idle, now))
        };
        telemetry::handle_evictions(&self.store, "idle", expired.len());
        close(expired);
        Ok(found)
    }

    /// A slot for one database opened outside the cache; hold it while the database is
    /// open. Waits as opening a tenant does.
    pub async fn slot(&self) -> Result<Slot> {
        let wait = self.config.open_wait;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
                return Ok(Slot { _permit: permit });
            }
            // At the bound: close the least recently used handle (at once if unused, else
            // when its request finishes), then wait for a slot. With none cached (every
            // slot held by an opening), wait for the next handle to join the cache.
            let victim = {
                let mut lru = self.lru()?;
                lru.victim().and_then(|id| lru.retire(id))
            };
            telemetry::handle_evictions(&self.store, "capacity", usize::from(victim.is_some()));
            close(victim);
            tokio::select! {
                permit = Arc::clone(&self.slots).acquire_owned() => {
                    return permit
                        .map(|permit| Slot { _permit: permit })
                        .map_err(|_| Error::Internal("tenant handle slots closed".into()));
                }
                () = self.inserted.notified() => {}
                () = tokio::time::sleep_until(deadline) => {
                    telemetry::store_busy(&self.store);
                    return Err(Error::StoreBusy {
                        store: self.store.clone(),
                        waited_ms: wait.as_millis() as u64,
                    });
                }
            }
        }
    }

    /// Closes the tenant's handle (once in-flight users finish).
    pub fn evict(&self, id: TenantId) {
        if let Ok(mut lru) = self.lru() {
            let removed = lru.remove(id);
            lru.retiring.remove(&id);
            drop(lru);
            telemetry::handle_evictions(&self.store, "removed", usize::from(removed.is_some()));
            close(removed);
        }
    }

    /// How many tenant databases are open now: cached, being opened, evicted but still
    /// in use, or open outside the cache. Never more than `max_open`.
    pub fn open_count(&self) -> u64 {
        if let Ok(mut lru) = self.lru() {
            let expired = lru.expire(self.config.idle, Instant::now());
            drop(lru);
            telemetry::handle_evictions(&self.store, "idle", expired.len());
            close(expired);
        }
        self.capacity.saturating_sub(self.slots.available_permits()) as u64
    }
}

/// Drops handles on the blocking pool when there is a runtime (the last reference closes
/// the database, which may write), else here.
fn close<T: Send + 'static>(handles: impl IntoIterator<Item = T>) {
    let handles: Vec<T> = handles.into_iter().collect();
    if handles.is_empty() {
        return;
    }
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(move || drop(handles));
        }
        Err(_) => drop(handles),
    }
}
