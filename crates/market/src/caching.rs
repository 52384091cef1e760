//! The service's use of stratacache: one [`Caching`] per instance, holding
//! the cache (or none, with `--cache off`) and the policy of each resource,
//! counting cached reads and the database loads they cause (background
//! refreshes included) — the service's own figure beside the cache's hit rate.
//!
//! Every cached read goes through [`Caching::read`] or
//! [`Caching::read_optional`]; with the cache off they call the loader
//! directly, so both modes answer from the same queries.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use stratacache::{BreakerState, Cache, CacheValue, EntryOptions, Loaded};

use crate::error::ApiError;
use crate::policy::Policy;

/// Lookups and loads since start, in total and per resource.
#[derive(Debug, Default)]
pub struct CacheCounters {
    lookups: AtomicU64,
    loads: AtomicU64,
    by_resource: Mutex<BTreeMap<Policy, ResourceCount>>,
}

/// One resource's lookups and loads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResourceCount {
    /// Reads that asked the cache (or, with the cache off, would have).
    pub lookups: u64,
    /// Database loads they caused, background refreshes included.
    pub loads: u64,
    /// Set-based queries of the market-data feed that pushed the resource
    /// into the cache (not caused by reads, so not in `loads`).
    pub feed_queries: u64,
}

impl CacheCounters {
    /// Reads that asked the cache (or, with the cache off, would have).
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// Loads from the database those reads caused (background refreshes included).
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// Count a read that asked the cache.
    pub fn lookup(&self, resource: Policy) {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        self.count(resource, |c| c.lookups += 1);
        metrics::counter!("market_cache_lookups_total", "resource" => resource.name()).increment(1);
    }

    /// Count a load from the database.
    pub fn load(&self, resource: Policy) {
        self.loads.fetch_add(1, Ordering::Relaxed);
        self.count(resource, |c| c.loads += 1);
        metrics::counter!("market_cache_loads_total", "resource" => resource.name()).increment(1);
    }
}

impl CacheCounters {
    /// Count one query of the market-data feed (see [`crate::feed`]).
    pub fn feed_query(&self, resource: Policy) {
        self.count(resource, |c| c.feed_queries += 1);
        metrics::counter!("market_feed_queries_total", "resource" => resource.name()).increment(1);
    }

    fn count(&self, resource: Policy, f: impl FnOnce(&mut ResourceCount)) {
        if let Ok(mut map) = self.by_resource.lock() {
            f(map.entry(resource).or_default());
        }
    }

    /// Every resource's counts so far.
    pub fn by_resource(&self) -> BTreeMap<Policy, ResourceCount> {
        self.by_resource
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }
}

/// The cache of one instance and the policy names of its resources.
#[derive(Clone)]
pub struct Caching {
    cache: Option<Cache>,
    counters: Arc<CacheCounters>,
}

impl Caching {
    /// With a cache (`--cache on`).
    pub fn on(cache: Cache) -> Self {
        Self {
            cache: Some(cache),
            counters: Arc::default(),
        }
    }

    /// Without one (`--cache off`): every read goes to the database.
    pub fn off() -> Self {
        Self {
            cache: None,
            counters: Arc::default(),
        }
    }

    /// The cache, if on.
    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    /// Lookups and loads since start.
    pub fn counters(&self) -> &Arc<CacheCounters> {
        &self.counters
    }

    /// The entry options of `policy` (a policy missing from the policy file
    /// is a configuration error found at start-up, see [`Policy::in_file`]).
    pub fn options(&self, policy: Policy) -> Result<EntryOptions, ApiError> {
        match &self.cache {
            Some(cache) => Ok(cache.policy(policy.name())?.clone()),
            None => Ok(EntryOptions::new()),
        }
    }

    /// `opts` when the caller has its own, else the policy's.
    fn options_or_policy(
        &self,
        opts: Option<EntryOptions>,
        policy: Policy,
    ) -> Result<EntryOptions, ApiError> {
        opts.map_or_else(|| self.options(policy), Ok)
    }

    /// The breaker's state, `None` with the cache off.
    pub fn breaker(&self) -> Option<BreakerState> {
        self.cache.as_ref().and_then(Cache::breaker_state)
    }

    /// Cache-aside read of a value that always exists.
    pub async fn read<V, F, Fut>(
        &self,
        policy: Policy,
        key: &str,
        opts: Option<EntryOptions>,
        loader: F,
    ) -> Result<V, ApiError>
    where
        V: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, ApiError>> + Send + 'static,
    {
        self.counters.lookup(policy);
        let Some(cache) = &self.cache else {
            self.counters.load(policy);
            return loader().await;
        };
        let opts = self.options_or_policy(opts, policy)?;
        let counters = Arc::clone(&self.counters);
        Ok(cache
            .get_or_load(key, &opts, move || {
                counters.load(policy);
                loader()
            })
            .await?)
    }

    /// Cache-aside read of a value that may not exist: `None` is cached as a
    /// negative entry for the policy's `negative_ttl`.
    pub async fn read_optional<V, F, Fut>(
        &self,
        policy: Policy,
        key: &str,
        opts: Option<EntryOptions>,
        loader: F,
    ) -> Result<Option<V>, ApiError>
    where
        V: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, ApiError>> + Send + 'static,
    {
        self.counters.lookup(policy);
        let Some(cache) = &self.cache else {
            self.counters.load(policy);
            return loader().await;
        };
        let opts = self.options_or_policy(opts, policy)?;
        let counters = Arc::clone(&self.counters);
        Ok(cache
            .get_or_load_optional(key, &opts, move || {
                counters.load(policy);
                loader()
            })
            .await?)
    }

    /// Cache-aside read of a value that may not exist, under the policy's
    /// `consistency = "version"`: the loader returns the value with the
    /// version of the source it read, and the fill lands only if no newer
    /// version was written meanwhile (by a route or the feed).
    pub async fn read_versioned<V, F, Fut>(
        &self,
        policy: Policy,
        key: &str,
        opts: Option<EntryOptions>,
        loader: F,
    ) -> Result<Option<V>, ApiError>
    where
        V: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<(V, u64)>, ApiError>> + Send + 'static,
    {
        self.counters.lookup(policy);
        let Some(cache) = &self.cache else {
            self.counters.load(policy);
            return Ok(loader().await?.map(|(value, _)| value));
        };
        let opts = self.options_or_policy(opts, policy)?;
        let counters = Arc::clone(&self.counters);
        let fetched = cache
            .get_or_load_with_context(key, &opts, move |_| async move {
                counters.load(policy);
                Ok::<_, ApiError>(match loader().await? {
                    Some((value, version)) => Loaded::value(value).version(version),
                    None => Loaded::absent(),
                })
            })
            .await?;
        Ok(fetched.into_value())
    }

    /// Write-through of a value the database committed at `version`: it
    /// lands unless a newer version is known already. A Redis failure is
    /// logged, not returned — the database has the write, and the library
    /// invalidates the key (with its version) once Redis answers again.
    pub async fn write_versioned<V: CacheValue>(
        &self,
        policy: Policy,
        key: &str,
        opts: Option<EntryOptions>,
        value: &V,
        version: u64,
    ) -> Result<(), ApiError> {
        let Some(cache) = &self.cache else {
            return Ok(());
        };
        let opts = self.options_or_policy(opts, policy)?;
        if let Err(err) = cache.set_versioned(key, value, version, &opts).await {
            tracing::warn!(key, error = %err, "versioned write-through did not reach Redis");
        }
        Ok(())
    }

    /// Cache-aside read of a value composed from other cached parts (see
    /// [`crate::parts`]): as [`read_optional`](Self::read_optional), but the
    /// composition is not counted as a database load — the parts count the
    /// loads they make. With the cache off, `direct` answers (and is counted).
    pub async fn read_composed<V, F, Fut, D, DFut>(
        &self,
        resource: Policy,
        key: &str,
        opts: Option<EntryOptions>,
        compose: F,
        direct: D,
    ) -> Result<Option<V>, ApiError>
    where
        V: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Option<V>, ApiError>> + Send + 'static,
        D: FnOnce() -> DFut,
        DFut: Future<Output = Result<Option<V>, ApiError>>,
    {
        self.counters.lookup(resource);
        let Some(cache) = &self.cache else {
            self.counters.load(resource);
            return direct().await;
        };
        let opts = match opts {
            Some(opts) => opts,
            None => self.options(resource)?,
        };
        Ok(cache.get_or_load_optional(key, &opts, compose).await?)
    }

    /// Announce that the source of `key` is now at `version` (a write
    /// committed it): every instance drops its copy, and no fill read at an
    /// older version lands afterwards. A failure is logged; the library
    /// repeats it when Redis answers again.
    pub async fn invalidate_version(&self, key: &str, version: u64) {
        if let Some(cache) = &self.cache {
            if let Err(err) = cache.invalidate_version(key, version).await {
                tracing::warn!(key, error = %err, "versioned invalidation failed");
            }
        }
    }

    /// Forget `keys` in every tier and every instance, in one call.
    pub async fn invalidate_many(&self, keys: &[&str]) {
        if let Some(cache) = &self.cache {
            if let Err(err) = cache.delete_many(keys).await {
                tracing::warn!(?keys, error = %err, "invalidation failed");
            }
        }
    }

    /// Write-through: `writer` changes the database and returns the new
    /// value, which then replaces the cached one in both tiers.
    pub async fn write_through<V, F, Fut>(
        &self,
        policy: Policy,
        key: &str,
        writer: F,
    ) -> Result<V, ApiError>
    where
        V: CacheValue,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, ApiError>>,
    {
        let Some(cache) = &self.cache else {
            return writer().await;
        };
        let opts = self.options(policy)?;
        Ok(cache.write_through(key, &opts, writer).await?)
    }

    /// Forget `key` in every tier and every instance. A failure is logged:
    /// the entry then lives until its TTL, which every policy bounds.
    pub async fn invalidate(&self, key: &str) {
        if let Some(cache) = &self.cache {
            if let Err(err) = cache.delete(key).await {
                tracing::warn!(key, error = %err, "invalidation failed");
            }
        }
    }

    /// The options of `policy` with `tag` added.
    pub fn options_tagged(&self, policy: Policy, tag: String) -> Result<EntryOptions, ApiError> {
        let opts = self.options(policy)?;
        let mut tags = opts.configured_tags().to_vec();
        tags.push(tag);
        Ok(opts.tags(tags))
    }

    /// Forget every entry tagged `tag` (one timestamp in Redis, O(1)).
    pub async fn invalidate_tag(&self, tag: &str) {
        if let Some(cache) = &self.cache {
            if let Err(err) = cache.invalidate_tag(tag).await {
                tracing::warn!(tag, error = %err, "tag invalidation failed");
            }
        }
    }
}
