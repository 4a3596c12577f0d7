//! The engine's configuration: what [`crate::Engine::open`] needs, where new tenants go,
//! and the bounds of the tenant handle cache and of each PostgreSQL store's pool. Plain
//! values with defaults; nothing here opens anything.

use std::path::PathBuf;
use std::time::Duration;

use crate::identity::{HashingConfig, LimitConfig, TokenConfig};
use crate::secrets::SecretKey;
use crate::settings::SettingsSchemaSource;
use crate::tenant::Mode;

/// The name of the embedded SQLite store.
pub const DEFAULT_STORE: &str = "default";
/// Where the tenant schema comes from.
#[derive(Debug, Clone, Default)]
pub enum MigrationSource {
    /// The guild example compiled into tenancy.
    #[default]
    BuiltinGuild,
    Folder(PathBuf),
}

impl MigrationSource {
    /// The migration set, read now (a folder is read again on every call).
    pub fn load(&self) -> crate::error::Result<crate::migrations::MigrationSet> {
        match self {
            MigrationSource::BuiltinGuild => Ok(crate::migrations::MigrationSet::builtin_guild()),
            MigrationSource::Folder(dir) => crate::migrations::MigrationSet::load_dir(dir),
        }
    }
}

/// Everything the engine needs to start.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Holds `catalog.db`, `tenants/` (the default SQLite store) and `run/`.
    pub data_dir: PathBuf,
    /// [`Engine::open`] also removes SQLite store files no tenant accounts for, which
    /// reads every tenant and lists every file (O(fleet)). Without it, recovery reads only
    /// the tenants in transition (O(in flight)): for short-lived processes.
    pub sweep_store_files: bool,
    pub migrations: MigrationSource,
    pub cache: CacheConfig,
    /// How far a commit to a SQLite database (tenant files, the SQLite catalog) is on disk
    /// before it is acknowledged.
    pub durability: Durability,
    /// The memory SQLite may hold in this process, and so each tenant handle's page cache.
    pub memory: MemoryConfig,
    /// How many tenants of one store `migrate` works on at once (on PostgreSQL, at most
    /// half the store's connection budget).
    pub migrate_concurrency: usize,
    /// A request to a tenant whose schema is behind migrates it on the spot (`true`) or is
    /// answered `TenantMigrating` (`false`, the default).
    pub migrate_on_request: bool,
    /// How many tenants `migrate` brings up first, alone; if one fails, the rest of the
    /// fleet is left as it was. `0`: no canary.
    pub migrate_canary: usize,
    /// `migrate` stops taking new tenants after this many failed (a rerun continues).
    /// `0`: never stops.
    pub migrate_max_failures: usize,
    pub tokens: TokenConfig,
    /// Failed logins per email, then refused until the window ends. An attempt is
    /// counted before its password is checked, so concurrent guesses cannot pass it.
    pub login_limit_per_email: LimitConfig,
    /// Failed logins per client address.
    pub login_limit_per_client: LimitConfig,
    /// Signups per client address (every attempt that reaches the password hash counts).
    pub signup_limit_per_client: LimitConfig,
    /// How much password hashing (signups, logins) runs at once, and how long a request
    /// waits for a slot before `HashingBusy`.
    pub password_hashing: HashingConfig,
    /// `postgres://…`: the catalog on PostgreSQL. `None`: `catalog.db` in `data_dir`.
    pub catalog_url: Option<String>,
    /// PostgreSQL stores, by name (the SQLite store `default` always exists).
    pub stores: Vec<StoreSpec>,
    /// Where new tenants go unless told otherwise.
    pub default_store: String,
    pub default_mode: Mode,
    /// Seals secrets kept in the catalog. `None`: `<data_dir>/secret.key`, created on
    /// first need.
    pub secret_key: Option<SecretKey>,
    /// The plans tenants are on (none configured: nothing is limited).
    pub plans: crate::plans::Plans,
    /// How often usage is written and storage sampled.
    pub usage: crate::usage::UsageConfig,
    /// The JSON Schema every tenant's settings document must satisfy, compiled when the
    /// engine opens (one that does not compile stops it from opening).
    pub settings_schema: SettingsSchemaSource,
}

/// A PostgreSQL store as configured (`[[stores]]`).
#[derive(Debug, Clone)]
pub struct StoreSpec {
    pub name: String,
    pub url: String,
    /// Connects as the data role of `shared` tenants; `None`: the engine creates
    /// `data_role` with a generated password.
    pub data_url: Option<String>,
    pub data_role: String,
    /// Tenant databases are named `<prefix>_<tenant id hex>`.
    pub database_prefix: String,
    pub limits: PoolLimits,
}

impl StoreSpec {
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> StoreSpec {
        StoreSpec {
            name: name.into(),
            url: url.into(),
            data_url: None,
            data_role: "tenancy_data".into(),
            database_prefix: "tenancy".into(),
            limits: PoolLimits::default(),
        }
    }
}

impl EngineConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> EngineConfig {
        EngineConfig {
            data_dir: data_dir.into(),
            migrations: MigrationSource::BuiltinGuild,
            cache: CacheConfig::default(),
            durability: Durability::default(),
            memory: MemoryConfig::default(),
            migrate_concurrency: 4,
            migrate_on_request: false,
            migrate_canary: 1,
            migrate_max_failures: 10,
            tokens: TokenConfig::default(),
            login_limit_per_email: LimitConfig {
                max_failures: 5,
                window: std::time::Duration::from_secs(15 * 60),
            },
            login_limit_per_client: LimitConfig {
                max_failures: 30,
                window: std::time::Duration::from_secs(15 * 60),
            },
            signup_limit_per_client: LimitConfig {
                max_failures: 20,
                window: std::time::Duration::from_secs(15 * 60),
            },
            password_hashing: HashingConfig::default(),
            catalog_url: None,
            stores: Vec::new(),
            default_store: DEFAULT_STORE.to_owned(),
            default_mode: Mode::Database,
            secret_key: None,
            plans: crate::plans::Plans::default(),
            usage: crate::usage::UsageConfig::default(),
            settings_schema: SettingsSchemaSource::Branding,
            sweep_store_files: true,
        }
    }
}

/// File handles the server keeps beside its tenant databases, PostgreSQL connections and
/// client connections: the catalog, its watcher and liveness lock, the listener, logs, the
/// runtime's own.
pub const OPEN_FILES_RESERVE: u64 = 64;

impl EngineConfig {
    /// The file handles the engine may hold open at once: three per open tenant database
    /// (`cache.max_open` of them), one per PostgreSQL connection (each store's budget),
    /// and [`OPEN_FILES_RESERVE`]. Client connections come on top.
    pub fn open_files_needed(&self) -> u64 {
        let postgres: u64 = self
            .stores
            .iter()
            .map(|s| s.limits.max_connections as u64)
            .sum();
        FILES_PER_OPEN_TENANT * self.cache.max_open + postgres + OPEN_FILES_RESERVE
    }
}

/// Where a new tenant goes: `None` takes the configured default.
#[derive(Debug, Clone, Default)]
pub struct PlaceOptions {
    pub store: Option<String>,
    pub mode: Option<Mode>,
    /// The tenant's plan (`None`: the default plan); its mode and store apply where the
    /// two above are `None`.
    pub plan: Option<String>,
}

/// Bounds of a handle cache (DESIGN §3 defaults: 1,000 open tenants, 30 minutes idle).
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    /// Tenant databases open at once, those being opened included. Each costs three file
    /// handles (database, WAL, shared memory).
    pub max_open: u64,
    pub idle: Duration,
    /// How long opening a tenant waits for a handle to close when every one is in use,
    /// before `StoreBusy`.
    pub open_wait: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_open: 1_000,
            idle: Duration::from_secs(30 * 60),
            open_wait: Duration::from_secs(5),
        }
    }
}

/// File handles one open tenant database costs: the database, its WAL and its shared
/// memory file.
pub const FILES_PER_OPEN_TENANT: u64 = 3;

/// How far a commit to a SQLite database is on disk before it is acknowledged. Both run
/// the database in WAL mode; a process crash (`kill -9`) loses no acknowledged write in
/// either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous = FULL`: the WAL is synced at every commit, so every acknowledged write
    /// survives a power loss or an operating-system crash.
    #[default]
    Full,
    /// `synchronous = NORMAL`: the WAL is synced at checkpoints only; a power loss or an
    /// operating-system crash can lose the last acknowledged commits (never corrupts).
    Normal,
}

impl Durability {
    /// The value of SQLite's `synchronous` pragma.
    pub fn synchronous(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        }
    }
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Durability, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "full" => Ok(Durability::Full),
            "normal" => Ok(Durability::Normal),
            other => Err(format!(
                "unknown durability {other:?}; use \"full\" or \"normal\""
            )),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Durability::Full => "full",
            Durability::Normal => "normal",
        })
    }
}

/// The server's memory budget, and what SQLite gets of it.
///
/// SQLite's memory (every open database's page cache, parsed schema, prepared statements)
/// is what grows with the tenants' data; the rest of the server does not. So the budget is
/// enforced on SQLite in two ways: its process-wide soft heap limit
/// ([`MemoryConfig::sqlite_heap_limit`], three quarters of the budget: above it SQLite
/// frees cached pages before it allocates), and each tenant handle's page cache
/// ([`MemoryConfig::page_cache_kib`]: half of SQLite's share, divided among the
/// `cache.max_open` handles). The remaining quarter is for the rest of the server.
#[derive(Debug, Clone, Copy)]
pub struct MemoryConfig {
    /// Bytes.
    pub budget: u64,
}

/// Prepared statements each open tenant database keeps (least recently used dropped).
pub const STATEMENT_CACHE: usize = 16;

/// The smallest page cache a tenant handle gets, whatever the budget (KiB).
const MIN_PAGE_CACHE_KIB: u64 = 64;

/// What one open tenant database costs besides its page cache, at most (KiB): SQLite's
/// lookaside, parsed schema and prepared statements, its WAL index (shared memory), the
/// handle. `bench/soak.sh` with 1,000 open tenants measured about 150–180.
pub const FIXED_KIB_PER_OPEN_TENANT: u64 = 192;

/// The server's own memory apart from its open tenants, at most (MiB): the runtime,
/// request buffers, the catalog and read caches.
pub const SERVER_BASE_MIB: u64 = 64;

impl MemoryConfig {
    pub const DEFAULT_BUDGET: u64 = 512 * 1024 * 1024;

    /// SQLite's process-wide soft heap limit, in bytes.
    pub fn sqlite_heap_limit(&self) -> u64 {
        self.budget / 4 * 3
    }

    /// The page cache of one open tenant database, in KiB (`PRAGMA cache_size = -KiB`).
    pub fn page_cache_kib(&self, max_open: u64) -> u64 {
        (self.sqlite_heap_limit() / 2 / max_open.max(1) / 1024).max(MIN_PAGE_CACHE_KIB)
    }

    /// The memory a server with `max_open` open tenants needs at most (bytes): the
    /// server's own, and each open tenant's fixed cost and page cache. Past the budget, the
    /// budget cannot hold: SQLite's soft heap limit frees cached pages, not what every open
    /// database needs to stay open.
    pub fn needed(&self, max_open: u64) -> u64 {
        SERVER_BASE_MIB * 1024 * 1024
            + max_open * (FIXED_KIB_PER_OPEN_TENANT + self.page_cache_kib(max_open)) * 1024
    }

    /// The smallest budget, in whole MiB, that holds `max_open` open tenants (the page
    /// caches grow with the budget, so this is more than [`MemoryConfig::needed`] now).
    pub fn min_budget_mib(max_open: u64) -> u64 {
        const MIB: u64 = 1024 * 1024;
        let holds = |mib: u64| {
            let memory = MemoryConfig { budget: mib * MIB };
            memory.needed(max_open) <= memory.budget
        };
        let (mut under, mut holding) = (0u64, 1u64);
        while holding < 1 << 30 && !holds(holding) {
            under = holding;
            holding *= 2;
        }
        while holding - under > 1 {
            let mid = under + (holding - under) / 2;
            if holds(mid) {
                holding = mid;
            } else {
                under = mid;
            }
        }
        holding
    }

    /// The most open tenants this budget holds (0 if not even one).
    pub fn max_open_that_fits(&self) -> u64 {
        let (mut fits, mut over) = (0u64, 1u64);
        while over < 1 << 40 && self.needed(over) <= self.budget {
            fits = over;
            over *= 2;
        }
        // needed(fits) <= budget < needed(over); find the boundary between them.
        while over - fits > 1 {
            let mid = fits + (over - fits) / 2;
            if self.needed(mid) <= self.budget {
                fits = mid;
            } else {
                over = mid;
            }
        }
        fits
    }
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            budget: MemoryConfig::DEFAULT_BUDGET,
        }
    }
}

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
