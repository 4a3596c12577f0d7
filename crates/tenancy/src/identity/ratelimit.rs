//! Counts attempts per key (an email, a client address) in a fixed window.
//!
//! An attempt takes a slot *before* it is checked ([`AttemptLimiter::reserve`]), so no
//! number of concurrent attempts can get past the limit: the slot is taken atomically per
//! key, and a key with no slot left is refused until its window ends, even with the right
//! password. A login that succeeds gives its slot back ([`AttemptLimiter::release`]), so
//! only failures use up the allowance of a login limit; a signup limit keeps every slot.
//! Memory is bounded (least recently used keys are forgotten first).

use std::time::{Duration, Instant};

use moka::ops::compute::Op;
use moka::sync::Cache;

#[derive(Debug, Clone, Copy)]
pub struct LimitConfig {
    /// Attempts allowed per window (for login limits: failures, as successes give their
    /// slot back).
    pub max_failures: u32,
    pub window: Duration,
}

/// Attempts per key in the current window.
pub struct AttemptLimiter {
    config: LimitConfig,
    windows: Cache<String, (Instant, u32)>,
}

impl AttemptLimiter {
    pub fn new(config: LimitConfig) -> AttemptLimiter {
        AttemptLimiter {
            config,
            windows: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(config.window)
                .build(),
        }
    }

    /// Takes one slot for the key, or `Err(retry_after)` if its window has none left.
    /// Atomic per key: concurrent calls never hand out more slots than the limit.
    pub fn reserve(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let LimitConfig {
            max_failures,
            window,
        } = self.config;
        let mut refused = None;
        self.windows
            .entry(key.to_owned())
            .and_compute_with(|current| match current.map(|e| e.into_value()) {
                Some((start, count)) if now.duration_since(start) < window => {
                    if count >= max_failures {
                        refused = Some(window.saturating_sub(now.duration_since(start)));
                        Op::Nop
                    } else {
                        Op::Put((start, count + 1))
                    }
                }
                _ if max_failures == 0 => {
                    refused = Some(window);
                    Op::Nop
                }
                _ => Op::Put((now, 1)),
            });
        match refused {
            Some(retry) => Err(retry),
            None => Ok(()),
        }
    }

    /// Gives back a slot taken by [`AttemptLimiter::reserve`] (the attempt succeeded, or
    /// was not made).
    pub fn release(&self, key: &str) {
        self.windows
            .entry(key.to_owned())
            .and_compute_with(|current| match current.map(|e| e.into_value()) {
                Some((start, count)) if count > 0 => Op::Put((start, count - 1)),
                _ => Op::Nop,
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max: u32) -> AttemptLimiter {
        AttemptLimiter::new(LimitConfig {
            max_failures: max,
            window: Duration::from_secs(60),
        })
    }

    #[test]
    fn refuses_after_the_allowed_attempts() {
        let limiter = limiter(3);
        for _ in 0..3 {
            assert!(limiter.reserve("a").is_ok());
        }
        let retry = limiter.reserve("a").unwrap_err();
        assert!(retry <= Duration::from_secs(60) && retry > Duration::from_secs(50));
        assert!(limiter.reserve("b").is_ok());
        // A released slot can be taken again.
        limiter.release("a");
        assert!(limiter.reserve("a").is_ok());
        assert!(limiter.reserve("a").is_err());
    }

    #[test]
    fn concurrent_reservations_never_pass_the_limit() {
        let limiter = std::sync::Arc::new(limiter(5));
        let granted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..64)
                .map(|_| {
                    let limiter = std::sync::Arc::clone(&limiter);
                    s.spawn(move || limiter.reserve("same").is_ok())
                })
                .collect();
            handles
                .into_iter()
                .map(|h| usize::from(h.join().unwrap()))
                .sum()
        });
        assert_eq!(granted, 5);
    }
}
