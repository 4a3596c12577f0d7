//! A closed-loop HTTP client: a fixed number of workers, each sending a request and
//! reading the whole response before sending the next, for a fixed time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::round;

/// What one closed-loop run measured.
pub struct Stats {
    /// Requests answered with the expected status.
    pub requests: usize,
    /// Requests that failed or were answered with another status.
    pub errors: u64,
    /// Successful requests per wall-clock second.
    pub rps: f64,
    /// Latency of successful requests, nearest-rank.
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Stats {
    /// The figures as they go in a benchmark's JSON line.
    pub fn json(&self) -> Value {
        json!({
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "requests": self.requests,
            "errors": self.errors,
        })
    }
}

/// The nearest-rank `p` percentile (`0 < p <= 1`) of values sorted ascending; `None` if
/// there are none.
pub fn nearest_rank<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Runs `workers` workers for `duration`. Request number `n` of the run (counted over all
/// workers, from 0) is `request(n)`; it succeeds if answered with `expected` and read to
/// the end.
pub async fn closed_loop<F>(
    workers: usize,
    duration: Duration,
    expected: StatusCode,
    request: F,
) -> Result<Stats>
where
    F: Fn(u64) -> RequestBuilder + Send + Sync + 'static,
{
    let request = Arc::new(request);
    let seq = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut set = JoinSet::new();
    for _ in 0..workers {
        let (request, seq) = (Arc::clone(&request), Arc::clone(&seq));
        set.spawn(async move {
            let (mut micros, mut errors) = (Vec::new(), 0u64);
            while Instant::now() < deadline {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let sent = Instant::now();
                let ok = match request(n).send().await {
                    Ok(resp) => {
                        let status_ok = resp.status() == expected;
                        resp.bytes().await.is_ok() && status_ok
                    }
                    Err(_) => false,
                };
                if ok {
                    micros.push(sent.elapsed().as_micros() as u64);
                } else {
                    errors += 1;
                }
            }
            (micros, errors)
        });
    }
    let (mut micros, mut errors) = (Vec::new(), 0);
    while let Some(done) = set.join_next().await {
        let (m, e) = done?;
        micros.extend(m);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    micros.sort_unstable();
    let pct = |p| nearest_rank(&micros, p).map_or(f64::NAN, |us| us as f64 / 1000.0);
    Ok(Stats {
        requests: micros.len(),
        errors,
        rps: micros.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    })
}
