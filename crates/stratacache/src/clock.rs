//! Time as the cache sees it: the wall clock of entries and invalidations.
//!
//! Every timestamp the cache stores or compares — an entry's creation and
//! expiry, a tag's or the namespace's invalidation — comes from one
//! [`Clock`] per cache, so that a simulation can replace the wall clock with
//! a virtual one (tokio's paused time) and replay a run exactly.
//!
//! Creation times and invalidation times are *stamps*: microseconds that
//! never repeat and never go back within an instance, and that move past
//! every invalidation stamp the instance has heard of (a hybrid logical
//! clock). An entry is hidden by an invalidation when it was created at or
//! before the invalidation's stamp; because stamps cannot tie, a write made
//! after an invalidation — on this instance, or on one that heard of it — is
//! never hidden by it, however close the two are in time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// How far ahead of this instance's clock a stamp heard from another
/// instance may be and still move this clock forward (clock skew beyond this
/// is not followed: it would date every later entry in the future).
const MAX_FOLLOWED_SKEW_US: u64 = 1_000_000;

/// The source of "now" for one cache.
#[derive(Debug, Default)]
pub(crate) struct Clock {
    source: Source,
    /// The last stamp handed out or heard of.
    last_stamp_us: AtomicU64,
}

#[derive(Clone, Debug, Default)]
enum Source {
    /// The system's wall clock.
    #[default]
    System,
    /// Virtual time: a fixed epoch plus tokio's (possibly paused) clock.
    #[cfg_attr(not(feature = "simulation"), allow(dead_code))]
    Virtual(Arc<VirtualTime>),
}

/// A virtual wall clock: `epoch_ms` at `start`, advancing with tokio's clock.
/// Shared by every instance of a simulation, like the one clock of a
/// machine: tokio's paused clock moves in whole milliseconds, so every read
/// of it is also a microsecond later than the one before — as time passes
/// between any two steps of a real run.
#[derive(Debug)]
pub(crate) struct VirtualTime {
    epoch_ms: u64,
    start: tokio::time::Instant,
    last_us: AtomicU64,
}

impl VirtualTime {
    /// Virtual time starting now (tokio's clock) at `epoch_ms`.
    #[cfg_attr(not(feature = "simulation"), allow(dead_code))]
    pub(crate) fn starting_at(epoch_ms: u64) -> Self {
        Self {
            epoch_ms,
            start: tokio::time::Instant::now(),
            last_us: AtomicU64::new(0),
        }
    }

    pub(crate) fn now_us(&self) -> u64 {
        let now = self.epoch_ms * 1_000 + self.start.elapsed().as_micros() as u64;
        let last = self.last_us.fetch_max(now, Ordering::AcqRel).max(now);
        // Within one tick of tokio's clock, step a microsecond (never past
        // the next tick).
        if last >= now && last - now < 999 {
            self.last_us.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            last
        }
    }

    pub(crate) fn now_ms(&self) -> u64 {
        self.now_us() / 1_000
    }

    /// The current millisecond, without stepping the clock (for the
    /// simulated server's expiries).
    #[cfg_attr(not(feature = "simulation"), allow(dead_code))]
    pub(crate) fn peek_ms(&self) -> u64 {
        self.epoch_ms + self.start.elapsed().as_millis() as u64
    }
}

impl Clock {
    /// The system's wall clock.
    pub(crate) fn system() -> Self {
        Self::default()
    }

    /// A virtual clock (the race simulation).
    #[cfg_attr(not(feature = "simulation"), allow(dead_code))]
    pub(crate) fn virtual_time(time: Arc<VirtualTime>) -> Self {
        Self {
            source: Source::Virtual(time),
            last_stamp_us: AtomicU64::new(0),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub(crate) fn now_ms(&self) -> u64 {
        match &self.source {
            Source::System => system_now_ms(),
            Source::Virtual(time) => time.now_ms(),
        }
    }

    fn now_us(&self) -> u64 {
        match &self.source {
            Source::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros() as u64),
            Source::Virtual(time) => time.now_us(),
        }
    }

    /// A new stamp: later than every stamp this clock handed out or heard of.
    pub(crate) fn stamp(&self) -> u64 {
        let now = self.now_us();
        let mut last = self.last_stamp_us.load(Ordering::Acquire);
        loop {
            let next = now.max(last + 1);
            match self.last_stamp_us.compare_exchange_weak(
                last,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return next,
                Err(current) => last = current,
            }
        }
    }

    /// Another instance's stamp: stamps handed out from now on are later.
    pub(crate) fn observe(&self, stamp_us: u64) {
        if stamp_us <= self.now_us() + MAX_FOLLOWED_SKEW_US {
            self.last_stamp_us.fetch_max(stamp_us, Ordering::AcqRel);
        }
    }

    /// How long ago (ms) the stamp `stamp_us` was, by this clock.
    pub(crate) fn age_ms(&self, stamp_us: u64) -> u64 {
        self.now_us().saturating_sub(stamp_us) / 1_000
    }
}

/// The system clock in milliseconds since the Unix epoch, for the parts that
/// never run under a virtual clock (write-behind's bookkeeping, Sentinel).
pub(crate) fn system_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A stamp read back from Redis: microseconds, or — written by an older
/// version of this library — milliseconds (any value below 10^14 µs, which
/// is 1973, is one).
pub(crate) fn stamp_from_stored(value: u64) -> u64 {
    if value < 100_000_000_000_000 {
        value.saturating_mul(1_000)
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_never_tie_and_follow_what_was_heard() {
        let clock = Clock::system();
        let a = clock.stamp();
        let b = clock.stamp();
        assert!(b > a);
        clock.observe(b + 500_000);
        assert!(clock.stamp() > b + 500_000, "a heard stamp moves the clock");
        let far = clock.stamp() + 60_000_000;
        clock.observe(far);
        assert!(
            clock.stamp() < far,
            "a clock a minute ahead is not followed"
        );
    }

    #[test]
    fn stored_stamps_in_milliseconds_are_read_as_such() {
        assert_eq!(stamp_from_stored(1_700_000_000_000), 1_700_000_000_000_000);
        assert_eq!(
            stamp_from_stored(1_700_000_000_000_123),
            1_700_000_000_000_123
        );
    }
}
