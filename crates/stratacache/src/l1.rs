//! L1: the in-process tier, on moka.
//!
//! L1 holds *decoded* values (`Arc<dyn Any>`), so a hit costs a hash lookup and
//! a clone, never a decode. It is bounded in bytes and in entries at once:
//! moka has one capacity, so each entry weighs at least `max_bytes / max_entries`
//! — the byte total then caps the entry count too, exactly. An entry's byte
//! weight is its stored key plus its encoded size plus a fixed overhead, an
//! honest proxy for the decoded value's footprint.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use moka::sync::Cache as Moka;

use crate::codec::envelope::EntryMeta;
use crate::metrics::CacheMetrics;

/// Bookkeeping bytes charged to every entry on top of key and value
/// (moka's node, the Arc, the metadata).
const ENTRY_OVERHEAD: usize = 160;

/// L1 settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L1Config {
    /// Upper bound of the bytes L1 may hold.
    pub max_bytes: u64,
    /// Upper bound of the number of entries.
    pub max_entries: u64,
}

impl Default for L1Config {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024 * 1024,
            max_entries: 100_000,
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
}

impl L1Entry {
    /// `encoded_len` is the size of the entry's stored form.
    pub(crate) fn new(
        value: Option<Arc<dyn Any + Send + Sync>>,
        meta: EntryMeta,
        lifetime: Duration,
        key_len: usize,
        encoded_len: usize,
    ) -> Self {
        let weight = (key_len + encoded_len + ENTRY_OVERHEAD).min(u32::MAX as usize) as u32;
        Self {
            value,
            meta,
            expires_at: Instant::now() + lifetime,
            weight,
            encoded_len: encoded_len.min(u32::MAX as usize) as u32,
        }
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
            .support_invalidation_closures()
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

    pub(crate) fn get(&self, stored_key: &str) -> Option<Arc<L1Entry>> {
        self.get_inner(self.inner(stored_key))
    }

    pub(crate) fn insert(&self, mut stored_key: String, entry: L1Entry, metrics: &CacheMetrics) {
        stored_key.truncate(stored_key.len() - 1);
        stored_key.drain(..self.prefix_len);
        self.entries.insert(stored_key, Arc::new(entry));
        metrics.l1_bytes.set(self.entries.weighted_size() as f64);
        metrics.l1_entries.set(self.entries.entry_count() as f64);
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

    pub(crate) fn remove(&self, stored_key: &str) {
        self.entries.invalidate(self.inner(stored_key));
    }

    /// Remove by the key within the namespace.
    pub(crate) fn remove_inner(&self, inner_key: &str) {
        self.entries.invalidate(inner_key);
    }

    /// Remove every entry for which `matches(inner key, entry)` holds.
    pub(crate) fn remove_if(
        &self,
        matches: impl Fn(&str, &L1Entry) -> bool + Send + Sync + 'static,
    ) {
        if self
            .entries
            .invalidate_entries_if(move |key, entry| matches(key, entry))
            .is_err()
        {
            self.entries.invalidate_all();
        }
    }

    /// Drop every entry (for example when invalidations may have been missed).
    pub(crate) fn clear(&self) {
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
