//! Shared pieces of the benchmarks in `src/bin`: the closed-loop HTTP client ([`load`]),
//! servers in the benchmark's own process ([`server`]), and a scratch area on a
//! PostgreSQL server that is dropped at the end of the run ([`pg`]).

pub mod load;
pub mod pg;
pub mod server;

/// `x` rounded to `places` decimals, for the JSON line.
pub fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}
