//! A read that accepts a stale value and never loads: for a caller that has
//! no loader at hand, or would rather answer with an old value than wait.
//!
//! ```text
//! created ──── fresh ────► fresh_until ──── stale window ────► stale_until
//!          Fetched::fresh            Fetched::stale            None
//! ```

use super::Cache;
use crate::codec::envelope::EntryMeta;
use crate::error::Result;
use crate::freshness::{classify, Usability};
use crate::read::scope::LoadScope;
use crate::read::Fetched;
use crate::tiers::{count_l2, entry_value, CacheValue, Known, L2Read};

impl Cache {
    /// The value under `key` even past its fresh time, as long as it is
    /// within its stale window ([`EntryOptions::stale_for`]), saying whether
    /// it is stale ([`Fetched::is_stale`]). Never calls a loader and never
    /// starts a refresh.
    ///
    /// `None` when nothing usable is cached: no entry, or one past its stale
    /// window. A value cached as absent is `Some` with
    /// [`Fetched::value`] `None`. A stale value kept by fail-safe after a
    /// failed load is stale. The newest of L1's and Redis's copies wins; an
    /// L1 copy this instance no longer trusts (its backplane is down, so it
    /// may have missed an invalidation) is never served. Like
    /// [`get`](Self::get), it never fails because of Redis.
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// use std::time::Duration;
    /// use stratacache::EntryOptions;
    ///
    /// let opts = EntryOptions::new()
    ///     .ttl(Duration::from_secs(5))
    ///     .stale_for(Duration::from_secs(600));
    /// cache.set("market:overview", &"calm".to_string(), &opts).await?;
    /// // Later, with the database down and no loader to call:
    /// if let Some(found) = cache.get_allow_stale::<String>("market:overview").await? {
    ///     println!("{:?} (stale: {})", found.value(), found.is_stale());
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// [`EntryOptions::stale_for`]: crate::EntryOptions::stale_for
    pub async fn get_allow_stale<V: CacheValue>(&self, key: &str) -> Result<Option<Fetched<V>>> {
        let opts = &self.inner.defaults;
        opts.validate()?;
        tokio::task::consume_budget().await;
        let tiers = self.tiers();
        let m = tiers.metrics().policy(opts.policy.as_ref());
        let started = m.start();
        let inner_key = tiers.keys().inner_key(key)?;
        let mut best: Option<Known<V>> = None;
        // A copy L1 cannot vouch for (the backplane is down and the copy is
        // older than the outage bound: it may have missed an invalidation):
        // Redis decides; only when Redis cannot be read is it served, as
        // stale — what a load's fail-safe does with it.
        let mut distrusted: Option<Known<V>> = None;
        if let Some(hit) = tiers.l1_hit(&inner_key, opts) {
            if let Some(found) = entry_value::<V>(&hit.entry) {
                let meta = &hit.entry.meta;
                match staleness(meta, tiers.clock().now_ms()) {
                    Some(false) if hit.trusted => {
                        m.l1_hits.increment(1);
                        m.record_get(started);
                        return Ok(Some(Fetched::fresh(found)));
                    }
                    Some(_) if hit.trusted => {
                        best = Some((found, meta.clone(), hit.entry.encoded_len()))
                    }
                    Some(_) => distrusted = Some((found, meta.clone(), hit.entry.encoded_len())),
                    None => {}
                }
            }
        }
        m.l1_misses.increment(1);
        // Redis may hold a newer copy than the stale one at hand (another
        // instance loaded it since).
        let stored = tiers.keys().stored_from_inner(&inner_key);
        let redis_allowed = !opts.skip_l2 && !LoadScope::current().redis_failed();
        let mut redis_answered = false;
        if let Some(l2) = tiers.l2().filter(|_| redis_allowed) {
            let since = tiers.log().mark();
            let read = tiers.read_l2::<V>(l2, &stored, opts).await;
            redis_answered = !matches!(&read, Err(err) if err.is_unavailable());
            let read = match read {
                Ok(L2Read::Found(entry)) => Some(entry),
                _ => None,
            };
            let now = tiers.clock().now_ms();
            let usable = read.filter(|(_, meta, _)| staleness(meta, now).is_some());
            count_l2(&m, usable.as_ref().map(|(found, _, _)| found.is_some()));
            if let Some((found, meta, encoded_len)) = usable {
                let newer = best
                    .as_ref()
                    .is_none_or(|(_, held, _)| meta.created_at_us > held.created_at_us);
                if newer {
                    tiers.fill_l1(&stored, &found, meta.clone(), encoded_len, opts, since);
                    best = Some((found, meta, encoded_len));
                }
            }
        }
        let now = tiers.clock().now_ms();
        let answer = match (best, distrusted) {
            (Some((found, meta, _)), _) => match staleness(&meta, now) {
                Some(false) => Some(Fetched::fresh(found)),
                Some(true) => Some(Fetched::stale(found)),
                None => None,
            },
            (None, Some((found, meta, _))) if !redis_answered => {
                staleness(&meta, now).map(|_| Fetched::stale(found))
            }
            (None, _) => None,
        };
        if answer.as_ref().is_some_and(Fetched::is_stale) {
            m.stale_served.increment(1);
        }
        m.record_get(started);
        Ok(answer)
    }
}

/// Whether an entry may be served by a read that accepts stale values, and
/// if so whether it is stale: `Some(false)` fresh, `Some(true)` stale (past
/// its fresh time, or kept by fail-safe), `None` past its stale window.
fn staleness(meta: &EntryMeta, now_ms: u64) -> Option<bool> {
    match classify(meta, now_ms, None) {
        Usability::Fresh { .. } => Some(false),
        Usability::Throttled | Usability::Stale => Some(true),
        Usability::Expired => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(fresh_until_ms: u64, stale_until_ms: u64, fail_safe: bool) -> EntryMeta {
        EntryMeta {
            fresh_until_ms,
            stale_until_ms,
            fail_safe,
            ..EntryMeta::default()
        }
    }

    #[test]
    fn fresh_then_stale_then_gone() {
        let entry = meta(100, 200, false);
        assert_eq!(staleness(&entry, 50), Some(false));
        assert_eq!(staleness(&entry, 100), Some(true));
        assert_eq!(staleness(&entry, 199), Some(true));
        assert_eq!(staleness(&entry, 200), None);
    }

    #[test]
    fn a_value_kept_by_fail_safe_is_stale() {
        assert_eq!(staleness(&meta(100, 200, true), 50), Some(true));
    }
}
