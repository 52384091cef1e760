//! What was invalidated broadly — tags, prefixes, the whole namespace — and
//! since when L1 may be trusted: the state every entry is checked against.
//!
//! Tag and namespace invalidations are *stamps* (see `clock`): an entry is
//! invalid when it was created at or before the stamp of one of its tags, or
//! of the namespace. This is checked lazily — when an entry is read from L2,
//! and when an L1 entry is served after any broad invalidation since it was
//! last checked ([`Stamps::l1_entry_valid`]) — so an invalidation costs O(1)
//! however many entries it hides. Prefix invalidations delete their entries
//! from Redis; L1 entries are checked against the recent ones by position in
//! the [`InvalidationLog`](super::log::InvalidationLog).
//!
//! L1 is not swept: an entry is dropped when a read finds it invalid, else
//! it ages out or is evicted. (moka's lazy `invalidate_entries_if` was used
//! before; it can miss an entry inserted moments before the predicate — its
//! write still pending in moka's queue — which the race simulation found, and
//! it depends on when moka's housekeeping runs, which a replay cannot fix.)

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::codec::envelope::EntryMeta;
use crate::keys::KeySpace;

/// Tags whose stamps are kept in process; the least recently used ones
/// beyond this are forgotten (and entries that might predate them distrusted).
const MAX_TAGS: u64 = 100_000;
/// Prefix invalidations kept for L1 checks; L1 entries last checked before
/// the oldest one kept are distrusted.
const MAX_PREFIXES: usize = 1_024;

pub(crate) struct Stamps {
    /// Tag → (stamp of its latest invalidation known here, the generation
    /// it was last confirmed in).
    by_tag: moka::sync::Cache<String, (u64, u64)>,
    /// Bumped when invalidations may have been missed: stamps of older
    /// generations are fetched from Redis again (and kept if newer).
    generation: AtomicU64,
    /// The newest stamp among the tags forgotten to stay within [`MAX_TAGS`].
    tags_forgotten_up_to: Arc<AtomicU64>,
    cleared_at: AtomicU64,
    /// L1 entries created before this are not trusted: invalidations may
    /// have been missed before it (a (re)subscription of the backplane).
    l1_trusted_from: AtomicU64,
    /// Recent prefix invalidations: (log position, prefix).
    prefixes: Mutex<VecDeque<(u64, String)>>,
    /// The log position of the newest prefix invalidation no longer kept.
    prefixes_forgotten_at: AtomicU64,
}

impl Stamps {
    pub(crate) fn new() -> Self {
        let forgotten = Arc::new(AtomicU64::new(0));
        let listener = Arc::clone(&forgotten);
        Self {
            by_tag: moka::sync::Cache::builder()
                .max_capacity(MAX_TAGS)
                .eviction_listener(move |_, (stamp, _): (u64, u64), _| {
                    listener.fetch_max(stamp, Ordering::AcqRel);
                })
                .build(),
            generation: AtomicU64::new(0),
            tags_forgotten_up_to: forgotten,
            cleared_at: AtomicU64::new(0),
            l1_trusted_from: AtomicU64::new(0),
            prefixes: Mutex::default(),
            prefixes_forgotten_at: AtomicU64::new(0),
        }
    }

    pub(crate) fn cleared_at(&self) -> u64 {
        self.cleared_at.load(Ordering::Acquire)
    }

    pub(crate) fn set_cleared_at(&self, at: u64) {
        self.cleared_at.fetch_max(at, Ordering::AcqRel);
    }

    /// An invalidation of `tag` made here or heard from another instance.
    /// It tells of one invalidation, not of the newest one Redis knows: it
    /// does not confirm the tag's stamp (see [`fetched_tag`](Self::fetched_tag)).
    pub(crate) fn set_tag(&self, tag: &str, at: u64) {
        self.merge_tag(tag, at, None);
    }

    /// `tag`'s stamp as read from Redis: the newest any instance wrote.
    pub(crate) fn fetched_tag(&self, tag: &str, at: u64) {
        self.merge_tag(tag, at, Some(self.generation.load(Ordering::Acquire)));
    }

    fn merge_tag(&self, tag: &str, at: u64, confirmed_in: Option<u64>) {
        self.by_tag
            .entry(tag.to_string())
            .and_upsert_with(|current| {
                let (known, confirmed) = current.map_or((0, 0), |c| c.into_value());
                (known.max(at), confirmed_in.unwrap_or(confirmed))
            });
    }

    /// Invalidations may have been missed: every tag's stamp is fetched again
    /// from Redis when an L2 entry needs it — and kept where what is known
    /// here is newer (an invalidation of this instance not yet replayed to
    /// Redis, say).
    pub(crate) fn refetch_tags(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn tag(&self, tag: &str) -> Option<u64> {
        self.by_tag.get(tag).map(|(stamp, _)| stamp)
    }

    /// From now on, L1 entries created before `stamp` are not trusted.
    pub(crate) fn distrust_l1_before(&self, stamp: u64) {
        self.l1_trusted_from.fetch_max(stamp, Ordering::AcqRel);
    }

    pub(crate) fn record_prefix(&self, position: u64, prefix: &str) {
        let mut prefixes = self.prefixes.lock().expect("prefixes lock");
        prefixes.push_back((position, prefix.to_string()));
        while prefixes.len() > MAX_PREFIXES {
            if let Some((dropped, _)) = prefixes.pop_front() {
                self.prefixes_forgotten_at
                    .fetch_max(dropped, Ordering::AcqRel);
            }
        }
    }

    /// Tags of `meta` whose stamp is not known here, or not since
    /// invalidations may have been missed.
    pub(crate) fn unknown_tags<'m>(&self, meta: &'m EntryMeta) -> Vec<&'m str> {
        let generation = self.generation.load(Ordering::Acquire);
        meta.tags
            .iter()
            .filter(|t| {
                self.by_tag
                    .get(t.as_str())
                    .is_none_or(|(_, confirmed)| confirmed < generation)
            })
            .map(String::as_str)
            .collect()
    }

    /// Whether a tag or namespace invalidation hides an entry, given the
    /// stamps known here (for L2 entries, after fetching unknown tags).
    pub(crate) fn hides(&self, meta: &EntryMeta) -> bool {
        meta.created_at_us <= self.cleared_at()
            || meta
                .tags
                .iter()
                .any(|t| self.tag(t).is_some_and(|at| meta.created_at_us <= at))
    }

    /// Whether an L1 entry of `inner_key` last checked at log position
    /// `checked` is still valid: not hidden by a tag or namespace
    /// invalidation, not covered by a prefix invalidation since, and created
    /// after the last loss of trust in L1.
    pub(crate) fn l1_entry_valid(&self, inner_key: &str, meta: &EntryMeta, checked: u64) -> bool {
        let created = meta.created_at_us;
        if created <= self.cleared_at() || created < self.l1_trusted_from.load(Ordering::Acquire) {
            return false;
        }
        let forgotten = self.tags_forgotten_up_to.load(Ordering::Acquire);
        for tag in &meta.tags {
            match self.tag(tag) {
                Some(at) if created <= at => return false,
                None if created <= forgotten => return false,
                _ => {}
            }
        }
        if checked < self.prefixes_forgotten_at.load(Ordering::Acquire) {
            return false;
        }
        let prefixes = self.prefixes.lock().expect("prefixes lock");
        !prefixes
            .iter()
            .rev()
            .take_while(|(position, _)| *position > checked)
            .any(|(_, prefix)| KeySpace::prefix_covers(inner_key, prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(created: u64, tags: &[&str]) -> EntryMeta {
        EntryMeta {
            created_at_us: created,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..EntryMeta::default()
        }
    }

    #[test]
    fn tags_hide_what_was_created_at_or_before_their_stamp() {
        let stamps = Stamps::new();
        stamps.set_tag("t", 100);
        assert!(stamps.hides(&meta(100, &["t"])));
        assert!(!stamps.hides(&meta(101, &["t"])), "created after");
        assert!(!stamps.hides(&meta(50, &["u"])), "another tag");
        stamps.set_tag("t", 40);
        assert!(stamps.hides(&meta(100, &["t"])), "stamps never go back");
        stamps.set_cleared_at(200);
        assert!(stamps.hides(&meta(150, &[])));
    }

    #[test]
    fn refetching_keeps_what_is_known_here() {
        let stamps = Stamps::new();
        stamps.fetched_tag("t", 100);
        assert!(stamps.unknown_tags(&meta(1, &["t"])).is_empty());
        stamps.refetch_tags();
        assert_eq!(stamps.unknown_tags(&meta(1, &["t"])), ["t"]);
        stamps.set_tag("t", 70); // heard: one invalidation, not the newest
        assert_eq!(stamps.unknown_tags(&meta(1, &["t"])), ["t"]);
        stamps.fetched_tag("t", 40); // what Redis says: older
        assert!(stamps.unknown_tags(&meta(1, &["t"])).is_empty());
        assert!(stamps.hides(&meta(100, &["t"])), "the newer stamp stays");
    }

    #[test]
    fn l1_entries_are_checked_against_prefixes_since_their_last_check() {
        let stamps = Stamps::new();
        stamps.record_prefix(10, "user:");
        let entry = meta(1, &[]);
        assert!(!stamps.l1_entry_valid("user:1", &entry, 9));
        assert!(stamps.l1_entry_valid("user:1", &entry, 10), "checked after");
        assert!(stamps.l1_entry_valid("order:1", &entry, 9));
        for position in 11..11 + MAX_PREFIXES as u64 {
            stamps.record_prefix(position, "other:");
        }
        assert!(
            !stamps.l1_entry_valid("order:1", &entry, 9),
            "checked before the oldest prefix kept: not trusted"
        );
    }

    #[test]
    fn l1_entries_older_than_the_trust_horizon_are_invalid() {
        let stamps = Stamps::new();
        stamps.distrust_l1_before(500);
        assert!(!stamps.l1_entry_valid("k", &meta(499, &[]), 0));
        assert!(stamps.l1_entry_valid("k", &meta(500, &[]), 0));
    }
}
