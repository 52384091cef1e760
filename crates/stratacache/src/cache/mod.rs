//! The [`Cache`] handle: the public face of the tiers (`tiers`), the read
//! path (`read`) and the write pipeline (`write`).
//!
//! Key-value operations are here; loading ([`loading`]), invalidation
//! ([`invalidation`]) and the read that accepts stale values ([`stale`])
//! have files of their own. Nothing here orders the steps
//! of a read or a write: it validates the call and hands it over.

mod builder;
mod deprecated;
mod invalidation;
mod loading;
mod stale;

use std::sync::Arc;
use std::time::Duration;

use crate::breaker::BreakerState;
use crate::codec::envelope::{self, DecodeError, EntryMeta};
use crate::error::{Error, Result};
use crate::options::EntryOptions;
use crate::policy::Policies;
use crate::read::scope::LoadScope;
use crate::read::Loads;
use crate::tiers::{fresh, CacheValue, FillHints, L2Read, Tiers};
use crate::write::{KeyWrite, Pipeline};
pub use builder::CacheBuilder;

/// A two-tier cache: L1 in this process, L2 in Redis shared by every instance.
///
/// Cheap to clone: clones share the same tiers.
///
/// ```no_run
/// # async fn demo() -> Result<(), stratacache::Error> {
/// use std::time::Duration;
/// use stratacache::{Cache, EntryOptions};
///
/// let cache = Cache::builder()
///     .namespace("shop")
///     .redis_url("redis://127.0.0.1:6379")
///     .build()
///     .await?;
/// let opts = EntryOptions::new().ttl(Duration::from_secs(60));
/// cache.set("greeting", &"hello".to_string(), &opts).await?;
/// assert_eq!(cache.get::<String>("greeting").await?, Some("hello".into()));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Cache {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tiers = &self.inner.tiers;
        f.debug_struct("Cache")
            .field("namespace", &tiers.keys().namespace())
            .field("l1", &tiers.l1().is_some())
            .field("l2", &tiers.l2().is_some())
            .finish_non_exhaustive()
    }
}

/// What a cache is made of; every clone of a [`Cache`] shares it.
pub(crate) struct Inner {
    pub(crate) tiers: Arc<Tiers>,
    pub(crate) writes: Arc<Pipeline>,
    pub(crate) loads: Arc<Loads>,
    pub(crate) defaults: EntryOptions,
    pub(crate) policies: Policies,
}

/// L1 occupancy, for health pages and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L1Stats {
    /// Weighted bytes held.
    pub bytes: u64,
    /// Entries held.
    pub entries: u64,
}

impl Cache {
    pub(crate) fn from_inner(inner: Inner) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    pub(crate) fn tiers(&self) -> &Arc<Tiers> {
        &self.inner.tiers
    }

    pub(crate) fn writes(&self) -> &Arc<Pipeline> {
        &self.inner.writes
    }

    /// Start configuring a cache.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::new()
    }

    /// The namespace every key of this cache lives in.
    pub fn namespace(&self) -> &str {
        self.tiers().keys().namespace()
    }

    /// The options used when a call passes none.
    pub fn default_options(&self) -> &EntryOptions {
        &self.inner.defaults
    }

    /// The entry options of a named policy.
    pub fn policy(&self, name: &str) -> Result<&EntryOptions> {
        Ok(self.inner.policies.get(name)?.options())
    }

    /// Every registered policy.
    pub fn policies(&self) -> &Policies {
        &self.inner.policies
    }

    /// Whether this instance currently hears the invalidation backplane
    /// (`None` without L2): while it does not, its L1 serves only young
    /// entries as fresh, since it may miss invalidations.
    ///
    /// ```no_run
    /// # fn demo(cache: stratacache::Cache) {
    /// // A readiness probe: L1 is coherent with the other instances.
    /// let ready = cache.backplane_connected() != Some(false);
    /// # let _ = ready;
    /// # }
    /// ```
    pub fn backplane_connected(&self) -> Option<bool> {
        self.tiers().trust().connected()
    }

    /// Wait until this instance hears the invalidation backplane (its
    /// subscription to the other instances' invalidations is in place), at
    /// most `within`; whether it does (`true` without L2). From then on
    /// every write, delete or invalidation made on another instance reaches
    /// this one's L1.
    ///
    /// [`build`](CacheBuilder::build) already waits, briefly (see
    /// [`CacheBuilder::wait_for_backplane`]); this is for a cache built while
    /// Redis was unreachable, or built without waiting, and for health checks
    /// and tests.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), stratacache::Error> {
    /// use std::time::Duration;
    /// use stratacache::Cache;
    ///
    /// let cache = Cache::builder()
    ///     .redis_url("redis://127.0.0.1:6379")
    ///     .wait_for_backplane(Duration::ZERO) // start serving at once
    ///     .build()
    ///     .await?;
    /// // … later, before taking traffic that must see the other instances' writes:
    /// if !cache.wait_for_backplane(Duration::from_secs(2)).await {
    ///     eprintln!("not subscribed yet: L1 serves only young entries as fresh");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_backplane(&self, within: Duration) -> bool {
        self.tiers().trust().wait_connected(within).await
    }

    /// How many invalidations wait to be replayed once Redis answers again
    /// (writes, deletes, tag, prefix and namespace invalidations that could
    /// not reach it or the other instances).
    pub fn pending_recovery(&self) -> usize {
        self.writes().pending_recovery()
    }

    /// The Redis circuit breaker's state, or `None` without L2.
    pub fn breaker_state(&self) -> Option<BreakerState> {
        self.tiers().l2().map(|l2| l2.breaker_state())
    }

    /// L1 occupancy (after applying pending evictions), or `None` without L1.
    pub fn l1_stats(&self) -> Option<L1Stats> {
        self.tiers().l1().map(|l1| {
            l1.run_pending_tasks();
            L1Stats {
                bytes: l1.weighted_size(),
                entries: l1.entry_count(),
            }
        })
    }

    /// Check that Redis answers (for health endpoints). `Ok` without L2.
    /// Asks Redis even while the circuit breaker is open, so the error says
    /// why it does not answer (a refused password, a refused connection, a
    /// timeout) rather than only that the breaker is open.
    pub async fn ping_redis(&self) -> Result<()> {
        match self.tiers().l2() {
            Some(l2) => l2.ping().await.map_err(Error::from),
            None => Ok(()),
        }
    }

    /// Drop every L1 entry of this instance; Redis and the other instances
    /// are untouched. To invalidate the whole namespace everywhere, see
    /// [`invalidate_all`](Self::invalidate_all).
    ///
    /// ```no_run
    /// # fn demo(cache: stratacache::Cache) {
    /// cache.clear_l1(); // the next reads of this instance go to Redis
    /// # }
    /// ```
    pub fn clear_l1(&self) {
        self.writes().distrust_l1();
    }

    /// The fresh value under `key`, if any. A cached "absent" marker reads as `None`.
    ///
    /// Never fails because of Redis: an unreachable, slow or broken Redis is a miss.
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// use std::time::Duration;
    /// use stratacache::EntryOptions;
    ///
    /// let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    /// cache.set("greeting", &"hello".to_string(), &opts).await?;
    /// assert_eq!(cache.get::<String>("greeting").await?, Some("hello".to_string()));
    /// assert!(cache.exists("greeting").await?);
    /// cache.delete("greeting").await?;
    /// assert_eq!(cache.get::<String>("greeting").await?, None);
    /// # Ok(()) }
    /// ```
    pub async fn get<V: CacheValue>(&self, key: &str) -> Result<Option<V>> {
        let opts = &self.inner.defaults;
        self.get_with_options(key, opts).await
    }

    /// [`get`](Self::get) with per-call options (`skip_l1`, `skip_l2`, the
    /// policy label). It never loads: for a read that loads on a miss, see
    /// [`get_or_load`](Self::get_or_load).
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// use stratacache::EntryOptions;
    ///
    /// // Ask Redis, whatever this instance's L1 holds.
    /// let redis_only = EntryOptions::new().skip_l1(true);
    /// let name: Option<String> = cache.get_with_options("user:42:name", &redis_only).await?;
    /// # let _ = name;
    /// # Ok(()) }
    /// ```
    pub async fn get_with_options<V: CacheValue>(
        &self,
        key: &str,
        opts: &EntryOptions,
    ) -> Result<Option<V>> {
        opts.validate()?;
        // See `read::caller`: a loop of L1 hits must yield now and then.
        tokio::task::consume_budget().await;
        let tiers = self.tiers();
        let m = tiers.metrics().policy(opts.policy.as_ref());
        let started = m.start();
        // An L1 hit needs the key within the namespace only (no allocation).
        let inner_key = tiers.keys().inner_key(key)?;
        if let Some(found) = tiers.fresh_l1::<V>(&inner_key, opts, &m, tiers.clock().now_ms()) {
            m.record_get(started);
            return Ok(found);
        }
        let stored = tiers.keys().stored_from_inner(&inner_key);
        let redis_allowed = !opts.skip_l2 && !LoadScope::current().redis_failed();
        let mut found = None;
        if let Some(l2) = tiers.l2().filter(|_| redis_allowed) {
            let since = tiers.log().mark();
            let hit = match tiers.read_l2::<V>(l2, &stored, opts).await {
                Ok(L2Read::Found(known)) if fresh(&known.1, tiers.clock().now_ms()) => Some(known),
                _ => None,
            };
            crate::tiers::count_l2(&m, hit.as_ref().map(|(f, _, _)| f.is_some()));
            if let Some((value, meta, encoded_len)) = hit {
                tiers.fill_l1(&stored, &value, meta, encoded_len, opts, since);
                found = value;
            }
        }
        m.record_get(started);
        Ok(found)
    }

    /// Many keys at once: L1 first, then the rest from L2 in one round trip.
    /// The result is in the order of `keys`.
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// use std::time::Duration;
    /// use stratacache::EntryOptions;
    ///
    /// let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    /// cache.set_many(&[("price:A", 1.5), ("price:B", 2.25)], &opts).await?;
    /// let prices: Vec<Option<f64>> = cache.get_many(&["price:A", "price:B", "price:C"]).await?;
    /// assert_eq!(prices, vec![Some(1.5), Some(2.25), None]);
    /// # Ok(()) }
    /// ```
    pub async fn get_many<V: CacheValue>(&self, keys: &[&str]) -> Result<Vec<Option<V>>> {
        let opts = &self.inner.defaults;
        self.get_many_with_options(keys, opts).await
    }

    /// [`get_many`](Self::get_many) with per-call options. It never loads:
    /// for batched reads that load what is missing, see
    /// [`Resource::get_many`](crate::Resource::get_many).
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// let prices = cache.policy("stock_price")?;   // counted under policy="stock_price"
    /// let found: Vec<Option<f64>> =
    ///     cache.get_many_with_options(&["price:A", "price:B"], prices).await?;
    /// # let _ = found;
    /// # Ok(()) }
    /// ```
    pub async fn get_many_with_options<V: CacheValue>(
        &self,
        keys: &[&str],
        opts: &EntryOptions,
    ) -> Result<Vec<Option<V>>> {
        opts.validate()?;
        let tiers = self.tiers();
        let stored = keys
            .iter()
            .map(|k| tiers.keys().stored(k))
            .collect::<Result<Vec<_>>>()?;
        let m = tiers.metrics().policy(opts.policy.as_ref());
        let redis_allowed = !LoadScope::current().redis_failed();
        let found = tiers
            .lookup_many::<V>(&stored, opts, &m, redis_allowed)
            .await;
        Ok(found.into_iter().map(Option::flatten).collect())
    }

    /// Store `value` under `key` in both tiers.
    ///
    /// Fails only for a bad key, value (too large, unserializable) or
    /// options — then nothing is written. If Redis cannot be written, the
    /// value is still in L1, the failure is counted, and the older L2 copy is
    /// deleted — now, or when Redis answers again.
    pub async fn set<V: CacheValue>(
        &self,
        key: &str,
        value: &V,
        opts: &EntryOptions,
    ) -> Result<()> {
        opts.validate()?;
        let write = self.key_write(key, value.clone(), opts)?;
        self.writes().put(vec![write], opts).await;
        Ok(())
    }

    /// Store many entries: both tiers, one Redis round trip per hash slot.
    /// Nothing is written if any key or value is refused.
    pub async fn set_many<V: CacheValue>(
        &self,
        entries: &[(&str, V)],
        opts: &EntryOptions,
    ) -> Result<()> {
        opts.validate()?;
        let batch = entries
            .iter()
            .map(|(key, value)| self.key_write(key, value.clone(), opts))
            .collect::<Result<Vec<_>>>()?;
        self.writes().put(batch, opts).await;
        Ok(())
    }

    /// The write of `value` under `key`, ready for the pipeline.
    pub(crate) fn key_write<V: CacheValue>(
        &self,
        key: &str,
        value: V,
        opts: &EntryOptions,
    ) -> Result<KeyWrite<V>> {
        let tiers = self.tiers();
        let stored = tiers.keys().stored(key)?;
        let prepared = tiers.prepare(&stored, Some(&value), opts, &FillHints::default())?;
        Ok(KeyWrite {
            stored,
            value: Some(value),
            prepared,
        })
    }

    /// Remove `key` from both tiers. An error means Redis could not be told
    /// now: the key is gone from this instance's L1 in any case, and is
    /// deleted in Redis and on every instance when Redis answers again.
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.delete_many(&[key]).await
    }

    /// Remove many keys from both tiers (see [`delete`](Self::delete)).
    pub async fn delete_many(&self, keys: &[&str]) -> Result<()> {
        let stored = keys
            .iter()
            .map(|k| self.tiers().keys().stored(k))
            .collect::<Result<Vec<_>>>()?;
        self.writes().delete(&stored).await
    }

    /// Whether a fresh value (not an "absent" marker) is cached under `key`.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self
            .peek_meta(key)
            .await?
            .is_some_and(|(present, _)| present))
    }

    /// How long the entry under `key` stays fresh, or `None` if there is none.
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// use std::time::Duration;
    /// use stratacache::EntryOptions;
    ///
    /// let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    /// cache.set("session:7", &7u64, &opts).await?;
    /// let left = cache.ttl("session:7").await?.expect("just written");
    /// assert!(left <= Duration::from_secs(60));
    /// # Ok(()) }
    /// ```
    pub async fn ttl(&self, key: &str) -> Result<Option<Duration>> {
        let now = self.tiers().clock().now_ms();
        Ok(self
            .peek_meta(key)
            .await?
            .map(|(_, meta)| Duration::from_millis(meta.fresh_until_ms.saturating_sub(now))))
    }

    /// The metadata of a fresh entry (and whether it holds a value) without decoding it.
    async fn peek_meta(&self, key: &str) -> Result<Option<(bool, EntryMeta)>> {
        let tiers = self.tiers();
        let opts = &self.inner.defaults;
        let stored = tiers.keys().stored(key)?;
        let now = tiers.clock().now_ms();
        if let Some(hit) = tiers.l1_hit_stored(&stored, opts) {
            if hit.trusted && fresh(&hit.entry.meta, now) {
                return Ok(Some((hit.entry.value.is_some(), hit.entry.meta.clone())));
            }
        }
        let Some(l2) = tiers.l2() else {
            return Ok(None);
        };
        let Ok(Some(bytes)) = l2.get(&stored).await else {
            return Ok(None);
        };
        match envelope::decode_meta(&bytes) {
            Ok((meta, _, flags, _)) if fresh(&meta, now) => {
                if tiers.is_invalidated(&meta).await {
                    return Ok(None);
                }
                Ok(Some((!envelope::is_negative(flags), meta)))
            }
            Ok(_) | Err(DecodeError::NewerFormat(_)) => Ok(None),
            Err(DecodeError::Corrupt(why)) => {
                tiers.discard_damaged(&stored, &bytes, why);
                Ok(None)
            }
        }
    }
}
