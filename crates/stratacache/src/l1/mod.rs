//! L1: the in-process tier, on moka.
//!
//! L1 holds *decoded* values (`Arc<dyn Any>`), so a hit costs a hash lookup and
//! a clone, never a decode. It is bounded in bytes and in entries at once:
//! moka has one capacity, so each entry weighs at least `max_bytes / max_entries`
//! — the byte total then caps the entry count too, exactly. An entry's byte
//! weight is what it holds in memory: the decoded value as estimated from
//! its shape ([`footprint`]), the key, the metadata and moka's own
//! bookkeeping, so that the bound holds in resident memory, not only in
//! L1's count.

mod footprint;
mod sizing;

use std::any::Any;
use std::mem::size_of;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use moka::sync::Cache as Moka;
use serde::Serialize;

use crate::codec::envelope::EntryMeta;
use crate::metrics::CacheMetrics;
use crate::options::MAX_DURATION;
use footprint::block;

/// What moka spends per entry besides our key and value: its hash-map
/// bucket, the `Arc` of the key, the entry and its info block, the
/// access-order and timer-wheel nodes, its share of the bucket arrays and of
/// the frequency sketch, and the allocator's churn as entries are evicted
/// and replaced. Not computable from outside moka, so measured: an L1 of
/// `u64` values held at its 64 MiB bound grows resident memory by ≈ 690
/// bytes per entry, of which ≈ 240 are the parts counted here (the
/// `l1-memory` bench, BENCHMARKS.md).
const MOKA_PER_ENTRY: usize = 440;

/// L1 settings.
///
/// ```no_run
/// # async fn demo() -> Result<(), stratacache::Error> {
/// use stratacache::{Cache, L1Config};
///
/// let cache = Cache::builder()
///     .redis_url("redis://127.0.0.1:6379")
///     .l1(L1Config { max_bytes: 256 << 20, max_entries: 100_000 })
///     .build()
///     .await?;
/// # let _ = cache; Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L1Config {
    /// Upper bound of the memory L1 may hold, in bytes: each entry is
    /// charged the estimate of [`L1Config::entry_weight`] plus its tags and
    /// ETag.
    pub max_bytes: u64,
    /// Upper bound of the number of entries.
    pub max_entries: u64,
}

impl L1Config {
    /// The bytes L1 charges against [`max_bytes`](Self::max_bytes) for an
    /// entry holding `value` under a key of `key_len` bytes, without tags or
    /// ETag: an estimate of what it takes in memory, decoded value (walked
    /// through its `Serialize`, a sample of each large collection),
    /// allocator rounding and L1's per-entry bookkeeping included. For
    /// sizing `max_bytes`; the estimate assumes glibc's allocator and counts
    /// a sequence as a `Vec`, a map as a `HashMap`.
    pub fn entry_weight<V: Serialize>(key_len: usize, value: &V) -> u64 {
        weight(Some(value), &EntryMeta::default(), key_len) as u64
    }
}

/// Bytes held by an entry whose meta is `meta`, key `key_len` bytes long,
/// besides the value itself.
fn entry_bytes(meta: &EntryMeta, key_len: usize) -> usize {
    let tags = block(meta.tags.capacity() * size_of::<String>())
        + meta.tags.iter().map(|t| block(t.len())).sum::<usize>();
    let etag = meta.etag.as_ref().map_or(0, |e| block(e.len()));
    MOKA_PER_ENTRY
        + block(key_len)
        + block(footprint::ARC_COUNTS + size_of::<L1Entry>())
        + tags
        + etag
}

fn weight<V: Serialize>(value: Option<&V>, meta: &EntryMeta, key_len: usize) -> usize {
    entry_bytes(meta, key_len).saturating_add(value.map_or(0, footprint::value_bytes))
}

impl Default for L1Config {
    /// A sixteenth of the memory the process may use (its cgroup's limit,
    /// else the machine's), between 32 MiB and 1 GiB; up to a million
    /// entries.
    fn default() -> Self {
        Self {
            max_bytes: sizing::default_max_bytes(),
            max_entries: 1_000_000,
        }
    }
}

/// One L1 entry. `value` is `None` for a negative entry.
pub(crate) struct L1Entry {
    pub(crate) value: Option<Arc<dyn Any + Send + Sync>>,
    pub(crate) meta: EntryMeta,
    expires_at: Instant,
    weight: u32,
    encoded_len: u32,
    /// The invalidation log's position when the entry was last known valid
    /// (see `invalidation::stamps`).
    checked: AtomicU64,
}

impl L1Entry {
    /// `key_len` is the stored key's length, `encoded_len` the size of the
    /// entry's stored form. Takes the value typed, to weigh it.
    pub(crate) fn new<V: Serialize + Send + Sync + 'static>(
        value: Option<V>,
        meta: EntryMeta,
        lifetime: Duration,
        key_len: usize,
        encoded_len: usize,
    ) -> Self {
        let weight = weight(value.as_ref(), &meta, key_len).min(u32::MAX as usize) as u32;
        let now = Instant::now();
        Self {
            value: value.map(|v| Arc::new(v) as Arc<dyn Any + Send + Sync>),
            meta,
            expires_at: now
                .checked_add(lifetime.min(MAX_DURATION))
                .unwrap_or(now + MAX_DURATION),
            weight,
            encoded_len: encoded_len.min(u32::MAX as usize) as u32,
            checked: AtomicU64::new(0),
        }
    }

    /// The entry was known valid at log position `position`.
    pub(crate) fn checked_at(self, position: u64) -> Self {
        self.checked.store(position, Ordering::Release);
        self
    }

    /// The log position the entry was last known valid at.
    pub(crate) fn checked(&self) -> u64 {
        self.checked.load(Ordering::Acquire)
    }

    /// Still valid at log position `position`.
    pub(crate) fn recheck(&self, position: u64) {
        self.checked.fetch_max(position, Ordering::AcqRel);
    }

    /// The size of the entry's stored form.
    pub(crate) fn encoded_len(&self) -> usize {
        self.encoded_len as usize
    }
}

struct ExpireAtDeadline;

impl moka::Expiry<String, Arc<L1Entry>> for ExpireAtDeadline {
    fn expire_after_create(
        &self,
        _: &String,
        entry: &Arc<L1Entry>,
        now: Instant,
    ) -> Option<Duration> {
        Some(entry.expires_at.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _: &String,
        entry: &Arc<L1Entry>,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.expires_at.saturating_duration_since(now))
    }
}

/// The moka map is keyed by the key within the namespace (see
/// `KeySpace::inner_key`); methods taking a `stored` key strip the namespace
/// prefix and closing brace themselves.
pub(crate) struct L1 {
    entries: Moka<String, Arc<L1Entry>>,
    prefix_len: usize,
}

impl L1 {
    pub(crate) fn new(config: L1Config, prefix_len: usize, metrics: &CacheMetrics) -> Self {
        let min_weight =
            (config.max_bytes / config.max_entries.max(1)).clamp(1, u32::MAX as u64) as u32;
        let (evicted_size, evicted_expired) = (
            metrics.l1_evicted_size.clone(),
            metrics.l1_evicted_expired.clone(),
        );
        let entries = Moka::builder()
            .max_capacity(config.max_bytes)
            .weigher(move |_: &String, entry: &Arc<L1Entry>| entry.weight.max(min_weight))
            .expire_after(ExpireAtDeadline)
            .eviction_listener(move |_, _, cause| match cause {
                RemovalCause::Size => evicted_size.increment(1),
                RemovalCause::Expired => evicted_expired.increment(1),
                RemovalCause::Explicit | RemovalCause::Replaced => {}
            })
            .build();
        Self {
            entries,
            prefix_len,
        }
    }

    fn inner<'a>(&self, stored: &'a str) -> &'a str {
        &stored[self.prefix_len..stored.len() - 1]
    }

    /// Look up by the key within the namespace.
    pub(crate) fn get_inner(&self, inner_key: &str) -> Option<Arc<L1Entry>> {
        self.entries.get(inner_key)
    }

    /// Insert `entry`; returns it, to tell it apart from a later insert.
    pub(crate) fn insert(
        &self,
        mut stored_key: String,
        entry: L1Entry,
        metrics: &CacheMetrics,
    ) -> Arc<L1Entry> {
        stored_key.truncate(stored_key.len() - 1);
        stored_key.drain(..self.prefix_len);
        let entry = Arc::new(entry);
        self.entries.insert(stored_key, Arc::clone(&entry));
        metrics.l1_bytes.set(self.entries.weighted_size() as f64);
        metrics.l1_entries.set(self.entries.entry_count() as f64);
        entry
    }

    /// Remove the entry of `stored_key` unless it is `own` (a write's own
    /// entry survives; anything a racing read put there instead does not).
    pub(crate) fn remove_unless(&self, stored_key: &str, own: Option<&Arc<L1Entry>>) {
        self.entries
            .entry(self.inner(stored_key).to_owned())
            .and_compute_with(|current| match (current, own) {
                (Some(current), Some(own)) if Arc::ptr_eq(current.value(), own) => Op::Nop,
                (Some(_), _) => Op::Remove,
                (None, _) => Op::Nop,
            });
    }

    /// Insert an entry filled from a read that may have raced an
    /// invalidation of its key. `invalidated` is asked before inserting and
    /// again after; if the second answer is yes, this very entry is taken out
    /// again. An invalidation marks the log *before* it sweeps L1, so in every
    /// interleaving either its sweep or this re-check removes the stale copy.
    pub(crate) fn insert_fill(
        &self,
        stored_key: &str,
        entry: L1Entry,
        metrics: &CacheMetrics,
        invalidated: impl Fn() -> bool,
    ) {
        if invalidated() {
            return;
        }
        let inner = self.inner(stored_key).to_owned();
        let entry = Arc::new(entry);
        self.entries.insert(inner.clone(), Arc::clone(&entry));
        if invalidated() {
            self.entries
                .entry(inner)
                .and_compute_with(|current| match current {
                    Some(current) if Arc::ptr_eq(current.value(), &entry) => Op::Remove,
                    _ => Op::Nop,
                });
        }
        metrics.l1_bytes.set(self.entries.weighted_size() as f64);
        metrics.l1_entries.set(self.entries.entry_count() as f64);
    }

    /// Remove `entry` from under `inner_key`, unless another has replaced it.
    pub(crate) fn remove_if_same(&self, inner_key: &str, entry: &Arc<L1Entry>) {
        self.entries
            .entry(inner_key.to_owned())
            .and_compute_with(|current| match current {
                Some(current) if Arc::ptr_eq(current.value(), entry) => Op::Remove,
                _ => Op::Nop,
            });
    }

    pub(crate) fn remove(&self, stored_key: &str) {
        self.entries.invalidate(self.inner(stored_key));
    }

    /// Give back the memory of every entry. (Whether an entry is served is
    /// decided by the check on read, `invalidation::stamps`, not by this.)
    pub(crate) fn sweep_all(&self) {
        self.entries.invalidate_all();
    }

    /// Apply pending evictions now (moka does this lazily); for tests and stats.
    pub(crate) fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks();
    }

    pub(crate) fn weighted_size(&self) -> u64 {
        self.entries.weighted_size()
    }

    pub(crate) fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::metrics::Metrics;

    const PREFIX: &str = "ns:{";

    fn stored(i: usize) -> String {
        format!("{PREFIX}key:{i:08}}}")
    }

    fn l1(max_bytes: u64, max_entries: u64) -> (L1, Arc<CacheMetrics>) {
        let metrics = Metrics::new(false, "test").global;
        let config = L1Config {
            max_bytes,
            max_entries,
        };
        (L1::new(config, PREFIX.len(), &metrics), metrics)
    }

    fn entry<V: Serialize + Send + Sync + 'static>(value: Option<V>, key: &str) -> L1Entry {
        L1Entry::new(
            value,
            EntryMeta::default(),
            Duration::from_secs(60),
            key.len(),
            0,
        )
    }

    /// Five times what fits; returns (bytes, entries) L1 counts afterwards.
    fn overfill<V: Serialize + Send + Sync + 'static>(
        l1: &L1,
        metrics: &CacheMetrics,
        make: impl Fn(usize) -> V,
        max_bytes: u64,
    ) -> (u64, u64) {
        let per_entry = L1Config::entry_weight(stored(0).len(), &make(0));
        for i in 0..(5 * max_bytes / per_entry) as usize {
            let key = stored(i);
            l1.insert(key.clone(), entry(Some(make(i)), &key), metrics);
        }
        l1.run_pending_tasks();
        (l1.weighted_size(), l1.entry_count())
    }

    #[test]
    fn the_byte_bound_holds_in_l1s_count_for_every_shape() {
        const MAX: u64 = 2 * 1024 * 1024;
        fn check(name: &str, (bytes, entries): (u64, u64)) {
            assert!(bytes <= MAX, "{name}: {bytes} bytes held");
            assert!(bytes >= MAX / 2, "{name}: the bound is used: {bytes}");
            assert!(entries > 0, "{name}");
        }
        let (cache, m) = l1(MAX, u64::MAX / 2);
        check("u64", overfill(&cache, &m, |i| i as u64, MAX));
        let (cache, m) = l1(MAX, u64::MAX / 2);
        check(
            "string",
            overfill(&cache, &m, |i| format!("{i:0>10000}"), MAX),
        );
        let (cache, m) = l1(MAX, u64::MAX / 2);
        let rows = |i: usize| -> HashMap<String, Vec<u32>> {
            (0..20).map(|j| (format!("{i}:{j}"), vec![1; 10])).collect()
        };
        check("map", overfill(&cache, &m, rows, MAX));
    }

    #[test]
    fn the_entry_bound_holds_for_small_values() {
        let (cache, m) = l1(10 * 1024 * 1024, 100);
        let (bytes, entries) = overfill(&cache, &m, |i| i as u8, 100 * 1024);
        assert!(entries <= 100, "{entries} entries held");
        assert!(entries >= 50, "the bound is used: {entries} entries");
        assert!(bytes <= 10 * 1024 * 1024);
    }

    #[test]
    fn l1_charges_what_entry_weight_says() {
        let (cache, m) = l1(64 * 1024 * 1024, u64::MAX / 2);
        let value: Vec<String> = (0..100).map(|i| format!("row {i}")).collect();
        let key = stored(1);
        cache.insert(key.clone(), entry(Some(value.clone()), &key), &m);
        cache.run_pending_tasks();
        assert_eq!(
            cache.weighted_size(),
            L1Config::entry_weight(key.len(), &value)
        );
    }

    #[test]
    fn an_entry_weighs_its_value_key_and_metadata() {
        let key = stored(1);
        let weight_of = |e: &L1Entry| e.weight as usize;
        let small = weight_of(&entry(Some(1u64), &key));
        let large = weight_of(&entry(Some("x".repeat(10_000)), &key));
        assert_eq!(large - small, block(10_000) + block(40) - block(24));
        let negative = weight_of(&entry(None::<u64>, &key));
        assert_eq!(small - negative, block(ARC_COUNTS_U64));
        let long_key = weight_of(&entry(Some(1u64), &"k".repeat(100)));
        assert_eq!(long_key - small, block(100) - block(key.len()));
        let meta = EntryMeta {
            tags: vec!["product".into(), "shop:7".into()],
            etag: Some("\"v42\"".into()),
            ..EntryMeta::default()
        };
        let tagged = L1Entry::new(Some(1u64), meta, Duration::from_secs(1), key.len(), 0);
        assert_eq!(weight_of(&tagged) - small, block(48) + 3 * block(7));
    }

    const ARC_COUNTS_U64: usize = footprint::ARC_COUNTS + 8;
}
