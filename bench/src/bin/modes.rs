//! Provisioning and data-API point reads in each backend — `database` mode on the embedded
//! SQLite store (the baseline), and `database`, `schema` and `shared` modes on a PostgreSQL
//! store, plus `database` mode over a wider fleet with a larger budget — one backend after
//! another, in one process, on loopback only. Every read scenario is measured on the full
//! stack and on a bare handler of the same process reading the same row
//! (`tenancy_bench::bare`).
//!
//! Each backend is a whole deployment, as in the test suite: the SQLite backend keeps its
//! catalog in `catalog.db`, the PostgreSQL backends keep theirs on PostgreSQL (with
//! `--pg-catalog`, the SQLite backend's too). Everything the run creates on PostgreSQL is
//! named with one random prefix and dropped at the end, on error too. The human tables go
//! to stdout, then as the last line one JSON object; progress goes to stderr. See
//! bench/README.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::Parser;
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tenancy::data::DataOp;
use tenancy::data::Object;
use tenancy::identity::KeyScope;
use tenancy::store::PoolLimits;
use tenancy::{Engine, EngineConfig, Mode, PlaceOptions, Role, Slug, StoreSpec, Tenant};
use tenancy_bench::bare::{Bare, PgFleet};
use tenancy_bench::load::{self, nearest_rank, Stats};
use tenancy_bench::pg::{self, Scratch};
use tenancy_bench::round;
use tenancy_bench::server::Running;

/// Rows seeded in every tenant's `members` table; GETs cycle through their ids.
const SEED_ROWS: u64 = 5;
/// The name of the PostgreSQL store in each PostgreSQL backend's engine.
const PG_STORE: &str = "pg";

#[derive(Parser)]
#[command(
    about = "Provisioning and data-API point reads: SQLite database mode vs the \
                   PostgreSQL database, schema and shared modes, each against a bare handler"
)]
struct Args {
    /// Tenants provisioned per backend, one after another; the round-robin reads go to
    /// all of them.
    #[arg(long, env = "BENCH_TENANTS", default_value_t = 20)]
    tenants: usize,
    /// The PostgreSQL store's connection budget (`max_connections`) in the database,
    /// schema and shared backends.
    #[arg(long, env = "BENCH_BUDGET", default_value_t = PoolLimits::default().max_connections)]
    budget: usize,
    /// Tenants of the wider `database`-mode backend (0: skip it).
    #[arg(long, env = "BENCH_WIDE_TENANTS", default_value_t = 50)]
    wide_tenants: usize,
    /// The connection budget of the wider `database`-mode backend.
    #[arg(long, env = "BENCH_WIDE_BUDGET", default_value_t = 64)]
    wide_budget: usize,
    /// Measured seconds per read scenario, backend and side (full stack, bare).
    #[arg(long, env = "BENCH_SECONDS", default_value_t = 5.0)]
    seconds: f64,
    /// Unrecorded warm-up seconds before each measurement.
    #[arg(long, env = "BENCH_WARMUP", default_value_t = 1.0)]
    warmup: f64,
    /// Concurrent client workers (closed loop: one request in flight each).
    #[arg(long, env = "BENCH_CONCURRENCY", default_value_t = 32)]
    concurrency: usize,
    /// The PostgreSQL server; the run creates its own databases and roles there. Both the
    /// stack and the bare handler connect without TLS.
    #[arg(long, env = "TENANCY_BENCH_POSTGRES_URL", default_value = pg::DEFAULT_URL)]
    postgres_url: String,
    /// Put the SQLite backend's catalog on PostgreSQL too, so that the ratios compare the
    /// stores alone.
    #[arg(long, env = "BENCH_PG_CATALOG")]
    pg_catalog: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        args.budget > 0 && args.wide_budget > 0,
        "a connection budget must be at least 1"
    );
    let (seconds, warmup, workers, tenants) =
        (args.seconds, args.warmup, args.concurrency, args.tenants);
    tenancy_bench::run_load_bench(seconds, warmup, workers, tenants, bench(args))
}

async fn bench(args: Args) -> Result<()> {
    let mut scratch = Scratch::open(&args.postgres_url).await?;
    eprintln!(
        "PostgreSQL {}: databases and roles of this run start with {}",
        scratch.version, scratch.prefix
    );
    let measured = tokio::select! {
        measured = measure_all(&args, &scratch) => measured,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    // Best effort, whatever happened above; the engines are gone by now.
    match scratch.cleanup().await {
        Ok((databases, roles)) => {
            eprintln!("dropped {databases} databases and {roles} roles of this run")
        }
        Err(e) => eprintln!(
            "warning: cleaning up {}… on PostgreSQL: {e:#}",
            scratch.prefix
        ),
    }
    report(&args, &scratch, &measured?);
    Ok(())
}

async fn measure_all(args: &Args, scratch: &Scratch) -> Result<Vec<Measured>> {
    let mut all = Vec::new();
    for backend in Backend::ALL {
        if backend.tenants(args) == 0 {
            continue;
        }
        let measured = measure(backend, args, scratch)
            .await
            .with_context(|| format!("measuring {}", backend.label()))?;
        all.push(measured);
    }
    Ok(all)
}

// ---------------------------------------------------------------------------------------
// Backends

#[derive(Clone, Copy, PartialEq)]
enum Backend {
    /// `database` mode on the embedded SQLite store: the baseline.
    Sqlite,
    PgDatabase,
    PgSchema,
    PgShared,
    /// `database` mode with `--wide-tenants` tenants and a budget of `--wide-budget`.
    PgDatabaseWide,
}

impl Backend {
    const ALL: [Backend; 5] = [
        Backend::Sqlite,
        Backend::PgDatabase,
        Backend::PgSchema,
        Backend::PgShared,
        Backend::PgDatabaseWide,
    ];

    /// The key in the JSON line.
    fn key(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite_database",
            Backend::PgDatabase => "pg_database",
            Backend::PgSchema => "pg_schema",
            Backend::PgShared => "pg_shared",
            Backend::PgDatabaseWide => "pg_database_wide",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Backend::Sqlite => "database/sqlite",
            Backend::PgDatabase => "database/postgres",
            Backend::PgSchema => "schema/postgres",
            Backend::PgShared => "shared/postgres",
            Backend::PgDatabaseWide => "database/postgres+",
        }
    }

    /// Names this backend's database, store prefix and data role on PostgreSQL (short:
    /// the data role's name must fit in 30 characters).
    fn short(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::PgDatabase => "pgdb",
            Backend::PgSchema => "pgschema",
            Backend::PgShared => "pgshared",
            Backend::PgDatabaseWide => "pgwide",
        }
    }

    fn mode(self) -> Mode {
        match self {
            Backend::Sqlite | Backend::PgDatabase | Backend::PgDatabaseWide => Mode::Database,
            Backend::PgSchema => Mode::Schema,
            Backend::PgShared => Mode::Shared,
        }
    }

    fn on_postgres(self) -> bool {
        self != Backend::Sqlite
    }

    fn tenants(self, args: &Args) -> usize {
        match self {
            Backend::PgDatabaseWide => args.wide_tenants,
            _ => args.tenants,
        }
    }

    /// The PostgreSQL store's connection budget.
    fn budget(self, args: &Args) -> Option<usize> {
        match self {
            Backend::Sqlite => None,
            Backend::PgDatabaseWide => Some(args.wide_budget),
            _ => Some(args.budget),
        }
    }
}

/// What one backend measured.
struct Measured {
    backend: Backend,
    tenants: usize,
    budget: Option<usize>,
    /// Where its catalog lived: `sqlite` or `postgres`.
    catalog: &'static str,
    provision: Provision,
    hot: Pair,
    fleet: Pair,
}

/// One read scenario on both sides.
struct Pair {
    full: Stats,
    bare: Stats,
}

impl Pair {
    fn rps_ratio(&self) -> f64 {
        self.full.rps / self.bare.rps
    }

    fn json(&self) -> Value {
        json!({
            "full": self.full.json(),
            "bare": self.bare.json(),
            "rps_ratio": round(self.rps_ratio(), 3),
            "p50_ratio": round(self.full.p50_ms / self.bare.p50_ms, 3),
            "p99_ratio": round(self.full.p99_ms / self.bare.p99_ms, 3),
        })
    }
}

/// Points `config` at the backend: on PostgreSQL, a database of the run holds the catalog
/// and is the store's database (schemas and shared tables live in it; `database`-mode
/// tenants get databases of their own, named with the run's prefix). Returns where to
/// place tenants and the store's URL.
async fn configure(
    backend: Backend,
    args: &Args,
    scratch: &Scratch,
    config: &mut EngineConfig,
) -> Result<(PlaceOptions, Option<String>)> {
    let mut store_url = None;
    if backend.on_postgres() || args.pg_catalog {
        let url = scratch.create_database(backend.short()).await?;
        config.catalog_url = Some(url.clone());
        if let Some(budget) = backend.budget(args) {
            let mut store = StoreSpec::new(PG_STORE, url.clone());
            store.database_prefix = scratch.name(backend.short())?;
            store.data_role = scratch.name(&format!("{}_data", backend.short()))?;
            store.limits.max_connections = budget;
            config.stores = vec![store];
            store_url = Some(url);
        }
    }
    let place = PlaceOptions {
        store: backend.on_postgres().then(|| PG_STORE.to_owned()),
        mode: Some(backend.mode()),
        plan: None,
    };
    Ok((place, store_url))
}

async fn measure(backend: Backend, args: &Args, scratch: &Scratch) -> Result<Measured> {
    let dir = tempfile::tempdir().context("creating a temporary data folder")?;
    let mut config = EngineConfig::new(dir.path().join("data"));
    let (place, store_url) = configure(backend, args, scratch, &mut config).await?;
    let catalog = if config.catalog_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let engine = Engine::open(config).await?;
    let n = backend.tenants(args);

    eprintln!("{}: provisioning {n} tenants …", backend.label());
    let (provision, tenants) = provision(&engine, n, &place).await?;
    let mut keys = Vec::with_capacity(tenants.len());
    for tenant in &tenants {
        keys.push(key_and_seed(&engine, tenant).await?);
    }
    let keys = Arc::new(keys);

    let server = Running::full_stack(engine.clone()).await?;
    let mut pairs = Vec::new();
    for (name, spread) in [("hot tenant", 1), ("round-robin", n)] {
        let fleet = &tenants[..spread];
        // The two sides take turns, each with its own connections: the store's idle ones
        // close first, and the bare handler's close with it.
        if let Some(store) = engine.pg_store(PG_STORE) {
            store.pools().close_idle_older_than(Duration::ZERO);
        }
        let bare = match &store_url {
            None => Bare::sqlite(
                &fleet
                    .iter()
                    .map(|t| engine.store().path(&t.placement.location))
                    .collect::<Vec<_>>(),
            )?,
            Some(url) => Bare::postgres(
                url,
                pg_fleet(backend, fleet),
                backend.budget(args).unwrap_or(1),
            )?,
        };
        let bare_server = Running::start(bare.router()).await?;
        let bare_side = Arc::new(Side::new(bare_server.base.clone(), None)?);
        let full_side = Arc::new(Side::new(server.base.clone(), Some(Arc::clone(&keys)))?);
        ensure!(
            check(&bare_side, spread).await? == check(&full_side, spread).await?,
            "{name}: the full stack and the bare handler answered different rows"
        );
        eprintln!("{}: GET by id, {name}, bare …", backend.label());
        let bare_stats = read(&bare_side, spread, args).await?;
        drop(bare_side); // its pooled HTTP connections, so that the server drains at once
        bare_server.stop().await?;
        eprintln!("{}: GET by id, {name}, full stack …", backend.label());
        let full_stats = read(&full_side, spread, args).await?;
        pairs.push(Pair {
            full: full_stats,
            bare: bare_stats,
        });
    }
    server.stop().await?;
    drop(engine);
    let fleet = pairs.remove(1);
    let hot = pairs.remove(0);
    Ok(Measured {
        backend,
        tenants: n,
        budget: backend.budget(args),
        catalog,
        provision,
        hot,
        fleet,
    })
}

/// Where the bare handler finds the tenants' rows on PostgreSQL.
fn pg_fleet(backend: Backend, tenants: &[Tenant]) -> PgFleet {
    let locations = || {
        tenants
            .iter()
            .map(|t| t.placement.location.clone())
            .collect()
    };
    match backend.mode() {
        Mode::Database => PgFleet::Databases(locations()),
        Mode::Schema => PgFleet::Schemas(locations()),
        Mode::Shared => PgFleet::Shared(tenants.iter().map(|t| t.id.0).collect()),
    }
}

// ---------------------------------------------------------------------------------------
// Provisioning

/// Per-tenant times of `n` tenants created one after another through the engine.
struct Provision {
    /// Milliseconds, in creation order.
    ms: Vec<f64>,
    total_s: f64,
}

impl Provision {
    fn mean_ms(&self) -> f64 {
        self.ms.iter().sum::<f64>() / self.ms.len() as f64
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        let mut sorted = self.ms.clone();
        sorted.sort_by(f64::total_cmp);
        nearest_rank(&sorted, p).unwrap_or(f64::NAN)
    }

    fn tenants_per_s(&self) -> f64 {
        self.ms.len() as f64 / self.total_s
    }

    fn json(&self) -> Value {
        json!({
            "mean_ms": round(self.mean_ms(), 2),
            "p50_ms": round(self.percentile_ms(0.50), 2),
            "p99_ms": round(self.percentile_ms(0.99), 2),
            "first_ms": round(self.ms.first().copied().unwrap_or(f64::NAN), 2),
            "tenants_per_s": round(self.tenants_per_s(), 1),
            "total_s": round(self.total_s, 2),
        })
    }
}

async fn provision(
    engine: &Engine,
    n: usize,
    place: &PlaceOptions,
) -> Result<(Provision, Vec<Tenant>)> {
    let mut tenants = Vec::with_capacity(n);
    let mut ms = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let slug = Slug::parse(&format!("bench-{i:04}"))?;
        let sent = Instant::now();
        let tenant = engine.create_tenant_with(slug, None, None, place).await?;
        ms.push(sent.elapsed().as_secs_f64() * 1000.0);
        tenants.push(tenant);
    }
    let total_s = started.elapsed().as_secs_f64();
    Ok((Provision { ms, total_s }, tenants))
}

fn seed_id(row: u64) -> String {
    format!("seed-{row}")
}

/// Gives the tenant a member-role API key (returned as its `Bearer` header) and seeds its
/// `members` table with [`SEED_ROWS`] rows through the engine's data API, whatever its
/// store and mode.
async fn key_and_seed(engine: &Engine, tenant: &Tenant) -> Result<HeaderValue> {
    let scope = KeyScope::Tenant {
        tenant_id: tenant.id,
        role: Role::Member,
    };
    let (_, key) = engine
        .create_api_key(scope, Some("bench".into()), None, "bench")
        .await?;
    let rows = (0..SEED_ROWS)
        .map(|row| {
            Object::from_iter([
                ("id".to_owned(), json!(seed_id(row))),
                ("name".to_owned(), json!(format!("seed member {row}"))),
                ("class".to_owned(), json!("warrior")),
                ("dkp".to_owned(), json!(row * 10)),
            ])
        })
        .collect();
    let schema = engine.data_schema(tenant).await?;
    engine
        .data(tenant, schema, "members".into(), DataOp::Insert(rows))
        .await
        .with_context(|| format!("seeding {}", tenant.slug))?;
    Ok(HeaderValue::from_str(&format!("Bearer {key}"))?)
}

// ---------------------------------------------------------------------------------------
// Point reads

/// One side of a read scenario: the full stack (authenticated by each tenant's key) or
/// the bare handler (the tenant in the path).
struct Side {
    client: reqwest::Client,
    /// `http://127.0.0.1:<port>`
    base: String,
    /// The full stack: `Bearer tny_…` by tenant index.
    keys: Option<Arc<Vec<HeaderValue>>>,
}

impl Side {
    fn new(base: String, keys: Option<Arc<Vec<HeaderValue>>>) -> Result<Side> {
        Ok(Side {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            base,
            keys,
        })
    }

    /// Request number `seq` when reading from the first `spread` tenants: tenant `seq %
    /// spread`, the seeded rows in turn.
    fn get(&self, spread: usize, seq: u64) -> reqwest::RequestBuilder {
        let spread = spread as u64;
        let tenant = (seq % spread) as usize;
        let id = seed_id((seq / spread) % SEED_ROWS);
        match &self.keys {
            Some(keys) => self
                .client
                .get(format!("{}/v1/data/members/{id}", self.base))
                .header(AUTHORIZATION, keys[tenant].clone()),
            None => self
                .client
                .get(format!("{}/t/{tenant}/members/{id}", self.base)),
        }
    }
}

/// One GET of the first and of the last tenant read: their rows (`id`, `name`, `dkp`).
async fn check(target: &Side, spread: usize) -> Result<Vec<Value>> {
    let mut rows = Vec::new();
    for seq in [0, spread as u64 - 1] {
        let resp = target.get(spread, seq).send().await?;
        let status = resp.status();
        let body = resp.text().await?;
        if status != StatusCode::OK {
            bail!("GET of tenant {seq} at {}: {status}: {body}", target.base);
        }
        let row: Value = serde_json::from_str(&body)?;
        ensure!(
            row.get("id") == Some(&json!(seed_id(0))),
            "GET of tenant {seq} answered another row: {body}"
        );
        rows.push(json!([row["id"], row["name"], row["dkp"]]));
    }
    Ok(rows)
}

/// Warms up, then measures.
async fn read(target: &Arc<Side>, spread: usize, args: &Args) -> Result<Stats> {
    let mut stats = None;
    for seconds in [args.warmup, args.seconds] {
        let target = Arc::clone(target);
        stats = Some(
            load::closed_loop(
                args.concurrency,
                Duration::from_secs_f64(seconds),
                StatusCode::OK,
                move |seq| target.get(spread, seq),
            )
            .await?,
        );
    }
    let stats = stats.ok_or_else(|| anyhow!("nothing measured"))?;
    if stats.errors > 0 {
        eprintln!("  warning: {} failed requests", stats.errors);
    }
    Ok(stats)
}

// ---------------------------------------------------------------------------------------
// Report

fn report(args: &Args, scratch: &Scratch, measured: &[Measured]) {
    let workers = std::thread::available_parallelism().map_or(0, |n| n.get());
    let Some(base) = measured.first() else {
        return;
    };
    println!(
        "modes: tenants created one after another; GET /v1/data/members/{{id}} (full stack) \
         and GET /t/{{i}}/members/{{id}} (bare) by {} workers for {} s after {} s warm-up \
         each; one shared tokio runtime ({workers} worker threads); PostgreSQL {} on {}",
        args.concurrency,
        args.seconds,
        args.warmup,
        scratch.version,
        host_of(&args.postgres_url)
    );
    println!();
    println!(
        "{:<18} {:>7} {:>6} {:<8} | {:>9} {:>8} {:>8} {:>9} | {:>9}",
        "backend",
        "tenants",
        "budget",
        "catalog",
        "prov mean",
        "p50 ms",
        "p99 ms",
        "tenants/s",
        "÷ sqlite"
    );
    for m in measured {
        let p = &m.provision;
        println!(
            "{:<18} {:>7} {:>6} {:<8} | {:>9.2} {:>8.2} {:>8.2} {:>9.1} | {:>9.2}",
            m.backend.label(),
            m.tenants,
            m.budget.map_or("-".to_owned(), |b| b.to_string()),
            m.catalog,
            p.mean_ms(),
            p.percentile_ms(0.50),
            p.percentile_ms(0.99),
            p.tenants_per_s(),
            p.mean_ms() / base.provision.mean_ms(),
        );
    }
    println!(
        "(p99: the slowest tenant; ÷ sqlite: mean time over {}'s; {} is database mode \
         with a wider fleet and budget)",
        base.backend.label(),
        Backend::PgDatabaseWide.label()
    );
    println!();
    println!(
        "{:<18} {:<16} | {:>8} {:>7} {:>7} | {:>8} {:>7} {:>7} | {:>8} {:>8}",
        "backend",
        "GET by id",
        "full rps",
        "p50 ms",
        "p99 ms",
        "bare rps",
        "p50 ms",
        "p99 ms",
        "rps f/b",
        "p50 f/b"
    );
    for m in measured {
        for (scenario, pair) in [
            ("hot".to_owned(), &m.hot),
            (format!("round-robin {}", m.tenants), &m.fleet),
        ] {
            println!(
                "{:<18} {:<16} | {:>8.0} {:>7.2} {:>7.2} | {:>8.0} {:>7.2} {:>7.2} | {:>8.2} {:>8.2}",
                m.backend.label(),
                scenario,
                pair.full.rps,
                pair.full.p50_ms,
                pair.full.p99_ms,
                pair.bare.rps,
                pair.bare.p50_ms,
                pair.bare.p99_ms,
                pair.rps_ratio(),
                pair.full.p50_ms / pair.bare.p50_ms,
            );
        }
    }
    println!(
        "(f/b: full stack / bare handler of the same backend and scenario; errors: {})",
        measured
            .iter()
            .map(|m| m.hot.full.errors
                + m.hot.bare.errors
                + m.fleet.full.errors
                + m.fleet.bare.errors)
            .sum::<u64>()
    );

    let goals = goals(measured, base);
    println!();
    println!(
        "{:<58} {:>6}  {:<8} met",
        "ratio (requests/s)", "value", "target"
    );
    for t in &goals {
        println!(
            "{:<58} {:>6.2}  {:<8} {}",
            t.name,
            t.value,
            t.target.map_or("-".to_owned(), |x| format!(">= {x:.1}")),
            match t.met() {
                Some(true) => "met",
                Some(false) => "below",
                None => "",
            }
        );
    }

    let mut backends = serde_json::Map::new();
    for m in measured {
        backends.insert(
            m.backend.key().to_owned(),
            json!({
                "label": m.backend.label(),
                "mode": m.backend.mode().to_string(),
                "tenants": m.tenants,
                "budget": m.budget,
                "catalog": m.catalog,
                "provision": m.provision.json(),
                "get_hot": m.hot.json(),
                "get_fleet": m.fleet.json(),
                "ratios": Ratios::of(m, base).json(),
            }),
        );
    }
    println!(
        "{}",
        json!({
            "bench": "modes",
            "tenants": args.tenants,
            "budget": args.budget,
            "wide_tenants": args.wide_tenants,
            "wide_budget": args.wide_budget,
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "warmup_seconds": args.warmup,
            "runtime": "shared",
            "worker_threads": workers,
            "postgres_version": scratch.version,
            "baseline": base.backend.key(),
            "backends": backends,
            "goals": goals.iter().map(Goal::json).collect::<Vec<_>>(),
        })
    );
}

/// A ratio of requests per second, and the figure it should reach (printed, not asserted).
struct Goal {
    name: String,
    key: String,
    value: f64,
    target: Option<f64>,
}

impl Goal {
    fn met(&self) -> Option<bool> {
        self.target.map(|t| self.value >= t)
    }

    fn json(&self) -> Value {
        json!({
            "ratio": self.key,
            "value": round(self.value, 3),
            "target": self.target,
            "met": self.met(),
        })
    }
}

/// The ratios the modes are judged by: full stack / bare handler (schema and shared at
/// least 0.8), each PostgreSQL backend / SQLite `database` (at least 0.3), and `database`
/// round-robin / its own hot figure (at least 0.7 where the budget covers the tenants).
fn goals(measured: &[Measured], base: &Measured) -> Vec<Goal> {
    let mut goals = Vec::new();
    for m in measured {
        let (label, key) = (m.backend.label(), m.backend.key());
        let stack_target = matches!(m.backend.mode(), Mode::Schema | Mode::Shared).then_some(0.8);
        for (scenario, name, pair) in [
            ("get_hot", "hot".to_owned(), &m.hot),
            ("get_fleet", format!("round-robin {}", m.tenants), &m.fleet),
        ] {
            goals.push(Goal {
                name: format!("{label} {name}: full / bare"),
                key: format!("{key}.{scenario}.full/bare"),
                value: pair.rps_ratio(),
                target: stack_target,
            });
        }
        if m.backend.on_postgres() {
            for (scenario, name, pair, sqlite) in [
                ("get_hot", "hot".to_owned(), &m.hot, &base.hot),
                (
                    "get_fleet",
                    format!("round-robin {}", m.tenants),
                    &m.fleet,
                    &base.fleet,
                ),
            ] {
                goals.push(Goal {
                    name: format!(
                        "{label} {name} / {} ({})",
                        base.backend.label(),
                        base.tenants
                    ),
                    key: format!("{key}.{scenario}/{}", base.backend.key()),
                    value: pair.full.rps / sqlite.full.rps,
                    target: Some(0.3),
                });
            }
        }
        if m.backend.on_postgres() && m.backend.mode() == Mode::Database {
            let covered = m.budget.is_some_and(|b| b >= m.tenants);
            goals.push(Goal {
                name: format!(
                    "{label} round-robin {} / hot (budget {})",
                    m.tenants,
                    m.budget.unwrap_or(0)
                ),
                key: format!("{key}.get_fleet/get_hot"),
                value: m.fleet.full.rps / m.hot.full.rps,
                target: covered.then_some(0.7),
            });
        }
    }
    goals
}

/// One backend's full-stack figures divided by the baseline's.
struct Ratios {
    provision_mean: f64,
    tenants_per_s: f64,
    hot_rps: f64,
    hot_p50: f64,
    hot_p99: f64,
    fleet_rps: f64,
    fleet_p50: f64,
    fleet_p99: f64,
    fleet_over_hot_rps: f64,
}

impl Ratios {
    fn of(m: &Measured, base: &Measured) -> Ratios {
        Ratios {
            provision_mean: m.provision.mean_ms() / base.provision.mean_ms(),
            tenants_per_s: m.provision.tenants_per_s() / base.provision.tenants_per_s(),
            hot_rps: m.hot.full.rps / base.hot.full.rps,
            hot_p50: m.hot.full.p50_ms / base.hot.full.p50_ms,
            hot_p99: m.hot.full.p99_ms / base.hot.full.p99_ms,
            fleet_rps: m.fleet.full.rps / base.fleet.full.rps,
            fleet_p50: m.fleet.full.p50_ms / base.fleet.full.p50_ms,
            fleet_p99: m.fleet.full.p99_ms / base.fleet.full.p99_ms,
            fleet_over_hot_rps: m.fleet.full.rps / m.hot.full.rps,
        }
    }

    fn json(&self) -> Value {
        json!({
            "provision_mean": round(self.provision_mean, 3),
            "tenants_per_s": round(self.tenants_per_s, 3),
            "get_hot_rps": round(self.hot_rps, 3),
            "get_hot_p50": round(self.hot_p50, 3),
            "get_hot_p99": round(self.hot_p99, 3),
            "get_fleet_rps": round(self.fleet_rps, 3),
            "get_fleet_p50": round(self.fleet_p50, 3),
            "get_fleet_p99": round(self.fleet_p99, 3),
            "get_fleet_over_hot_rps": round(self.fleet_over_hot_rps, 3),
        })
    }
}

/// `host:port` of a PostgreSQL URL, without the user or the password.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}
