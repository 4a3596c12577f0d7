//! Shared pieces of the benchmarks in `src/bin`: the closed-loop HTTP client ([`load`]),
//! servers in the benchmark's own process ([`server`]), bare baselines of the data API's
//! point read ([`bare`]), and a scratch area on a PostgreSQL server that is dropped at the
//! end of the run ([`pg`]).

pub mod bare;
pub mod load;
pub mod observe;
pub mod pg;
pub mod server;

/// `x` rounded to `places` decimals, for the JSON line.
pub fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// Checks a load benchmark's settings, then runs it on a multi-threaded runtime.
pub fn run_load_bench(
    seconds: f64,
    warmup: f64,
    workers: usize,
    tenants: usize,
    bench: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    anyhow::ensure!(seconds > 0.0 && warmup >= 0.0, "durations must be positive");
    anyhow::ensure!(workers > 0 && tenants > 0, "need a worker and a tenant");
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(bench)
}
