//! The order of invalidations in this process, so that a value read from
//! Redis before an invalidation arrived is not put into L1 after it.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// A fixed hasher: runs replay exactly (the race simulation). Keys
    /// crafted to share a slot only make their fills skip L1.
    hasher: BuildHasherDefault<DefaultHasher>,
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
            hasher: BuildHasherDefault::default(),
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

    /// `inner_key` is written or deleted; returns the invalidation's
    /// position (a write asks [`unchanged_since`](Self::unchanged_since) it
    /// later to learn whether another write of the key overlapped it).
    pub(crate) fn key_invalidated(&self, inner_key: &str) -> u64 {
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        self.slot(inner_key).fetch_max(seq, Ordering::AcqRel);
        seq
    }

    /// A tag, prefix or namespace invalidation, or a loss of trust in L1;
    /// returns its position.
    pub(crate) fn broad_invalidation(&self) -> u64 {
        self.broad_invalidation_then(|_| ())
    }

    /// [`broad_invalidation`](Self::broad_invalidation), with `record` run
    /// at its position before a reader can see that position: a read that
    /// sees it finds what `record` wrote.
    pub(crate) fn broad_invalidation_then(&self, record: impl FnOnce(u64)) -> u64 {
        let seq = self.seq.fetch_add(1, Ordering::AcqRel) + 1;
        record(seq);
        self.broad.fetch_max(seq, Ordering::AcqRel);
        seq
    }

    /// The position of the last tag, prefix or namespace invalidation (or
    /// loss of trust in L1): an L1 entry checked at or after it needs no
    /// check against them.
    pub(crate) fn broad(&self) -> u64 {
        self.broad.load(Ordering::Acquire)
    }

    /// Whether `inner_key` itself was not written or deleted after `since`.
    /// (Broad invalidations do not count: an entry filled after one is
    /// checked against it when it is read; see `invalidation::stamps`.)
    pub(crate) fn unchanged_since(&self, inner_key: &str, since: u64) -> bool {
        self.last_write(inner_key) <= since
    }

    /// The position of the last write or delete of `inner_key` (or of a key
    /// sharing its slot).
    pub(crate) fn last_write(&self, inner_key: &str) -> u64 {
        self.slot(inner_key).load(Ordering::Acquire)
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
        let broad = log.broad_invalidation();
        assert!(
            log.unchanged_since("b", since),
            "a broad one is checked on read, not here"
        );
        assert!(log.broad() == broad && broad > since);
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
