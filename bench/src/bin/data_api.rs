//! Data API throughput and latency: the full tenancy stack against a bare axum + rusqlite
//! baseline serving the same tenant files, in one process, on loopback only.
//!
//! Both servers and the closed-loop client share one multi-thread tokio runtime (one worker
//! per core); SQLite work runs on tokio's blocking pool on both sides. The human table goes
//! to stdout, then as the last line one JSON object; progress goes to stderr.
//! See bench/README.md.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use reqwest::header::{HeaderValue, AUTHORIZATION};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use serde::Deserialize;
use serde_json::{json, Value};
use tenancy::identity::KeyScope;
use tenancy::{Durability, Engine, EngineConfig, Role, Slug};
use tenancy_bench::bare::{open_sqlite, sqlite_member_json, SQLITE_SELECT};
use tenancy_bench::load::{self, Stats};
use tenancy_bench::observe::Observability;
use tenancy_bench::round;
use tenancy_bench::server::Running;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Rows seeded in every tenant's `members` table; GETs cycle through their ids.
const SEED_ROWS: u64 = 5;
/// The baseline's insert, the same the data API runs for a POST of one row.
const INSERT: &str = "INSERT INTO members (id, name, class, dkp) VALUES (?, ?, ?, ?) \
                      RETURNING id, name, class, dkp, joined_at";

#[derive(Parser)]
#[command(about = "Data API: full tenancy stack vs a bare axum + rusqlite baseline")]
struct Args {
    /// Measured seconds per scenario and side.
    #[arg(long, env = "BENCH_SECONDS", default_value_t = 5.0)]
    seconds: f64,
    /// Unrecorded warm-up seconds before each measurement.
    #[arg(long, env = "BENCH_WARMUP", default_value_t = 1.0)]
    warmup: f64,
    /// Concurrent client workers (closed loop: one request in flight each).
    #[arg(long, env = "BENCH_CONCURRENCY", default_value_t = 32)]
    concurrency: usize,
    /// Tenants of the round-robin scenarios (the hot tenant is the first).
    #[arg(long, env = "BENCH_TENANTS", default_value_t = 1000)]
    tenants: usize,
    /// Only the plans on / off comparison (skips the baseline, durability and
    /// observability sections).
    #[arg(long, env = "BENCH_ONLY_PLANS")]
    only_plans: bool,
}

/// The plan every tenant of the "plans on" server is on: a row limit on the table the
/// POSTs write, member and key limits, a request rate — all high enough never to refuse,
/// so that the figure is the cost of checking them.
fn bench_plans() -> Result<tenancy::Plans> {
    let mut plan: tenancy::Plan = serde_json::from_value(json!({
        "name": "bench",
        "features": {"analytics": true},
        "limits": {
            "members": 1000,
            "api_keys": 1000,
            "storage_bytes": 10_000_000_000u64,
            "requests_per_minute": 100_000_000u64,
            "burst": 10_000_000u64,
            "rows": [{"name": "roster", "table": "members", "max": 100_000_000u64}],
        },
        "price": {"base": "10.00", "per_unit": {"reads": "0.00001", "writes": "0.0001"}},
    }))?;
    plan.display_name = "Bench".into();
    Ok(tenancy::Plans::new(
        vec![plan],
        Some("bench".into()),
        Default::default(),
    )?)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (seconds, warmup, workers, tenants) =
        (args.seconds, args.warmup, args.concurrency, args.tenants);
    tenancy_bench::run_load_bench(seconds, warmup, workers, tenants, bench(args))
}

async fn bench(args: Args) -> Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary data folder")?;
    // Off until the observability scenarios: the other figures are without it.
    let observability = Observability::install(&dir.path().join("requests.log"))?;
    let engine = Engine::open(EngineConfig::new(dir.path().join("data"))).await?;
    assert_eq!(engine.config().durability, Durability::Full);

    let started = Instant::now();
    let fleet = create_fleet(&engine, args.tenants).await?;
    let setup_s = started.elapsed().as_secs_f64();
    eprintln!(
        "{} tenants provisioned, keyed and seeded in {setup_s:.1} s",
        args.tenants
    );

    // The full stack, exactly as `tenancy serve` mounts it.
    let full_server = Running::full_stack(engine).await?;
    // The same, on the same data folder, with `durability = "normal"`: the cost of keeping
    // every acknowledged write on power loss.
    let mut normal = EngineConfig::new(dir.path().join("data"));
    normal.durability = Durability::Normal;
    let normal_server = Running::full_stack(Engine::open(normal).await?).await?;
    // The same with plans: every tenant on `bench_plans()`'s plan (the default).
    let mut planned = EngineConfig::new(dir.path().join("data"));
    planned.plans = bench_plans()?;
    let plans_server = Running::full_stack(Engine::open(planned).await?).await?;
    // The other side of that comparison: no plans and no usage metering.
    let mut unmetered = EngineConfig::new(dir.path().join("data"));
    unmetered.usage.enabled = false;
    let unmetered_server = Running::full_stack(Engine::open(unmetered).await?).await?;

    // The baseline: its own connection to each of the same files.
    let mut dbs = HashMap::with_capacity(fleet.len());
    for (i, tenant) in fleet.iter().enumerate() {
        dbs.insert(i, Mutex::new(open_sqlite(&tenant.path)?));
    }
    // Served by `tenancy_http::serve` too, without the tenancy router.
    let base_server = Running::start(baseline_router(dbs)).await?;

    let load = Arc::new(Load {
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        full: full_server.base.clone(),
        normal: normal_server.base.clone(),
        plans: plans_server.base.clone(),
        unmetered: unmetered_server.base.clone(),
        baseline: base_server.base.clone(),
        keys: fleet
            .iter()
            .map(|t| HeaderValue::from_str(&format!("Bearer {}", t.key)))
            .collect::<Result<_, _>>()?,
        names: AtomicU64::new(0),
    });

    let n = args.tenants;
    let scenarios = [
        Scenario::hot("get_hot", "GET, one hot tenant", Op::Get),
        Scenario::hot("post_hot", "POST, one hot tenant", Op::Post),
        Scenario::fleet("get_fleet", "GET, round-robin", Op::Get, n),
        Scenario::fleet("post_fleet", "POST, round-robin", Op::Post, n),
    ];
    let measure = Duration::from_secs_f64(args.seconds);
    let warmup = Duration::from_secs_f64(args.warmup);

    // Plans off and on, alternating, twice each.
    let mut planned_results = Vec::new();
    for sc in scenarios {
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for round in 0..4 {
            let side = if round % 2 == 1 {
                Side::Plans
            } else {
                Side::Unmetered
            };
            eprintln!("plans: {}: {} …", sc.key, side.name());
            run(&load, side, sc, warmup, args.concurrency).await?;
            let stats = run(&load, side, sc, measure, args.concurrency).await?;
            if stats.errors > 0 {
                eprintln!("  warning: {} failed requests", stats.errors);
            }
            if side == Side::Plans {
                on.push(stats)
            } else {
                off.push(stats)
            }
        }
        planned_results.push((sc, off, on));
    }
    if args.only_plans {
        drop(load);
        full_server.stop().await?;
        normal_server.stop().await?;
        plans_server.stop().await?;
        unmetered_server.stop().await?;
        base_server.stop().await?;
        report_plans(&args, &planned_results);
        return Ok(());
    }

    let mut results = Vec::new();
    for sc in scenarios {
        preflight(&load, sc).await?;
        let mut pair = Vec::new();
        // Alternating: the baseline, then the full stack, each warmed up first.
        for side in [Side::Baseline, Side::Full] {
            eprintln!("{}: {} …", sc.key, side.name());
            run(&load, side, sc, warmup, args.concurrency).await?;
            let stats = run(&load, side, sc, measure, args.concurrency).await?;
            if stats.errors > 0 {
                eprintln!("  warning: {} failed requests", stats.errors);
            }
            pair.push(stats);
        }
        results.push((sc, pair.remove(1), pair.remove(0)));
    }

    // Inserts with durability FULL (the default) and NORMAL, alternating, full stack.
    let mut durability = Vec::new();
    for sc in [
        Scenario::hot("post_hot", "POST, one hot tenant", Op::Post),
        Scenario::fleet("post_fleet", "POST, round-robin", Op::Post, n),
    ] {
        let mut pair = Vec::new();
        for side in [Side::Full, Side::Normal] {
            eprintln!("durability {}: {} …", sc.key, side.name());
            run(&load, side, sc, warmup, args.concurrency).await?;
            let stats = run(&load, side, sc, measure, args.concurrency).await?;
            if stats.errors > 0 {
                eprintln!("  warning: {} failed requests", stats.errors);
            }
            pair.push(stats);
        }
        durability.push((sc, pair.remove(0), pair.remove(0)));
    }

    // Metrics and request logs off and on, alternating, twice each, on point reads.
    let mut observed = Vec::new();
    for sc in [
        Scenario::hot("get_hot", "GET, one hot tenant", Op::Get),
        Scenario::fleet("get_fleet", "GET, round-robin", Op::Get, n),
    ] {
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for round in 0..4 {
            let enabled = round % 2 == 1;
            observability.set(enabled);
            eprintln!(
                "observability {}: {} …",
                if enabled { "on" } else { "off" },
                sc.key
            );
            run(&load, Side::Full, sc, warmup, args.concurrency).await?;
            let stats = run(&load, Side::Full, sc, measure, args.concurrency).await?;
            if stats.errors > 0 {
                eprintln!("  warning: {} failed requests", stats.errors);
            }
            if enabled {
                on.push(stats)
            } else {
                off.push(stats)
            }
        }
        observability.set(false);
        observed.push((sc, off, on));
    }

    drop(load);
    full_server.stop().await?;
    normal_server.stop().await?;
    plans_server.stop().await?;
    unmetered_server.stop().await?;
    base_server.stop().await?;

    report(&args, setup_s, &results, &durability, &observed);
    report_plans(&args, &planned_results);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Fixtures

struct Fixture {
    /// `<data_dir>/tenants/<tenant-id>.db`
    path: std::path::PathBuf,
    /// `tny_…`, a member-role key of this tenant.
    key: String,
}

fn seed_id(row: u64) -> String {
    format!("seed-{row}")
}

/// Creates `n` tenants (8 at a time), one member-role API key each, and seeds each
/// tenant's `members` table with [`SEED_ROWS`] rows.
async fn create_fleet(engine: &Engine, n: usize) -> Result<Vec<Fixture>> {
    let gate = Arc::new(Semaphore::new(8));
    let mut set = JoinSet::new();
    for i in 0..n {
        let (engine, gate) = (engine.clone(), Arc::clone(&gate));
        set.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            Ok::<_, anyhow::Error>((i, create_tenant(&engine, i).await?))
        });
    }
    let mut fleet = Vec::with_capacity(n);
    while let Some(done) = set.join_next().await {
        fleet.push(done??);
    }
    fleet.sort_by_key(|(i, _)| *i);
    Ok(fleet.into_iter().map(|(_, f)| f).collect())
}

async fn create_tenant(engine: &Engine, i: usize) -> Result<Fixture> {
    let slug = Slug::parse(&format!("bench-{i:04}"))?;
    let tenant = engine.create_tenant(slug.clone(), None).await?;
    let scope = KeyScope::Tenant {
        tenant_id: tenant.id,
        role: Role::Member,
    };
    let (_, key) = engine
        .create_api_key(scope, Some("bench".into()), None, "bench")
        .await?;
    engine
        .with_tenant_db(&slug, |db| {
            let tx = db.transaction()?;
            for row in 0..SEED_ROWS {
                tx.execute(
                    "INSERT INTO members (id, name, class, dkp) VALUES (?, ?, 'warrior', ?)",
                    rusqlite::params![seed_id(row), format!("seed member {row}"), row * 10],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await?;
    let path = engine.store().path(&tenant.placement.location);
    ensure!(path.is_file(), "tenant file {} is missing", path.display());
    Ok(Fixture { path, key })
}

// ---------------------------------------------------------------------------------------
// Baseline: axum + rusqlite, no tenancy layer

/// One connection per tenant file, by tenant index.
#[derive(Clone)]
struct Baseline {
    dbs: Arc<HashMap<usize, Mutex<Connection>>>,
}

/// `/members…` is the hot tenant (index 0); `/t/{index}/members…` any tenant.
fn baseline_router(dbs: HashMap<usize, Mutex<Connection>>) -> Router {
    Router::new()
        .route("/members", post(hot_post))
        .route("/members/{id}", get(hot_get))
        .route("/t/{tenant}/members", post(fleet_post))
        .route("/t/{tenant}/members/{id}", get(fleet_get))
        .with_state(Baseline { dbs: Arc::new(dbs) })
}

#[derive(Deserialize)]
struct NewMember {
    name: String,
    class: Option<String>,
    #[serde(default)]
    dkp: i64,
}

async fn hot_get(State(b): State<Baseline>, Path(id): Path<String>) -> Response {
    get_member(b, 0, id).await
}

async fn fleet_get(State(b): State<Baseline>, Path((t, id)): Path<(usize, String)>) -> Response {
    get_member(b, t, id).await
}

async fn hot_post(State(b): State<Baseline>, Json(m): Json<NewMember>) -> Response {
    insert_member(b, 0, m).await
}

async fn fleet_post(
    State(b): State<Baseline>,
    Path(t): Path<usize>,
    Json(m): Json<NewMember>,
) -> Response {
    insert_member(b, t, m).await
}

async fn get_member(b: Baseline, tenant: usize, id: String) -> Response {
    let found = on_conn(b, tenant, move |c| {
        c.prepare_cached(SQLITE_SELECT)?
            .query_row([id], sqlite_member_json)
            .optional()
    })
    .await;
    match found {
        Ok(Some(row)) => Json(row).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(status) => status.into_response(),
    }
}

/// One row in its own immediate transaction, with a UUIDv7 key, like the data API.
async fn insert_member(b: Baseline, tenant: usize, m: NewMember) -> Response {
    let id = uuid::Uuid::now_v7().to_string();
    let created = on_conn(b, tenant, move |c| {
        let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row = tx.prepare_cached(INSERT)?.query_row(
            rusqlite::params![id, m.name, m.class, m.dkp],
            sqlite_member_json,
        )?;
        tx.commit()?;
        Ok(row)
    })
    .await;
    match created {
        Ok(row) => (StatusCode::CREATED, Json(json!({ "data": [row] }))).into_response(),
        Err(status) => status.into_response(),
    }
}

/// Runs `f` on the tenant's connection on the blocking pool: 404 for an unknown tenant,
/// 500 for any database failure.
async fn on_conn<T, F>(b: Baseline, tenant: usize, f: F) -> Result<T, StatusCode>
where
    T: Send + 'static,
    F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
{
    if !b.dbs.contains_key(&tenant) {
        return Err(StatusCode::NOT_FOUND);
    }
    tokio::task::spawn_blocking(move || {
        let db = b.dbs.get(&tenant).ok_or(StatusCode::NOT_FOUND)?;
        let mut conn = db.lock().map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        f(&mut conn).map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
    })
    .await
    .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?
}

// ---------------------------------------------------------------------------------------
// Load

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Get,
    Post,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Full,
    /// The full stack with `durability = "normal"`.
    Normal,
    /// The full stack with plans: limits, rate limits and metering on.
    Plans,
    /// The full stack with no plans and no usage metering.
    Unmetered,
    Baseline,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Full => "full stack",
            Side::Normal => "full stack, durability normal",
            Side::Plans => "full stack, plans on",
            Side::Unmetered => "full stack, no plans, no metering",
            Side::Baseline => "baseline",
        }
    }
}

#[derive(Clone, Copy)]
struct Scenario {
    key: &'static str,
    label: &'static str,
    op: Op,
    /// 1: the hot tenant only; more: request `i` goes to tenant `i % tenants`.
    tenants: usize,
    /// Routed by tenant index on the baseline (`/t/{i}/…`) rather than `/members…`.
    fleet: bool,
}

impl Scenario {
    fn hot(key: &'static str, label: &'static str, op: Op) -> Scenario {
        Scenario {
            key,
            label,
            op,
            tenants: 1,
            fleet: false,
        }
    }

    fn fleet(key: &'static str, label: &'static str, op: Op, tenants: usize) -> Scenario {
        Scenario {
            key,
            label,
            op,
            tenants,
            fleet: true,
        }
    }

    fn expected(self) -> reqwest::StatusCode {
        match self.op {
            Op::Get => reqwest::StatusCode::OK,
            Op::Post => reqwest::StatusCode::CREATED,
        }
    }
}

struct Load {
    client: reqwest::Client,
    full: String,
    normal: String,
    plans: String,
    unmetered: String,
    baseline: String,
    /// `Bearer tny_…` by tenant index.
    keys: Vec<HeaderValue>,
    /// Member names are unique per tenant: one counter for the whole run.
    names: AtomicU64,
}

impl Load {
    /// Request number `seq` of a scenario.
    fn request(&self, side: Side, sc: Scenario, seq: u64) -> reqwest::RequestBuilder {
        let tenants = sc.tenants as u64;
        let tenant = (seq % tenants) as usize;
        let url = match side {
            Side::Full => format!("{}/v1/data/members", self.full),
            Side::Normal => format!("{}/v1/data/members", self.normal),
            Side::Plans => format!("{}/v1/data/members", self.plans),
            Side::Unmetered => format!("{}/v1/data/members", self.unmetered),
            Side::Baseline if sc.fleet => format!("{}/t/{tenant}/members", self.baseline),
            Side::Baseline => format!("{}/members", self.baseline),
        };
        let builder = match sc.op {
            Op::Get => {
                let row = (seq / tenants) % SEED_ROWS;
                self.client.get(format!("{url}/{}", seed_id(row)))
            }
            Op::Post => {
                let n = self.names.fetch_add(1, Ordering::Relaxed);
                self.client.post(url).json(
                    &json!({ "name": format!("bench member {n}"), "class": "mage", "dkp": 10 }),
                )
            }
        };
        match side {
            Side::Full | Side::Normal | Side::Plans | Side::Unmetered => {
                builder.header(AUTHORIZATION, self.keys[tenant].clone())
            }
            Side::Baseline => builder,
        }
    }
}

/// One request per side before measuring: the expected status, and for GET the same row.
async fn preflight(load: &Load, sc: Scenario) -> Result<()> {
    let mut names = Vec::new();
    for side in [Side::Full, Side::Baseline] {
        let resp = load.request(side, sc, 0).send().await?;
        let status = resp.status();
        let body = resp.text().await?;
        if status != sc.expected() {
            bail!("{} {}: {status}: {body}", sc.key, side.name());
        }
        let value: Value = serde_json::from_str(&body)?;
        names.push(value.get("name").cloned());
    }
    ensure!(
        sc.op == Op::Post || names[0] == names[1],
        "{}: the two sides answered different rows: {names:?}",
        sc.key
    );
    Ok(())
}

/// Closed loop on one side: `workers` workers for `duration`.
async fn run(
    load: &Arc<Load>,
    side: Side,
    sc: Scenario,
    duration: Duration,
    workers: usize,
) -> Result<Stats> {
    let load = Arc::clone(load);
    load::closed_loop(workers, duration, sc.expected(), move |n| {
        load.request(side, sc, n)
    })
    .await
}

// ---------------------------------------------------------------------------------------
// Report

fn report(
    args: &Args,
    setup_s: f64,
    results: &[(Scenario, Stats, Stats)],
    durability: &[(Scenario, Stats, Stats)],
    observed: &[(Scenario, Vec<Stats>, Vec<Stats>)],
) {
    let workers = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "data API, {} tenants, {} workers, {} s per side after {} s warm-up, \
         one shared tokio runtime ({workers} worker threads), loopback",
        args.tenants, args.concurrency, args.seconds, args.warmup
    );
    println!(
        "{:<30} {:>9} {:>7} {:>7} | {:>9} {:>7} {:>7} | {:>8} {:>8}",
        "scenario",
        "full rps",
        "p50 ms",
        "p99 ms",
        "base rps",
        "p50 ms",
        "p99 ms",
        "rps f/b",
        "p50 f/b"
    );
    let mut scenarios = serde_json::Map::new();
    for (sc, full, base) in results {
        let label = if sc.fleet {
            format!("{} ({})", sc.label, sc.tenants)
        } else {
            sc.label.to_owned()
        };
        let rps_ratio = full.rps / base.rps;
        let p50_ratio = full.p50_ms / base.p50_ms;
        let p99_ratio = full.p99_ms / base.p99_ms;
        println!(
            "{label:<30} {:>9.0} {:>7.2} {:>7.2} | {:>9.0} {:>7.2} {:>7.2} | {:>8.2} {:>8.2}",
            full.rps,
            full.p50_ms,
            full.p99_ms,
            base.rps,
            base.p50_ms,
            base.p99_ms,
            rps_ratio,
            p50_ratio
        );
        scenarios.insert(
            sc.key.to_owned(),
            json!({
                "tenants": sc.tenants,
                "full": full.json(),
                "baseline": base.json(),
                "rps_ratio": round(rps_ratio, 3),
                "p50_ratio": round(p50_ratio, 3),
                "p99_ratio": round(p99_ratio, 3),
            }),
        );
    }
    println!(
        "ratios are full stack / baseline: rps below 1 and latency above 1 are the tenancy cost"
    );
    println!(
        "{:<30} {:>9} {:>7} {:>7} | {:>9} {:>7} {:>7} | {:>8} {:>8}",
        "durability: inserts",
        "FULL rps",
        "p50 ms",
        "p99 ms",
        "NORM rps",
        "p50 ms",
        "p99 ms",
        "rps F/N",
        "p50 F/N"
    );
    let mut durable = serde_json::Map::new();
    for (sc, full, normal) in durability {
        let label = if sc.fleet {
            format!("{} ({})", sc.label, sc.tenants)
        } else {
            sc.label.to_owned()
        };
        let (rps_ratio, p50_ratio) = (full.rps / normal.rps, full.p50_ms / normal.p50_ms);
        println!(
            "{label:<30} {:>9.0} {:>7.2} {:>7.2} | {:>9.0} {:>7.2} {:>7.2} | {:>8.2} {:>8.2}",
            full.rps,
            full.p50_ms,
            full.p99_ms,
            normal.rps,
            normal.p50_ms,
            normal.p99_ms,
            rps_ratio,
            p50_ratio
        );
        durable.insert(
            sc.key.to_owned(),
            json!({
                "full": full.json(),
                "normal": normal.json(),
                "rps_ratio": round(rps_ratio, 3),
                "p50_ratio": round(p50_ratio, 3),
            }),
        );
    }
    println!("ratios are durability full / normal: the cost of syncing every acknowledged write");
    let observing = on_off_table("metrics + request logs", observed);
    println!(
        "ratios are on / off (mean of two alternating runs each): the cost of metrics and an info JSON line per request"
    );
    println!(
        "{}",
        json!({
            "bench": "data_api",
            "tenants": args.tenants,
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "warmup_seconds": args.warmup,
            "runtime": "shared",
            "worker_threads": workers,
            "setup_seconds": round(setup_s, 2),
            "scenarios": scenarios,
            "durability": durable,
            "observability": observing,
        })
    );
}

/// Plans on / off: the mean of two alternating runs each, and the last line's JSON.
fn report_plans(args: &Args, planned: &[(Scenario, Vec<Stats>, Vec<Stats>)]) {
    let figures = on_off_table("plans, limits, rates", planned);
    println!(
        "ratios are plans on / off (mean of two alternating runs each): the cost of the plan's limits, rate limit and metering"
    );
    println!(
        "{}",
        json!({
            "bench": "data_api_plans",
            "tenants": args.tenants,
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "plans": figures,
        })
    );
}

/// A table of `(scenario, off runs, on runs)`: the mean of each side's runs and the
/// ratios on / off, printed; the same figures as JSON by scenario key.
fn on_off_table(
    title: &str,
    rows: &[(Scenario, Vec<Stats>, Vec<Stats>)],
) -> serde_json::Map<String, serde_json::Value> {
    println!(
        "{title:<30} {:>9} {:>7} {:>7} | {:>9} {:>7} {:>7} | {:>8} {:>8}",
        "ON rps", "p50 ms", "p99 ms", "OFF rps", "p50 ms", "p99 ms", "rps on/o", "p50 on/o"
    );
    let mean = |runs: &[Stats], f: fn(&Stats) -> f64| {
        runs.iter().map(f).sum::<f64>() / runs.len().max(1) as f64
    };
    let mut figures = serde_json::Map::new();
    for (sc, off, on) in rows {
        let label = if sc.fleet {
            format!("{} ({})", sc.label, sc.tenants)
        } else {
            sc.label.to_owned()
        };
        let (on_rps, on_p50, on_p99) = (
            mean(on, |s| s.rps),
            mean(on, |s| s.p50_ms),
            mean(on, |s| s.p99_ms),
        );
        let (off_rps, off_p50, off_p99) = (
            mean(off, |s| s.rps),
            mean(off, |s| s.p50_ms),
            mean(off, |s| s.p99_ms),
        );
        let (rps_ratio, p50_ratio) = (on_rps / off_rps, on_p50 / off_p50);
        println!(
            "{label:<30} {on_rps:>9.0} {on_p50:>7.2} {on_p99:>7.2} | {off_rps:>9.0} {off_p50:>7.2} {off_p99:>7.2} | {rps_ratio:>8.2} {p50_ratio:>8.2}"
        );
        figures.insert(
            sc.key.to_owned(),
            json!({
                "on": on.iter().map(Stats::json).collect::<Vec<_>>(),
                "off": off.iter().map(Stats::json).collect::<Vec<_>>(),
                "rps_ratio": round(rps_ratio, 3),
                "p50_ratio": round(p50_ratio, 3),
            }),
        );
    }
    figures
}
