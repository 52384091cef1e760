//! Whether the next L2 read is likely to miss, from the recent ones.
//!
//! A read that takes the lease when it finds nothing saves the round trip
//! of a separate lease on every miss, but a script costs Redis several times
//! the CPU of a `GET`. So callers use it only while misses are common — a
//! cold cache, a flush, keys that churn — and a plain `GET` (batched with
//! others' reads) once the cache is warm.

use std::sync::atomic::{AtomicU32, Ordering};

/// 1.0 in the fixed-point share below.
const ONE: u32 = 1 << 16;
/// Each read moves the share 1/32 of the way to 0 or 1: about the last 32
/// reads count.
const WEIGHT_SHIFT: u32 = 5;
/// Above this share of misses, reads take the lease on a miss.
const LIKELY: u32 = ONE / 4;

/// An exponentially weighted share of L2 reads that missed. Updates race
/// (a load and a store, not a read-modify-write): an estimate loses nothing
/// by an update lost now and then, and stays cheap on the hit path.
#[derive(Debug)]
pub(super) struct MissRate(AtomicU32);

impl MissRate {
    /// A new cache is empty: expect misses.
    pub(super) fn new() -> Self {
        Self(AtomicU32::new(ONE))
    }

    pub(super) fn record(&self, missed: bool) {
        let share = self.0.load(Ordering::Relaxed);
        let target = if missed { ONE } else { 0 };
        let next = share - (share >> WEIGHT_SHIFT) + (target >> WEIGHT_SHIFT);
        self.0.store(next, Ordering::Relaxed);
    }

    /// Whether misses are common enough to take the lease with the read.
    pub(super) fn likely(&self) -> bool {
        self.0.load(Ordering::Relaxed) > LIKELY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_recent_reads() {
        let rate = MissRate::new();
        assert!(rate.likely(), "a new cache expects misses");
        for _ in 0..64 {
            rate.record(false);
        }
        assert!(!rate.likely(), "a warm cache reads with GET");
        for _ in 0..16 {
            rate.record(true);
        }
        assert!(rate.likely(), "a flush is noticed within a few reads");
        for _ in 0..200 {
            rate.record(true);
        }
        assert!(rate.0.load(Ordering::Relaxed) <= ONE, "stays a share");
    }
}
