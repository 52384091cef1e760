//! Write-behind metrics, through the `metrics` facade, labelled with the
//! cache's namespace (`cache`) and the queue's name (`queue`):
//!
//! | name | kind | what |
//! |---|---|---|
//! | `stratacache_write_behind_queued_total` | counter | writes acknowledged after reaching the stream |
//! | `stratacache_write_behind_direct_total` | counter | writes sent to the sink synchronously because Redis failed |
//! | `stratacache_write_behind_applied_total` | counter | writes committed by the sink from the stream |
//! | `stratacache_write_behind_batch_size` | histogram | writes per batch handed to the sink |
//! | `stratacache_write_behind_retries_total` | counter | failed sink calls that were retried |
//! | `stratacache_write_behind_dead_letters_total` | counter | entries moved to the dead-letter stream |
//! | `stratacache_write_behind_replayed_total` | counter | dead letters put back on the queue |
//! | `stratacache_write_behind_queue_depth` | gauge | stream entries not yet applied (an entry carries one write, or the writes of one group commit) |
//! | `stratacache_write_behind_lag_seconds` | gauge | age of the oldest entry not yet applied |
//! | `stratacache_write_behind_dead_letter_depth` | gauge | entries in the dead-letter stream |
//!
//! The same figures are kept in process ([`WriteBehindStats`]) for health
//! pages and tests.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{Counter, Gauge, Histogram};

/// Counts kept in process since this handle was built.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) queued: AtomicU64,
    pub(crate) direct: AtomicU64,
    pub(crate) applied: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) dead_letters: AtomicU64,
    pub(crate) replayed: AtomicU64,
}

/// A snapshot of the in-process counts of one write-behind handle (shared by
/// its workers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteBehindStats {
    /// Writes acknowledged after reaching the stream.
    pub queued: u64,
    /// Writes applied synchronously because Redis failed.
    pub direct: u64,
    /// Writes committed by the sink from the stream (after coalescing, each
    /// write counted once, redeliveries included).
    pub applied: u64,
    /// Batches committed.
    pub batches: u64,
    /// Failed sink calls that were retried.
    pub retries: u64,
    /// Entries moved to the dead-letter stream.
    pub dead_letters: u64,
    /// Dead letters put back on the queue.
    pub replayed: u64,
}

pub(crate) struct WbMetrics {
    pub(crate) counts: Counts,
    pub(crate) queued: Counter,
    pub(crate) direct: Counter,
    pub(crate) applied: Counter,
    pub(crate) batch_size: Histogram,
    pub(crate) retries: Counter,
    pub(crate) dead_letters: Counter,
    pub(crate) replayed: Counter,
    pub(crate) depth: Gauge,
    pub(crate) lag: Gauge,
    pub(crate) dead_depth: Gauge,
}

impl WbMetrics {
    pub(crate) fn new(cache: &str, queue: &str) -> Self {
        let labels = [("cache", cache.to_string()), ("queue", queue.to_string())];
        Self {
            counts: Counts::default(),
            queued: metrics::counter!("stratacache_write_behind_queued_total", &labels),
            direct: metrics::counter!("stratacache_write_behind_direct_total", &labels),
            applied: metrics::counter!("stratacache_write_behind_applied_total", &labels),
            batch_size: metrics::histogram!("stratacache_write_behind_batch_size", &labels),
            retries: metrics::counter!("stratacache_write_behind_retries_total", &labels),
            dead_letters: metrics::counter!("stratacache_write_behind_dead_letters_total", &labels),
            replayed: metrics::counter!("stratacache_write_behind_replayed_total", &labels),
            depth: metrics::gauge!("stratacache_write_behind_queue_depth", &labels),
            lag: metrics::gauge!("stratacache_write_behind_lag_seconds", &labels),
            dead_depth: metrics::gauge!("stratacache_write_behind_dead_letter_depth", &labels),
        }
    }

    pub(crate) fn count(counter: &AtomicU64, handle: &Counter, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
        handle.increment(n);
    }

    pub(crate) fn snapshot(&self) -> WriteBehindStats {
        let c = &self.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WriteBehindStats {
            queued: get(&c.queued),
            direct: get(&c.direct),
            applied: get(&c.applied),
            batches: get(&c.batches),
            retries: get(&c.retries),
            dead_letters: get(&c.dead_letters),
            replayed: get(&c.replayed),
        }
    }
}
