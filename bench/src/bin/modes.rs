//! Provisioning and data-API point reads in each of the four backends — `database` mode on
//! the embedded SQLite store (the baseline), and `database`, `schema` and `shared` modes on
//! a PostgreSQL store — one backend after another, in one process, on loopback only.
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
use tenancy::{Engine, EngineConfig, Mode, PlaceOptions, Role, Slug, StoreSpec, Tenant};
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
                   PostgreSQL database, schema and shared modes"
)]
struct Args {
    /// Tenants provisioned per backend, one after another; the round-robin reads go to
    /// all of them.
    #[arg(long, env = "BENCH_TENANTS", default_value_t = 50)]
    tenants: usize,
    /// Measured seconds per read scenario and backend.
    #[arg(long, env = "BENCH_SECONDS", default_value_t = 5.0)]
    seconds: f64,
    /// Unrecorded warm-up seconds before each measurement.
    #[arg(long, env = "BENCH_WARMUP", default_value_t = 1.0)]
    warmup: f64,
    /// Concurrent client workers (closed loop: one request in flight each).
    #[arg(long, env = "BENCH_CONCURRENCY", default_value_t = 32)]
    concurrency: usize,
    /// The PostgreSQL server; the run creates its own databases and roles there.
    #[arg(long, env = "TENANCY_BENCH_POSTGRES_URL", default_value = pg::DEFAULT_URL)]
    postgres_url: String,
    /// Put the SQLite backend's catalog on PostgreSQL too, so that the ratios compare the
    /// stores alone.
    #[arg(long, env = "BENCH_PG_CATALOG")]
    pg_catalog: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
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
}

impl Backend {
    const ALL: [Backend; 4] = [
        Backend::Sqlite,
        Backend::PgDatabase,
        Backend::PgSchema,
        Backend::PgShared,
    ];

    /// The key in the JSON line.
    fn key(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite_database",
            Backend::PgDatabase => "pg_database",
            Backend::PgSchema => "pg_schema",
            Backend::PgShared => "pg_shared",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Backend::Sqlite => "database/sqlite",
            Backend::PgDatabase => "database/postgres",
            Backend::PgSchema => "schema/postgres",
            Backend::PgShared => "shared/postgres",
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
        }
    }

    fn mode(self) -> Mode {
        match self {
            Backend::Sqlite | Backend::PgDatabase => Mode::Database,
            Backend::PgSchema => Mode::Schema,
            Backend::PgShared => Mode::Shared,
        }
    }

    fn on_postgres(self) -> bool {
        self != Backend::Sqlite
    }
}

/// What one backend measured.
struct Measured {
    backend: Backend,
    /// Where its catalog lived: `sqlite` or `postgres`.
    catalog: &'static str,
    provision: Provision,
    hot: Stats,
    fleet: Stats,
}

/// Points `config` at the backend: on PostgreSQL, a database of the run holds the catalog
/// and is the store's database (schemas and shared tables live in it; `database`-mode
/// tenants get databases of their own, named with the run's prefix).
async fn configure(
    backend: Backend,
    args: &Args,
    scratch: &Scratch,
    config: &mut EngineConfig,
) -> Result<PlaceOptions> {
    if backend.on_postgres() || args.pg_catalog {
        let url = scratch.create_database(backend.short()).await?;
        config.catalog_url = Some(url.clone());
        if backend.on_postgres() {
            let mut store = StoreSpec::new(PG_STORE, url);
            store.database_prefix = scratch.name(backend.short())?;
            store.data_role = scratch.name(&format!("{}_data", backend.short()))?;
            config.stores = vec![store];
        }
    }
    Ok(PlaceOptions {
        store: backend.on_postgres().then(|| PG_STORE.to_owned()),
        mode: Some(backend.mode()),
    })
}

async fn measure(backend: Backend, args: &Args, scratch: &Scratch) -> Result<Measured> {
    let dir = tempfile::tempdir().context("creating a temporary data folder")?;
    let mut config = EngineConfig::new(dir.path().join("data"));
    let place = configure(backend, args, scratch, &mut config).await?;
    let catalog = if config.catalog_url.is_some() {
        "postgres"
    } else {
        "sqlite"
    };
    let engine = Engine::open(config).await?;

    eprintln!(
        "{}: provisioning {} tenants …",
        backend.label(),
        args.tenants
    );
    let (provision, tenants) = provision(&engine, args.tenants, &place).await?;
    let mut keys = Vec::with_capacity(tenants.len());
    for tenant in &tenants {
        keys.push(key_and_seed(&engine, tenant).await?);
    }

    let server = Running::full_stack(engine.clone()).await?;
    let reads = Arc::new(Reads {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        base: server.base.clone(),
        keys,
    });
    let mut stats = Vec::new();
    for (name, spread) in [("hot tenant", 1), ("round-robin", args.tenants)] {
        eprintln!("{}: GET by id, {name} …", backend.label());
        stats.push(read(&reads, spread, args).await?);
    }
    drop(reads); // its pooled connections, so that the server drains at once
    server.stop().await?;
    drop(engine);
    let fleet = stats.remove(1);
    let hot = stats.remove(0);
    Ok(Measured {
        backend,
        catalog,
        provision,
        hot,
        fleet,
    })
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

struct Reads {
    client: reqwest::Client,
    /// The full stack's `http://127.0.0.1:<port>`.
    base: String,
    /// `Bearer tny_…` by tenant index.
    keys: Vec<HeaderValue>,
}

impl Reads {
    /// Request number `seq` when reading from the first `spread` tenants: tenant `seq %
    /// spread`, the seeded rows in turn.
    fn get(&self, spread: usize, seq: u64) -> reqwest::RequestBuilder {
        let spread = spread as u64;
        let tenant = (seq % spread) as usize;
        let row = (seq / spread) % SEED_ROWS;
        self.client
            .get(format!("{}/v1/data/members/{}", self.base, seed_id(row)))
            .header(AUTHORIZATION, self.keys[tenant].clone())
    }
}

/// Checks one GET of the first and the last tenant read, warms up, then measures.
async fn read(reads: &Arc<Reads>, spread: usize, args: &Args) -> Result<Stats> {
    for seq in [0, spread as u64 - 1] {
        let resp = reads.get(spread, seq).send().await?;
        let status = resp.status();
        let body = resp.text().await?;
        if status != StatusCode::OK {
            bail!("GET of tenant {seq}: {status}: {body}");
        }
        let row: Value = serde_json::from_str(&body)?;
        ensure!(
            row.get("id") == Some(&json!(seed_id(0))),
            "GET of tenant {seq} answered another row: {body}"
        );
    }
    let mut stats = None;
    for seconds in [args.warmup, args.seconds] {
        let reads = Arc::clone(reads);
        stats = Some(
            load::closed_loop(
                args.concurrency,
                Duration::from_secs_f64(seconds),
                StatusCode::OK,
                move |seq| reads.get(spread, seq),
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
        "modes: {} tenants per backend created one after another; GET /v1/data/members/{{id}} \
         by {} workers for {} s after {} s warm-up; one shared tokio runtime ({workers} worker \
         threads); PostgreSQL {} on {}",
        args.tenants,
        args.concurrency,
        args.seconds,
        args.warmup,
        scratch.version,
        host_of(&args.postgres_url)
    );
    println!();
    println!(
        "{:<19} {:<8} | {:>9} {:>8} {:>8} {:>9} | {:>8} {:>7} {:>7} | {:>8} {:>7} {:>7} {:>6}",
        "backend",
        "catalog",
        "prov mean",
        "p50 ms",
        "p99 ms",
        "tenants/s",
        "hot rps",
        "p50 ms",
        "p99 ms",
        "rr rps",
        "p50 ms",
        "p99 ms",
        "errors"
    );
    for m in measured {
        let p = &m.provision;
        println!(
            "{:<19} {:<8} | {:>9.2} {:>8.2} {:>8.2} {:>9.1} | {:>8.0} {:>7.2} {:>7.2} | {:>8.0} \
             {:>7.2} {:>7.2} {:>6}",
            m.backend.label(),
            m.catalog,
            p.mean_ms(),
            p.percentile_ms(0.50),
            p.percentile_ms(0.99),
            p.tenants_per_s(),
            m.hot.rps,
            m.hot.p50_ms,
            m.hot.p99_ms,
            m.fleet.rps,
            m.fleet.p50_ms,
            m.fleet.p99_ms,
            m.hot.errors + m.fleet.errors
        );
    }
    println!();
    println!(
        "ratios against {} (same run): provision mean time (above 1: slower), requests/s \
         (below 1: fewer) and p50 latency",
        base.backend.label()
    );
    println!(
        "{:<19} | {:>9} {:>9} | {:>8} {:>8} | {:>8} {:>8}",
        "backend", "prov mean", "tenants/s", "hot rps", "hot p50", "rr rps", "rr p50"
    );
    let mut backends = serde_json::Map::new();
    for m in measured {
        let ratios = Ratios::of(m, base);
        println!(
            "{:<19} | {:>9.2} {:>9.2} | {:>8.2} {:>8.2} | {:>8.2} {:>8.2}",
            m.backend.label(),
            ratios.provision_mean,
            ratios.tenants_per_s,
            ratios.hot_rps,
            ratios.hot_p50,
            ratios.fleet_rps,
            ratios.fleet_p50
        );
        backends.insert(
            m.backend.key().to_owned(),
            json!({
                "label": m.backend.label(),
                "mode": m.backend.mode().to_string(),
                "catalog": m.catalog,
                "provision": m.provision.json(),
                "get_hot": m.hot.json(),
                "get_fleet": m.fleet.json(),
                "ratios": ratios.json(),
            }),
        );
    }
    println!(
        "p99 of provisioning is the slowest of {} tenants; rr: round-robin over all of them",
        args.tenants
    );
    println!(
        "{}",
        json!({
            "bench": "modes",
            "tenants": args.tenants,
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "warmup_seconds": args.warmup,
            "runtime": "shared",
            "worker_threads": workers,
            "postgres_version": scratch.version,
            "baseline": base.backend.key(),
            "backends": backends,
        })
    );
}

/// One backend's figures divided by the baseline's.
struct Ratios {
    provision_mean: f64,
    tenants_per_s: f64,
    hot_rps: f64,
    hot_p50: f64,
    hot_p99: f64,
    fleet_rps: f64,
    fleet_p50: f64,
    fleet_p99: f64,
}

impl Ratios {
    fn of(m: &Measured, base: &Measured) -> Ratios {
        Ratios {
            provision_mean: m.provision.mean_ms() / base.provision.mean_ms(),
            tenants_per_s: m.provision.tenants_per_s() / base.provision.tenants_per_s(),
            hot_rps: m.hot.rps / base.hot.rps,
            hot_p50: m.hot.p50_ms / base.hot.p50_ms,
            hot_p99: m.hot.p99_ms / base.hot.p99_ms,
            fleet_rps: m.fleet.rps / base.fleet.rps,
            fleet_p50: m.fleet.p50_ms / base.fleet.p50_ms,
            fleet_p99: m.fleet.p99_ms / base.fleet.p99_ms,
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
        })
    }
}

/// `host:port` of a PostgreSQL URL, without the user or the password.
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}
