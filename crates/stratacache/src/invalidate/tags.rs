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

use std::hash::{BuildHasher, RandomState};
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
///
/// Keys are not stored: each key hashes to one of [`LOG_SLOTS`] slots that
/// keeps the sequence number of the newest invalidation of any key in it.
/// Two keys sharing a slot can only make a fill look invalidated when it was
/// not — that fill then skips L1, which costs a later read, never freshness —
/// and the log takes a fixed 512 KiB, allocates nothing per write and forgets
/// nothing however long a read takes. (A map of recent keys held up to
/// 100,000 strings, about 40 MB, and forgot them after 30 s.)
pub(crate) struct InvalidationLog {
    seq: AtomicU64,
    /// Sequence number of the last tag, prefix or namespace invalidation.
    broad: AtomicU64,
    /// Per slot, the sequence number of the newest key invalidation in it.
    slots: Box<[AtomicU64]>,
    hasher: RandomState,
}

/// Slots of the [`InvalidationLog`]: with thousands of invalidations a
/// second and reads lasting milliseconds, a read shares a slot with another
/// key's invalidation about once in ten thousand.
const LOG_SLOTS: usize = 1 << 16;

impl InvalidationLog {
    pub(crate) fn new() -> Self {
        Self {
            seq: AtomicU64::new(0),
            broad: AtomicU64::new(0),
            slots: (0..LOG_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: RandomState::new(),
        }
    }

    fn slot(&self, inner_key: &str) -> &AtomicU64 {
        let hash = self.hasher.hash_one(inner_key);
        &self.slots[(hash as usize) & (LOG_SLOTS - 1)]
    }

    /// The current position; take it before reading Redis.
    pub(crate) fn mark(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    pub(crate) fn key_invalidated(&self, inner_key: &str) {
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        self.slot(inner_key).fetch_max(seq, Ordering::AcqRel);
    }

    pub(crate) fn broad_invalidation(&self) {
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        self.broad.fetch_max(seq, Ordering::AcqRel);
    }

    /// Whether nothing affecting `inner_key` was invalidated after `since`.
    pub(crate) fn unchanged_since(&self, inner_key: &str, since: u64) -> bool {
        self.broad.load(Ordering::Acquire) <= since
            && self.slot(inner_key).load(Ordering::Acquire) <= since
    }
}

#[cfg(test)]
mod log_tests {
    use super::InvalidationLog;

    #[test]
    fn a_read_sees_invalidations_after_its_mark_and_only_those() {
        let log = InvalidationLog::new();
        log.key_invalidated("a");
        let since = log.mark();
        assert!(log.unchanged_since("a", since), "before the mark");
        assert!(log.unchanged_since("b", since));
        log.key_invalidated("a");
        assert!(!log.unchanged_since("a", since), "after the mark");
        log.broad_invalidation();
        assert!(
            !log.unchanged_since("b", since),
            "a broad one covers every key"
        );
        assert!(log.unchanged_since("b", log.mark()));
    }

    #[test]
    fn distinct_keys_rarely_share_a_slot() {
        let log = InvalidationLog::new();
        let since = log.mark();
        for i in 0..1_000 {
            log.key_invalidated(&format!("written:{i}"));
        }
        let unaffected = (0..10_000)
            .filter(|i| log.unchanged_since(&format!("read:{i}"), since))
            .count();
        // 1,000 of 65,536 slots taken: about 1.5 % of other keys collide.
        assert!(unaffected > 9_500, "{unaffected}");
    }
}
