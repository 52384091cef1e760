//! The service's use of stratacache: one [`Caching`] per instance, holding
//! the cache (or none, with `--cache off`) and the policy of each resource,
//! counting cached reads and the database loads they cause (background
//! refreshes included) — the service's own figure beside the cache's hit rate.
//!
//! Every cached read goes through [`Caching::read`] or
//! [`Caching::read_optional`]; with the cache off they call the loader
//! directly, so both modes answer from the same queries.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use stratacache::{BreakerState, Cache, CacheValue, EntryOptions};

use crate::error::ApiError;

/// Lookups and loads since start.
#[derive(Debug, Default)]
pub struct CacheCounters {
    lookups: AtomicU64,
    loads: AtomicU64,
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
    pub fn lookup(&self, resource: &'static str) {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("market_cache_lookups_total", "resource" => resource).increment(1);
    }

    /// Count a load from the database.
    pub fn load(&self, resource: &'static str) {
        self.loads.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("market_cache_loads_total", "resource" => resource).increment(1);
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

    /// The entry options of policy `name` (a missing policy is a configuration
    /// error found at start-up, see [`crate::app::REQUIRED_POLICIES`]).
    pub fn options(&self, name: &str) -> Result<EntryOptions, ApiError> {
        match &self.cache {
            Some(cache) => Ok(cache.policy(name)?.clone()),
            None => Ok(EntryOptions::new()),
        }
    }

    /// The breaker's state, `None` with the cache off.
    pub fn breaker(&self) -> Option<BreakerState> {
        self.cache.as_ref().and_then(Cache::breaker_state)
    }

    /// Cache-aside read of a value that always exists.
    pub async fn read<V, F, Fut>(
        &self,
        policy: &'static str,
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
        let opts = match opts {
            Some(opts) => opts,
            None => self.options(policy)?,
        };
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
        policy: &'static str,
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
        let opts = match opts {
            Some(opts) => opts,
            None => self.options(policy)?,
        };
        let counters = Arc::clone(&self.counters);
        Ok(cache
            .get_or_load_optional(key, &opts, move || {
                counters.load(policy);
                loader()
            })
            .await?)
    }

    /// Write-through: `writer` changes the database and returns the new
    /// value, which then replaces the cached one in both tiers.
    pub async fn write_through<V, F, Fut>(
        &self,
        policy: &'static str,
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

    /// The options of policy `name` with `tag` added.
    pub fn options_tagged(&self, name: &str, tag: String) -> Result<EntryOptions, ApiError> {
        let opts = self.options(name)?;
        let mut tags = opts.get_tags().to_vec();
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
