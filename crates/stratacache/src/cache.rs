//! The [`Cache`] handle and its key-value operations.
//!
//! A read walks the tiers one way — L1, then L2 — each step in its own
//! function; a write goes down the same tiers. Loading on a miss lives in
//! [`crate::load`], batch read-through in [`crate::resource`].

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::breaker::BreakerState;
use crate::builder::CacheBuilder;
use crate::clock::Clock;
use crate::coalesce::Flights;
use crate::codec::envelope::{self, DecodeError, EntryMeta};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::invalidate::backplane::Backplane;
use crate::invalidate::failover::{FailoverLog, Replay};
use crate::invalidate::message::Invalidation;
use crate::invalidate::recovery::Recovery;
use crate::invalidate::tags::{InvalidationLog, TagClock};
use crate::key::KeySpace;
use crate::l1::{L1Entry, L1};
use crate::l2::{L2Error, Write, L2};
use crate::lease::waiters::FillWaiters;
use crate::metrics::{Metrics, PolicyMetrics};
use crate::options::EntryOptions;
use crate::policy::Policies;

/// What a cached value must be: serializable for L2, cloneable for L1 and
/// for handing one load's result to many callers.
pub trait CacheValue: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<T> CacheValue for T where T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}

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
        f.debug_struct("Cache")
            .field("namespace", &self.inner.keys.namespace())
            .field("l1", &self.inner.l1.is_some())
            .field("l2", &self.inner.l2.is_some())
            .finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    /// A weak handle to itself, for background work spawned from `&self`.
    pub(crate) this: std::sync::Weak<Inner>,
    pub(crate) keys: KeySpace,
    /// The time of entries and invalidations.
    pub(crate) clock: Clock,
    pub(crate) l1: Option<L1>,
    pub(crate) l2: Option<Arc<L2>>,
    /// Wakes this instance's waiters when another instance fills a key.
    pub(crate) waiters: Option<Arc<FillWaiters>>,
    /// Carries invalidations between instances (with L2 only).
    pub(crate) backplane: Option<Backplane>,
    /// Tag and namespace invalidation timestamps.
    pub(crate) tags: TagClock,
    /// What was invalidated here recently, to keep racing reads out of L1.
    pub(crate) invalidations: InvalidationLog,
    /// Invalidations that could not reach Redis, replayed when it answers.
    pub(crate) recovery: Recovery,
    /// Recent invalidations, replayed on a new master after a failover.
    pub(crate) failover_log: FailoverLog,
    pub(crate) codec: Codec,
    pub(crate) compress_above: Option<usize>,
    pub(crate) max_value_bytes: usize,
    pub(crate) defaults: EntryOptions,
    pub(crate) policies: Policies,
    pub(crate) flights: Arc<Flights>,
    pub(crate) metrics: Metrics,
}

/// An entry found in a tier: a value, or the marker of an absent one.
pub(crate) type Found<V> = Option<V>;

/// What a load adds to an entry besides the options: the loader's choices
/// and how long the load took.
#[derive(Debug, Default)]
pub(crate) struct FillHints {
    pub(crate) ttl: Option<Duration>,
    pub(crate) tags: Option<Vec<String>>,
    pub(crate) etag: Option<String>,
    pub(crate) load_micros: u32,
    /// When the load began: the entry reflects the source as of then, so
    /// that is its creation time for tag and namespace invalidations.
    pub(crate) started_at_ms: Option<u64>,
}

/// An entry ready to be stored in both tiers.
pub(crate) struct Prepared {
    pub(crate) bytes: Vec<u8>,
    pub(crate) meta: EntryMeta,
    /// Redis TTL: until the end of the stale window.
    pub(crate) l2_ttl: Duration,
    pub(crate) l1_lifetime: Duration,
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
    /// Start configuring a cache.
    pub fn builder() -> CacheBuilder {
        CacheBuilder::new()
    }

    /// The namespace every key of this cache lives in.
    pub fn namespace(&self) -> &str {
        self.inner.keys.namespace()
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
    /// (`None` without L2).
    pub fn backplane_connected(&self) -> Option<bool> {
        self.inner.backplane.as_ref().map(|b| b.is_connected())
    }

    /// How many keys wait to be invalidated in Redis once it answers again
    /// (writes and deletes that failed while it was unreachable).
    pub fn pending_recovery(&self) -> usize {
        self.inner.recovery.pending()
    }

    /// The Redis circuit breaker's state, or `None` without L2.
    pub fn breaker_state(&self) -> Option<BreakerState> {
        self.inner.l2.as_ref().map(|l2| l2.breaker_state())
    }

    /// L1 occupancy (after applying pending evictions), or `None` without L1.
    pub fn l1_stats(&self) -> Option<L1Stats> {
        self.inner.l1.as_ref().map(|l1| {
            l1.run_pending_tasks();
            L1Stats {
                bytes: l1.weighted_size(),
                entries: l1.entry_count(),
            }
        })
    }

    /// Check that Redis answers (for health endpoints). `Ok` without L2.
    pub async fn ping_redis(&self) -> Result<()> {
        match &self.inner.l2 {
            Some(l2) => l2.ping().await.map_err(Error::from),
            None => Ok(()),
        }
    }

    /// Drop every L1 entry of this instance (L2 is untouched).
    pub fn clear_l1(&self) {
        if let Some(l1) = &self.inner.l1 {
            l1.clear();
        }
    }

    /// The fresh value under `key`, if any. A cached "absent" marker reads as `None`.
    ///
    /// Never fails because of Redis: an unreachable, slow or broken Redis is a miss.
    pub async fn get<V: CacheValue>(&self, key: &str) -> Result<Option<V>> {
        let opts = &self.inner.defaults;
        self.get_with(key, opts).await
    }

    /// [`get`](Self::get) with per-call options (`skip_l1`, `skip_l2`, the policy label).
    pub async fn get_with<V: CacheValue>(
        &self,
        key: &str,
        opts: &EntryOptions,
    ) -> Result<Option<V>> {
        // An L1 hit completes without waiting on anything: take a unit of
        // the task's cooperative budget, so a loop of hits yields now and
        // then instead of starving the runtime (Redis replies, timers, loads).
        tokio::task::consume_budget().await;
        let m = self.inner.metrics.policy(opts.policy.as_ref());
        let started = m.start();
        let inner_key = self.inner.keys.inner_key(key)?;
        let l1_entry = self.inner.l1_entry_inner(&inner_key, opts);
        if let Some(found) = self.inner.judge_l1::<V>(l1_entry, &m) {
            m.record_get(started);
            return Ok(found);
        }
        let stored = self.inner.keys.stored(key)?;
        let found = self.inner.lookup_l2_into_l1::<V>(&stored, opts, &m).await;
        m.record_get(started);
        Ok(found.flatten())
    }

    /// Many keys at once: L1 first, then the rest from L2 in one round trip.
    /// The result is in the order of `keys`.
    pub async fn get_many<V: CacheValue>(&self, keys: &[&str]) -> Result<Vec<Option<V>>> {
        let opts = &self.inner.defaults;
        self.get_many_with(keys, opts).await
    }

    /// [`get_many`](Self::get_many) with per-call options.
    pub async fn get_many_with<V: CacheValue>(
        &self,
        keys: &[&str],
        opts: &EntryOptions,
    ) -> Result<Vec<Option<V>>> {
        let stored = keys
            .iter()
            .map(|k| self.inner.keys.stored(k))
            .collect::<Result<Vec<_>>>()?;
        let m = self.inner.metrics.policy(opts.policy.as_ref());
        let found = self.inner.lookup_many::<V>(&stored, opts, &m).await;
        Ok(found.into_iter().map(Option::flatten).collect())
    }

    /// Store `value` under `key` in both tiers.
    ///
    /// Fails only for a bad key or value (too large, unserializable) — then
    /// nothing is written. If Redis cannot be written, the value is still in
    /// L1, the failure is counted, and any older L2 copy is deleted when possible.
    pub async fn set<V: CacheValue>(
        &self,
        key: &str,
        value: &V,
        opts: &EntryOptions,
    ) -> Result<()> {
        let stored = self.inner.keys.stored(key)?;
        let prepared = self
            .inner
            .prepare(&stored, Some(value), opts, &FillHints::default())?;
        self.inner
            .store(stored, Some(value.clone()), prepared, opts)
            .await;
        Ok(())
    }

    /// Store many entries: both tiers, one Redis round trip per hash slot.
    /// Nothing is written if any key or value is refused.
    pub async fn set_many<V: CacheValue>(
        &self,
        entries: &[(&str, V)],
        opts: &EntryOptions,
    ) -> Result<()> {
        let mut batch = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let stored = self.inner.keys.stored(key)?;
            let prepared = self
                .inner
                .prepare(&stored, Some(value), opts, &FillHints::default())?;
            batch.push((stored, Some(value.clone()), prepared));
        }
        self.inner.store_many(batch, opts).await;
        Ok(())
    }

    /// Remove `key` from both tiers. Returns an error if Redis could not be
    /// told (the key is gone from this instance's L1 in any case).
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.delete_many(&[key]).await
    }

    /// Remove many keys from both tiers.
    pub async fn delete_many(&self, keys: &[&str]) -> Result<()> {
        let stored = keys
            .iter()
            .map(|k| self.inner.keys.stored(k))
            .collect::<Result<Vec<_>>>()?;
        self.inner.remove(&stored).await
    }

    /// Whether a fresh value (not an "absent" marker) is cached under `key`.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        Ok(self
            .peek_meta(key)
            .await?
            .is_some_and(|(present, _)| present))
    }

    /// How long the entry under `key` stays fresh, or `None` if there is none.
    pub async fn ttl(&self, key: &str) -> Result<Option<Duration>> {
        let now = self.inner.clock.now_ms();
        Ok(self
            .peek_meta(key)
            .await?
            .map(|(_, meta)| Duration::from_millis(meta.fresh_until_ms.saturating_sub(now))))
    }

    /// The metadata of a fresh entry (and whether it holds a value) without decoding it.
    async fn peek_meta(&self, key: &str) -> Result<Option<(bool, EntryMeta)>> {
        let stored = self.inner.keys.stored(key)?;
        if let Some(entry) = self.inner.l1.as_ref().and_then(|l1| l1.get(&stored)) {
            if fresh(&entry.meta, self.inner.clock.now_ms()) {
                return Ok(Some((entry.value.is_some(), entry.meta.clone())));
            }
        }
        let Some(l2) = &self.inner.l2 else {
            return Ok(None);
        };
        let Ok(Some(bytes)) = l2.get(&stored).await else {
            return Ok(None);
        };
        match envelope::decode(&bytes, self.inner.max_value_bytes) {
            Ok(decoded) if fresh(&decoded.meta, self.inner.clock.now_ms()) => {
                if self.inner.is_invalidated(&decoded.meta).await {
                    return Ok(None);
                }
                Ok(Some((decoded.value.is_some(), decoded.meta)))
            }
            Ok(_) | Err(DecodeError::NewerFormat(_)) => Ok(None),
            Err(DecodeError::Corrupt(why)) => {
                self.inner.discard_corrupt(&stored, &bytes, why);
                Ok(None)
            }
        }
    }
}

/// Whether plain reads (`get`) may return the entry: fresh, and not a stale
/// value kept by fail-safe.
fn fresh(meta: &EntryMeta, now_ms: u64) -> bool {
    meta.is_fresh(now_ms) && !meta.fail_safe
}

/// The value of an L1 entry as `V`; `None` if it holds another type.
pub(crate) fn entry_value<V: CacheValue>(entry: &L1Entry) -> Option<Found<V>> {
    match &entry.value {
        None => Some(None),
        Some(value) => value.downcast_ref::<V>().map(|v| Some(v.clone())),
    }
}

impl Inner {
    /// L2 only; a hit is copied into L1.
    pub(crate) async fn lookup_l2_into_l1<V: CacheValue>(
        &self,
        stored: &str,
        opts: &EntryOptions,
        m: &PolicyMetrics,
    ) -> Option<Found<V>> {
        let since = self.invalidations.mark();
        let (found, meta, encoded_len) = self.lookup_l2::<V>(stored, opts, m).await?;
        if self.l1.is_some() && !opts.skip_l1 {
            self.fill_l1(stored, &found, meta, encoded_len, opts, since);
        }
        Some(found)
    }

    pub(crate) fn lookup_l1<V: CacheValue>(
        &self,
        stored: &str,
        opts: &EntryOptions,
        m: &PolicyMetrics,
    ) -> Option<Found<V>> {
        self.judge_l1(self.l1_entry(stored, opts), m)
    }

    /// A fresh L1 entry's value (counted as a hit), else a miss (counted).
    pub(crate) fn judge_l1<V: CacheValue>(
        &self,
        entry: Option<Arc<L1Entry>>,
        m: &PolicyMetrics,
    ) -> Option<Found<V>> {
        let hit = entry
            .filter(|entry| fresh(&entry.meta, self.clock.now_ms()))
            .and_then(|entry| entry_value::<V>(&entry));
        match &hit {
            Some(Some(_)) => m.l1_hits.increment(1),
            Some(None) => {
                m.l1_hits.increment(1);
                m.negative_hits.increment(1);
            }
            None => m.l1_misses.increment(1),
        }
        hit
    }

    async fn lookup_l2<V: CacheValue>(
        &self,
        stored: &str,
        opts: &EntryOptions,
        m: &PolicyMetrics,
    ) -> Option<(Found<V>, EntryMeta, usize)> {
        let l2 = self
            .l2
            .as_ref()
            .filter(|_| !opts.skip_l2 && !crate::load::redis_failed_in_this_load())?;
        let hit = self
            .read_l2::<V>(l2, stored)
            .await
            .filter(|(_, meta, _)| fresh(meta, self.clock.now_ms()));
        self.count_l2(hit.as_ref().map(|(found, _, _)| found.is_some()), m);
        hit
    }

    /// This instance's L1 entry for `stored`, whatever its freshness.
    pub(crate) fn l1_entry(&self, stored: &str, opts: &EntryOptions) -> Option<Arc<L1Entry>> {
        let entry = self.l1.as_ref().filter(|_| !opts.skip_l1)?.get(stored)?;
        self.trusted(entry)
    }

    /// While the backplane is down, only L1 entries whose load began
    /// recently are served: a load that began before a write this instance
    /// did not hear of may have read the old value, however late it lands.
    fn trusted(&self, entry: Arc<L1Entry>) -> Option<Arc<L1Entry>> {
        match &self.backplane {
            Some(b) if !b.trusts(entry.meta.created_at_ms, self.clock.now_ms()) => None,
            _ => Some(entry),
        }
    }

    /// [`l1_entry`](Self::l1_entry) by the key within the namespace (no
    /// allocation), under the same trust rule.
    pub(crate) fn l1_entry_inner(
        &self,
        inner_key: &str,
        opts: &EntryOptions,
    ) -> Option<Arc<L1Entry>> {
        let entry = self
            .l1
            .as_ref()
            .filter(|_| !opts.skip_l1)?
            .get_inner(inner_key)?;
        self.trusted(entry)
    }

    /// The L2 entry for `stored` if it is still usable (fresh or stale), with
    /// its stored size. Unreachable Redis, corrupt bytes: `None`.
    pub(crate) async fn read_l2<V: CacheValue>(
        &self,
        l2: &L2,
        stored: &str,
    ) -> Option<(Found<V>, EntryMeta, usize)> {
        self.try_read_l2::<V>(l2, stored).await.ok().flatten()
    }

    /// [`read_l2`](Self::read_l2), telling a miss (`Ok(None)`) from a Redis
    /// that failed to answer.
    pub(crate) async fn try_read_l2<V: CacheValue>(
        &self,
        l2: &L2,
        stored: &str,
    ) -> Result<Option<(Found<V>, EntryMeta, usize)>, L2Error> {
        let Some(bytes) = l2.get(stored).await? else {
            return Ok(None);
        };
        Ok(self.decode_valid::<V>(stored, &bytes).await)
    }

    /// Decode an L2 entry that is neither expired nor invalidated by a tag
    /// or `clear`, with its stored size.
    pub(crate) async fn decode_valid<V: CacheValue>(
        &self,
        stored: &str,
        bytes: &[u8],
    ) -> Option<(Found<V>, EntryMeta, usize)> {
        let (found, meta) = self.decode_usable::<V>(stored, bytes)?;
        if self.is_invalidated(&meta).await {
            return None;
        }
        Some((found, meta, bytes.len()))
    }

    /// Batch form of [`lookup`](Self::lookup), in the order of `stored`.
    pub(crate) async fn lookup_many<V: CacheValue>(
        &self,
        stored: &[String],
        opts: &EntryOptions,
        m: &PolicyMetrics,
    ) -> Vec<Option<Found<V>>> {
        let mut found: Vec<Option<Found<V>>> = stored
            .iter()
            .map(|k| self.lookup_l1::<V>(k, opts, m))
            .collect();
        let missing: Vec<usize> = (0..stored.len()).filter(|&i| found[i].is_none()).collect();
        let Some(l2) = self.l2.as_ref().filter(|_| {
            !opts.skip_l2 && !missing.is_empty() && !crate::load::redis_failed_in_this_load()
        }) else {
            return found;
        };
        let keys: Vec<String> = missing.iter().map(|&i| stored[i].clone()).collect();
        let since = self.invalidations.mark();
        let Ok(values) = l2.get_many(&keys).await else {
            for _ in &missing {
                m.l2_misses.increment(1);
            }
            return found;
        };
        for (&i, bytes) in missing.iter().zip(values) {
            let hit = match bytes {
                Some(b) => self
                    .decode_valid::<V>(&stored[i], &b)
                    .await
                    .filter(|(_, meta, _)| fresh(meta, self.clock.now_ms())),
                None => None,
            };
            self.count_l2(hit.as_ref().map(|(f, _, _)| f.is_some()), m);
            if let Some((value, meta, encoded_len)) = hit {
                self.fill_l1(&stored[i], &value, meta, encoded_len, opts, since);
                found[i] = Some(value);
            }
        }
        found
    }

    fn count_l2(&self, hit: Option<bool>, m: &PolicyMetrics) {
        match hit {
            Some(present) => {
                m.l2_hits.increment(1);
                if !present {
                    m.negative_hits.increment(1);
                }
            }
            None => m.l2_misses.increment(1),
        }
    }

    /// Decode stored bytes; expired entries are misses, corrupt ones are deleted.
    pub(crate) fn decode_usable<V: CacheValue>(
        &self,
        stored: &str,
        bytes: &[u8],
    ) -> Option<(Found<V>, EntryMeta)> {
        let decoded = match envelope::decode(bytes, self.max_value_bytes) {
            Ok(decoded) => decoded,
            Err(DecodeError::NewerFormat(version)) => {
                tracing::debug!(
                    key = stored,
                    version,
                    "entry written by a newer format; treated as a miss"
                );
                return None;
            }
            Err(DecodeError::Corrupt(why)) => {
                self.discard_corrupt(stored, bytes, why);
                return None;
            }
        };
        if !decoded.meta.is_usable(self.clock.now_ms()) {
            return None;
        }
        let value = match decoded.value {
            None => None,
            Some((codec, payload)) => match codec.decode::<V>(&payload) {
                Ok(v) => Some(v),
                Err(why) => {
                    // Typically a deploy changed the value's type.
                    tracing::warn!(key = stored, error = %why, "undecodable cache entry deleted");
                    self.discard_corrupt(
                        stored,
                        bytes,
                        "payload does not decode as the requested type",
                    );
                    return None;
                }
            },
        };
        Some((value, decoded.meta))
    }

    /// Count and delete an entry that cannot be read. The delete runs in the
    /// background and only if the entry still holds these bytes, so it cannot
    /// remove a good value a concurrent load has written meanwhile.
    pub(crate) fn discard_corrupt(&self, stored: &str, bytes: &[u8], why: &str) {
        self.metrics.global.corrupt_entries.increment(1);
        tracing::warn!(key = stored, reason = why, "corrupt cache entry deleted");
        if let Some(l1) = &self.l1 {
            l1.remove(stored);
        }
        let (Some(inner), Ok(runtime)) =
            (self.this.upgrade(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        if inner.l2.is_none() {
            return;
        }
        let (key, bytes) = (stored.to_owned(), bytes.to_vec());
        runtime.spawn(async move {
            if let Some(l2) = &inner.l2 {
                let _ = l2.delete_if_unchanged(&key, &bytes).await;
            }
        });
    }

    /// Build the stored form of an entry. `value: None` is an absent marker.
    pub(crate) fn prepare<V: CacheValue>(
        &self,
        stored: &str,
        value: Option<&V>,
        opts: &EntryOptions,
        hints: &FillHints,
    ) -> Result<Prepared> {
        let payload = value.map(|v| self.codec.encode(v)).transpose()?;
        let base_ttl = match (hints.ttl, value) {
            (Some(ttl), _) => ttl,
            (None, Some(_)) => opts.ttl,
            (None, None) => opts.negative_ttl,
        };
        let ttl = opts.jittered_ttl(base_ttl);
        let stale_for = if value.is_some() {
            opts.stale_for
        } else {
            Duration::ZERO
        };
        let now = self.clock.now_ms();
        let fresh_until_ms = now + ttl.as_millis() as u64;
        let meta = EntryMeta {
            created_at_ms: hints.started_at_ms.unwrap_or(now).min(now),
            fresh_until_ms,
            stale_until_ms: fresh_until_ms + stale_for.as_millis() as u64,
            load_micros: hints.load_micros,
            tags: hints.tags.clone().unwrap_or_else(|| opts.tags.clone()),
            etag: hints.etag.clone(),
            fail_safe: false,
        };
        // The bound is on the encoded value, before compression, so that the
        // same bound can cap decompression when reading.
        let encoded_len = payload.as_ref().map_or(0, Vec::len);
        if encoded_len > self.max_value_bytes {
            self.metrics.global.oversized_values.increment(1);
            return Err(Error::ValueTooLarge {
                key: stored.chars().take(64).collect(),
                size: encoded_len,
                max: self.max_value_bytes,
            });
        }
        let bytes = envelope::encode(
            &meta,
            payload.as_deref().map(|p| (self.codec, p)),
            self.compress_above,
        );
        let l1_lifetime = opts.l1_ttl.map_or(ttl, |l1| l1.min(ttl)) + stale_for;
        Ok(Prepared {
            bytes,
            meta,
            l2_ttl: ttl + stale_for,
            l1_lifetime,
        })
    }

    /// Put a prepared entry in both tiers (as the options allow).
    pub(crate) async fn store<V: CacheValue>(
        &self,
        stored: String,
        value: Found<V>,
        prepared: Prepared,
        opts: &EntryOptions,
    ) -> bool {
        self.store_many(vec![(stored, value, prepared)], opts).await
    }

    /// Put prepared entries in both tiers; returns whether L2 took them.
    /// If L2 refused, the keys are also deleted from L2 (best effort), so an
    /// older copy there cannot outlive this write.
    pub(crate) async fn store_many<V: CacheValue>(
        &self,
        batch: Vec<(String, Found<V>, Prepared)>,
        opts: &EntryOptions,
    ) -> bool {
        let mut writes = Vec::with_capacity(batch.len());
        for (stored, value, prepared) in batch {
            // Before L1 changes, so loads of the older value that are in
            // flight here cannot put it back (see `L1::insert_fill`).
            self.invalidations
                .key_invalidated(self.keys.inner_of(&stored));
            if let Some(l1) = self.l1.as_ref().filter(|_| !opts.skip_l1) {
                let entry = L1Entry::new(
                    value,
                    prepared.meta,
                    prepared.l1_lifetime,
                    stored.len(),
                    prepared.bytes.len(),
                );
                l1.insert(stored.clone(), entry, &self.metrics.global);
            }
            writes.push(Write {
                key: stored,
                bytes: prepared.bytes,
                ttl_ms: prepared.l2_ttl.as_millis() as u64,
            });
        }
        let Some(l2) = self.l2.as_ref().filter(|_| !opts.skip_l2) else {
            return true;
        };
        let result = match writes.as_slice() {
            [one] => l2.set(one).await,
            _ => l2.set_many(&writes).await,
        };
        let keys: Vec<String> = writes.into_iter().map(|w| w.key).collect();
        self.announce_written(&keys).await;
        if let Err(err) = result {
            tracing::warn!(error = ?err, keys = keys.len(), "redis write failed; value kept in L1 only, key invalidated when redis is back");
            if l2.delete(&keys).await.is_err() {
                self.recovery.defer(&keys);
            }
            return false;
        }
        true
    }

    /// Keys were written or deleted: loads of them that began before must
    /// not be joined here, and the other instances drop them from L1.
    pub(crate) async fn announce_written(&self, stored: &[String]) {
        for key in stored {
            self.flights.forget(key);
        }
        self.failover_log
            .note(stored.iter().map(|k| Replay::Key(k.clone())));
        let keys = stored
            .iter()
            .map(|k| self.keys.inner_of(k).to_string())
            .collect();
        if !self.publish(Invalidation::Keys { keys }).await {
            self.recovery.defer(stored);
        }
    }

    /// Fill L1 from an L2 hit, for at most the entry's remaining lifetime,
    /// unless the key was invalidated here after `since`
    /// ([`InvalidationLog::mark`]).
    pub(crate) fn fill_l1<V: CacheValue>(
        &self,
        stored: &str,
        value: &Found<V>,
        meta: EntryMeta,
        encoded_len: usize,
        opts: &EntryOptions,
        since: u64,
    ) {
        let Some(l1) = self.l1.as_ref().filter(|_| !opts.skip_l1) else {
            return;
        };
        let now = self.clock.now_ms();
        let remaining = Duration::from_millis(meta.stale_until_ms.saturating_sub(now));
        let lifetime = opts
            .l1_ttl
            .map_or(remaining, |l1_ttl| l1_ttl.min(remaining));
        let entry = L1Entry::new(value.clone(), meta, lifetime, stored.len(), encoded_len);
        // A value read before an invalidation of its key was applied here
        // must not outlive it: that invalidation has already swept L1.
        let inner_key = self.keys.inner_of(stored);
        l1.insert_fill(stored, entry, &self.metrics.global, || {
            !self.invalidations.unchanged_since(inner_key, since)
        });
    }

    /// Remove stored keys from L1, then from L2, then from L1 again.
    pub(crate) async fn remove(&self, stored: &[String]) -> Result<()> {
        for key in stored {
            self.remove_from_l1(key);
        }
        let Some(l2) = &self.l2 else { return Ok(()) };
        let deleted = l2.delete(stored).await.map_err(Error::from);
        // Until the UNLINK has run, Redis still holds the old value: a read
        // here that missed L1 after the sweep above, and whose GET reached
        // Redis before the UNLINK, got it with a mark taken after that sweep,
        // so its L1 fill was not refused — and no backplane message comes
        // back to this instance to drop it. Sweeping (and marking) again now
        // that Redis has no old copy removes such a fill or refuses it; a
        // read marked after this reads Redis after the UNLINK.
        for key in stored {
            self.remove_from_l1(key);
        }
        if deleted.is_err() {
            self.recovery.defer(stored);
        }
        self.announce_written(stored).await;
        deleted
    }

    /// Mark the key invalidated, then drop it from L1 (in that order; see
    /// [`L1::insert_fill`]).
    pub(crate) fn remove_from_l1(&self, stored: &str) {
        self.invalidations
            .key_invalidated(self.keys.inner_of(stored));
        if let Some(l1) = &self.l1 {
            l1.remove(stored);
        }
    }
}
