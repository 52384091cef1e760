//! The load and what follows it: call the loader (bounded by `hard_timeout`,
//! past which callers are answered and the load goes on in the background),
//! then fill both tiers through the lease — or renew the entry ("not
//! modified"), or keep serving the stale value (fail-safe). With
//! `fill_in_background` the callers are answered before the fill, which the
//! flight then finishes on its own (see `coalesce`: a leader that leaves
//! hands the unfinished flight to a task).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::decide;
use super::{Fetched, LoadContext, Loaded, Loads, Mode, Start};
use crate::coalesce::Progress;
use crate::codec::envelope::EntryMeta;
use crate::error::{BoxError, Error, Result};
use crate::l2::{Write, L2};
use crate::lease::{self, Lease};
use crate::metrics::PolicyMetrics;
use crate::options::{Consistency, EntryOptions};
use crate::tiers::{CacheValue, FillHints, Known};

impl Loads {
    /// Call the loader and store what it says; fail-safe on failure.
    /// `fill_to`: the L2 to fill (`None`: Redis failed, is skipped, or holds
    /// an entry this load must not replace).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn load_and_fill<V, F, Fut, E>(
        &self,
        stored: &str,
        opts: &EntryOptions,
        (start, redis_failed): (&Start, bool),
        known: Option<Known<V>>,
        loader: F,
        (mut lease, fill_to): (Option<Lease>, Option<Arc<L2>>),
        (m, since, progress): (&PolicyMetrics, u64, &Progress<Fetched<V>>),
    ) -> Result<Fetched<V>>
    where
        V: CacheValue,
        F: FnOnce(LoadContext<V>) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Loaded<V>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let tiers = &self.tiers;
        m.loads.increment(1);
        let stale_value = known.as_ref().and_then(|(value, _, _)| value.clone());
        let context = LoadContext {
            stale: stale_value.clone(),
            etag: known.as_ref().and_then(|(_, meta, _)| meta.etag.clone()),
        };
        let started = Instant::now();
        let started_at = tiers.clock().stamp();
        let scope = start.scope.enter(stored, redis_failed);
        let load = Box::pin(scope.run(async move { loader(context).await.map_err(Error::loader) }));
        let bounded = async {
            let Some(limit) = opts.hard_timeout else {
                return load.await;
            };
            let mut load = load;
            if let Ok(result) = tokio::time::timeout(limit, &mut load).await {
                return result;
            }
            // Past the hard timeout: the callers get the stale value or the
            // timeout now; the load goes on, bounded by the lease's lifetime,
            // so that a source that has become slow can still fill the cache.
            let answer = match stale_value.as_ref().filter(|_| opts.fail_safe) {
                Some(value) => {
                    m.fail_safe.increment(1);
                    Ok(Fetched::stale(Some(value.clone())))
                }
                None => Err(Error::LoaderTimeout(limit)),
            };
            progress.answer_early(answer);
            match tokio::time::timeout(opts.lock_timeout, load).await {
                Ok(result) => result,
                Err(_) => Err(Error::LoaderTimeout(limit + opts.lock_timeout)),
            }
        };
        let outcome = match (&lease, &fill_to) {
            (Some(lease), Some(l2)) => lease.hold_while(l2, bounded).await,
            _ => bounded.await,
        };
        let took = started.elapsed();
        m.load_seconds.record(took.as_secs_f64());
        let load_micros = took.as_micros().min(u32::MAX as u128) as u32;
        let l2 = fill_to.as_deref();

        match outcome {
            Ok(loaded) if loaded.not_modified => {
                let Some((value, old, encoded_len)) = known else {
                    self.release(lease).await;
                    m.load_errors.increment(1);
                    return Err(Error::loader(
                        "the loader answered \"not modified\" but nothing was cached",
                    ));
                };
                m.not_modified.increment(1);
                let ttl = opts.jittered_ttl(loaded.ttl.unwrap_or(opts.ttl));
                let now = tiers.clock().now_ms();
                let renewed = decide::renewed_meta(
                    &old,
                    ttl,
                    opts.stale_for,
                    loaded.etag,
                    (load_micros, started_at, now),
                );
                let l2_ttl = Duration::from_millis(renewed.stale_until_ms.saturating_sub(now));
                self.retime_in_l2(l2, lease.as_ref(), stored, &old, &renewed, l2_ttl)
                    .await;
                tiers.fill_l1(stored, &value, renewed, encoded_len, opts, since);
                Ok(Fetched::fresh(value))
            }
            Ok(loaded) => {
                if loaded.cache {
                    let hints = FillHints {
                        ttl: loaded.ttl,
                        tags: loaded.tags,
                        etag: loaded.etag,
                        load_micros,
                        started_at: Some(started_at),
                    };
                    match tiers.prepare(stored, loaded.value.as_ref(), opts, &hints) {
                        Ok(prepared) => {
                            // Filling in the background: the callers have
                            // their value now; the flight stays in the map
                            // (and the lease held) until the fill below ends.
                            if opts.fill_in_background && start.mode == Mode::Miss && l2.is_some() {
                                progress.answer(Ok(Fetched::fresh(loaded.value.clone())));
                            }
                            let write = Write {
                                key: stored.to_owned(),
                                bytes: prepared.bytes,
                                ttl_ms: prepared.l2_ttl.as_millis() as u64,
                            };
                            // Redis first: if the fill is refused (the key was
                            // invalidated while we loaded), L1 must not keep it either.
                            let landed = match (l2, opts.consistency) {
                                (Some(l2), Consistency::Lease) => {
                                    self.fill_l2(l2, lease.as_ref(), &write).await
                                }
                                (Some(l2), Consistency::Version) => {
                                    let version = loaded.version.unwrap_or(0);
                                    self.fill_l2_versioned(l2, lease.as_ref(), &write, version)
                                        .await
                                }
                                (None, _) => Landed::NotTried,
                            };
                            // The fill script took the lease with it (or found it
                            // revoked); after a failed fill Redis is not called
                            // again. Either way there is nothing left to release.
                            drop(lease.take());
                            if landed != Landed::Refused {
                                tiers.fill_l1_for(
                                    stored,
                                    &loaded.value,
                                    prepared.meta,
                                    prepared.l1_lifetime,
                                    write.bytes.len(),
                                    opts,
                                    since,
                                );
                            }
                            // A refresh changed a value other instances hold
                            // as fresh: they drop their copies.
                            if start.mode == Mode::Refresh && landed == Landed::Yes {
                                self.writes.announce_refreshed(stored).await;
                            }
                        }
                        // The caller still gets the value; it is just not cached.
                        Err(err @ Error::ValueTooLarge { .. }) => {
                            tracing::warn!(error = %err, "loaded value not cached");
                        }
                        Err(err) => {
                            self.release(lease).await;
                            return Err(err);
                        }
                    }
                }
                self.release(lease).await;
                Ok(Fetched::fresh(loaded.value))
            }
            Err(err) => {
                m.load_errors.increment(1);
                tracing::debug!(key = stored, error = %err, "load failed");
                match known {
                    Some((Some(value), old, encoded_len)) if opts.fail_safe => {
                        m.fail_safe.increment(1);
                        tracing::warn!(key = stored, error = %err, "load failed; serving the stale value (fail-safe)");
                        let now = tiers.clock().now_ms();
                        let throttled = decide::fail_safe_meta(&old, opts.fail_safe_throttle, now);
                        let l2_ttl = Duration::from_millis(old.stale_until_ms.saturating_sub(now));
                        self.retime_in_l2(l2, lease.as_ref(), stored, &old, &throttled, l2_ttl)
                            .await;
                        let value = Some(value);
                        tiers.fill_l1(stored, &value, throttled, encoded_len, opts, since);
                        Ok(Fetched::stale(value))
                    }
                    _ => {
                        self.release(lease).await;
                        Err(err)
                    }
                }
            }
        }
    }

    /// Fill L2 through the lease.
    async fn fill_l2(&self, l2: &L2, lease: Option<&Lease>, write: &Write) -> Landed {
        match lease::fill(l2, lease, write, self.tiers.fills_channel()).await {
            Ok(true) => Landed::Yes,
            Ok(false) => {
                self.tiers.metrics().global.fills_refused_lease.increment(1);
                tracing::debug!(key = %write.key, "fill refused: the key was invalidated or taken over");
                Landed::Refused
            }
            Err(err) => {
                tracing::warn!(key = %write.key, error = ?err, "redis fill failed; value kept in L1 only");
                Landed::NotTried
            }
        }
    }

    /// Fill L2 unless it knows a newer version than `version`.
    async fn fill_l2_versioned(
        &self,
        l2: &L2,
        lease: Option<&Lease>,
        write: &Write,
        version: u64,
    ) -> Landed {
        let channel = self.tiers.fills_channel();
        match crate::versioned::fill_versioned(l2, lease, write, version, channel).await {
            Ok(true) => Landed::Yes,
            Ok(false) => {
                self.tiers
                    .metrics()
                    .global
                    .fills_refused_version
                    .increment(1);
                tracing::debug!(key = %write.key, version, "fill refused: redis knows a newer version");
                Landed::Refused
            }
            Err(err) => {
                tracing::warn!(key = %write.key, error = ?err, "redis fill failed; value kept in L1 only");
                Landed::NotTried
            }
        }
    }

    async fn retime_in_l2(
        &self,
        l2: Option<&L2>,
        lease: Option<&Lease>,
        stored: &str,
        old: &EntryMeta,
        new: &EntryMeta,
        ttl: Duration,
    ) {
        let Some(l2) = l2 else { return };
        let channel = self.tiers.fills_channel();
        if let Err(err) =
            lease::retime(l2, lease, stored, old.created_at_us, new, ttl, channel).await
        {
            tracing::debug!(key = stored, error = ?err, "could not renew the entry in redis");
        }
    }

    async fn release(&self, lease: Option<Lease>) {
        if let (Some(lease), Some(l2)) = (lease, self.tiers.l2()) {
            lease.release(l2).await;
        }
    }
}

/// Whether a fill reached L2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Landed {
    Yes,
    /// Refused: the key was invalidated (or a newer version is known) while
    /// the load ran; L1 must not keep the value either.
    Refused,
    /// Not written (no L2 to fill, or Redis failed): L1 keeps the value.
    NotTried,
}
