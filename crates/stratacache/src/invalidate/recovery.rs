//! Auto-recovery: what could not reach Redis is replayed when it answers.
//!
//! A write or delete that failed while Redis was down (or its invalidation
//! message) leaves Redis and the other instances possibly holding an older
//! value. The key is remembered — once, however many times it failed — and
//! when Redis answers again it is invalidated for real: deleted with its
//! lease, and announced on the backplane. Replaying the *value* instead could
//! put back something the database has moved past meanwhile; a deletion is
//! always safe, and the next read loads the current value. Past
//! [`MAX_PENDING`] keys, recovery clears the whole namespace instead.
//! Versions announced while Redis was down ([`Cache::invalidate_version`])
//! are replayed as well — the newest per key — so the floors they set hold.
//!
//! [`Cache::invalidate_version`]: crate::Cache::invalidate_version

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::cache::Inner;
use crate::invalidate::message::Invalidation;

/// More keys than this and recovery clears the namespace instead.
pub(crate) const MAX_PENDING: usize = 100_000;
const RETRY_EVERY: Duration = Duration::from_millis(250);

#[derive(Default)]
pub(crate) struct Recovery {
    pending: Mutex<HashSet<String>>,
    /// Version floors to raise, newest version per key.
    floors: Mutex<HashMap<String, u64>>,
    /// Tags to invalidate again (with the time of the replay).
    tags: Mutex<HashSet<String>>,
    overflowed: AtomicBool,
}

impl Recovery {
    /// Remember stored keys whose Redis state is in doubt.
    pub(crate) fn defer<'k>(&self, stored: impl IntoIterator<Item = &'k String>) {
        let mut pending = self.pending.lock().expect("recovery lock");
        for key in stored {
            if pending.len() >= MAX_PENDING {
                self.overflowed.store(true, Ordering::Release);
                break;
            }
            pending.insert(key.clone());
        }
    }

    /// Remember that `stored`'s source reached `version` and Redis was not told.
    pub(crate) fn defer_versioned(&self, stored: &str, version: u64) {
        let mut floors = self.floors.lock().expect("recovery lock");
        if floors.len() >= MAX_PENDING && !floors.contains_key(stored) {
            self.overflowed.store(true, Ordering::Release);
            return;
        }
        let newest = floors.entry(stored.to_string()).or_insert(version);
        *newest = (*newest).max(version);
    }

    /// Remember a tag whose invalidation may be missing from Redis.
    pub(crate) fn defer_tag(&self, tag: String) {
        self.tags.lock().expect("recovery lock").insert(tag);
    }

    /// Clear the namespace when Redis answers (a lost clear or prefix
    /// invalidation, or too much to replay key by key).
    pub(crate) fn defer_clear(&self) {
        self.overflowed.store(true, Ordering::Release);
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending.lock().expect("recovery lock").len()
            + self.floors.lock().expect("recovery lock").len()
            + self.tags.lock().expect("recovery lock").len()
    }

    fn take_tags(&self) -> Vec<String> {
        self.tags.lock().expect("recovery lock").drain().collect()
    }

    fn take_floors(&self) -> Vec<(String, u64)> {
        self.floors.lock().expect("recovery lock").drain().collect()
    }

    fn take(&self) -> (Vec<String>, bool) {
        let keys = self
            .pending
            .lock()
            .expect("recovery lock")
            .drain()
            .collect();
        (keys, self.overflowed.swap(false, Ordering::AcqRel))
    }
}

/// Check a few times a second for deferred invalidations and replay them
/// while Redis answers, until the cache is dropped.
pub(crate) fn spawn_replayer(cache: Weak<Inner>) {
    tokio::spawn(async move {
        loop {
            let Some(inner) = cache.upgrade() else { return };
            let has_work =
                inner.recovery.pending() > 0 || inner.recovery.overflowed.load(Ordering::Acquire);
            if has_work
                && inner
                    .l2
                    .as_ref()
                    .is_some_and(|l2| l2.breaker_allows_calls())
            {
                inner.replay_deferred().await;
            }
            drop(inner);
            tokio::time::sleep(RETRY_EVERY).await;
        }
    });
}

impl Inner {
    pub(crate) async fn replay_deferred(self: &Arc<Self>) {
        let floors = self.recovery.take_floors();
        if !floors.is_empty() {
            if self.replay_floors(&floors).await.is_err() {
                for (stored, version) in floors {
                    self.recovery.defer_versioned(&stored, version);
                }
                return;
            }
            tracing::info!(
                keys = floors.len(),
                "replayed versions announced while redis was down"
            );
        }
        let tags = self.recovery.take_tags();
        for (i, tag) in tags.iter().enumerate() {
            if self.invalidate_tag_everywhere(tag).await.is_err() {
                for tag in &tags[i..] {
                    self.recovery.defer_tag(tag.clone());
                }
                return;
            }
        }
        let (keys, overflowed) = self.recovery.take();
        let Some(l2) = &self.l2 else { return };
        if overflowed {
            tracing::warn!("too many writes failed while redis was down; clearing the namespace");
            let at_ms = self.clock.now_ms();
            if self.write_clear_timestamp(at_ms).await.is_err() {
                self.recovery.overflowed.store(true, Ordering::Release);
                self.recovery.defer(&keys);
                return;
            }
            self.publish(Invalidation::Clear { at_ms }).await;
            return;
        }
        if keys.is_empty() {
            return;
        }
        if l2.delete(&keys).await.is_err() {
            self.recovery.defer(&keys);
            return;
        }
        let inner_keys = keys
            .iter()
            .map(|k| self.keys.inner_of(k).to_string())
            .collect();
        if !self.publish(Invalidation::Keys { keys: inner_keys }).await {
            self.recovery.defer(&keys);
            return;
        }
        tracing::info!(
            keys = keys.len(),
            "replayed invalidations deferred while redis was down"
        );
    }
}
