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

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use crate::cache::Inner;
use crate::invalidate::message::Invalidation;

/// More keys than this and recovery clears the namespace instead.
pub(crate) const MAX_PENDING: usize = 100_000;
const RETRY_EVERY: Duration = Duration::from_millis(250);

#[derive(Default)]
pub(crate) struct Recovery {
    pending: Mutex<HashSet<String>>,
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

    pub(crate) fn pending(&self) -> usize {
        self.pending.lock().expect("recovery lock").len()
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
    async fn replay_deferred(&self) {
        let (keys, overflowed) = self.recovery.take();
        let Some(l2) = &self.l2 else { return };
        if overflowed {
            tracing::warn!("too many writes failed while redis was down; clearing the namespace");
            let at_ms = crate::cache::now_ms();
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
