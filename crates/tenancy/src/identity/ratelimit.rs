//! Counts failed logins per key (an email, a client address) in a fixed window.
//!
//! Only failures count: a user who logs in correctly is never slowed down, and a key
//! that failed too often is refused until its window ends, even with the right password.
//! Memory is bounded (least recently used keys are forgotten first).

use std::time::{Duration, Instant};

use moka::sync::Cache;

#[derive(Debug, Clone, Copy)]
pub struct LimitConfig {
    /// Failures allowed per window.
    pub max_failures: u32,
    pub window: Duration,
}

/// Failed attempts per key.
pub struct FailureLimiter {
    config: LimitConfig,
    windows: Cache<String, (Instant, u32)>,
}

impl FailureLimiter {
    pub fn new(config: LimitConfig) -> FailureLimiter {
        FailureLimiter {
            config,
            windows: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(config.window)
                .build(),
        }
    }

    /// `Err(retry_after)` if the key has used up its failures in the current window.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        match self.windows.get(key) {
            Some((start, count)) if count >= self.config.max_failures => {
                let elapsed = start.elapsed();
                if elapsed < self.config.window {
                    Err(self.config.window - elapsed)
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Counts one failure for the key.
    pub fn record_failure(&self, key: &str) {
        let now = Instant::now();
        let window = self.config.window;
        self.windows
            .entry(key.to_owned())
            .and_upsert_with(|current| match current.map(|e| e.into_value()) {
                Some((start, count)) if now.duration_since(start) < window => (start, count + 1),
                _ => (now, 1),
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_the_allowed_failures() {
        let limiter = FailureLimiter::new(LimitConfig {
            max_failures: 3,
            window: Duration::from_secs(60),
        });
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
            limiter.record_failure("a");
        }
        let retry = limiter.check("a").unwrap_err();
        assert!(retry <= Duration::from_secs(60) && retry > Duration::from_secs(50));
        assert!(limiter.check("b").is_ok());
    }
}
