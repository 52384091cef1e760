//! Reading stored bytes: what an L2 entry is, and what to do with one that
//! cannot be used.
//!
//! | the bytes | what happens |
//! |---|---|
//! | an envelope of this schema whose payload decodes | a hit (if not expired) |
//! | damaged: not an envelope, truncated, bad compression | a miss; deleted (compare-and-delete) and counted |
//! | an envelope of a newer format or schema version | a miss; left alone (a newer instance of a rolling deploy wrote it) and not overwritten by this load |
//! | an envelope of an older schema version | a miss; replaced by the next fill |
//! | an intact envelope whose payload is not this type | a miss; left alone and counted — another version's type, not damage |
//!
//! Deleting what another version wrote would make old and new instances
//! delete each other's entries for the whole rollout.

use super::{CacheValue, Known, Tiers};
use crate::codec::envelope::{self, DecodeError};
use crate::options::EntryOptions;

/// What an L2 read found.
#[derive(Debug)]
pub(crate) enum L2Read<V> {
    /// A usable entry (fresh or stale).
    Found(Known<V>),
    /// Nothing usable: absent, expired, hidden by an invalidation, damaged.
    Missing,
    /// An entry this instance cannot read and must not delete: another
    /// version's. `newer`: written by a newer format or schema version,
    /// which a fill of this instance must not replace.
    Foreign { newer: bool },
}

/// How long after a master move (Sentinel) the entries created before it
/// are misses: longer than the instances take to hear of the switch and
/// replay their recent invalidations on the new master (`write::failover`).
pub(crate) const FENCE_MS: u64 = 1_000;

/// Whether an entry created at `created_at_ms` predates a master move of
/// less than [`FENCE_MS`] ago (`moved_at_ms`, 0: never moved).
pub(crate) fn fenced(created_at_ms: u64, moved_at_ms: u64, now_ms: u64) -> bool {
    moved_at_ms != 0
        && now_ms.saturating_sub(moved_at_ms) < FENCE_MS
        && created_at_ms <= moved_at_ms
}

impl Tiers {
    /// Decode stored bytes for a reader with `opts` (see the module doc);
    /// expired entries are misses.
    pub(crate) fn decode<V: CacheValue>(
        &self,
        stored: &str,
        bytes: &[u8],
        opts: &EntryOptions,
    ) -> L2Read<V> {
        let decoded = match envelope::decode(bytes, self.max_value_bytes) {
            Ok(decoded) => decoded,
            Err(DecodeError::NewerFormat(version)) => {
                tracing::debug!(key = stored, version, "entry of a newer format; left alone");
                self.metrics.global.foreign_entries.increment(1);
                return L2Read::Foreign { newer: true };
            }
            Err(DecodeError::Corrupt(why)) => {
                self.discard_damaged(stored, bytes, why);
                return L2Read::Missing;
            }
        };
        if decoded.meta.schema != opts.schema_version {
            let newer = decoded.meta.schema > opts.schema_version;
            tracing::debug!(
                key = stored,
                schema = decoded.meta.schema,
                mine = opts.schema_version,
                "entry of another schema version; a miss here"
            );
            self.metrics.global.foreign_entries.increment(1);
            return L2Read::Foreign { newer };
        }
        if !decoded.meta.is_usable(self.clock.now_ms()) {
            return L2Read::Missing;
        }
        let value = match decoded.value {
            None => None,
            Some((codec, payload)) => match codec.decode::<V>(&payload) {
                Ok(v) => Some(v),
                Err(why) => {
                    // Another version's type under the same schema version:
                    // a miss here, replaced by the next fill, not deleted.
                    tracing::debug!(key = stored, error = %why, "entry of another type; a miss here");
                    self.metrics.global.foreign_entries.increment(1);
                    return L2Read::Foreign { newer: false };
                }
            },
        };
        L2Read::Found((value, decoded.meta, bytes.len()))
    }

    /// Count and delete a damaged entry. The delete runs in the background
    /// and only if the entry still holds these bytes, so it cannot remove a
    /// good value a concurrent load has written meanwhile.
    pub(crate) fn discard_damaged(&self, stored: &str, bytes: &[u8], why: &str) {
        self.metrics.global.corrupt_entries.increment(1);
        tracing::warn!(key = stored, reason = why, "damaged cache entry deleted");
        if let Some(l1) = &self.l1 {
            l1.remove(stored);
        }
        let (Some(l2), Ok(runtime)) = (self.l2.clone(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let (key, bytes) = (stored.to_owned(), bytes.to_vec());
        runtime.spawn(async move {
            let _ = l2.delete_if_unchanged(&key, &bytes).await;
        });
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
}
