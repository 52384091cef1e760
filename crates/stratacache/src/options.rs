//! Per-entry options: how long an entry lives in each tier and how it may be served.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::freshness::EagerRefresh;

/// What keeps a load that began before an invalidation from storing its
/// older value after it (the "stale set" race of cache-aside).
///
/// ```
/// use stratacache::{Consistency, EntryOptions, Loaded};
///
/// // The loader reads a row with a version column; writers announce the
/// // version they committed with `cache.invalidate_version(key, v)`.
/// let opts = EntryOptions::new().consistency(Consistency::Version);
/// let loaded = Loaded::value("AAPL 191.20").version(18);
/// # let _ = (opts, loaded);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Consistency {
    /// Every write and invalidation of a key revokes its lease; a fill lands
    /// only while its lease is intact. Works with any loader; a load that
    /// overlapped an invalidation is discarded even if it read the new value.
    #[default]
    Lease,
    /// A fill carries the version the loader read ([`Loaded::version`]) and
    /// lands only if no newer version of the key is known in Redis (a
    /// compare-and-set in one Lua script). Writers announce their versions
    /// with [`Cache::invalidate_version`] or [`Cache::set_versioned`]; a
    /// result without a version counts as version 0.
    ///
    /// [`Loaded::version`]: crate::Loaded::version
    /// [`Cache::invalidate_version`]: crate::Cache::invalidate_version
    /// [`Cache::set_versioned`]: crate::Cache::set_versioned
    Version,
}

impl Consistency {
    pub(crate) fn parse(s: &str) -> crate::error::Result<Self> {
        match s {
            "lease" => Ok(Self::Lease),
            "version" => Ok(Self::Version),
            other => Err(crate::error::Error::config(format!(
                "unknown consistency {other:?} (expected \"lease\" or \"version\")"
            ))),
        }
    }
}

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
/// assert_eq!(opts.configured_ttl(), Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct EntryOptions {
    /// Time the entry is fresh.
    pub(crate) ttl: Duration,
    /// Fraction of `ttl` by which expiries are spread (`0.0..=1.0`).
    pub(crate) jitter: f64,
    /// Upper bound of the L1 lifetime; `None` means the entry's own TTL.
    pub(crate) l1_ttl: Option<Duration>,
    /// Lifetime of the marker stored for an absent value.
    pub(crate) negative_ttl: Duration,
    /// How long past expiry an entry is kept so it may still be served stale.
    pub(crate) stale_for: Duration,
    /// Refresh a fresh entry in the background before it expires.
    pub(crate) eager_refresh: Option<EagerRefresh>,
    /// With a stale entry at hand, wait this long for a load before serving it.
    pub(crate) soft_timeout: Option<Duration>,
    /// Give up on a load after this long.
    pub(crate) hard_timeout: Option<Duration>,
    /// Lifetime of the distributed lease taken before loading; a live holder
    /// extends it, so it bounds how long a crashed holder blocks the others.
    pub(crate) lock_timeout: Duration,
    /// After a failed refresh, how long the stale value is served before the
    /// next attempt.
    pub(crate) fail_safe_throttle: Duration,
    /// Whether this call may be answered with a stale value instead of a
    /// load's result (fail-safe, stale-while-revalidate, soft timeout).
    pub(crate) fail_safe: bool,
    /// Take a lease in Redis so one instance loads for all (on by default).
    pub(crate) distributed_lease: bool,
    /// What keeps a fill that began before an invalidation from landing after it.
    pub(crate) consistency: Consistency,
    /// Answer a load's callers as soon as the loader returns, and fill the
    /// tiers after (off by default).
    pub(crate) fill_in_background: bool,
    /// Tags attached to the entry.
    pub(crate) tags: Vec<String>,
    /// Bypass L1 for this call.
    pub(crate) skip_l1: bool,
    /// Bypass L2 (Redis) for this call.
    pub(crate) skip_l2: bool,
    /// The policy name used as the metrics label.
    pub(crate) policy: Option<Arc<str>>,
    /// The schema version of the value's type, stored with each entry.
    pub(crate) schema_version: u32,
    /// Whether these options passed [`validate`](Self::validate) as they
    /// are (every setter resets it): a call's check is then one load.
    pub(crate) checked: Checked,
}

/// A validation that holds until the options change.
#[derive(Default)]
pub(crate) struct Checked(AtomicBool);

impl Checked {
    fn holds(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// The options changed: validate them again.
    pub(crate) fn reset(&mut self) {
        *self.0.get_mut() = false;
    }
}

impl Clone for Checked {
    fn clone(&self) -> Self {
        Self(AtomicBool::new(self.holds()))
    }
}

/// Not part of what the options say.
impl PartialEq for Checked {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.holds() { "valid" } else { "unchecked" })
    }
}

/// The longest duration an option may hold (100 years): longer ones are
/// refused, so that no expiry computed from them can overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Default for EntryOptions {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            jitter: 0.0,
            l1_ttl: None,
            negative_ttl: Duration::from_secs(30),
            stale_for: Duration::ZERO,
            eager_refresh: None,
            soft_timeout: None,
            hard_timeout: None,
            lock_timeout: Duration::from_secs(5),
            fail_safe_throttle: Duration::from_secs(5),
            fail_safe: true,
            distributed_lease: true,
            consistency: Consistency::Lease,
            fill_in_background: false,
            tags: Vec::new(),
            skip_l1: false,
            skip_l2: false,
            policy: None,
            schema_version: 0,
            checked: Checked::default(),
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
        self.checked.reset();
        self.ttl = ttl;
        self
    }

    /// Spread expiries over `[ttl·(1−fraction), ttl]` so that entries written
    /// together do not all expire together. Clamped to `0.0..=1.0`.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.checked.reset();
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
        self.checked.reset();
        self.negative_ttl = negative_ttl;
        self
    }

    /// Keep entries this long past their TTL, so they can be served stale.
    pub fn stale_for(mut self, stale_for: Duration) -> Self {
        self.checked.reset();
        self.stale_for = stale_for;
        self
    }

    /// Refresh entries in the background before they expire: at a fraction of
    /// their TTL, or probabilistically (XFetch). Hot keys then never expire
    /// under load; cold keys are not refreshed.
    pub fn eager_refresh(mut self, eager: EagerRefresh) -> Self {
        self.checked.reset();
        self.eager_refresh = Some(eager);
        self
    }

    /// With a stale entry at hand (see [`stale_for`](Self::stale_for)), wait at
    /// most this long for a fresh load, then serve the stale value while the
    /// load finishes in the background. Without it, a stale entry is served at
    /// once (stale-while-revalidate).
    pub fn soft_timeout(mut self, timeout: Duration) -> Self {
        self.checked.reset();
        self.soft_timeout = Some(timeout);
        self
    }

    /// Abandon a load after this long: callers get the stale value if there is
    /// one (fail-safe), else [`Error::LoaderTimeout`].
    pub fn hard_timeout(mut self, timeout: Duration) -> Self {
        self.checked.reset();
        self.hard_timeout = Some(timeout);
        self
    }

    /// Lifetime of the lease one instance takes in Redis before loading (the
    /// holder extends it while it works). Other instances wait for its fill;
    /// if it crashes, one of them takes over within this time.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.checked.reset();
        self.lock_timeout = timeout;
        self
    }

    /// After a refresh failed and the stale value was served instead, wait
    /// this long before trying the source again.
    pub fn fail_safe_throttle(mut self, throttle: Duration) -> Self {
        self.checked.reset();
        self.fail_safe_throttle = throttle;
        self
    }

    /// Whether a call may be answered with a stale value instead of its
    /// load's result (on by default). Off, the call gets what the loader
    /// returns or its error: a failing loader's error, [`Error::LoaderTimeout`]
    /// past `hard_timeout`, [`Error::WaitTimeout`] when another instance's
    /// load does not finish in time — never the stale value, not even one
    /// another call kept by fail-safe. Stale-while-revalidate and
    /// `soft_timeout` answer with stale values too, so they are off for the
    /// call as well: it waits for the load. The stale value stays cached
    /// for the calls that accept it, and reads that ask for it
    /// ([`Cache::get_allow_stale`]) still get it.
    ///
    /// One limit: a call that joins a load already running for the key in
    /// this process (single-flight) shares its outcome, and the options of
    /// the call that started it decide what a failure gives. If that call
    /// has fail-safe on, a joining call with fail-safe off is answered with
    /// the stale value too ([`Cache::get_or_load_with_context`] says it is
    /// stale).
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// use std::time::Duration;
    /// use stratacache::{EntryOptions, Error};
    ///
    /// let shown = EntryOptions::new().ttl(Duration::from_secs(5)).stale_for(Duration::from_secs(600));
    /// // Placing an order needs the current price or an error, not the last one known.
    /// let checkout = shown.clone().fail_safe(false);
    /// match cache
    ///     .get_or_load("price:ACME", &checkout, || async {
    ///         Err::<f64, _>(std::io::Error::other("pricing service down"))
    ///     })
    ///     .await
    /// {
    ///     Err(Error::Loader(why)) => println!("cannot price the order: {why}"),
    ///     other => println!("{other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// [`Error::LoaderTimeout`]: crate::Error::LoaderTimeout
    /// [`Error::WaitTimeout`]: crate::Error::WaitTimeout
    /// [`Cache::get_allow_stale`]: crate::Cache::get_allow_stale
    /// [`Cache::get_or_load_with_context`]: crate::Cache::get_or_load_with_context
    pub fn fail_safe(mut self, enabled: bool) -> Self {
        self.checked.reset();
        self.fail_safe = enabled;
        self
    }

    /// Whether to coordinate loads across instances with a Redis lease (on by
    /// default; in-process single-flight always applies).
    pub fn distributed_lease(mut self, enabled: bool) -> Self {
        self.checked.reset();
        self.distributed_lease = enabled;
        self
    }

    /// How fills are kept from putting back a value older than the last
    /// invalidation: [`Consistency::Lease`] (the default) or
    /// [`Consistency::Version`] for loaders that know their row's version.
    pub fn consistency(mut self, consistency: Consistency) -> Self {
        self.checked.reset();
        self.consistency = consistency;
        self
    }

    /// Answer a load as soon as the loader returns, and fill Redis and L1
    /// after, in the background (off by default). A miss then costs its
    /// caller one Redis round trip less (the read, the load; not the fill),
    /// and a Redis that stalls during the fill delays no caller.
    ///
    /// What still holds: the key's lease is kept until the fill lands, so
    /// other instances wait for it rather than load again; calls in this
    /// process that arrive meanwhile join the running load and get its
    /// value at once; an invalidation or write that follows the answer
    /// still wins over the fill (the fill goes through the lease and the
    /// invalidation log like any other). What changes: when the call
    /// returns, the value may not be in Redis or L1 yet, so a
    /// [`Cache::get`](crate::Cache::get) (which runs no loader and joins no
    /// load) issued at once may still miss; and a fill that fails is only
    /// logged, as always — the caller has its value either way. It applies
    /// to the loads of `get_or_load*` and `Resource::get`;
    /// `Resource::get_many` writes its batch before it answers.
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// use stratacache::EntryOptions;
    ///
    /// let opts = EntryOptions::new().fill_in_background(true);
    /// let quote: f64 = cache
    ///     .get_or_load("quote:ACME", &opts, || async { Ok::<_, std::io::Error>(101.5) })
    ///     .await?; // returned before the fill reached Redis
    /// # let _ = quote;
    /// # Ok(()) }
    /// ```
    pub fn fill_in_background(mut self, enabled: bool) -> Self {
        self.checked.reset();
        self.fill_in_background = enabled;
        self
    }

    /// Replace the entry's tags.
    pub fn tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.checked.reset();
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

    /// The version of the value's type (0 by default). Stored with every
    /// entry: during a rolling deploy, an instance that finds an entry of a
    /// newer schema leaves it alone and treats it as a miss, and one that
    /// finds an older schema replaces it — instead of both deleting each
    /// other's entries as corrupt. Raise it when a change to the type makes
    /// old entries unreadable (or readable wrongly).
    ///
    /// ```
    /// use stratacache::EntryOptions;
    ///
    /// // `Profile` gained a required field in this release.
    /// let opts = EntryOptions::new().schema_version(2);
    /// # let _ = opts;
    /// ```
    pub fn schema_version(mut self, version: u32) -> Self {
        self.checked.reset();
        self.schema_version = version;
        self
    }

    /// The TTL these options give an entry (before jitter; a loader's
    /// [`Loaded::ttl`](crate::Loaded::ttl) may override it). The getters of
    /// the options are named `configured_*`: the setters hold the plain
    /// names ([`ttl`](Self::ttl)), and the time an entry has left is
    /// [`Cache::ttl`](crate::Cache::ttl).
    ///
    /// ```
    /// use std::time::Duration;
    /// use stratacache::EntryOptions;
    ///
    /// let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    /// assert_eq!(opts.configured_ttl(), Duration::from_secs(60));
    /// ```
    pub fn configured_ttl(&self) -> Duration {
        self.ttl
    }

    /// The tags these options give an entry (a loader's
    /// [`Loaded::tags`](crate::Loaded::tags) may replace them).
    ///
    /// ```
    /// use stratacache::EntryOptions;
    ///
    /// let opts = EntryOptions::new().tags(["user:42", "profiles"]);
    /// assert_eq!(opts.configured_tags(), ["user:42", "profiles"]);
    /// ```
    pub fn configured_tags(&self) -> &[String] {
        &self.tags
    }

    /// Renamed [`configured_ttl`](Self::configured_ttl).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let opts = stratacache::EntryOptions::new().ttl(Duration::from_secs(60));
    /// assert_eq!(opts.configured_ttl(), Duration::from_secs(60));
    /// ```
    #[deprecated(since = "0.1.0", note = "renamed to `configured_ttl`")]
    pub fn get_ttl(&self) -> Duration {
        self.configured_ttl()
    }

    /// Renamed [`configured_tags`](Self::configured_tags).
    ///
    /// ```
    /// let opts = stratacache::EntryOptions::new().tags(["user:42"]);
    /// assert_eq!(opts.configured_tags(), ["user:42"]);
    /// ```
    #[deprecated(since = "0.1.0", note = "renamed to `configured_tags`")]
    pub fn get_tags(&self) -> &[String] {
        self.configured_tags()
    }

    /// The policy these options came from, if any.
    ///
    /// ```
    /// use stratacache::{EntryOptions, Policy};
    ///
    /// assert_eq!(EntryOptions::new().policy_name(), None);
    /// let profile = Policy::new("profile", EntryOptions::new());
    /// assert_eq!(profile.options().policy_name(), Some("profile"));
    /// ```
    pub fn policy_name(&self) -> Option<&str> {
        self.policy.as_deref()
    }

    /// Check the options; every call that takes options checks them first.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.checked.holds() {
            return Ok(());
        }
        self.check()?;
        self.checked.set();
        Ok(())
    }

    fn check(&self) -> Result<()> {
        if self.ttl.is_zero() {
            return Err(Error::config("ttl must be greater than zero"));
        }
        // Every call validates its options: the common case (nothing near
        // the bound) is one comparison.
        let longest = self
            .ttl
            .max(self.negative_ttl)
            .max(self.stale_for)
            .max(self.lock_timeout)
            .max(self.fail_safe_throttle)
            .max(self.l1_ttl.unwrap_or_default())
            .max(self.soft_timeout.unwrap_or_default())
            .max(self.hard_timeout.unwrap_or_default());
        if longest > MAX_DURATION {
            return Err(Error::config(format!(
                "a duration of the options ({longest:?}) is over the maximum of 100 years"
            )));
        }
        if self.ttl + self.stale_for > MAX_DURATION {
            return Err(Error::config(
                "ttl and stale_for together are over the maximum of 100 years",
            ));
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
        if self.lock_timeout < Duration::from_millis(10) {
            return Err(Error::config("lock_timeout must be at least 10 ms"));
        }
        if self.fail_safe_throttle.is_zero() {
            return Err(Error::config(
                "fail_safe_throttle must be greater than zero",
            ));
        }
        if let (Some(soft), Some(hard)) = (self.soft_timeout, self.hard_timeout) {
            if soft > hard {
                return Err(Error::config(format!(
                    "soft_timeout ({soft:?}) must not exceed hard_timeout ({hard:?})"
                )));
            }
        }
        if let Some(eager) = self.eager_refresh {
            eager.validate()?;
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
        assert!(EntryOptions::new().ttl(Duration::MAX).validate().is_err());
        assert!(EntryOptions::new()
            .ttl(MAX_DURATION)
            .stale_for(Duration::from_secs(1))
            .validate()
            .is_err());
        assert!(EntryOptions::new()
            .lock_timeout(Duration::MAX)
            .validate()
            .is_err());
        assert!(EntryOptions::new().ttl(MAX_DURATION).validate().is_ok());
    }
}
