//! Time as the cache sees it: the wall clock of entries and invalidations.
//!
//! Every timestamp the cache stores or compares — an entry's creation and
//! expiry, a tag's or the namespace's invalidation — comes from one
//! [`Clock`] per cache, so that a simulation can replace the wall clock with
//! a virtual one (tokio's paused time) and replay a run exactly.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The source of "now" for one cache.
#[derive(Clone, Debug, Default)]
pub(crate) enum Clock {
    /// The system's wall clock.
    #[default]
    System,
    /// Virtual time: a fixed epoch plus tokio's (possibly paused) clock.
    #[cfg_attr(not(feature = "simulation"), allow(dead_code))]
    Virtual(Arc<VirtualTime>),
}

/// A virtual wall clock: `epoch_ms` at `start`, advancing with tokio's clock.
#[derive(Debug)]
pub(crate) struct VirtualTime {
    epoch_ms: u64,
    start: tokio::time::Instant,
}

impl VirtualTime {
    /// Virtual time starting now (tokio's clock) at `epoch_ms`.
    #[cfg_attr(not(feature = "simulation"), allow(dead_code))]
    pub(crate) fn starting_at(epoch_ms: u64) -> Self {
        Self {
            epoch_ms,
            start: tokio::time::Instant::now(),
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch_ms + self.start.elapsed().as_millis() as u64
    }
}

impl Clock {
    /// Milliseconds since the Unix epoch.
    pub(crate) fn now_ms(&self) -> u64 {
        match self {
            Clock::System => system_now_ms(),
            Clock::Virtual(time) => time.now_ms(),
        }
    }
}

/// The system clock in milliseconds since the Unix epoch, for the parts that
/// never run under a virtual clock (write-behind's bookkeeping, Sentinel).
pub(crate) fn system_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
