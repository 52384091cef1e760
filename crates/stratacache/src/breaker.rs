//! The circuit breaker in front of Redis.
//!
//! Closed: calls go through; consecutive failures are counted. After
//! `failure_threshold` of them it opens: calls fail at once (an L2 miss, never
//! an outage), so a dead or hung Redis costs requests nothing. While open, one
//! background probe pings Redis every `probe_interval`; the first answer closes
//! the breaker. Real traffic is never used as the probe, so no request pays for
//! finding out whether Redis is back.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

/// Circuit breaker settings.
///
/// ```no_run
/// # async fn demo() -> Result<(), stratacache::Error> {
/// use std::time::Duration;
/// use stratacache::{BreakerConfig, BreakerState, Cache};
///
/// let cache = Cache::builder()
///     .redis_url("redis://127.0.0.1:6379")
///     .breaker(BreakerConfig {
///         failure_threshold: 3,
///         probe_interval: Duration::from_millis(500),
///     })
///     .build()
///     .await?;
/// assert_eq!(cache.breaker_state(), Some(BreakerState::Closed));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failed Redis calls that open the breaker.
    pub failure_threshold: u32,
    /// How often an open breaker probes Redis.
    pub probe_interval: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            probe_interval: Duration::from_millis(250),
        }
    }
}

/// The breaker's state, as reported to metrics and health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Redis is being called.
    Closed,
    /// Redis is not being called; a background probe waits for it.
    Open,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    config: BreakerConfig,
    open: AtomicBool,
    consecutive_failures: AtomicU32,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            open: AtomicBool::new(false),
            consecutive_failures: AtomicU32::new(0),
        }
    }

    pub(crate) fn config(&self) -> BreakerConfig {
        self.config
    }

    pub(crate) fn state(&self) -> BreakerState {
        if self.open.load(Ordering::Acquire) {
            BreakerState::Open
        } else {
            BreakerState::Closed
        }
    }

    pub(crate) fn allows_calls(&self) -> bool {
        !self.open.load(Ordering::Acquire)
    }

    pub(crate) fn record_success(&self) {
        // Read first: a plain store on every success would bounce the cache
        // line between cores on the hot path.
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// Count a failure; returns `true` for exactly one caller, the one that
    /// opened the breaker (it starts the probe).
    pub(crate) fn record_failure(&self) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        failures >= self.config.failure_threshold
            && self
                .open
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    pub(crate) fn close(&self) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.open.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_once_after_threshold_and_closes_on_recovery() {
        let b = Breaker::new(BreakerConfig {
            failure_threshold: 3,
            probe_interval: Duration::from_millis(10),
        });
        assert!(!b.record_failure());
        b.record_success();
        assert!(!b.record_failure());
        assert!(!b.record_failure());
        assert!(b.record_failure(), "third consecutive failure opens");
        assert!(!b.record_failure(), "only one caller sees the transition");
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allows_calls());
        b.close();
        assert!(b.allows_calls());
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
