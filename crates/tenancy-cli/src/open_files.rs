//! The open-files budget, checked when `tenancy serve` starts: a server whose tenant
//! databases cannot all be open at once within the process's limit would answer errors
//! from the tenant past it on, so it refuses to start and says what to change.

use anyhow::{bail, Result};
use tenancy::config::FILES_PER_OPEN_TENANT;
use tenancy::EngineConfig;

/// Refuses a configuration whose `cache.max_open` does not fit in `limit` open files.
pub fn check(config: &EngineConfig, limit: u64) -> Result<()> {
    let needed = config.open_files_needed();
    if needed <= limit {
        return Ok(());
    }
    let max_open = config.cache.max_open;
    let others = needed - FILES_PER_OPEN_TENANT * max_open;
    let fits = limit.saturating_sub(others) / FILES_PER_OPEN_TENANT;
    bail!(
        "cache.max_open = {max_open} needs {needed} open files ({FILES_PER_OPEN_TENANT} per open \
         tenant database: database, WAL and shared memory; {others} for the catalog, \
         PostgreSQL connections and the server), but this process may open {limit}: raise \
         the open-files limit (ulimit -n, LimitNOFILE= in a systemd unit) or set \
         cache.max_open (TENANCY_CACHE_MAX_OPEN) to at most {fits}"
    );
}

/// The process's limit on open files now (`None` if unlimited or unknown on this system).
pub fn current_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_limit(&limits)
}

/// The soft limit on the "Max open files" line of `/proc/<pid>/limits`.
fn parse_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    soft.parse().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code

    use super::*;

    #[test]
    fn reads_the_soft_limit() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95536                95536                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_limit(limits), Some(1024));
        assert_eq!(
            parse_limit(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
    }

    #[test]
    fn max_open_must_fit_three_files_each() {
        let mut config = EngineConfig::new("data");
        config.cache.max_open = 1000;
        let err = check(&config, 1024).unwrap_err().to_string();
        assert!(err.contains("needs 3064 open files"), "{err}");
        assert!(err.contains("at most 320"), "{err}");
        config.cache.max_open = 320;
        check(&config, 1024).unwrap();
    }
}
