//! Settings: defaults, then the config file, then environment variables, then flags.
//!
//! The file is `--config FILE`, else `$TENANCY_CONFIG`, else `./tenancy.toml` if present.
//! Relative paths in the file are relative to the file's folder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use tenancy::secrets::SecretKey;
use tenancy::store::PoolLimits;
use tenancy::{
    CacheConfig, Durability, EngineConfig, MemoryConfig, MigrationSource, Mode,
    SettingsSchemaSource, StoreSpec,
};
use tenancy_http::{HttpConfig, Resolver};

pub const DEFAULT_DATA_DIR: &str = "./tenancy-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Everything a command may need, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub engine: EngineConfig,
    pub listen: String,
    pub admin_token: Option<String>,
    pub http: HttpConfig,
    /// The config file that was read, if any.
    pub source: Option<PathBuf>,
    /// How often `serve` suspends tenants whose trial or subscription ended.
    pub lapse_check: Duration,
    /// How often `serve` deletes rows past the plans' retention.
    pub retention_check: Duration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    migrations: Option<PathBuf>,
    listen: Option<String>,
    admin_token: Option<String>,
    #[serde(default)]
    cache: CacheSection,
    #[serde(default)]
    sqlite: SqliteSection,
    #[serde(default)]
    memory: MemorySection,
    #[serde(default)]
    migrate: MigrateSection,
    #[serde(default)]
    auth: AuthSection,
    #[serde(default)]
    resolution: ResolutionSection,
    #[serde(default)]
    connections: ConnectionsSection,
    #[serde(default)]
    catalog: CatalogSection,
    #[serde(default)]
    tenants: TenantsSection,
    #[serde(default)]
    secrets: SecretsSection,
    #[serde(default)]
    stores: Vec<StoreSection>,
    #[serde(default)]
    metrics: MetricsSection,
    #[serde(default)]
    cors: CorsSection,
    #[serde(default)]
    plans: Vec<tenancy::Plan>,
    #[serde(default)]
    billing: BillingSection,
    #[serde(default)]
    usage: UsageSection,
    #[serde(default)]
    settings: SettingsSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageSection {
    /// How often counted usage is written to the catalog.
    flush_secs: Option<u64>,
    /// How often `serve` samples the storage of tenants.
    storage_sample_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BillingSection {
    /// The plan of a tenant created without one.
    default_plan: Option<String>,
    /// Table → the feature flag the data API needs on to serve it.
    #[serde(default)]
    feature_tables: std::collections::BTreeMap<String, String>,
    /// How often `serve` suspends tenants whose trial or subscription ended.
    lapse_check_secs: Option<u64>,
    /// How often `serve` deletes rows older than the plans' retention keeps them.
    retention_check_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsSection {
    schema: Option<PathBuf>,
}

/// The settings schema a file names: read now, compiled when the engine opens.
fn settings_schema(path: Option<PathBuf>) -> Result<SettingsSchemaSource> {
    let Some(path) = path else {
        return Ok(SettingsSchemaSource::Branding);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the settings schema {}", path.display()))?;
    Ok(SettingsSchemaSource::Json {
        origin: path.display().to_string(),
        text,
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsSection {
    enabled: Option<bool>,
    token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CorsSection {
    allowed_origins: Option<Vec<String>>,
    max_age_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogSection {
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantsSection {
    default_store: Option<String>,
    default_mode: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretsSection {
    key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreSection {
    name: String,
    url: String,
    data_url: Option<String>,
    data_role: Option<String>,
    database_prefix: Option<String>,
    max_connections: Option<usize>,
    acquire_timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    query_timeout_ms: Option<u64>,
    idle_timeout_secs: Option<u64>,
}

impl StoreSection {
    fn spec(self) -> Result<StoreSpec> {
        let mut spec = StoreSpec::new(self.name, self.url);
        if !spec.url.starts_with("postgres://") && !spec.url.starts_with("postgresql://") {
            bail!("store {:?}: url must start with postgres://", spec.name);
        }
        spec.data_url = self.data_url;
        if let Some(role) = self.data_role {
            spec.data_role = role;
        }
        if let Some(prefix) = self.database_prefix {
            spec.database_prefix = prefix;
        }
        let d = PoolLimits::default();
        let ms = Duration::from_millis;
        spec.limits = PoolLimits {
            max_connections: self.max_connections.unwrap_or(d.max_connections),
            acquire_timeout: self.acquire_timeout_ms.map_or(d.acquire_timeout, ms),
            connect_timeout: self.connect_timeout_ms.map_or(d.connect_timeout, ms),
            query_timeout: self.query_timeout_ms.map_or(d.query_timeout, ms),
            idle_timeout: self
                .idle_timeout_secs
                .map_or(d.idle_timeout, Duration::from_secs),
        };
        if spec.limits.max_connections == 0 {
            bail!("store {:?}: max_connections must be at least 1", spec.name);
        }
        Ok(spec)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthSection {
    signup: Option<bool>,
    self_service_tenants: Option<bool>,
    access_token_ttl_secs: Option<u64>,
    max_tenants_per_user: Option<u32>,
    signups_per_address: Option<u32>,
    login_failures_per_email: Option<u32>,
    login_failures_per_address: Option<u32>,
    limit_window_secs: Option<u64>,
    password_hashing_concurrency: Option<usize>,
    password_hashing_wait_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConnectionsSection {
    max: Option<usize>,
    header_read_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    request_timeout_secs: Option<u64>,
    body_limit_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolutionSection {
    resolvers: Option<Vec<String>>,
    base_domains: Option<Vec<String>>,
    platform_hosts: Option<Vec<String>>,
    tenant_header: Option<String>,
}

fn env_list(name: &str) -> Option<Vec<String>> {
    env(name).map(|v| {
        v.split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

fn env_bool(name: &str) -> Result<Option<bool>> {
    env(name)
        .map(|v| match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(anyhow::anyhow!("{name}={v:?} is not true or false")),
        })
        .transpose()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheSection {
    max_open: Option<u64>,
    idle_timeout_secs: Option<u64>,
    open_wait_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqliteSection {
    durability: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemorySection {
    budget_mib: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MigrateSection {
    concurrency: Option<usize>,
    on_request: Option<String>,
    canary: Option<usize>,
    max_failures: Option<usize>,
}

/// An environment variable, treating empty as unset.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn env_parse<T: std::str::FromStr>(name: &str) -> Result<Option<T>> {
    env(name)
        .map(|v| {
            v.trim()
                .parse::<T>()
                .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a valid number"))
        })
        .transpose()
}

pub fn load(config_flag: Option<&Path>, data_dir_flag: Option<&Path>) -> Result<Settings> {
    let explicit = config_flag
        .map(Path::to_path_buf)
        .or_else(|| env("TENANCY_CONFIG").map(PathBuf::from));
    let source = match explicit {
        Some(path) => Some(path),
        None => Some(PathBuf::from("tenancy.toml")).filter(|p| p.is_file()),
    };
    let (file, base) = match &source {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            let file: FileConfig = toml::from_str(&text)
                .with_context(|| format!("invalid config file {}", path.display()))?;
            let base = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            (file, base)
        }
        None => (FileConfig::default(), PathBuf::from(".")),
    };
    let relative = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };

    let data_dir = data_dir_flag
        .map(Path::to_path_buf)
        .or_else(|| env("TENANCY_DATA_DIR").map(PathBuf::from))
        .or_else(|| file.data_dir.map(relative))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let migrations = env("TENANCY_MIGRATIONS")
        .map(PathBuf::from)
        .or_else(|| file.migrations.map(relative))
        .map_or(MigrationSource::BuiltinGuild, MigrationSource::Folder);
    let listen = env("TENANCY_LISTEN")
        .or(file.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let admin_token = env("TENANCY_ADMIN_TOKEN").or(file.admin_token);

    let defaults = CacheConfig::default();
    let cache = CacheConfig {
        max_open: env_parse("TENANCY_CACHE_MAX_OPEN")?
            .or(file.cache.max_open)
            .unwrap_or(defaults.max_open),
        idle: env_parse("TENANCY_CACHE_IDLE_SECS")?
            .or(file.cache.idle_timeout_secs)
            .map_or(defaults.idle, Duration::from_secs),
        open_wait: env_parse("TENANCY_CACHE_OPEN_WAIT_MS")?
            .or(file.cache.open_wait_ms)
            .map_or(defaults.open_wait, Duration::from_millis),
    };
    if cache.max_open == 0 {
        bail!("cache.max_open must be at least 1");
    }
    let durability = match env("TENANCY_DURABILITY").or(file.sqlite.durability) {
        Some(d) => d
            .parse::<Durability>()
            .map_err(|e| anyhow::anyhow!("sqlite.durability: {e}"))?,
        None => Durability::default(),
    };
    let memory = match env_parse::<u64>("TENANCY_MEMORY_BUDGET_MIB")?.or(file.memory.budget_mib) {
        Some(mib) if mib < 16 => bail!("memory.budget_mib must be at least 16"),
        Some(mib) => MemoryConfig {
            budget: mib.saturating_mul(1024 * 1024),
        },
        None => MemoryConfig::default(),
    };
    let concurrency = env_parse("TENANCY_MIGRATE_CONCURRENCY")?
        .or(file.migrate.concurrency)
        .unwrap_or(4);
    if concurrency == 0 {
        bail!("migrate.concurrency must be at least 1");
    }
    if let Some(token) = &admin_token {
        if token.len() < 16 {
            bail!("the admin token must be at least 16 characters");
        }
    }

    let mut http = HttpConfig::default();
    if let Some(v) = env_bool("TENANCY_SIGNUP")?.or(file.auth.signup) {
        http.signup = v;
    }
    if let Some(v) = env_bool("TENANCY_SELF_SERVICE_TENANTS")?.or(file.auth.self_service_tenants) {
        http.self_service_tenants = v;
    }
    if let Some(names) = env_list("TENANCY_RESOLVERS").or(file.resolution.resolvers) {
        http.resolvers = names
            .iter()
            .map(|n| {
                Resolver::parse(n).ok_or_else(|| {
                    anyhow::anyhow!("unknown resolver {n:?}; use api_key, token, path, subdomain, domain, header")
                })
            })
            .collect::<Result<_>>()?;
    }
    if let Some(bases) = env_list("TENANCY_BASE_DOMAINS").or(file.resolution.base_domains) {
        http.base_domains = bases.into_iter().map(|b| b.to_ascii_lowercase()).collect();
    }
    if let Some(hosts) = env_list("TENANCY_PLATFORM_HOSTS").or(file.resolution.platform_hosts) {
        http.platform_hosts = hosts
            .into_iter()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
            .collect();
    }
    if let Some(h) = env("TENANCY_TENANT_HEADER").or(file.resolution.tenant_header) {
        http.tenant_header = h
            .parse()
            .map_err(|_| anyhow::anyhow!("tenant_header {h:?} is not a valid header name"))?;
    }
    let limits = &mut http.connections;
    if let Some(max) = env_parse("TENANCY_MAX_CONNECTIONS")?.or(file.connections.max) {
        if max == 0 {
            bail!("connections.max must be at least 1");
        }
        limits.max_connections = max;
    }
    for (name, var, value, limit) in [
        (
            "header_read_timeout_secs",
            "TENANCY_HEADER_READ_TIMEOUT_SECS",
            file.connections.header_read_timeout_secs,
            &mut limits.header_read_timeout,
        ),
        (
            "idle_timeout_secs",
            "TENANCY_IDLE_TIMEOUT_SECS",
            file.connections.idle_timeout_secs,
            &mut limits.idle_timeout,
        ),
        (
            "request_timeout_secs",
            "TENANCY_REQUEST_TIMEOUT_SECS",
            file.connections.request_timeout_secs,
            &mut limits.request_timeout,
        ),
    ] {
        if let Some(secs) = env_parse::<u64>(var)?.or(value) {
            if secs == 0 {
                bail!("connections.{name} must be at least 1");
            }
            *limit = Duration::from_secs(secs);
        }
    }

    if let Some(bytes) =
        env_parse::<usize>("TENANCY_BODY_LIMIT_BYTES")?.or(file.connections.body_limit_bytes)
    {
        if bytes < 1024 {
            bail!("connections.body_limit_bytes must be at least 1024");
        }
        http.body_limit = bytes;
    }
    if let Some(on) = env_bool("TENANCY_METRICS_ENABLED")?.or(file.metrics.enabled) {
        http.metrics.enabled = on;
    }
    if let Some(token) = env("TENANCY_METRICS_TOKEN").or(file.metrics.token) {
        if token.len() < 16 {
            bail!("the metrics token must be at least 16 characters");
        }
        http.metrics.token = Some(tenancy::AdminToken::from_secret(&token));
    }
    if let Some(origins) = env_list("TENANCY_CORS_ORIGINS").or(file.cors.allowed_origins) {
        http.cors.allowed_origins = origins
            .iter()
            .map(|o| {
                tenancy_http::CorsConfig::parse_origin(o)
                    .map_err(|e| anyhow::anyhow!("cors.allowed_origins: {e}"))
            })
            .collect::<Result<_>>()?;
    }
    if let Some(secs) = env_parse::<u64>("TENANCY_CORS_MAX_AGE_SECS")?.or(file.cors.max_age_secs) {
        http.cors.max_age_secs = secs;
    }

    let mut engine = EngineConfig::new(data_dir);
    if let Some(ttl) =
        env_parse::<u64>("TENANCY_ACCESS_TOKEN_TTL_SECS")?.or(file.auth.access_token_ttl_secs)
    {
        if !(60..=86_400).contains(&ttl) {
            bail!("access_token_ttl_secs must be between 60 and 86400");
        }
        engine.tokens.access_ttl = Duration::from_secs(ttl);
    }
    if let Some(max) =
        env_parse::<u32>("TENANCY_MAX_TENANTS_PER_USER")?.or(file.auth.max_tenants_per_user)
    {
        http.max_tenants_per_user = max;
    }
    let window = env_parse::<u64>("TENANCY_LIMIT_WINDOW_SECS")?.or(file.auth.limit_window_secs);
    if window == Some(0) {
        bail!("limit_window_secs must be at least 1");
    }
    for (limit, var, value) in [
        (
            &mut engine.signup_limit_per_client,
            "TENANCY_SIGNUPS_PER_ADDRESS",
            file.auth.signups_per_address,
        ),
        (
            &mut engine.login_limit_per_email,
            "TENANCY_LOGIN_FAILURES_PER_EMAIL",
            file.auth.login_failures_per_email,
        ),
        (
            &mut engine.login_limit_per_client,
            "TENANCY_LOGIN_FAILURES_PER_ADDRESS",
            file.auth.login_failures_per_address,
        ),
    ] {
        if let Some(max) = env_parse::<u32>(var)?.or(value) {
            limit.max_failures = max;
        }
        if let Some(secs) = window {
            limit.window = Duration::from_secs(secs);
        }
    }
    if let Some(n) = env_parse::<usize>("TENANCY_PASSWORD_HASHING_CONCURRENCY")?
        .or(file.auth.password_hashing_concurrency)
    {
        if n == 0 {
            bail!("password_hashing_concurrency must be at least 1");
        }
        engine.password_hashing.max_concurrent = n;
    }
    if let Some(ms) =
        env_parse::<u64>("TENANCY_PASSWORD_HASHING_WAIT_MS")?.or(file.auth.password_hashing_wait_ms)
    {
        engine.password_hashing.max_wait = Duration::from_millis(ms);
    }
    engine.catalog_url = env("TENANCY_CATALOG_URL").or(file.catalog.url);
    let mut stores = file
        .stores
        .into_iter()
        .map(StoreSection::spec)
        .collect::<Result<Vec<_>>>()?;
    // One PostgreSQL store from the environment, for a deployment without a file.
    if let Some(url) = env("TENANCY_STORE_URL") {
        let name = env("TENANCY_STORE_NAME").unwrap_or_else(|| "pg".to_owned());
        stores.retain(|s| s.name != name);
        stores.push(
            StoreSection {
                name,
                url,
                data_url: env("TENANCY_STORE_DATA_URL"),
                data_role: env("TENANCY_STORE_DATA_ROLE"),
                database_prefix: env("TENANCY_STORE_DATABASE_PREFIX"),
                max_connections: None,
                acquire_timeout_ms: None,
                connect_timeout_ms: None,
                query_timeout_ms: None,
                idle_timeout_secs: None,
            }
            .spec()?,
        );
    }
    engine.stores = stores;
    if let Some(store) = env("TENANCY_DEFAULT_STORE").or(file.tenants.default_store) {
        engine.default_store = store;
    }
    if let Some(mode) = env("TENANCY_DEFAULT_MODE").or(file.tenants.default_mode) {
        engine.default_mode = parse_mode(&mode)?;
    }
    engine.secret_key = match env("TENANCY_SECRET_KEY") {
        Some(hex) => Some(SecretKey::from_hex(&hex).context("TENANCY_SECRET_KEY")?),
        None => match file.secrets.key_file.map(relative) {
            Some(path) => Some(SecretKey::load_or_create(&path)?),
            None => None,
        },
    };
    let default_plan = env("TENANCY_DEFAULT_PLAN").or(file.billing.default_plan);
    engine.plans = tenancy::Plans::new(file.plans, default_plan, file.billing.feature_tables)
        .map_err(|e| anyhow::anyhow!("[[plans]]: {e}"))?;
    for plan in engine.plans.all() {
        if let Some(store) = &plan.store {
            if store != tenancy::DEFAULT_STORE && !engine.stores.iter().any(|s| &s.name == store) {
                bail!(
                    "[[plans]] {:?}: no store {store:?} is configured",
                    plan.name
                );
            }
        }
    }
    let lapse_check =
        match env_parse::<u64>("TENANCY_LAPSE_CHECK_SECS")?.or(file.billing.lapse_check_secs) {
            Some(0) => bail!("billing.lapse_check_secs must be at least 1"),
            Some(n) => Duration::from_secs(n),
            None => Duration::from_secs(60),
        };
    for (var, file_value, slot, name) in [
        (
            "TENANCY_USAGE_FLUSH_SECS",
            file.usage.flush_secs,
            &mut engine.usage.flush_every,
            "usage.flush_secs",
        ),
        (
            "TENANCY_USAGE_STORAGE_SAMPLE_SECS",
            file.usage.storage_sample_secs,
            &mut engine.usage.storage_sample_every,
            "usage.storage_sample_secs",
        ),
    ] {
        match env_parse::<u64>(var)?.or(file_value) {
            Some(0) => bail!("{name} must be at least 1"),
            Some(n) => *slot = Duration::from_secs(n),
            None => {}
        }
    }
    let retention_check = match env_parse::<u64>("TENANCY_RETENTION_CHECK_SECS")?
        .or(file.billing.retention_check_secs)
    {
        Some(0) => bail!("billing.retention_check_secs must be at least 1"),
        Some(n) => Duration::from_secs(n),
        None => Duration::from_secs(3600),
    };
    engine.settings_schema = settings_schema(
        env("TENANCY_SETTINGS_SCHEMA")
            .map(PathBuf::from)
            .or_else(|| file.settings.schema.map(relative)),
    )?;
    engine.migrations = migrations;
    engine.cache = cache;
    engine.durability = durability;
    engine.memory = memory;
    engine.migrate_concurrency = concurrency;
    engine.migrate_canary = env_parse("TENANCY_MIGRATE_CANARY")?
        .or(file.migrate.canary)
        .unwrap_or(engine.migrate_canary);
    engine.migrate_max_failures = env_parse("TENANCY_MIGRATE_MAX_FAILURES")?
        .or(file.migrate.max_failures)
        .unwrap_or(engine.migrate_max_failures);
    engine.migrate_on_request = match env("TENANCY_MIGRATE_ON_REQUEST")
        .or(file.migrate.on_request)
        .as_deref()
    {
        None | Some("refuse") => false,
        Some("migrate") => true,
        Some(other) => bail!("migrate.on_request {other:?}: use \"refuse\" or \"migrate\""),
    };
    Ok(Settings {
        engine,
        listen,
        admin_token,
        http,
        source,
        lapse_check,
        retention_check,
    })
}

pub fn parse_mode(mode: &str) -> Result<Mode> {
    mode.parse::<Mode>()
        .map_err(|_| anyhow::anyhow!("unknown mode {mode:?}; use database, schema or shared"))
}

/// The commented `tenancy.toml` that `tenancy init` writes.
pub const TEMPLATE: &str = r#"# tenancy configuration. Every setting also has an environment variable,
# which wins over this file; command-line flags win over both.

# Where the catalog and the tenant databases live.            env: TENANCY_DATA_DIR
data_dir = "tenancy-data"

# The tenant schema: a folder of NNNN_name.sql migrations, written for one tenant.
# Remove this line to use the built-in guild example schema.   env: TENANCY_MIGRATIONS
migrations = "migrations"

# Address `tenancy serve` listens on.                          env: TENANCY_LISTEN
listen = "127.0.0.1:8080"

# The platform admin token (Authorization: Bearer ...). Prefer the environment variable;
# when neither is set, `tenancy serve` creates one on first start and prints it once.
#                                                              env: TENANCY_ADMIN_TOKEN
# admin_token = "..."

[cache]
# Tenant databases open at once, least recently used closed first. Each costs three file
# handles (database, WAL, shared memory): `tenancy serve` refuses to start when the
# open-files limit cannot hold them.                           env: TENANCY_CACHE_MAX_OPEN
max_open = 1000
# A tenant database idle this long is closed.                  env: TENANCY_CACHE_IDLE_SECS
idle_timeout_secs = 1800
# With max_open databases all in use, opening another waits this long for one to close,
# then answers 503 store_busy.                                 env: TENANCY_CACHE_OPEN_WAIT_MS
open_wait_ms = 5000

[sqlite]
# When a write to a SQLite database (tenant files, the catalog) is acknowledged:
# "full" once it is synced to disk, so it survives a power loss; "normal" before the
# sync (faster writes; a process crash loses nothing, a power loss or OS crash can lose
# the last acknowledged writes).                               env: TENANCY_DURABILITY
durability = "full"

[memory]
# The server's memory budget (MiB). SQLite, whose memory grows with the tenants' data,
# is held to three quarters of it (its process-wide soft heap limit); each open tenant
# database's page cache gets half of that share divided by cache.max_open.
#                                                              env: TENANCY_MEMORY_BUDGET_MIB
budget_mib = 512

[migrate]
# How many tenants `tenancy migrate` migrates at once.         env: TENANCY_MIGRATE_CONCURRENCY
concurrency = 4
# A request to a tenant whose schema is behind: "refuse" (503 tenant_migrating until
# `tenancy migrate` reaches it) or "migrate" (on the spot).     env: TENANCY_MIGRATE_ON_REQUEST
on_request = "refuse"
# Tenants migrated first, alone; if one fails, no other is touched (0: none).
#                                                              env: TENANCY_MIGRATE_CANARY
canary = 1
# Stop taking tenants after this many failed (0: never).       env: TENANCY_MIGRATE_MAX_FAILURES
max_failures = 10

[auth]
# Anyone may create an account with POST /v1/auth/signup.      env: TENANCY_SIGNUP
signup = true
# Logged-in users may create tenants and become their owner.   env: TENANCY_SELF_SERVICE_TENANTS
self_service_tenants = true
# Lifetime of access tokens.                                   env: TENANCY_ACCESS_TOKEN_TTL_SECS
access_token_ttl_secs = 900
# Tenants one user may own through self-service creation (refused past it with
# 403 tenant_limit_reached; platform administrators are not bound).
#                                                              env: TENANCY_MAX_TENANTS_PER_USER
max_tenants_per_user = 10
# Per client address and per window: signups, then 429 rate_limited with Retry-After.
#                                                              env: TENANCY_SIGNUPS_PER_ADDRESS
signups_per_address = 20
# Failed logins per email and per client address in a window, then 429 (the right
# password included) until the window ends. An attempt counts before it is checked.
#                                                              env: TENANCY_LOGIN_FAILURES_PER_EMAIL
login_failures_per_email = 5
#                                                              env: TENANCY_LOGIN_FAILURES_PER_ADDRESS
login_failures_per_address = 30
#                                                              env: TENANCY_LIMIT_WINDOW_SECS
limit_window_secs = 900
# Password hashes (Argon2id, 19 MiB each) running at once; default: one per core, at
# most 8. A signup or login waits this long for a slot, then 503 auth_busy.
#                                                              env: TENANCY_PASSWORD_HASHING_CONCURRENCY
# password_hashing_concurrency = 4
#                                                              env: TENANCY_PASSWORD_HASHING_WAIT_MS
password_hashing_wait_ms = 2000

[resolution]
# How a request names its tenant; a request whose sources disagree is refused.
#                                                              env: TENANCY_RESOLVERS (comma-separated)
resolvers = ["api_key", "token", "path", "subdomain", "domain", "header"]
# {slug}.{base} in the Host header names a tenant.             env: TENANCY_BASE_DOMAINS
base_domains = ["localhost"]
# The server's own host names. Neither they, the base domains, localhost, nor anything
# under them can be registered as a tenant's custom domain.    env: TENANCY_PLATFORM_HOSTS
platform_hosts = []
#                                                              env: TENANCY_TENANT_HEADER
tenant_header = "X-Tenant"

[connections]
# Client connections at most (never more than half the open-files limit, which
# `tenancy serve` raises to its hard limit at start). At the cap the connection idle
# longest is closed to make room; when all are busy, a new one gets 503.
#                                                              env: TENANCY_MAX_CONNECTIONS
max = 10000
# A request head must arrive whole within this of its first byte.
#                                                              env: TENANCY_HEADER_READ_TIMEOUT_SECS
header_read_timeout_secs = 10
# A connection with no request in progress and no traffic this long is closed.
#                                                              env: TENANCY_IDLE_TIMEOUT_SECS
idle_timeout_secs = 60
# Reading a request and answering it, at most; past it: 408 request_timeout.
#                                                              env: TENANCY_REQUEST_TIMEOUT_SECS
request_timeout_secs = 30
# The largest request body taken, in bytes (at least 1024); past it: 413 body_too_large.
#                                                              env: TENANCY_BODY_LIMIT_BYTES
body_limit_bytes = 2097152

[metrics]
# GET /metrics in the Prometheus text format.                  env: TENANCY_METRICS_ENABLED
enabled = true
# A bearer token for scrapers (at least 16 characters), so they need not hold the admin
# token; the admin token is accepted too. Prefer the environment variable.
#                                                              env: TENANCY_METRICS_TOKEN
# token = "..."

[cors]
# Browser origins that may call the API, as browsers send them ("https://app.example.com",
# "http://localhost:3000"), or "*" for any. Empty: none.      env: TENANCY_CORS_ORIGINS (comma-separated)
allowed_origins = []
# How long a browser may cache a preflight answer.            env: TENANCY_CORS_MAX_AGE_SECS
max_age_secs = 600

[usage]
# Usage (requests, reads, writes, rows, active users) is counted in memory and written to
# the catalog in one transaction this often, and on shutdown.
#                                                              env: TENANCY_USAGE_FLUSH_SECS
flush_secs = 10
# How often `serve` samples the storage of the tenants written to (and of those not
# sampled yet today).                                          env: TENANCY_USAGE_STORAGE_SAMPLE_SECS
storage_sample_secs = 300

# The catalog on PostgreSQL instead of catalog.db in data_dir.  env: TENANCY_CATALOG_URL
# Every PostgreSQL URL takes libpq's TLS settings: sslmode = disable | prefer (default) |
# require | verify-ca | verify-full, and sslrootcert = a PEM file of the CA to trust.
# [catalog]
# url = "postgres://tenancy@db.internal/tenancy_catalog?sslmode=verify-full&sslrootcert=/etc/tenancy/db-ca.pem"

# PostgreSQL stores. Their URLs are kept in the catalog sealed with the secret key
# (env TENANCY_SECRET_KEY: 64 hex digits; else [secrets] key_file; else
# <data_dir>/secret.key, created on first need).
# [[stores]]
# name = "pg"
# url = "postgres://tenancy@db.internal/tenancy"   # creates databases, schemas, tables
# max_connections = 20          # to this server, across every tenant database
# acquire_timeout_ms = 5000     # a request waits this long for a connection, then 503
# query_timeout_ms = 10000
# data_role = "tenancy_data"    # the role shared-mode requests run as (created)
# database_prefix = "tenancy"   # database-mode tenants: <prefix>_<tenant id>

[settings]
# The JSON Schema every tenant's settings document (GET/PUT /v1/tenants/{slug}/settings,
# `tenancy settings`) must satisfy; a schema that does not compile stops every command.
# Without it: the built-in branding schema (display_name, logo_url, primary_color, font).
#                                                              env: TENANCY_SETTINGS_SCHEMA
# schema = "settings.schema.json"

[tenants]
# Where new tenants go: "default" is the SQLite store in data_dir.
#                                                              env: TENANCY_DEFAULT_STORE
default_store = "default"
# database (SQLite file or PostgreSQL database), schema or shared.
#                                                              env: TENANCY_DEFAULT_MODE
default_mode = "database"
"#;
