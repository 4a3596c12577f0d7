//! Soak: the release `tenancy serve` binary under sustained mixed load, its resident memory
//! sampled against the configured memory budget.
//!
//! A fresh data folder holds `--tenants` SQLite tenants (`tenancy tenant create --bulk`),
//! each with its own member-role API key and `--seed-rows` rows in `members`. Then
//! `--concurrency` closed-loop clients send, for `--minutes`, 80 % point reads
//! (`GET /v1/data/members/{id}`), 15 % inserts (`POST /v1/data/members`) and 5 % filtered
//! lists (`GET /v1/data/members?dkp=gt.N&order=dkp.desc&limit=20`), each to a random tenant
//! with that tenant's key. Every `--sample-secs` the server's `VmRSS` is read from
//! `/proc/<pid>/status` and printed against the budget; the summary gives RSS after
//! warm-up (the first fifth of the run), its slope, and the last line one JSON object.
//! See bench/README.md.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tenancy_bench::round;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const ADMIN_TOKEN: &str = "soak-admin-token-0123456789";

#[derive(Parser)]
#[command(
    about = "Soak of the release tenancy serve binary: RSS over time against the memory budget"
)]
struct Args {
    /// Minutes of load.
    #[arg(long, env = "SOAK_MINUTES", default_value_t = 10.0)]
    minutes: f64,
    /// Tenants, each with its own API key.
    #[arg(long, env = "SOAK_TENANTS", default_value_t = 1000)]
    tenants: usize,
    /// Concurrent closed-loop clients.
    #[arg(long, env = "SOAK_CONCURRENCY", default_value_t = 32)]
    concurrency: usize,
    /// The server's memory budget (TENANCY_MEMORY_BUDGET_MIB).
    #[arg(long, env = "SOAK_BUDGET_MIB", default_value_t = 512)]
    budget_mib: u64,
    /// Seconds between RSS samples.
    #[arg(long, env = "SOAK_SAMPLE_SECS", default_value_t = 10)]
    sample_secs: u64,
    /// Rows seeded in each tenant's `members` (the point reads' ids).
    #[arg(long, env = "SOAK_SEED_ROWS", default_value_t = 50)]
    seed_rows: u64,
    /// SQLite durability of the server (TENANCY_DURABILITY).
    #[arg(long, env = "SOAK_DURABILITY", default_value = "full")]
    durability: String,
    /// The `tenancy` binary.
    #[arg(long, env = "SOAK_TENANCY", default_value = "target/release/tenancy")]
    tenancy: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(soak(args))
}

/// The server process; killed when dropped.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tenancy(args: &Args, data: &std::path::Path) -> Command {
    let mut cmd = Command::new(&args.tenancy);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TENANCY_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("TENANCY_DATA_DIR", data)
        .env("TENANCY_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TENANCY_MEMORY_BUDGET_MIB", args.budget_mib.to_string())
        .env("TENANCY_DURABILITY", &args.durability)
        .stdin(Stdio::null());
    cmd
}

fn slug(i: usize) -> String {
    format!("soak-{i:05}")
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS without a value")?
        .parse()?)
}

fn start(args: &Args, data: &std::path::Path) -> Result<Server> {
    let mut child = tenancy(args, data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", args.tenancy.display()))?;
    let mut out = BufReader::new(child.stdout.take().context("no stdout")?);
    let mut line = String::new();
    let base = loop {
        line.clear();
        if out.read_line(&mut line)? == 0 {
            bail!("tenancy serve ended before serving");
        }
        if let Some(rest) = line.split("serving on ").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .context("no address")?
                .to_owned();
        }
    };
    // Keep reading so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while out.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    Ok(Server { child, base })
}

/// A small xorshift generator per client: the load needs no quality randomness.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[derive(Default)]
struct Counters {
    reads: AtomicU64,
    inserts: AtomicU64,
    lists: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    fn total(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
            + self.inserts.load(Ordering::Relaxed)
            + self.lists.load(Ordering::Relaxed)
    }
}

async fn soak(args: Args) -> Result<()> {
    ensure!(
        args.tenancy.is_file(),
        "{} not found: build it with `cargo build --release -p tenancy-cli`",
        args.tenancy.display()
    );
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");

    // The fleet, in one process.
    let started = Instant::now();
    let slugs = dir.path().join("slugs.txt");
    let list: Vec<String> = (0..args.tenants).map(slug).collect();
    std::fs::write(&slugs, list.join("\n") + "\n")?;
    let created = tenancy(&args, &data)
        .args(["tenant", "create", "--bulk"])
        .arg(&slugs)
        .stdout(Stdio::null())
        .output()?;
    ensure!(
        created.status.success(),
        "bulk create failed: {}",
        String::from_utf8_lossy(&created.stderr)
    );

    let server = start(&args, &data)?;
    let pid = server.child.id();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(args.concurrency * 2)
        .build()?;

    // A key per tenant, and its seed rows.
    let keys = Arc::new(keys_and_seeds(&client, &server.base, &args).await?);
    let setup_s = started.elapsed().as_secs_f64();
    let rss_start = rss_kib(pid)?;
    eprintln!(
        "{} tenants created, keyed and seeded with {} rows each in {setup_s:.0} s; RSS {:.1} MiB",
        args.tenants,
        args.seed_rows,
        rss_start as f64 / 1024.0
    );

    let budget_mib = args.budget_mib as f64;
    println!(
        "soak: {} tenants, {} clients, 80 % point reads / 15 % inserts / 5 % filtered lists, \
         {} min, budget {} MiB, durability {}",
        args.tenants, args.concurrency, args.minutes, args.budget_mib, args.durability
    );
    println!(
        "{:>6} {:>10} {:>7} {:>8} {:>7}  RSS against the budget (|)",
        "t s", "RSS MiB", "budget", "rps", "errors"
    );

    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = JoinSet::new();
    for c in 0..args.concurrency {
        let (client, base, keys) = (client.clone(), server.base.clone(), Arc::clone(&keys));
        let (counters, stop) = (Arc::clone(&counters), Arc::clone(&stop));
        let seed_rows = args.seed_rows;
        clients.spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((c as u64 + 1) << 32));
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let t = rng.below(keys.len() as u64) as usize;
                let roll = rng.below(100);
                let (req, expected, counter) = if roll < 80 {
                    let id = rng.below(seed_rows);
                    let req = client.get(format!("{base}/v1/data/members/seed-{id}"));
                    (req, StatusCode::OK, &counters.reads)
                } else if roll < 95 {
                    let req = client.post(format!("{base}/v1/data/members")).json(&json!({
                        "name": format!("soak member {c}-{n}"),
                        "class": "mage",
                        "dkp": rng.below(1000),
                    }));
                    (req, StatusCode::CREATED, &counters.inserts)
                } else {
                    let above = rng.below(1000);
                    let req = client.get(format!(
                        "{base}/v1/data/members?dkp=gt.{above}&order=dkp.desc&limit=20"
                    ));
                    (req, StatusCode::OK, &counters.lists)
                };
                let ok = match req.header(AUTHORIZATION, keys[t].clone()).send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        resp.bytes().await.is_ok() && status == expected
                    }
                    Err(_) => false,
                };
                if ok {
                    counter.fetch_add(1, Ordering::Relaxed);
                } else {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }

    let duration = Duration::from_secs_f64(args.minutes * 60.0);
    let sample = Duration::from_secs(args.sample_secs.max(1));
    let load_start = Instant::now();
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let mut last_total = 0;
    let mut next = load_start + sample;
    while load_start.elapsed() < duration {
        tokio::time::sleep_until(next.into()).await;
        next += sample;
        let t = load_start.elapsed().as_secs_f64();
        let rss = rss_kib(pid)? as f64 / 1024.0;
        let total = counters.total();
        let rps = (total - last_total) as f64 / sample.as_secs_f64();
        last_total = total;
        samples.push((t, rss));
        println!(
            "{t:>6.0} {rss:>10.1} {:>6.0}% {rps:>8.0} {:>7}  {}",
            rss / budget_mib * 100.0,
            counters.errors.load(Ordering::Relaxed),
            bar(rss, budget_mib)
        );
    }
    stop.store(true, Ordering::Relaxed);
    while clients.join_next().await.is_some() {}
    let elapsed = load_start.elapsed().as_secs_f64();
    drop(server);

    report(&args, setup_s, rss_start, elapsed, &samples, &counters)
}

/// `width` columns for the budget: `#` up to the RSS, `|` at the budget.
fn bar(rss: f64, budget: f64) -> String {
    const WIDTH: f64 = 50.0;
    let filled = ((rss / budget) * WIDTH).round() as usize;
    let mut s: String = "#".repeat(filled.min(WIDTH as usize));
    if filled < WIDTH as usize {
        s.push_str(&" ".repeat(WIDTH as usize - filled));
        s.push('|');
    } else {
        s.push('|');
        s.push_str(&"#".repeat(filled - WIDTH as usize));
    }
    s
}

async fn keys_and_seeds(
    client: &reqwest::Client,
    base: &str,
    args: &Args,
) -> Result<Vec<HeaderValue>> {
    let gate = Arc::new(Semaphore::new(16));
    let mut set = JoinSet::new();
    for i in 0..args.tenants {
        let (client, base, gate) = (client.clone(), base.to_owned(), Arc::clone(&gate));
        let seed_rows = args.seed_rows;
        set.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let resp = client
                .post(format!("{base}/v1/tenants/{}/api-keys", slug(i)))
                .header(AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
                .json(&json!({ "role": "member", "label": "soak" }))
                .send()
                .await?;
            ensure!(resp.status() == StatusCode::CREATED, "key of {}: {}", slug(i), resp.text().await?);
            let body: Value = resp.json().await?;
            let key = body["key"].as_str().context("no key")?.to_owned();
            let bearer = HeaderValue::from_str(&format!("Bearer {key}"))?;
            let rows: Vec<Value> = (0..seed_rows)
                .map(|r| json!({ "id": format!("seed-{r}"), "name": format!("seed {r}"), "class": "warrior", "dkp": r * 1000 / seed_rows.max(1) }))
                .collect();
            // The data API inserts at most 1,000 rows a request.
            for chunk in rows.chunks(1_000) {
                let resp = client
                    .post(format!("{base}/v1/data/members"))
                    .header(AUTHORIZATION, bearer.clone())
                    .json(chunk)
                    .send()
                    .await?;
                ensure!(resp.status() == StatusCode::CREATED, "seeding {}: {}", slug(i), resp.text().await?);
            }
            Ok::<_, anyhow::Error>((i, bearer))
        });
    }
    let mut keys = Vec::with_capacity(args.tenants);
    while let Some(done) = set.join_next().await {
        keys.push(done??);
    }
    keys.sort_by_key(|(i, _)| *i);
    Ok(keys.into_iter().map(|(_, k)| k).collect())
}

/// Least-squares slope of `(t seconds, MiB)`, in MiB per minute.
fn slope_per_minute(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mt, mr) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let cov: f64 = points.iter().map(|p| (p.0 - mt) * (p.1 - mr)).sum();
    let var: f64 = points.iter().map(|p| (p.0 - mt).powi(2)).sum();
    if var == 0.0 {
        0.0
    } else {
        cov / var * 60.0
    }
}

fn report(
    args: &Args,
    setup_s: f64,
    rss_start_kib: u64,
    elapsed: f64,
    samples: &[(f64, f64)],
    counters: &Counters,
) -> Result<()> {
    let warmup = elapsed / 5.0;
    let after: Vec<(f64, f64)> = samples.iter().copied().filter(|s| s.0 >= warmup).collect();
    let half = after.len() / 2;
    let mean = |s: &[(f64, f64)]| s.iter().map(|p| p.1).sum::<f64>() / s.len().max(1) as f64;
    let (min, max) = after
        .iter()
        .fold((f64::MAX, 0.0f64), |(lo, hi), s| (lo.min(s.1), hi.max(s.1)));
    let peak = samples.iter().map(|s| s.1).fold(0.0f64, f64::max);
    let slope = slope_per_minute(&after);
    let (first, second) = (mean(&after[..half]), mean(&after[half..]));
    let budget = args.budget_mib as f64;
    let requests = counters.total();
    let errors = counters.errors.load(Ordering::Relaxed);
    println!(
        "after warm-up ({warmup:.0} s): RSS {min:.1}–{max:.1} MiB, slope {slope:+.2} MiB/min, \
         mean of the first half {first:.1} MiB and of the second {second:.1} MiB"
    );
    println!(
        "peak RSS {peak:.1} MiB = {:.0} % of the {} MiB budget ({})",
        peak / budget * 100.0,
        args.budget_mib,
        if peak <= budget { "within" } else { "OVER" }
    );
    println!(
        "{requests} requests ({:.0}/s), {errors} errors: {} reads, {} inserts, {} lists",
        requests as f64 / elapsed,
        counters.reads.load(Ordering::Relaxed),
        counters.inserts.load(Ordering::Relaxed),
        counters.lists.load(Ordering::Relaxed),
    );
    println!(
        "{}",
        json!({
            "bench": "soak",
            "tenants": args.tenants,
            "concurrency": args.concurrency,
            "minutes": round(elapsed / 60.0, 2),
            "durability": args.durability,
            "budget_mib": args.budget_mib,
            "setup_seconds": round(setup_s, 1),
            "rss_start_mib": round(rss_start_kib as f64 / 1024.0, 1),
            "rss_peak_mib": round(peak, 1),
            "rss_after_warmup_min_mib": round(min, 1),
            "rss_after_warmup_max_mib": round(max, 1),
            "slope_mib_per_min_after_warmup": round(slope, 3),
            "within_budget": peak <= budget,
            "requests": requests,
            "errors": errors,
            "rps": round(requests as f64 / elapsed, 1),
            "samples": samples.iter().map(|s| [round(s.0, 0), round(s.1, 1)]).collect::<Vec<_>>(),
        })
    );
    Ok(())
}
