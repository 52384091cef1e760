//! [`CacheBuilder`]: every setting of a cache, read as configuration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{Cache, Inner};
use crate::breaker::BreakerConfig;
use crate::clock::Clock;
use crate::coalesce::Flights;
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::invalidation::trust::Trust;
use crate::keys::{KeySpace, DEFAULT_MAX_KEY_LEN};
use crate::l1::{L1Config, L1};
use crate::l2::{RedisTls, RedisTopology, L2};
use crate::metrics::Metrics;
use crate::options::EntryOptions;
use crate::policy::{Policies, Policy};
use crate::read::Loads;
use crate::tiers::{TierParts, Tiers};
use crate::write::{backplane, recovery, Pipeline};

/// Configures and builds a [`Cache`].
///
/// ```no_run
/// # async fn demo() -> Result<(), stratacache::Error> {
/// use std::time::Duration;
/// use stratacache::{Cache, Codec, EntryOptions};
///
/// let cache = Cache::builder()
///     .namespace("market")                        // keys become "market:{…}"
///     .l1_max_bytes(256 * 1024 * 1024)
///     .l1_max_entries(500_000)
///     .redis_url("redis+cluster://10.0.0.1:7000,10.0.0.2:7000")
///     .redis_timeout(Duration::from_millis(100))
///     .codec(Codec::Postcard)
///     .compress_above(Some(2048))
///     .max_value_bytes(4 * 1024 * 1024)
///     .policy("stock_price", EntryOptions::new().ttl(Duration::from_secs(2)))
///     .policies_from_toml_file("cache-policies.toml")
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until .build().await"]
pub struct CacheBuilder {
    namespace: String,
    tls: Option<RedisTls>,
    l1: Option<L1Config>,
    l2: Option<std::result::Result<RedisTopology, Error>>,
    redis_timeout: Duration,
    redis_connect_timeout: Duration,
    auto_pipelining: bool,
    breaker: BreakerConfig,
    defaults: EntryOptions,
    codec: Codec,
    compress_above: Option<usize>,
    max_value_bytes: usize,
    max_key_len: usize,
    policies: Vec<Policy>,
    policy_files: Vec<PathBuf>,
    policy_env_prefix: Option<String>,
    metrics: bool,
    outage_l1_max_age: Duration,
    /// How long `build` waits for the backplane; `None`: the connect timeout
    /// plus one Redis timeout.
    backplane_wait: Option<Duration>,
    #[cfg(feature = "simulation")]
    simulated: Option<crate::l2::sim::SimRedis>,
}

impl Default for CacheBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl CacheBuilder {
    /// Defaults: namespace `"stratacache"`, L1 of a sixteenth of the memory
    /// the process may use (32 MiB – 1 GiB; see [`L1Config::default`]) and up
    /// to a million entries, no
    /// L2, Redis timeout 200 ms, JSON, lz4 above 1 KiB, values up to 1 MiB,
    /// keys over 256 bytes hashed, metrics on.
    pub fn new() -> Self {
        Self {
            namespace: "stratacache".into(),
            tls: None,
            l1: Some(L1Config::default()),
            l2: None,
            redis_timeout: Duration::from_millis(200),
            redis_connect_timeout: Duration::from_millis(500),
            auto_pipelining: true,
            breaker: BreakerConfig::default(),
            defaults: EntryOptions::default(),
            codec: Codec::default(),
            compress_above: Some(1024),
            max_value_bytes: 1024 * 1024,
            max_key_len: DEFAULT_MAX_KEY_LEN,
            policies: Vec::new(),
            policy_files: Vec::new(),
            policy_env_prefix: None,
            metrics: true,
            outage_l1_max_age: Duration::from_secs(5),
            backplane_wait: None,
            #[cfg(feature = "simulation")]
            simulated: None,
        }
    }

    /// Prefix of every key, so several applications can share one Redis.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// L1 bounds.
    pub fn l1(mut self, config: L1Config) -> Self {
        self.l1 = Some(config);
        self
    }

    /// Bound L1 in bytes (enables L1 if it was disabled).
    pub fn l1_max_bytes(mut self, bytes: u64) -> Self {
        self.l1.get_or_insert_with(L1Config::default).max_bytes = bytes;
        self
    }

    /// Bound L1 in entries (enables L1 if it was disabled).
    pub fn l1_max_entries(mut self, entries: u64) -> Self {
        self.l1.get_or_insert_with(L1Config::default).max_entries = entries;
        self
    }

    /// No L1: every read goes to Redis.
    pub fn without_l1(mut self) -> Self {
        self.l1 = None;
        self
    }

    /// Use Redis as L2; see [`RedisTopology::parse`] for the URL forms.
    /// A malformed URL is reported by [`build`](Self::build).
    pub fn redis_url(mut self, url: &str) -> Self {
        self.l2 = Some(RedisTopology::parse(url));
        self
    }

    /// Use Redis as L2.
    pub fn redis(mut self, topology: RedisTopology) -> Self {
        self.l2 = Some(Ok(topology));
        self
    }

    /// Certificates for `rediss://` L2 connections: a private CA, and a
    /// client certificate for mutual TLS (needs the `tls` feature). Not
    /// needed when the server's certificate is signed by a public CA.
    pub fn redis_tls(mut self, tls: RedisTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// No L2 (the default): an in-process cache only.
    pub fn without_l2(mut self) -> Self {
        self.l2 = None;
        self
    }

    /// Upper bound of every Redis call, retries included. No request waits on
    /// Redis longer than this.
    pub fn redis_timeout(mut self, timeout: Duration) -> Self {
        self.redis_timeout = timeout;
        self
    }

    /// Upper bound of establishing a connection.
    pub fn redis_connect_timeout(mut self, timeout: Duration) -> Self {
        self.redis_connect_timeout = timeout;
        self
    }

    /// How commands reach a single Redis node over plain TCP: through the
    /// cache's own connection, which writes the commands of concurrent
    /// callers to the socket together (`true`, the default), or through
    /// redis-rs's `ConnectionManager` (`false`). TLS, Unix sockets, RESP3
    /// URLs, Sentinel and Cluster always use redis-rs. The two behave the
    /// same (timeouts, reconnection, the breaker); the cache's own costs
    /// less per command (BENCHMARKS.md, "Auto-pipelining").
    pub fn redis_auto_pipelining(mut self, enabled: bool) -> Self {
        self.auto_pipelining = enabled;
        self
    }

    /// Circuit breaker settings.
    pub fn breaker(mut self, config: BreakerConfig) -> Self {
        self.breaker = config;
        self
    }

    /// Options used by calls that pass none (`get`, `get_many`).
    pub fn default_options(mut self, options: EntryOptions) -> Self {
        self.defaults = options;
        self
    }

    /// How values are serialized (JSON by default).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Compress values (lz4) whose encoded size is above this many bytes; `None` never.
    pub fn compress_above(mut self, bytes: Option<usize>) -> Self {
        self.compress_above = bytes;
        self
    }

    /// Refuse values whose stored form is larger than this.
    pub fn max_value_bytes(mut self, bytes: usize) -> Self {
        self.max_value_bytes = bytes;
        self
    }

    /// Keys longer than this are replaced by a digest.
    pub fn max_key_len(mut self, bytes: usize) -> Self {
        self.max_key_len = bytes;
        self
    }

    /// Register a named policy: `options` labelled `name`, for
    /// [`Cache::policy`] to hand out.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), stratacache::Error> {
    /// use std::time::Duration;
    /// use stratacache::{Cache, EntryOptions};
    ///
    /// let cache = Cache::builder()
    ///     .policy("session", EntryOptions::new().ttl(Duration::from_secs(30 * 60)))
    ///     .build()
    ///     .await?;
    /// let session = cache.policy("session")?; // metrics labelled policy="session"
    /// # let _ = session;
    /// # Ok(()) }
    /// ```
    pub fn policy(mut self, name: &str, options: EntryOptions) -> Self {
        self.policies.push(Policy::new(name, options));
        self
    }

    /// Load policies from a TOML file at build time (see [`Policies::from_toml_str`]).
    pub fn policies_from_toml_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.policy_files.push(path.into());
        self
    }

    /// At build time, overlay policies from `{PREFIX}__POLICIES__{NAME}__{FIELD}`
    /// environment variables (see [`Policies::overlay_env`]).
    pub fn policies_from_env(mut self, prefix: &str) -> Self {
        self.policy_env_prefix = Some(prefix.to_string());
        self
    }

    /// While the invalidation backplane is disconnected, serve L1 entries as
    /// fresh only up to this age (default 5 s): invalidations sent meanwhile
    /// may be missed. Older ones are kept as fail-safe fallbacks. Every L1
    /// entry from before a (re)subscription is dropped once it is back.
    pub fn backplane_outage_l1_max_age(mut self, age: Duration) -> Self {
        self.outage_l1_max_age = age;
        self
    }

    /// How long [`build`](Self::build) waits for the invalidation backplane
    /// to be subscribed (default: the connect timeout plus one Redis
    /// timeout); once subscribed, the cache hears every invalidation the
    /// other instances make. `build` does not fail when the time runs out:
    /// the subscription goes on in the background. Zero: return at once —
    /// L1 entries made before the first subscription are then dropped when
    /// it comes, since invalidations sent meanwhile were not heard. See also
    /// [`Cache::wait_for_backplane`] and [`Cache::backplane_connected`].
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), stratacache::Error> {
    /// use std::time::Duration;
    /// use stratacache::Cache;
    ///
    /// let cache = Cache::builder()
    ///     .redis_url("redis://127.0.0.1:6379")
    ///     .wait_for_backplane(Duration::from_secs(5))
    ///     .build()
    ///     .await?;
    /// assert_eq!(cache.backplane_connected(), Some(true)); // if Redis answered within 5 s
    /// # Ok(()) }
    /// ```
    pub fn wait_for_backplane(mut self, within: Duration) -> Self {
        self.backplane_wait = Some(within);
        self
    }

    /// Use a simulated Redis and its virtual clock (the race simulation).
    #[cfg(feature = "simulation")]
    #[doc(hidden)]
    pub fn simulated_redis(mut self, redis: &crate::l2::sim::SimRedis) -> Self {
        self.simulated = Some(redis.clone());
        self
    }

    /// Report metrics through the `metrics` facade (on by default).
    pub fn metrics(mut self, enabled: bool) -> Self {
        self.metrics = enabled;
        self
    }

    /// Validate the configuration and build the cache.
    ///
    /// Redis is connected lazily: a cache built while Redis is down works from
    /// L1 and loaders and starts using Redis when it answers. (Sentinel is the
    /// exception: the master must be resolvable at build time.) With Redis
    /// up, `build` returns once the invalidation backplane is subscribed
    /// (waiting at most the connect timeout plus one Redis timeout), so the
    /// new instance hears every invalidation from its first read on.
    pub async fn build(self) -> Result<Cache> {
        let keys = KeySpace::new(&self.namespace, self.max_key_len)?;
        self.defaults.validate()?;
        if self.max_value_bytes == 0 {
            return Err(Error::config("max_value_bytes must be greater than zero"));
        }
        if self.redis_timeout.is_zero() || self.redis_connect_timeout.is_zero() {
            return Err(Error::config("redis timeouts must be greater than zero"));
        }
        if self.breaker.failure_threshold == 0 || self.breaker.probe_interval.is_zero() {
            return Err(Error::config(
                "breaker threshold and probe interval must be greater than zero",
            ));
        }
        if let Some(l1) = &self.l1 {
            if l1.max_bytes == 0 || l1.max_entries == 0 {
                return Err(Error::config("L1 bounds must be greater than zero"));
            }
        }

        let mut policies = Policies::new();
        for policy in self.policies {
            policies.insert(policy)?;
        }
        for path in &self.policy_files {
            for policy in Policies::from_toml_file(path)?.iter() {
                policies.insert(policy.clone())?;
            }
        }
        if let Some(prefix) = &self.policy_env_prefix {
            policies.overlay_env(prefix)?;
        }

        let mut metrics = Metrics::new(self.metrics, &self.namespace);
        metrics.register_policies(policies.iter().map(|p| p.name()));
        let l1 = self
            .l1
            .map(|config| L1::new(config, keys.prefix_len(), &metrics.global));
        let follows_failovers = matches!(self.l2, Some(Ok(RedisTopology::Sentinel { .. })));
        #[allow(unused_mut)]
        let mut clock = Clock::system();
        #[cfg(feature = "simulation")]
        if let Some(sim) = &self.simulated {
            clock = Clock::virtual_time(sim.time());
        }
        let l2 = match self.l2 {
            #[cfg(feature = "simulation")]
            _ if self.simulated.is_some() => Some(Arc::new(L2::simulated(
                self.simulated.as_ref().expect("checked"),
                self.redis_timeout,
                self.breaker,
                Arc::clone(&metrics.global),
            ))),
            None => None,
            Some(topology) => {
                let topology = topology?;
                tracing::info!(redis = ?topology, "stratacache L2 configured");
                Some(Arc::new(
                    L2::connect(
                        &topology,
                        self.redis_timeout,
                        (self.redis_connect_timeout, self.auto_pipelining),
                        self.breaker,
                        Arc::clone(&metrics.global),
                        self.tls.as_ref(),
                    )
                    .await?,
                ))
            }
        };
        let trust = Trust::new(l2.is_some(), self.outage_l1_max_age);
        let tiers = Arc::new(Tiers::new(TierParts {
            keys,
            clock,
            l1,
            l2,
            codec: self.codec,
            compress_above: self.compress_above,
            max_value_bytes: self.max_value_bytes,
            metrics,
            trust,
        }));
        let flights = Arc::new(Flights::default());
        let writes = Arc::new(Pipeline::new(
            Arc::clone(&tiers),
            Arc::clone(&flights),
            follows_failovers,
        ));
        let loads = Arc::new(Loads::new(Arc::clone(&tiers), Arc::clone(&writes), flights));
        if tiers.l2().is_some() {
            writes.refresh_invalidation_state().await;
            backplane::spawn_subscriber(Arc::downgrade(&writes));
            recovery::spawn_replayer(Arc::downgrade(&writes));
            // Until it hears the other instances, an instance cannot trust
            // what it puts into L1 (the first subscription drops it): wait for
            // that, briefly — a Redis that is down must not hold up a start.
            let within = self
                .backplane_wait
                .unwrap_or(self.redis_connect_timeout + self.redis_timeout);
            if !within.is_zero() {
                tiers.trust().wait_connected(within).await;
            }
        }
        Ok(Cache::from_inner(Inner {
            tiers,
            writes,
            loads,
            defaults: self.defaults,
            policies,
        }))
    }
}
