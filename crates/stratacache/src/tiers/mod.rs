//! The tiers and what it takes to read them: L1, L2, the codec, and the
//! invalidation state every entry is checked against before it is served.
//!
//! The read path (`read`) and the write pipeline (`write`) both work on one
//! [`Tiers`]. Reads happen here — an L1 entry is served only if still valid
//! and trusted ([`Tiers::l1_hit`]), an L2 entry only if it decodes, belongs
//! to this schema and no invalidation hides it ([`Tiers::read_l2`]) — and so
//! does the one kind of write a read makes, filling L1 from a value it read
//! ([`Tiers::fill_l1`]). Every other change to the tiers goes through the
//! write pipeline, which orders its steps.

mod decode;
mod encode;

use std::sync::Arc;

pub(crate) use decode::L2Read;
pub(crate) use encode::{FillHints, Prepared};

use crate::clock::Clock;
use crate::codec::envelope::EntryMeta;
use crate::codec::Codec;
use crate::invalidation::log::InvalidationLog;
use crate::invalidation::stamps::Stamps;
use crate::invalidation::trust::Trust;
use crate::keys::KeySpace;
use crate::l1::{L1Entry, L1};
use crate::l2::{L2Error, L2};
use crate::lease::waiters::FillWaiters;
use crate::metrics::{Metrics, PolicyMetrics};
use crate::options::EntryOptions;

/// An entry found in a tier: a value, or the marker of an absent one.
pub(crate) type Found<V> = Option<V>;
/// A value found in a tier with its metadata and stored size.
pub(crate) type Known<V> = (Found<V>, EntryMeta, usize);

/// What a cached value must be: serializable for L2, cloneable for L1 and
/// for handing one load's result to many callers.
pub trait CacheValue:
    serde::Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static
{
}
impl<T> CacheValue for T where
    T: serde::Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static
{
}

/// An L1 entry that is still valid.
pub(crate) struct L1Hit {
    pub(crate) entry: Arc<L1Entry>,
    /// Whether it may be served as fresh: while the backplane is down, old
    /// entries are kept only as fail-safe fallbacks.
    pub(crate) trusted: bool,
}

/// What a cache is made of, for [`Tiers::new`].
pub(crate) struct TierParts {
    pub(crate) keys: KeySpace,
    pub(crate) clock: Clock,
    pub(crate) l1: Option<L1>,
    pub(crate) l2: Option<Arc<L2>>,
    pub(crate) codec: Codec,
    pub(crate) compress_above: Option<usize>,
    pub(crate) max_value_bytes: usize,
    pub(crate) metrics: Metrics,
    pub(crate) trust: Trust,
}

pub(crate) struct Tiers {
    keys: KeySpace,
    clock: Clock,
    l1: Option<L1>,
    l2: Option<Arc<L2>>,
    codec: Codec,
    compress_above: Option<usize>,
    max_value_bytes: usize,
    metrics: Metrics,
    log: InvalidationLog,
    stamps: Stamps,
    trust: Trust,
    waiters: Option<Arc<FillWaiters>>,
}

impl Tiers {
    pub(crate) fn new(parts: TierParts) -> Self {
        let waiters = parts
            .l2
            .as_ref()
            .map(|_| FillWaiters::new(parts.keys.fills_channel()));
        Self {
            keys: parts.keys,
            clock: parts.clock,
            l1: parts.l1,
            l2: parts.l2,
            codec: parts.codec,
            compress_above: parts.compress_above,
            max_value_bytes: parts.max_value_bytes,
            metrics: parts.metrics,
            log: InvalidationLog::new(),
            stamps: Stamps::new(),
            trust: parts.trust,
            waiters,
        }
    }

    pub(crate) fn keys(&self) -> &KeySpace {
        &self.keys
    }

    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    pub(crate) fn l1(&self) -> Option<&L1> {
        self.l1.as_ref()
    }

    pub(crate) fn l2(&self) -> Option<&Arc<L2>> {
        self.l2.as_ref()
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn log(&self) -> &InvalidationLog {
        &self.log
    }

    pub(crate) fn stamps(&self) -> &Stamps {
        &self.stamps
    }

    pub(crate) fn trust(&self) -> &Trust {
        &self.trust
    }

    pub(crate) fn waiters(&self) -> Option<&Arc<FillWaiters>> {
        self.waiters.as_ref()
    }

    /// The channel fills are announced on ("" without L2).
    pub(crate) fn fills_channel(&self) -> &str {
        self.waiters.as_ref().map_or("", |w| w.channel())
    }

    /// This instance's L1 entry for the key `inner_key` (within the
    /// namespace), if it is still valid: checked against every tag, prefix
    /// and namespace invalidation since it was last checked — one atomic
    /// load when there was none.
    pub(crate) fn l1_hit(&self, inner_key: &str, opts: &EntryOptions) -> Option<L1Hit> {
        let l1 = self.l1.as_ref().filter(|_| !opts.skip_l1)?;
        let entry = l1.get_inner(inner_key)?;
        let broad = self.log.broad();
        if entry.checked() < broad {
            if !self
                .stamps
                .l1_entry_valid(inner_key, &entry.meta, entry.checked())
            {
                l1.remove_if_same(inner_key, &entry);
                return None;
            }
            entry.recheck(broad);
        }
        let trusted = self.trust.trusts(&self.clock, entry.meta.created_at_us);
        Some(L1Hit { entry, trusted })
    }

    /// [`l1_hit`](Self::l1_hit) by stored key.
    pub(crate) fn l1_hit_stored(&self, stored: &str, opts: &EntryOptions) -> Option<L1Hit> {
        self.l1_hit(self.keys.inner_of(stored), opts)
    }

    /// The L2 entry for `stored`: decoded, of this schema, and not hidden by
    /// an invalidation (see [`L2Read`]).
    pub(crate) async fn read_l2<V: CacheValue>(
        &self,
        l2: &L2,
        stored: &str,
        opts: &EntryOptions,
    ) -> Result<L2Read<V>, L2Error> {
        let Some(bytes) = l2.get(stored).await? else {
            return Ok(L2Read::Missing);
        };
        Ok(self.judge_l2::<V>(stored, &bytes, opts).await)
    }

    /// Judge bytes read from L2 (see [`read_l2`](Self::read_l2)).
    pub(crate) async fn judge_l2<V: CacheValue>(
        &self,
        stored: &str,
        bytes: &[u8],
        opts: &EntryOptions,
    ) -> L2Read<V> {
        match self.decode::<V>(stored, bytes, opts) {
            L2Read::Found((found, meta, len)) if !self.is_invalidated(&meta).await => {
                L2Read::Found((found, meta, len))
            }
            L2Read::Found(_) => L2Read::Missing,
            other => other,
        }
    }

    /// Whether an entry read from L2 is hidden by a tag or `invalidate_all`, or
    /// predates a master move the instances may not have repaired yet.
    pub(crate) async fn is_invalidated(&self, meta: &EntryMeta) -> bool {
        let Some(l2) = &self.l2 else {
            return self.stamps.hides(meta);
        };
        let now_ms = self.clock.now_ms();
        if decode::fenced(meta.created_at_us / 1_000, l2.master_moved_at_ms(), now_ms) {
            return true;
        }
        let unknown = self.stamps.unknown_tags(meta);
        if !unknown.is_empty() {
            let keys: Vec<String> = unknown.iter().map(|t| self.keys.tag_key(t)).collect();
            match l2.get_many(&keys).await {
                Ok(values) => {
                    for (tag, value) in unknown.iter().zip(values) {
                        let at = value
                            .and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok())
                            .map_or(0, crate::clock::stamp_from_stored);
                        self.stamps.fetched_tag(tag, at);
                    }
                }
                // Cannot tell: a tagged entry read while Redis fails is not trusted.
                Err(_) => return true,
            }
        }
        self.stamps.hides(meta)
    }

    /// Fill L1 from a value read before log position `since` (an L2 hit, a
    /// load), for at most the entry's remaining lifetime — unless the key was
    /// written or deleted here since: that write already swept L1 and would
    /// not come again ([`L1::insert_fill`]).
    pub(crate) fn fill_l1<V: CacheValue>(
        &self,
        stored: &str,
        value: &Found<V>,
        meta: EntryMeta,
        encoded_len: usize,
        opts: &EntryOptions,
        since: u64,
    ) {
        let now = self.clock.now_ms();
        let remaining = std::time::Duration::from_millis(meta.stale_until_ms.saturating_sub(now));
        let lifetime = opts
            .l1_ttl
            .map_or(remaining, |l1_ttl| l1_ttl.min(remaining));
        self.fill_l1_for(stored, value, meta, lifetime, encoded_len, opts, since);
    }

    /// [`fill_l1`](Self::fill_l1) for `lifetime`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fill_l1_for<V: CacheValue>(
        &self,
        stored: &str,
        value: &Found<V>,
        meta: EntryMeta,
        lifetime: std::time::Duration,
        encoded_len: usize,
        opts: &EntryOptions,
        since: u64,
    ) {
        let Some(l1) = self.l1.as_ref().filter(|_| !opts.skip_l1) else {
            return;
        };
        let entry = L1Entry::new(value.clone(), meta, lifetime, stored.len(), encoded_len)
            .checked_at(since);
        let inner_key = self.keys.inner_of(stored);
        l1.insert_fill(stored, entry, &self.metrics.global, || {
            !self.log.unchanged_since(inner_key, since)
        });
    }

    /// Many keys: L1 first, then the rest from L2 in one round trip; in the
    /// order of `stored`. Only fresh values count.
    pub(crate) async fn lookup_many<V: CacheValue>(
        &self,
        stored: &[String],
        opts: &EntryOptions,
        m: &PolicyMetrics,
        redis_allowed: bool,
    ) -> Vec<Option<Found<V>>> {
        let now = self.clock.now_ms();
        let mut found: Vec<Option<Found<V>>> = stored
            .iter()
            .map(|k| self.fresh_l1::<V>(self.keys.inner_of(k), opts, m, now))
            .collect();
        let missing: Vec<usize> = (0..stored.len()).filter(|&i| found[i].is_none()).collect();
        let Some(l2) = self
            .l2
            .as_ref()
            .filter(|_| !opts.skip_l2 && !missing.is_empty() && redis_allowed)
        else {
            return found;
        };
        let keys: Vec<String> = missing.iter().map(|&i| stored[i].clone()).collect();
        let since = self.log.mark();
        let Ok(values) = l2.get_many(&keys).await else {
            m.l2_misses.increment(missing.len() as u64);
            return found;
        };
        for (&i, bytes) in missing.iter().zip(values) {
            let hit = match bytes {
                Some(b) => match self.judge_l2::<V>(&stored[i], &b, opts).await {
                    L2Read::Found(known) if fresh(&known.1, self.clock.now_ms()) => Some(known),
                    _ => None,
                },
                None => None,
            };
            count_l2(m, hit.as_ref().map(|(f, _, _)| f.is_some()));
            if let Some((value, meta, encoded_len)) = hit {
                self.fill_l1(&stored[i], &value, meta, encoded_len, opts, since);
                found[i] = Some(value);
            }
        }
        found
    }

    /// A fresh, trusted L1 value of the key `inner_key` (within the
    /// namespace), counted as a hit; else `None`, counted as a miss.
    pub(crate) fn fresh_l1<V: CacheValue>(
        &self,
        inner_key: &str,
        opts: &EntryOptions,
        m: &PolicyMetrics,
        now_ms: u64,
    ) -> Option<Found<V>> {
        let hit = self
            .l1_hit(inner_key, opts)
            .filter(|hit| hit.trusted && fresh(&hit.entry.meta, now_ms))
            .and_then(|hit| entry_value::<V>(&hit.entry));
        match &hit {
            Some(found) => {
                m.l1_hits.increment(1);
                if found.is_none() {
                    m.negative_hits.increment(1);
                }
            }
            None => m.l1_misses.increment(1),
        }
        hit
    }
}

/// Whether plain reads (`get`) may return an entry: fresh, and not a stale
/// value kept by fail-safe.
pub(crate) fn fresh(meta: &EntryMeta, now_ms: u64) -> bool {
    meta.is_fresh(now_ms) && !meta.fail_safe
}

/// Count an L2 lookup: `Some(present)` a hit, `None` a miss.
pub(crate) fn count_l2(m: &PolicyMetrics, hit: Option<bool>) {
    match hit {
        Some(present) => {
            m.l2_hits.increment(1);
            if !present {
                m.negative_hits.increment(1);
            }
        }
        None => m.l2_misses.increment(1),
    }
}

/// The value of an L1 entry as `V`; `None` if it holds another type.
pub(crate) fn entry_value<V: CacheValue>(entry: &L1Entry) -> Option<Found<V>> {
    match &entry.value {
        None => Some(None),
        Some(value) => value.downcast_ref::<V>().map(|v| Some(v.clone())),
    }
}

/// The value an L1 entry holds, shared rather than cloned: `None` when it
/// holds an absent marker or a value of another type.
pub(crate) fn entry_shared<V: CacheValue>(entry: &L1Entry) -> Option<Arc<V>> {
    entry.value.clone()?.downcast::<V>().ok()
}
