//! Named pause points, for crash tests.
//!
//! When `TENANCY_PAUSE_AT` names a point, the process prints `tenancy: paused at <point>`
//! to stderr when it reaches it and waits there forever, so that a test can `kill -9` it at
//! exactly that instant. Unset (always, outside tests), a pause point costs one comparison.

use std::sync::OnceLock;

/// Points where a crash test may stop the process. Listed here so tests and code agree.
pub mod points {
    pub const PROVISION_CATALOG_WRITTEN: &str = "provision.catalog_written";
    pub const PROVISION_FILE_BUILT: &str = "provision.file_built";
    pub const PROVISION_FILE_PLACED: &str = "provision.file_placed";
    pub const DELETE_MARKED: &str = "delete.marked";
    pub const DELETE_FILE_REMOVED: &str = "delete.file_removed";
    pub const MIGRATE_LOCKED: &str = "migrate.locked";
    pub const MIGRATE_TENANT_APPLIED: &str = "migrate.tenant_applied";
    pub const MIGRATE_TENANT_COMMITTED: &str = "migrate.tenant_committed";
}

fn configured() -> Option<&'static str> {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    AT.get_or_init(|| {
        std::env::var("TENANCY_PAUSE_AT")
            .ok()
            .filter(|s| !s.is_empty())
    })
    .as_deref()
}

/// [`pause`] for async code: costs one comparison when `point` is not the configured
/// one, and otherwise waits on a blocking thread, never on an async worker.
pub async fn pause_async(point: &'static str) {
    if configured() == Some(point) {
        let _ = tokio::task::spawn_blocking(move || pause(point)).await;
    }
}

/// Blocks forever if `TENANCY_PAUSE_AT` names `point`. Call it from blocking code only.
pub fn pause(point: &str) {
    if configured() == Some(point) {
        eprintln!("tenancy: paused at {point}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}
