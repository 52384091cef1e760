//! Whether this instance hears the other instances' invalidations, and so
//! whether its L1 may be trusted.
//!
//! While the backplane is down (never subscribed yet, connection lost, Redis
//! frozen: the heartbeat fails), invalidations may be missed: an L1 entry is
//! served as fresh only if its load began less than `outage_l1_max_age` ago.
//! An older one is still kept — as a fallback for fail-safe, never as fresh.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::clock::Clock;

pub(crate) struct Trust {
    /// Whether there is a backplane at all (L2 configured).
    backplane: bool,
    connected: AtomicBool,
    outage_l1_max_age_ms: u64,
}

impl Trust {
    pub(crate) fn new(backplane: bool, outage_l1_max_age: Duration) -> Self {
        Self {
            backplane,
            connected: AtomicBool::new(false),
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
    }

    /// Whether an L1 entry created at `created_us` may be served as fresh.
    pub(crate) fn trusts(&self, clock: &Clock, created_us: u64) -> bool {
        !self.backplane
            || self.connected.load(Ordering::Acquire)
            || clock.age_ms(created_us) <= self.outage_l1_max_age_ms
    }
}
