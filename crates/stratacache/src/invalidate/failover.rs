//! Replaying recent invalidations after the master moves (Sentinel).
//!
//! Redis replicates asynchronously: a replica promoted by a failover may lack
//! the last writes its old master acknowledged — here, the deletes, floors
//! and timestamps that invalidated entries. The old master's copy of those
//! writes is discarded when it rejoins as a replica, so an entry this
//! instance invalidated can come back, older than the database, on the new
//! master. Each instance keeps what it invalidated in the last
//! [`WINDOW`] and, when its connection moves to a new master, hands it to
//! [`recovery`](super::recovery) to be invalidated again there. Replaying
//! an invalidation is always safe: the next read loads the current value.
//!
//! Tags and namespace clears are replayed with the time of the replay (a
//! later timestamp invalidates a superset), prefix invalidations as a clear.
//!
//! Every instance replays its own log, moments after the switch; until
//! [`FENCE`] has passed, an entry created before the move is not trusted
//! (a miss), so that no instance serves what another has yet to replay.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cache::Inner;

/// How far back invalidations are replayed: longer than a failover takes
/// from the promotion of the replica to the clients following it.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);
/// How long after a move the entries created before it are misses: longer
/// than the instances take to hear of the switch and replay their logs.
pub(crate) const FENCE: Duration = Duration::from_secs(1);
/// More invalidations than this within the window: replay a namespace clear.
const MAX_RECENT: usize = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Replay {
    Key(String),
    Version(String, u64),
    Tag(String),
    Clear,
}

/// The invalidations of the last [`WINDOW`]; empty and free when the
/// topology has no failover to follow.
pub(crate) struct FailoverLog {
    enabled: bool,
    recent: Mutex<VecDeque<(Instant, Replay)>>,
    overflowed: AtomicBool,
}

impl FailoverLog {
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            recent: Mutex::default(),
            overflowed: AtomicBool::new(false),
        }
    }

    pub(crate) fn note(&self, what: impl IntoIterator<Item = Replay>) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        let mut recent = self.recent.lock().expect("failover log lock");
        while recent
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > WINDOW)
        {
            recent.pop_front();
        }
        for item in what {
            if recent.len() >= MAX_RECENT {
                recent.clear();
                self.overflowed.store(true, Ordering::Release);
            }
            recent.push_back((now, item));
        }
    }

    /// What to replay on a new master: the last window's invalidations.
    pub(crate) fn take_recent(&self) -> Vec<Replay> {
        let now = Instant::now();
        let mut recent = self.recent.lock().expect("failover log lock");
        let mut out: Vec<Replay> = recent
            .drain(..)
            .filter(|(at, _)| now.duration_since(*at) <= WINDOW)
            .map(|(_, item)| item)
            .collect();
        if self.overflowed.swap(false, Ordering::AcqRel) {
            out.push(Replay::Clear);
        }
        out
    }
}

/// Whether an entry created at `created_at_ms` predates a master move of
/// less than [`FENCE`] ago (`moved_at_ms`, 0: never moved).
pub(crate) fn fenced(created_at_ms: u64, moved_at_ms: u64, now_ms: u64) -> bool {
    moved_at_ms != 0
        && now_ms.saturating_sub(moved_at_ms) < FENCE.as_millis() as u64
        && created_at_ms <= moved_at_ms
}

impl Inner {
    /// The connection moved to another master: invalidate again, there,
    /// what this instance invalidated lately, and do it now.
    pub(crate) async fn master_moved(self: &Arc<Self>) {
        let recent = self.failover_log.take_recent();
        if recent.is_empty() {
            return;
        }
        tracing::info!(
            invalidations = recent.len(),
            "redis master moved; replaying recent invalidations on the new master"
        );
        for item in recent {
            match item {
                Replay::Key(stored) => self.recovery.defer(std::iter::once(&stored)),
                Replay::Version(stored, version) => {
                    self.recovery.defer_versioned(&stored, version);
                    self.recovery.defer(std::iter::once(&stored));
                }
                Replay::Tag(tag) => self.recovery.defer_tag(tag),
                Replay::Clear => self.recovery.defer_clear(),
            }
        }
        self.replay_deferred().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_older_than_a_recent_move_are_fenced() {
        let moved = 1_000_000;
        assert!(fenced(moved - 5, moved, moved + 10));
        assert!(
            !fenced(moved + 1, moved, moved + 10),
            "loaded after the move"
        );
        assert!(
            !fenced(moved - 5, moved, moved + 1_000),
            "the fence is over"
        );
        assert!(!fenced(5, 0, 10), "never moved");
    }

    #[test]
    fn a_disabled_log_keeps_nothing() {
        let log = FailoverLog::new(false);
        log.note([Replay::Key("k".into())]);
        assert!(log.take_recent().is_empty());
    }

    #[test]
    fn recent_invalidations_are_taken_once() {
        let log = FailoverLog::new(true);
        log.note([Replay::Key("a".into()), Replay::Tag("t".into())]);
        assert_eq!(
            log.take_recent(),
            vec![Replay::Key("a".into()), Replay::Tag("t".into())]
        );
        assert!(log.take_recent().is_empty());
    }

    #[test]
    fn too_many_become_a_clear() {
        let log = FailoverLog::new(true);
        log.note((0..MAX_RECENT + 5).map(|i| Replay::Key(i.to_string())));
        let taken = log.take_recent();
        assert_eq!(taken.len(), 6, "the 5 after the overflow, then a clear");
        assert_eq!(taken.last(), Some(&Replay::Clear));
    }
}
