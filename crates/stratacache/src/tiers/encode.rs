//! Making the stored form of an entry: envelope, expiries, the size bound.

use std::time::Duration;

use super::{CacheValue, Tiers};
use crate::codec::envelope::{self, EntryMeta};
use crate::error::{Error, Result};
use crate::options::{EntryOptions, MAX_DURATION};

/// What a load adds to an entry besides the options: the loader's choices
/// and how long the load took.
#[derive(Debug, Default)]
pub(crate) struct FillHints {
    pub(crate) ttl: Option<Duration>,
    pub(crate) tags: Option<Vec<String>>,
    pub(crate) etag: Option<String>,
    pub(crate) load_micros: u32,
    /// The stamp of when the load began: the entry reflects the source as of
    /// then, so that is its creation time for tag and namespace invalidations.
    pub(crate) started_at: Option<u64>,
}

/// An entry ready to be stored in both tiers.
pub(crate) struct Prepared {
    pub(crate) bytes: Vec<u8>,
    pub(crate) meta: EntryMeta,
    /// Redis TTL: until the end of the stale window.
    pub(crate) l2_ttl: Duration,
    pub(crate) l1_lifetime: Duration,
}

impl Tiers {
    /// Build the stored form of an entry. `value: None` is an absent marker.
    pub(crate) fn prepare<V: CacheValue>(
        &self,
        stored: &str,
        value: Option<&V>,
        opts: &EntryOptions,
        hints: &FillHints,
    ) -> Result<Prepared> {
        let payload = value.map(|v| self.codec.encode(v)).transpose()?;
        let base_ttl = match (hints.ttl, value) {
            (Some(ttl), _) => ttl,
            (None, Some(_)) => opts.ttl,
            (None, None) => opts.negative_ttl,
        };
        // A loader's own TTL is not validated with the options: bound it here.
        let ttl = opts.jittered_ttl(base_ttl.min(MAX_DURATION));
        let stale_for = if value.is_some() {
            opts.stale_for
        } else {
            Duration::ZERO
        };
        let now = self.clock.now_ms();
        let fresh_until_ms = now.saturating_add(ttl.as_millis() as u64);
        let meta = EntryMeta {
            created_at_us: hints.started_at.unwrap_or_else(|| self.clock.stamp()),
            fresh_until_ms,
            stale_until_ms: fresh_until_ms.saturating_add(stale_for.as_millis() as u64),
            load_micros: hints.load_micros,
            tags: hints.tags.clone().unwrap_or_else(|| opts.tags.clone()),
            etag: hints.etag.clone(),
            fail_safe: false,
            schema: opts.schema_version,
        };
        // The bound is on the encoded value, before compression, so that the
        // same bound can cap decompression when reading.
        let encoded_len = payload.as_ref().map_or(0, Vec::len);
        if encoded_len > self.max_value_bytes {
            self.metrics.global.oversized_values.increment(1);
            return Err(Error::ValueTooLarge {
                key: stored.chars().take(64).collect(),
                size: encoded_len,
                max: self.max_value_bytes,
            });
        }
        let bytes = envelope::encode(
            &meta,
            payload.as_deref().map(|p| (self.codec, p)),
            self.compress_above,
        );
        let l1_lifetime = opts.l1_ttl.map_or(ttl, |l1| l1.min(ttl)) + stale_for;
        Ok(Prepared {
            bytes,
            meta,
            l2_ttl: ttl + stale_for,
            l1_lifetime,
        })
    }
}
