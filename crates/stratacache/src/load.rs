//! Loading on a miss: cache-aside (`get_or_load`) with in-process
//! single-flight, and write-through.
//!
//! The miss path of one key runs once per process at a time: the first caller
//! starts a flight ([`crate::coalesce`]) that re-checks L2, calls the loader,
//! and fills both tiers before anyone is answered, so a caller that arrives
//! after the flight finds the value instead of loading again.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::cache::{Cache, CacheValue, Found, Inner};
use crate::coalesce::Role;
use crate::error::{BoxError, Error, Result};
use crate::options::EntryOptions;

/// What a loader found, and how it should be cached.
///
/// ```
/// use std::time::Duration;
/// use stratacache::Loaded;
///
/// let hot = Loaded::value(42).ttl(Duration::from_secs(5)).tags(["prices"]);
/// let missing: Loaded<u32> = Loaded::absent();          // cached as a negative entry
/// let volatile = Loaded::value(7).dont_cache();         // returned, never stored
/// # let _ = (hot, missing, volatile);
/// ```
#[derive(Debug, Clone)]
pub struct Loaded<V> {
    pub(crate) value: Option<V>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) tags: Option<Vec<String>>,
    pub(crate) cache: bool,
}

impl<V> Loaded<V> {
    /// The loader found `value`.
    pub fn value(value: V) -> Self {
        Self {
            value: Some(value),
            ttl: None,
            tags: None,
            cache: true,
        }
    }

    /// The value does not exist; cache that fact for `negative_ttl`.
    pub fn absent() -> Self {
        Self {
            value: None,
            ttl: None,
            tags: None,
            cache: true,
        }
    }

    /// From an `Option`: `None` is [`absent`](Self::absent).
    pub fn from_option(value: Option<V>) -> Self {
        match value {
            Some(v) => Self::value(v),
            None => Self::absent(),
        }
    }

    /// Cache this result for `ttl` instead of the options' TTL (jitter still applies).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Tag this entry with `tags` instead of the options' tags.
    pub fn tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags = Some(tags.into_iter().map(Into::into).collect());
        self
    }

    /// Return the result to the callers but do not store it.
    pub fn dont_cache(mut self) -> Self {
        self.cache = false;
        self
    }
}

impl Cache {
    /// Cache-aside: the value under `key`, or what `loader` returns for it,
    /// stored in both tiers.
    ///
    /// However many callers miss the same key at once, in this process the
    /// loader runs once and all of them get its result — or its error.
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// use std::time::Duration;
    /// use stratacache::EntryOptions;
    ///
    /// let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    /// let price: f64 = cache
    ///     .get_or_load("price:ACME", &opts, || async {
    ///         // e.g. SELECT price FROM prices WHERE symbol = 'ACME'
    ///         Ok::<_, std::io::Error>(101.5)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn get_or_load<V, F, Fut, E>(
        &self,
        key: &str,
        opts: &EntryOptions,
        loader: F,
    ) -> Result<V>
    where
        V: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<V, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let load = || async move { loader().await.map(Loaded::value) };
        match self.load_through(key, opts, false, load).await? {
            Some(value) => Ok(value),
            // Only reachable by joining another caller's optional load that
            // found nothing; this caller's own loader always yields a value.
            None => Err(Error::loader("the value is absent")),
        }
    }

    /// Cache-aside for values that may not exist: the loader returns
    /// `Ok(None)` for an absent value, which is cached as a negative entry
    /// for `negative_ttl`, so repeated lookups of missing ids stay off the database.
    pub async fn get_or_load_optional<V, F, Fut, E>(
        &self,
        key: &str,
        opts: &EntryOptions,
        loader: F,
    ) -> Result<Option<V>>
    where
        V: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<V>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let load = || async move { loader().await.map(Loaded::from_option) };
        self.load_through(key, opts, true, load).await
    }

    /// Cache-aside where the loader decides how its result is cached: its TTL,
    /// its tags, or not at all (see [`Loaded`]).
    pub async fn get_or_load_entry<V, F, Fut, E>(
        &self,
        key: &str,
        opts: &EntryOptions,
        loader: F,
    ) -> Result<Option<V>>
    where
        V: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Loaded<V>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.load_through(key, opts, true, loader).await
    }

    /// Write-through: run `writer` (which persists the value, typically in the
    /// database, and returns it as stored), then put the value in both tiers.
    /// If the cache cannot take it, the key is invalidated instead, so the
    /// cache never keeps the value the write replaced.
    pub async fn write_through<V, F, Fut, E>(
        &self,
        key: &str,
        opts: &EntryOptions,
        writer: F,
    ) -> Result<V>
    where
        V: CacheValue,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<V, E>>,
        E: Into<BoxError>,
    {
        let stored = self.inner.keys.stored(key)?;
        let value = writer().await.map_err(Error::loader)?;
        match self
            .inner
            .prepare(&stored, Some(&value), opts, None, None, 0)
        {
            Ok(prepared) => {
                self.inner
                    .store(stored, Some(value.clone()), prepared, opts)
                    .await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "write-through could not cache the value; invalidating");
                let _ = self.inner.remove(&[stored]).await;
            }
        }
        Ok(value)
    }

    async fn load_through<V, F, Fut, E>(
        &self,
        key: &str,
        opts: &EntryOptions,
        accept_absent: bool,
        loader: F,
    ) -> Result<Found<V>>
    where
        V: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Loaded<V>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let started = Instant::now();
        let stored = self.inner.keys.stored(key)?;
        let m = self.inner.metrics.policy(opts.policy.as_ref());
        if let Some(found) = self.inner.lookup_l1::<V>(&stored, opts, &m) {
            if found.is_some() || accept_absent {
                m.get_seconds.record(started.elapsed().as_secs_f64());
                return Ok(found);
            }
        }
        let inner = Arc::clone(&self.inner);
        let (flight, role) = self.inner.flights.join_or_start(&stored, || {
            let span = tracing::debug_span!("stratacache.load", key = %stored, policy = opts.policy_name().unwrap_or("default"));
            inner
                .resolve_miss(stored.clone(), opts.clone(), accept_absent, loader)
                .instrument(span)
        });
        if role == Role::Follower {
            m.coalesced.increment(1);
        }
        let found = flight.await;
        m.get_seconds.record(started.elapsed().as_secs_f64());
        found
    }
}

impl Inner {
    /// The body of a flight: L2, else the loader, then fill both tiers.
    async fn resolve_miss<V, F, Fut, E>(
        self: Arc<Self>,
        stored: String,
        opts: EntryOptions,
        accept_absent: bool,
        loader: F,
    ) -> Result<Found<V>>
    where
        V: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Loaded<V>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let m = self.metrics.policy(opts.policy.as_ref());
        if let Some(found) = self.lookup_l2_into_l1::<V>(&stored, &opts, &m).await {
            if found.is_some() || accept_absent {
                return Ok(found);
            }
        }
        m.loads.increment(1);
        let started = Instant::now();
        let outcome = loader().await;
        let took = started.elapsed();
        m.load_seconds.record(took.as_secs_f64());
        let loaded = outcome.map_err(|e| {
            m.load_errors.increment(1);
            let err = Error::loader(e);
            tracing::debug!(key = %stored, error = %err, "load failed");
            err
        })?;
        if loaded.cache {
            let load_micros = took.as_micros().min(u32::MAX as u128) as u32;
            match self.prepare(
                &stored,
                loaded.value.as_ref(),
                &opts,
                loaded.ttl,
                loaded.tags.as_deref(),
                load_micros,
            ) {
                Ok(prepared) => {
                    self.store(stored, loaded.value.clone(), prepared, &opts)
                        .await;
                }
                // The caller still gets the value; it is just not cached.
                Err(err @ Error::ValueTooLarge { .. }) => {
                    tracing::warn!(error = %err, "loaded value not cached");
                }
                Err(err) => return Err(err),
            }
        }
        Ok(loaded.value)
    }
}
