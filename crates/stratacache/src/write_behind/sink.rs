//! The [`Sink`] trait: where write-behind batches end up (usually a database).

use std::future::Future;

use super::coalesce::Batch;
use crate::error::BoxError;

/// The durable store behind a write-behind queue.
///
/// `apply` must be **atomic and idempotent per write id**: it records the
/// [`Batch::write_ids`] it applies in the same transaction as the changes, and
/// skips every write whose id it recorded before. The worker acknowledges a
/// batch only after `apply` returned `Ok`, so a crash between the commit and
/// the acknowledgement redelivers the batch — which must then change nothing.
/// A batch may overlap an earlier one only partly (entries are regrouped when
/// a dead worker's entries are reclaimed), so the check is per write, not per
/// batch: [`Batch::new_writes`] does the filtering once the sink knows which
/// ids are new. `write_behind::PostgresSink` (feature `postgres`) is the
/// implementation that ships with the library.
pub trait Sink: Send + Sync + 'static {
    /// Apply a coalesced batch in one transaction, recording its write ids.
    fn apply(&self, batch: &Batch) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// The value stored under `key` (JSON bytes), for reads that miss the cache.
    fn read_value(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, BoxError>> + Send;

    /// The counter's stored total (0 when absent), to seed its cached total.
    fn read_counter(&self, key: &str) -> impl Future<Output = Result<i64, BoxError>> + Send;

    /// Whether `err` says the sink cannot be reached at all (refused or lost
    /// connections, an exhausted pool) rather than that this batch cannot be
    /// applied. Batches failing that way are retried with backoff (up to
    /// `max_backoff` apart) for as long as the outage lasts, and never
    /// dead-lettered: an outage is not a bad write. The default says no, so
    /// every failure counts towards `max_attempts`.
    /// `write_behind::PostgresSink` (feature `postgres`) answers with
    /// `write_behind::is_connection_error`.
    fn is_unavailable(&self, err: &BoxError) -> bool {
        let _ = err;
        false
    }

    /// Forget the applied write ids of entries older than `before_ms` (their
    /// entries can no longer be delivered); returns how many were removed.
    /// The worker calls it now and then; the default keeps everything.
    fn prune_applied(&self, before_ms: u64) -> impl Future<Output = Result<u64, BoxError>> + Send {
        let _ = before_ms;
        async { Ok(0) }
    }
}
