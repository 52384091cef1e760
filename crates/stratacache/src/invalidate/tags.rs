//! When each tag, and the whole namespace, was last invalidated.
//!
//! `invalidate_tag` writes one timestamp to Redis (`{ns}:__tag:{tag}`) and
//! broadcasts it; an entry is invalid when it was created at or before the
//! timestamp of any of its tags, or of the namespace (`clear`). This is
//! checked lazily when an entry is read from L2. The alternative — a Redis
//! set per tag listing its keys — costs memory per (tag, key), crosses hash
//! slots on a Cluster, and makes invalidation O(keys); this is O(1).
//! Timestamps are kept in process (bounded, with a TTL as a safety net) and
//! updated by backplane messages; unknown ones are fetched in one MGET.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::codec::envelope::EntryMeta;

pub(crate) struct TagClock {
    by_tag: moka::sync::Cache<String, u64>,
    cleared_at_ms: AtomicU64,
}

impl TagClock {
    pub(crate) fn new() -> Self {
        Self {
            by_tag: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(30))
                .build(),
            cleared_at_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn cleared_at(&self) -> u64 {
        self.cleared_at_ms.load(Ordering::Acquire)
    }

    pub(crate) fn set_cleared_at(&self, at_ms: u64) {
        self.cleared_at_ms.fetch_max(at_ms, Ordering::AcqRel);
    }

    pub(crate) fn set_tag(&self, tag: &str, at_ms: u64) {
        let current = self.by_tag.get(tag).unwrap_or(0);
        self.by_tag.insert(tag.to_string(), current.max(at_ms));
    }

    pub(crate) fn forget_tags(&self) {
        self.by_tag.invalidate_all();
    }

    /// Tags of `meta` whose timestamp is not known here.
    pub(crate) fn unknown<'m>(&self, meta: &'m EntryMeta) -> Vec<&'m str> {
        meta.tags
            .iter()
            .filter(|t| !self.by_tag.contains_key(t.as_str()))
            .map(String::as_str)
            .collect()
    }

    /// Whether an entry is invalid given the known timestamps.
    pub(crate) fn invalidates(&self, meta: &EntryMeta) -> bool {
        meta.created_at_ms <= self.cleared_at()
            || meta.tags.iter().any(|t| {
                self.by_tag
                    .get(t.as_str())
                    .is_some_and(|at| meta.created_at_ms <= at)
            })
    }
}

/// A sequence of the invalidations applied in this process, so that a value
/// read from Redis *before* an invalidation arrived is not put into L1 *after*
/// it (the invalidation already swept L1 and would not come again).
pub(crate) struct InvalidationLog {
    seq: AtomicU64,
    /// Sequence number of the last tag, prefix or namespace invalidation.
    broad: AtomicU64,
    /// Keys (within the namespace) invalidated recently, with their sequence number.
    keys: moka::sync::Cache<String, u64>,
}

impl InvalidationLog {
    pub(crate) fn new() -> Self {
        Self {
            seq: AtomicU64::new(0),
            broad: AtomicU64::new(0),
            keys: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(30))
                .build(),
        }
    }

    /// The current position; take it before reading Redis.
    pub(crate) fn mark(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    pub(crate) fn key_invalidated(&self, inner_key: &str) {
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        self.keys.insert(inner_key.to_string(), seq);
    }

    pub(crate) fn broad_invalidation(&self) {
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        self.broad.fetch_max(seq, Ordering::AcqRel);
    }

    /// Whether nothing affecting `inner_key` was invalidated after `since`.
    pub(crate) fn unchanged_since(&self, inner_key: &str, since: u64) -> bool {
        self.broad.load(Ordering::Acquire) <= since
            && self.keys.get(inner_key).is_none_or(|seq| seq <= since)
    }
}
