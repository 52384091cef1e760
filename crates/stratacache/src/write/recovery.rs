//! Auto-recovery: every invalidation that could not reach Redis or the
//! other instances is replayed when Redis answers — whatever its kind.
//!
//! | deferred | replayed as |
//! |---|---|
//! | a key (failed write, delete, or lost announcement) | UNLINK with its lease, announced |
//! | a version floor | the floor raised, the key announced |
//! | a tag | its stamp written (with the original stamp) and announced |
//! | a prefix | deleted again (two passes) and announced |
//! | a namespace clear | its stamp written and announced |
//!
//! A key is remembered once, however many times it failed. Replaying a
//! deletion rather than the value is always safe: the next read loads the
//! current value. Past [`MAX_PENDING`] keys, recovery clears the namespace
//! instead.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use super::Pipeline;

/// More keys than this and recovery clears the namespace instead.
pub(crate) const MAX_PENDING: usize = 100_000;
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// Ordered sets, so that a replay happens in the same order every time (the
/// race simulation replays runs exactly).
#[derive(Default)]
pub(crate) struct Recovery {
    keys: Mutex<BTreeSet<String>>,
    /// Newest version per key.
    floors: Mutex<BTreeMap<String, u64>>,
    /// Newest stamp per tag.
    tags: Mutex<BTreeMap<String, u64>>,
    prefixes: Mutex<BTreeSet<String>>,
    /// Newest namespace clear stamp (0: none).
    clear: AtomicU64,
    /// Too much to replay one by one: clear the namespace.
    overflowed: AtomicBool,
}

impl Recovery {
    /// Remember stored keys whose Redis state is in doubt.
    pub(crate) fn defer<'k>(&self, stored: impl IntoIterator<Item = &'k String>) {
        let mut keys = self.keys.lock().expect("recovery lock");
        for key in stored {
            if keys.len() >= MAX_PENDING {
                self.overflowed.store(true, Ordering::Release);
                break;
            }
            keys.insert(key.clone());
        }
    }

    /// Remember that `stored`'s source reached `version` and Redis was not told.
    pub(crate) fn defer_floor(&self, stored: &str, version: u64) {
        let mut floors = self.floors.lock().expect("recovery lock");
        if floors.len() >= MAX_PENDING && !floors.contains_key(stored) {
            self.overflowed.store(true, Ordering::Release);
            return;
        }
        let newest = floors.entry(stored.to_string()).or_insert(version);
        *newest = (*newest).max(version);
    }

    pub(crate) fn defer_tag(&self, tag: &str, stamp: u64) {
        let mut tags = self.tags.lock().expect("recovery lock");
        if tags.len() >= MAX_PENDING && !tags.contains_key(tag) {
            self.overflowed.store(true, Ordering::Release);
            return;
        }
        let newest = tags.entry(tag.to_string()).or_insert(stamp);
        *newest = (*newest).max(stamp);
    }

    pub(crate) fn defer_prefix(&self, prefix: &str) {
        let mut prefixes = self.prefixes.lock().expect("recovery lock");
        if prefixes.len() >= MAX_PENDING {
            self.overflowed.store(true, Ordering::Release);
            return;
        }
        prefixes.insert(prefix.to_string());
    }

    pub(crate) fn defer_clear(&self, stamp: u64) {
        self.clear.fetch_max(stamp, Ordering::AcqRel);
    }

    pub(crate) fn pending(&self) -> usize {
        self.keys.lock().expect("recovery lock").len()
            + self.floors.lock().expect("recovery lock").len()
            + self.tags.lock().expect("recovery lock").len()
            + self.prefixes.lock().expect("recovery lock").len()
            + usize::from(self.clear.load(Ordering::Acquire) != 0)
            + usize::from(self.overflowed.load(Ordering::Acquire))
    }
}

/// Everything in `set`, leaving it empty.
fn take<T: Default + IntoIterator<Item = I>, I, C: FromIterator<I>>(set: &Mutex<T>) -> C {
    std::mem::take(&mut *set.lock().expect("recovery lock"))
        .into_iter()
        .collect()
}

/// Check a few times a second for deferred invalidations and replay them
/// while Redis answers, until the cache is dropped.
pub(crate) fn spawn_replayer(pipeline: Weak<Pipeline>) {
    tokio::spawn(async move {
        loop {
            let Some(pipeline) = pipeline.upgrade() else {
                return;
            };
            let redis_answers = pipeline
                .tiers
                .l2()
                .is_some_and(|l2| l2.breaker_allows_calls());
            if pipeline.recovery.pending() > 0 && redis_answers {
                pipeline.replay_deferred().await;
            }
            drop(pipeline);
            tokio::time::sleep(RETRY_EVERY).await;
        }
    });
}

impl Pipeline {
    /// Replay what was deferred, in order: floors, a namespace clear,
    /// prefixes, tags, keys. Stops at the first failure (the rest waits for
    /// the next round).
    pub(crate) async fn replay_deferred(&self) {
        let Some(l2) = self.tiers.l2() else { return };
        let recovery = &self.recovery;
        let floors: Vec<(String, u64)> = take(&recovery.floors);
        if !floors.is_empty() {
            let raises = floors
                .iter()
                .map(|(stored, version)| crate::versioned::raise_floor(l2, stored, *version));
            if futures::future::try_join_all(raises).await.is_err() {
                for (stored, version) in floors {
                    recovery.defer_floor(&stored, version);
                }
                return;
            }
            tracing::info!(
                keys = floors.len(),
                "replayed version floors redis had missed"
            );
            recovery.defer(floors.iter().map(|(stored, _)| stored));
        }
        if recovery.overflowed.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                "too many invalidations failed while redis was down; clearing the namespace"
            );
            recovery.keys.lock().expect("recovery lock").clear();
            recovery.defer_clear(self.tiers.clock().stamp());
        }
        let clear = recovery.clear.swap(0, Ordering::AcqRel);
        if clear != 0 && self.tell_clear(clear).await.is_err() {
            return;
        }
        let prefixes: Vec<String> = take(&recovery.prefixes);
        for (i, prefix) in prefixes.iter().enumerate() {
            if self.tell_prefix(prefix).await.is_err() {
                for prefix in &prefixes[i + 1..] {
                    recovery.defer_prefix(prefix);
                }
                return;
            }
        }
        let tags: Vec<(String, u64)> = take(&recovery.tags);
        for (i, (tag, stamp)) in tags.iter().enumerate() {
            if self.tell_tag(tag, *stamp).await.is_err() {
                for (tag, stamp) in &tags[i + 1..] {
                    recovery.defer_tag(tag, *stamp);
                }
                return;
            }
        }
        let keys: Vec<String> = take(&recovery.keys);
        if keys.is_empty() {
            return;
        }
        if l2.delete(&keys).await.is_err() {
            recovery.defer(&keys);
            return;
        }
        // While Redis held the old copies, a read here may have put one back
        // into this instance's L1, and its own announcement does not come
        // back to it.
        for key in &keys {
            self.forget_locally(key);
        }
        self.announce_keys(&keys).await;
        tracing::info!(
            keys = keys.len(),
            "replayed invalidations deferred while redis was down"
        );
    }
}
