//! Per-entry options: how long an entry lives in each tier and how it may be served.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

/// How one entry is cached. Build it fluently, or take it from a named [`Policy`](crate::Policy).
///
/// ```
/// use std::time::Duration;
/// use stratacache::EntryOptions;
///
/// let opts = EntryOptions::new()
///     .ttl(Duration::from_secs(60))
///     .jitter(0.1)                       // expire somewhere in [54 s, 60 s]
///     .l1_ttl(Duration::from_secs(5))    // re-check Redis at least every 5 s
///     .negative_ttl(Duration::from_secs(10))
///     .tags(["user:42"]);
/// assert_eq!(opts.get_ttl(), Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EntryOptions {
    /// Time the entry is fresh.
    #[serde(with = "humantime_serde")]
    pub(crate) ttl: Duration,
    /// Fraction of `ttl` by which expiries are spread (`0.0..=1.0`).
    pub(crate) jitter: f64,
    /// Upper bound of the L1 lifetime; `None` means the entry's own TTL.
    #[serde(with = "humantime_serde")]
    pub(crate) l1_ttl: Option<Duration>,
    /// Lifetime of the marker stored for an absent value.
    #[serde(with = "humantime_serde")]
    pub(crate) negative_ttl: Duration,
    /// How long past expiry an entry is kept so it may still be served stale.
    #[serde(with = "humantime_serde")]
    pub(crate) stale_for: Duration,
    /// Tags attached to the entry.
    pub(crate) tags: Vec<String>,
    /// Bypass L1 for this call.
    pub(crate) skip_l1: bool,
    /// Bypass L2 (Redis) for this call.
    pub(crate) skip_l2: bool,
    /// The policy name used as the metrics label.
    #[serde(skip)]
    pub(crate) policy: Option<Arc<str>>,
}

impl Default for EntryOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            jitter: 0.0,
            l1_ttl: None,
            negative_ttl: Duration::from_secs(30),
            stale_for: Duration::ZERO,
            tags: Vec::new(),
            skip_l1: false,
            skip_l2: false,
            policy: None,
        }
    }
}

impl EntryOptions {
    /// Defaults: TTL 5 min, no jitter, negative TTL 30 s, no stale window.
    pub fn new() -> Self {
        Self::default()
    }

    /// Time the entry is fresh.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Spread expiries over `[ttl·(1−fraction), ttl]` so that entries written
    /// together do not all expire together. Clamped to `0.0..=1.0`.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_finite() {
            fraction.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// Keep the entry in L1 at most this long (never longer than its TTL), so an
    /// instance re-reads Redis at least this often.
    pub fn l1_ttl(mut self, l1_ttl: Duration) -> Self {
        self.l1_ttl = Some(l1_ttl);
        self
    }

    /// Lifetime of the marker cached when the loader reports the value absent.
    pub fn negative_ttl(mut self, negative_ttl: Duration) -> Self {
        self.negative_ttl = negative_ttl;
        self
    }

    /// Keep entries this long past their TTL, so they can be served stale.
    pub fn stale_for(mut self, stale_for: Duration) -> Self {
        self.stale_for = stale_for;
        self
    }

    /// Replace the entry's tags.
    pub fn tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Bypass L1 (read and write Redis only) for this call.
    pub fn skip_l1(mut self, skip: bool) -> Self {
        self.skip_l1 = skip;
        self
    }

    /// Bypass L2 (L1 and the loader only) for this call.
    pub fn skip_l2(mut self, skip: bool) -> Self {
        self.skip_l2 = skip;
        self
    }

    /// The configured TTL.
    pub fn get_ttl(&self) -> Duration {
        self.ttl
    }

    /// The configured tags.
    pub fn get_tags(&self) -> &[String] {
        &self.tags
    }

    /// The policy these options came from, if any.
    pub fn policy_name(&self) -> Option<&str> {
        self.policy.as_deref()
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.ttl.is_zero() {
            return Err(Error::config("ttl must be greater than zero"));
        }
        if let Some(l1) = self.l1_ttl {
            if l1.is_zero() || l1 > self.ttl {
                return Err(Error::config(format!(
                    "l1_ttl ({l1:?}) must be greater than zero and at most ttl ({:?})",
                    self.ttl
                )));
            }
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::config(format!(
                "jitter must be a fraction in 0.0..=1.0, got {}",
                self.jitter
            )));
        }
        if self.negative_ttl.is_zero() {
            return Err(Error::config("negative_ttl must be greater than zero"));
        }
        Ok(())
    }

    /// The TTL of one write: `ttl` shortened by a uniform random share of up to `jitter`.
    pub(crate) fn jittered_ttl(&self, ttl: Duration) -> Duration {
        if self.jitter <= 0.0 {
            return ttl;
        }
        let cut = rand::random::<f64>() * self.jitter;
        let jittered = ttl.mul_f64(1.0 - cut);
        jittered.max(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_bounds_and_spreads() {
        let opts = EntryOptions::new().jitter(0.2);
        let ttl = Duration::from_secs(100);
        let samples: Vec<f64> = (0..5000)
            .map(|_| opts.jittered_ttl(ttl).as_secs_f64())
            .collect();
        assert!(samples.iter().all(|s| (80.0..=100.0).contains(s)));
        let below_90 = samples.iter().filter(|s| **s < 90.0).count();
        // Uniform over [80, 100]: about half below 90.
        assert!((2000..3000).contains(&below_90), "{below_90}");
    }

    #[test]
    fn invalid_options_are_refused() {
        assert!(EntryOptions::new().ttl(Duration::ZERO).validate().is_err());
        assert!(EntryOptions::new()
            .ttl(Duration::from_secs(1))
            .l1_ttl(Duration::from_secs(2))
            .validate()
            .is_err());
        assert_eq!(EntryOptions::new().jitter(f64::NAN).jitter, 0.0);
        assert_eq!(EntryOptions::new().jitter(7.0).jitter, 1.0);
    }
}
