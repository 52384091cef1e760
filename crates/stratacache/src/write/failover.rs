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
//! Every kind is replayed as itself, tags and namespace clears with their
//! original stamps.
//!
//! Every instance replays its own log, moments after the switch; until
//! `tiers::decode::FENCE_MS` has passed, an entry created before the move is
//! not trusted (a miss), so that no instance serves what another has yet to
//! replay.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Pipeline;

/// How far back invalidations are replayed: longer than a failover takes
/// from the promotion of the replica to the clients following it.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);
/// More invalidations than this within the window: replay a namespace clear.
const MAX_RECENT: usize = 10_000;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Replay {
    Key(String),
    Version(String, u64),
    /// A tag and its stamp.
    Tag(String, u64),
    Prefix(String),
    /// A namespace clear and its stamp.
    Clear(u64),
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
        recent
            .drain(..)
            .filter(|(at, _)| now.duration_since(*at) <= WINDOW)
            .map(|(_, item)| item)
            .collect()
    }

    /// Whether more happened within the window than was kept.
    fn take_overflow(&self) -> bool {
        self.overflowed.swap(false, Ordering::AcqRel)
    }
}

impl Pipeline {
    /// The connection moved to another master: invalidate again, there,
    /// what this instance invalidated lately, and do it now.
    pub(crate) async fn master_moved(&self) {
        if self.failover_log.take_overflow() {
            self.recovery.defer_clear(self.tiers.clock().stamp());
        }
        let recent = self.failover_log.take_recent();
        if recent.is_empty() && self.recovery.pending() == 0 {
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
                    self.recovery.defer_floor(&stored, version);
                    self.recovery.defer(std::iter::once(&stored));
                }
                Replay::Tag(tag, stamp) => self.recovery.defer_tag(&tag, stamp),
                Replay::Prefix(prefix) => self.recovery.defer_prefix(&prefix),
                Replay::Clear(stamp) => self.recovery.defer_clear(stamp),
            }
        }
        self.replay_deferred().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disabled_log_keeps_nothing() {
        let log = FailoverLog::new(false);
        log.note([Replay::Key("k".into())]);
        assert!(log.take_recent().is_empty());
    }

    #[test]
    fn recent_invalidations_are_taken_once() {
        let log = FailoverLog::new(true);
        log.note([Replay::Key("a".into()), Replay::Tag("t".into(), 7)]);
        assert_eq!(
            log.take_recent(),
            vec![Replay::Key("a".into()), Replay::Tag("t".into(), 7)]
        );
        assert!(log.take_recent().is_empty());
    }

    #[test]
    fn too_many_become_a_clear() {
        let log = FailoverLog::new(true);
        log.note((0..MAX_RECENT + 5).map(|i| Replay::Key(i.to_string())));
        assert!(log.take_overflow(), "the kept ones are not all");
        assert_eq!(log.take_recent().len(), 5, "the 5 after the overflow");
    }
}
