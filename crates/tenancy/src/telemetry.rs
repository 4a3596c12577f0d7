//! The engine's metrics, recorded through the `metrics` facade: whoever installs a
//! recorder (the HTTP layer's `/metrics`) sees them; without one they cost next to
//! nothing. Every name is here, with its labels; no label ever names a tenant, so the
//! number of series is bounded by the stores, statuses and modes configured.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

use crate::engine::Engine;
use crate::error::Result;
use crate::tenant::{Mode, TenantStatus};

/// Gauge `{store, state="in_use"|"idle"}`: a PostgreSQL store's connections.
pub const STORE_CONNECTIONS: &str = "tenancy_store_connections";
/// Histogram `{store}`: how long a request waited for a PostgreSQL connection.
pub const STORE_ACQUIRE_WAIT: &str = "tenancy_store_acquire_wait_seconds";
/// Counter `{store}`: a connection or a tenant handle was not had in time (`store_busy`).
pub const STORE_BUSY: &str = "tenancy_store_busy_total";
/// Counter `{store}`: a store's server could not be reached (`store_unavailable`).
pub const STORE_UNAVAILABLE: &str = "tenancy_store_unavailable_total";
/// Gauge `{store}`: tenant databases open now in the SQLite handle cache.
pub const HANDLES_OPEN: &str = "tenancy_tenant_handles_open";
/// Counter `{store, result="hit"|"miss"}`: handle cache lookups.
pub const HANDLE_LOOKUPS: &str = "tenancy_tenant_handle_lookups_total";
/// Counter `{store, reason="capacity"|"idle"|"removed"}`: handles the cache closed.
pub const HANDLE_EVICTIONS: &str = "tenancy_tenant_handle_evictions_total";
/// Counter `{kind, result="hit"|"miss"}`: catalog lookups on the request path (api_key,
/// tenant, slug, domain, role, user) and whether the read cache answered them.
pub const CATALOG_LOOKUPS: &str = "tenancy_catalog_lookups_total";
/// Counter `{outcome="ok"|"failed"}`: tenants provisioned.
pub const PROVISIONING: &str = "tenancy_provisioning_total";
/// Histogram `{outcome}`: how long provisioning one tenant took (bulk creation counts
/// its tenants in [`PROVISIONING`] only).
pub const PROVISIONING_DURATION: &str = "tenancy_provisioning_duration_seconds";
/// Counter `{outcome="ok"|"failed"}`: one tenant's data migrated (by `tenancy migrate` or on
/// request).
pub const TENANT_MIGRATIONS: &str = "tenancy_tenant_migrations_total";
/// Histogram `{outcome}`: how long migrating one tenant's data took.
pub const TENANT_MIGRATION_DURATION: &str = "tenancy_tenant_migration_duration_seconds";
/// Gauge `{status, mode}`: tenants (deleted ones excluded), read from the catalog when
/// [`Engine::record_gauges`] runs (at each scrape).
pub const TENANTS: &str = "tenancy_tenants";

/// Counter `{outcome="ok"|"failed"}`: usage flushes that wrote something (a failed one
/// keeps its counts for the next).
pub const USAGE_FLUSHES: &str = "tenancy_usage_flushes_total";
/// Counter `{threshold="50"|"80"|"100"}`: budget alerts raised by this process.
pub const BUDGET_ALERTS: &str = "tenancy_budget_alerts_total";

/// Registers the help text of every engine metric with the installed recorder.
pub fn describe() {
    describe_gauge!(
        STORE_CONNECTIONS,
        "PostgreSQL connections of a store, in use or idle"
    );
    describe_histogram!(
        STORE_ACQUIRE_WAIT,
        metrics::Unit::Seconds,
        "time waited for a PostgreSQL connection"
    );
    describe_counter!(STORE_BUSY, "answers of store_busy: nothing free in time");
    describe_counter!(STORE_UNAVAILABLE, "failures to reach a store's server");
    describe_gauge!(HANDLES_OPEN, "tenant databases open in the handle cache");
    describe_counter!(HANDLE_LOOKUPS, "tenant handle cache lookups, hit or miss");
    describe_counter!(HANDLE_EVICTIONS, "tenant handles closed by the cache");
    describe_counter!(
        CATALOG_LOOKUPS,
        "catalog lookups on the request path, answered by the read cache (hit) or not"
    );
    describe_counter!(PROVISIONING, "tenants provisioned, by outcome");
    describe_histogram!(
        PROVISIONING_DURATION,
        metrics::Unit::Seconds,
        "time to provision one tenant"
    );
    describe_counter!(TENANT_MIGRATIONS, "tenant data migrations, by outcome");
    describe_histogram!(
        TENANT_MIGRATION_DURATION,
        metrics::Unit::Seconds,
        "time to migrate one tenant's data"
    );
    describe_gauge!(TENANTS, "tenants by status and mode");
    describe_counter!(USAGE_FLUSHES, "usage flushes to the catalog, by outcome");
    describe_counter!(BUDGET_ALERTS, "budget alerts raised, by threshold");
}

pub(crate) fn usage_flushed(outcome: &'static str) {
    counter!(USAGE_FLUSHES, "outcome" => outcome).increment(1);
}

pub(crate) fn budget_alert(threshold: u32) {
    counter!(BUDGET_ALERTS, "threshold" => threshold.to_string()).increment(1);
}

pub(crate) fn outcome<T, E>(result: &std::result::Result<T, E>) -> &'static str {
    if result.is_ok() {
        "ok"
    } else {
        "failed"
    }
}

pub(crate) fn store_busy(store: &str) {
    counter!(STORE_BUSY, "store" => store.to_owned()).increment(1);
}

pub(crate) fn store_unavailable(store: &str) {
    counter!(STORE_UNAVAILABLE, "store" => store.to_owned()).increment(1);
}

pub(crate) fn acquire_wait(store: &str, waited: Duration) {
    histogram!(STORE_ACQUIRE_WAIT, "store" => store.to_owned()).record(waited.as_secs_f64());
}

pub(crate) fn handle_lookup(store: &str, hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    counter!(HANDLE_LOOKUPS, "store" => store.to_owned(), "result" => result).increment(1);
}

pub(crate) fn handle_evictions(store: &str, reason: &'static str, n: usize) {
    if n > 0 {
        counter!(HANDLE_EVICTIONS, "store" => store.to_owned(), "reason" => reason)
            .increment(n as u64);
    }
}

pub(crate) fn catalog_lookup(kind: &'static str, hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    counter!(CATALOG_LOOKUPS, "kind" => kind, "result" => result).increment(1);
}

pub(crate) fn provisioned(outcome: &'static str, took: Option<Duration>) {
    counter!(PROVISIONING, "outcome" => outcome).increment(1);
    if let Some(took) = took {
        histogram!(PROVISIONING_DURATION, "outcome" => outcome).record(took.as_secs_f64());
    }
}

pub(crate) fn tenant_migrated(outcome: &'static str, took: Duration) {
    counter!(TENANT_MIGRATIONS, "outcome" => outcome).increment(1);
    histogram!(TENANT_MIGRATION_DURATION, "outcome" => outcome).record(took.as_secs_f64());
}

impl Engine {
    /// Sets the gauges that are read rather than counted: tenants by status and mode (one
    /// catalog query), open tenant handles and each PostgreSQL store's connections. Call it
    /// just before rendering a scrape.
    pub async fn record_gauges(&self) -> Result<()> {
        let sqlite = self.store();
        gauge!(HANDLES_OPEN, "store" => sqlite.name.clone()).set(sqlite.open_handles() as f64);
        for store in self.postgres_stores() {
            let pools = store.pools();
            let open = pools.open_connections();
            let in_use = pools.in_use().min(open);
            let name = store.name.clone();
            gauge!(STORE_CONNECTIONS, "store" => name.clone(), "state" => "in_use")
                .set(in_use as f64);
            gauge!(STORE_CONNECTIONS, "store" => name, "state" => "idle")
                .set((open - in_use) as f64);
        }
        let counts = self.catalog().counts_by_status_and_mode().await?;
        // Every pair is set, so a pair whose last tenant left reads 0, not its old value.
        for status in TenantStatus::ALL {
            if status == TenantStatus::Deleted {
                continue;
            }
            for mode in [Mode::Database, Mode::Schema, Mode::Shared] {
                let n = counts
                    .iter()
                    .find(|(s, m, _)| *s == status && *m == mode)
                    .map_or(0, |(_, _, n)| *n);
                gauge!(TENANTS, "status" => status.as_str(), "mode" => mode.as_str()).set(n as f64);
            }
        }
        Ok(())
    }
}
