//! Whether this instance hears the other instances' invalidations, and so
//! whether its L1 may be trusted.
//!
//! While the backplane is down (never subscribed yet, connection lost, Redis
//! frozen: the heartbeat fails), invalidations may be missed: an L1 entry is
//! served as fresh only if its load began less than `outage_l1_max_age` ago.
//! An older one is still kept — as a fallback for fail-safe, never as fresh.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::Clock;

pub(crate) struct Trust {
    /// Whether there is a backplane at all (L2 configured).
    backplane: bool,
    connected: AtomicBool,
    /// The same, for those who wait for it.
    changes: watch::Sender<bool>,
    outage_l1_max_age_ms: u64,
}

impl Trust {
    pub(crate) fn new(backplane: bool, outage_l1_max_age: Duration) -> Self {
        Self {
            backplane,
            connected: AtomicBool::new(false),
            changes: watch::channel(false).0,
            outage_l1_max_age_ms: outage_l1_max_age.as_millis() as u64,
        }
    }

    /// `None` without a backplane.
    pub(crate) fn connected(&self) -> Option<bool> {
        self.backplane
            .then(|| self.connected.load(Ordering::Acquire))
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Release);
        self.changes.send_replace(connected);
    }

    /// Wait until the backplane is connected, at most `within`; whether it
    /// is (always true without a backplane).
    pub(crate) async fn wait_connected(&self, within: Duration) -> bool {
        if !self.backplane {
            return true;
        }
        let mut changes = self.changes.subscribe();
        tokio::time::timeout(within, changes.wait_for(|connected| *connected))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Whether an L1 entry created at `created_us` may be served as fresh.
    pub(crate) fn trusts(&self, clock: &Clock, created_us: u64) -> bool {
        !self.backplane
            || self.connected.load(Ordering::Acquire)
            || clock.age_ms(created_us) <= self.outage_l1_max_age_ms
    }
}
