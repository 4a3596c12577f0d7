//! Requests per minute per tenant, with a burst, from the tenant's plan
//! (`requests_per_minute`, `burst`; the burst defaults to a minute's worth).
//!
//! One GCRA limiter (governor) per tenant, kept while the tenant is busy and dropped after
//! ten idle minutes; it is rebuilt when the tenant's quota changes. The limit is this
//! process's: several replicas behind a balancer each let a tenant make its full rate, so
//! configure a fleet's per-replica share. Every answer to a limited tenant carries
//! `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`; a refusal is
//! `429 rate_limited` with `Retry-After`.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, StatusCode};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tenancy::TenantId;

use crate::error::ApiError;

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The limiters of the tenants seen lately.
#[derive(Clone)]
pub struct TenantRates {
    limiters: moka::sync::Cache<TenantId, Arc<(Quota, Limiter)>>,
    clock: DefaultClock,
}

impl Default for TenantRates {
    fn default() -> Self {
        TenantRates {
            limiters: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            clock: DefaultClock::default(),
        }
    }
}

impl TenantRates {
    /// Takes one request of the tenant's quota. The headers to answer with; refused with
    /// `429 rate_limited` (the headers noted for the answer too).
    pub fn check(
        &self,
        tenant: TenantId,
        per_minute: u64,
        burst: Option<u64>,
    ) -> Result<(), ApiError> {
        let clamp = |n: u64| {
            NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN)
        };
        let rate = clamp(per_minute);
        let burst = clamp(burst.unwrap_or(per_minute));
        let quota = Quota::per_minute(rate).allow_burst(burst);
        let entry = match self.limiters.get(&tenant) {
            Some(entry) if entry.0 == quota => entry,
            _ => {
                let fresh = Arc::new((quota, RateLimiter::direct(quota).with_middleware()));
                self.limiters.insert(tenant, Arc::clone(&fresh));
                fresh
            }
        };
        let period = quota.replenish_interval();
        let full = burst.get();
        match entry.1.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let reset = period.saturating_mul(full - remaining.min(full));
                note(full, remaining, reset);
                Ok(())
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now());
                let reset = period.saturating_mul(full);
                note(full, 0, reset);
                let secs = ceil_secs(wait).max(1);
                Err(ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "this tenant may make {per_minute} requests a minute (bursts of {full}); retry in {secs} s"
                    ),
                )
                .retry_after(secs))
            }
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

fn note(limit: u32, remaining: u32, reset: Duration) {
    let value = |n: u64| HeaderValue::from_str(&n.to_string()).ok();
    for (name, v) in [
        (LIMIT, u64::from(limit)),
        (REMAINING, u64::from(remaining)),
        (RESET, ceil_secs(reset)),
    ] {
        if let Some(v) = value(v) {
            crate::observe::note_header(name, v);
        }
    }
}
