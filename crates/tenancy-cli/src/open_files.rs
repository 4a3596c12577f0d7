//! The budgets checked when `tenancy serve` starts. Open files: a server whose tenant
//! databases cannot all be open at once within the process's limit would answer errors
//! from the tenant past it on. Memory: a budget that cannot hold `cache.max_open` open
//! tenants would be exceeded, whatever SQLite's heap limit. Either refuses to start and
//! says what to change.

use anyhow::{bail, Result};
use tenancy::config::{FILES_PER_OPEN_TENANT, FIXED_KIB_PER_OPEN_TENANT, SERVER_BASE_MIB};
use tenancy::{EngineConfig, MemoryConfig};

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

/// Refuses a `memory.budget_mib` too small for `cache.max_open` open tenants.
pub fn check_memory(config: &EngineConfig) -> Result<()> {
    let (memory, max_open) = (config.memory, config.cache.max_open);
    let needed = memory.needed(max_open);
    if needed <= memory.budget {
        return Ok(());
    }
    const MIB: u64 = 1024 * 1024;
    bail!(
        "memory.budget_mib = {} cannot hold cache.max_open = {max_open} open tenants: each \
         costs up to {FIXED_KIB_PER_OPEN_TENANT} KiB besides its page cache ({} KiB), and the \
         server {SERVER_BASE_MIB} MiB, {} MiB in all: raise memory.budget_mib \
         (TENANCY_MEMORY_BUDGET_MIB) to at least {} or set cache.max_open \
         (TENANCY_CACHE_MAX_OPEN) to at most {}",
        memory.budget / MIB,
        memory.page_cache_kib(max_open),
        needed.div_ceil(MIB),
        MemoryConfig::min_budget_mib(max_open),
        memory.max_open_that_fits()
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

    #[test]
    fn the_memory_budget_must_hold_max_open_open_tenants() {
        const MIB: u64 = 1024 * 1024;
        let mut config = EngineConfig::new("data");
        // The defaults hold: 512 MiB for 1,000 open tenants (64 + 1,000 × (192 + 196) KiB).
        assert_eq!(config.memory.needed(1000).div_ceil(MIB), 443);
        check_memory(&config).unwrap();
        // 256 MiB does not: a soak measured 315 MiB, flat, against it.
        config.memory.budget = 256 * MIB;
        let err = check_memory(&config).unwrap_err().to_string();
        assert!(err.contains("348 MiB in all"), "{err}");
        let least = MemoryConfig::min_budget_mib(1000);
        assert!(err.contains(&format!("at least {least} ")), "{err}");
        assert!(
            MemoryConfig {
                budget: least * MIB
            }
            .needed(1000)
                <= least * MIB
        );
        assert!(
            MemoryConfig {
                budget: (least - 1) * MIB
            }
            .needed(1000)
                > (least - 1) * MIB
        );
        let fits = config.memory.max_open_that_fits();
        assert!(err.contains(&format!("at most {fits}")), "{err}");
        assert!(config.memory.needed(fits) <= config.memory.budget);
        assert!(config.memory.needed(fits + 1) > config.memory.budget);
        config.cache.max_open = fits;
        check_memory(&config).unwrap();
        // Too small for even one.
        config.memory.budget = 32 * MIB;
        assert_eq!(config.memory.max_open_that_fits(), 0);
        assert!(check_memory(&config).is_err());
    }
}
