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
