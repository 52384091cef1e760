//! The caller's side of a load: L1, then a running flight to join, then L2
//! in the caller's own task (a hit costs no task and no channel), and only
//! then a flight of its own.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use super::decide::{self, OnL1, OnL2};
use super::scope::LoadScope;
use super::{Fetched, L2Seen, LoadContext, Loaded, Loads, Mode, Start};
use crate::coalesce::{Progress, Role};
use crate::error::{BoxError, Error, Result};
use crate::metrics::PolicyMetrics;
use crate::options::EntryOptions;
use crate::tiers::{entry_shared, entry_value, CacheValue, Known, L2Read};

impl Loads {
    /// The value under `key`, or what `loader` returns for it (see the
    /// module doc). `accept_absent`: an absent marker is an answer.
    pub(crate) async fn load_through<V, F, Fut, E>(
        self: &Arc<Self>,
        key: &str,
        opts: &EntryOptions,
        accept_absent: bool,
        loader: F,
    ) -> Result<Fetched<V>>
    where
        V: CacheValue,
        F: FnOnce(LoadContext<V>) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Loaded<V>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        opts.validate()?;
        // An L1 hit completes without waiting on anything: take a unit of
        // the task's cooperative budget, so a loop of hits yields now and
        // then instead of starving the runtime (Redis replies, timers, loads).
        tokio::task::consume_budget().await;
        let tiers = &self.tiers;
        let m = tiers.metrics().policy(opts.policy.as_ref());
        let started = m.start();
        let inner_key = tiers.keys().inner_key(key)?;
        let mut known: Option<Known<V>> = None;
        let mut offer_known = false;
        if let Some(hit) = tiers.l1_hit(&inner_key, opts) {
            if let Some(found) = entry_value::<V>(&hit.entry) {
                let now = tiers.clock().now_ms();
                let meta = &hit.entry.meta;
                match decide::on_l1(meta, found.is_some(), hit.trusted, accept_absent, opts, now) {
                    OnL1::Serve { refresh_early } => {
                        m.l1_hits.increment(1);
                        if found.is_none() {
                            m.negative_hits.increment(1);
                        }
                        if refresh_early {
                            let current = (found.clone(), meta.clone(), hit.entry.encoded_len());
                            let stored = tiers.keys().stored(key)?;
                            self.refresh_in_background(
                                stored,
                                opts,
                                accept_absent,
                                current,
                                loader,
                                &m,
                            );
                        }
                        m.record_get(started);
                        return Ok(Fetched::fresh(found));
                    }
                    OnL1::ServeThrottled => {
                        m.l1_hits.increment(1);
                        m.stale_served.increment(1);
                        return Ok(Fetched::stale(found));
                    }
                    OnL1::Fallback { offer } => {
                        known = Some((found, meta.clone(), hit.entry.encoded_len()));
                        offer_known = offer;
                    }
                    OnL1::Miss => {}
                }
            }
        }
        m.l1_misses.increment(1);

        let stored = tiers.keys().stored(key)?;
        let scope = LoadScope::current();
        if scope.loads(&stored) {
            return Err(Error::ReentrantLoad {
                key: key.chars().take(64).collect(),
            });
        }
        let patience = decide::patience(opts);
        let broad = tiers.log().broad();
        // A load of this key is running here: its L2 read and its load serve
        // this caller too.
        if let Some(flight) = self.flights.join::<Fetched<V>>(&stored, broad) {
            m.coalesced.increment(1);
            return finish(flight.wait(patience).await, &m, started);
        }
        // Read L2 in the caller's own task: a hit — the common case — then
        // costs no task, no channel and no flight. Only a miss starts a flight.
        // A caller holding a stale value to offer leaves that to the flight,
        // which can hand it the stale value at once (stale-while-revalidate).
        let mut seen = if scope.redis_failed() {
            L2Seen::Failed
        } else {
            L2Seen::NotRead
        };
        let mut keep_out_of_l2 = false;
        // While reads mostly miss, the flight reads L2 instead, taking the
        // lease in the same round trip if it finds nothing: callers of this
        // instance then share that one read.
        let read_or_lease = self.reads_take_lease(opts);
        let caller_reads =
            !offer_known && !opts.skip_l2 && seen == L2Seen::NotRead && !read_or_lease;
        if let Some(l2) = tiers.l2().filter(|_| caller_reads) {
            let since = tiers.log().mark();
            let read = tiers.read_l2::<V>(l2, &stored, opts).await;
            self.l2_misses.record(!matches!(read, Ok(L2Read::Found(_))));
            seen = match read {
                Ok(L2Read::Found(entry)) => {
                    let judge = Judge {
                        loads: self,
                        stored: &stored,
                        opts,
                        since,
                        accept_absent,
                        mode: Mode::Miss,
                        progress: None,
                        m: &m,
                    };
                    match judge.entry(entry, &mut known) {
                        Some(done) => return finish(Ok(done), &m, started),
                        None => L2Seen::Missed,
                    }
                }
                Ok(L2Read::Missing) => {
                    m.l2_misses.increment(1);
                    L2Seen::Missed
                }
                Ok(L2Read::Foreign { newer }) => {
                    m.l2_misses.increment(1);
                    keep_out_of_l2 = newer;
                    L2Seen::Missed
                }
                // Redis answered with an error (a key of another type):
                // a miss; the lease step clears the key.
                Err(err) if !err.is_unavailable() => {
                    m.l2_misses.increment(1);
                    L2Seen::Missed
                }
                Err(_) => {
                    m.l2_misses.increment(1);
                    L2Seen::Failed
                }
            };
        }

        let start = Start {
            accept_absent,
            mode: Mode::Miss,
            seen,
            read_or_lease,
            keep_out_of_l2,
            offer_known,
            scope,
        };
        let loads = Arc::clone(self);
        let position = (tiers.log().mark(), broad);
        let (flight, role) = self.flights.join_or_start(&stored, position, |progress| {
            let span = tracing::debug_span!("stratacache.load", key = %stored, policy = opts.policy_name().unwrap_or("default"));
            loads
                .resolve(stored.clone(), opts.clone(), start, known, loader, progress)
                .instrument(span)
        });
        if role == Role::Follower {
            m.coalesced.increment(1);
        }
        finish(flight.wait(patience).await, &m, started)
    }

    /// An L1 hit shared rather than cloned: `Some` only when the entry holds
    /// a value of type `V`, fresh and trusted, with no early refresh due. Any
    /// other case is left to [`load_through`](Self::load_through), which then
    /// counts it; this step records nothing unless it answers.
    pub(crate) fn l1_shared_hit<V: CacheValue>(
        &self,
        key: &str,
        opts: &EntryOptions,
    ) -> Result<Option<Arc<V>>> {
        let tiers = &self.tiers;
        let m = tiers.metrics().policy(opts.policy.as_ref());
        let started = m.start();
        let inner_key = tiers.keys().inner_key(key)?;
        let Some(hit) = tiers.l1_hit(&inner_key, opts) else {
            return Ok(None);
        };
        let Some(value) = entry_shared::<V>(&hit.entry) else {
            return Ok(None);
        };
        let now = tiers.clock().now_ms();
        let meta = &hit.entry.meta;
        let on_l1 = decide::on_l1(meta, true, hit.trusted, false, opts, now);
        if on_l1
            != (OnL1::Serve {
                refresh_early: false,
            })
        {
            return Ok(None);
        }
        m.l1_hits.increment(1);
        m.record_get(started);
        Ok(Some(value))
    }

    /// Whether this load's L2 read should take the lease when it finds
    /// nothing: while most recent reads missed, when the load would take a
    /// lease anyway.
    fn reads_take_lease(&self, opts: &EntryOptions) -> bool {
        opts.distributed_lease
            && !opts.skip_l2
            && self.tiers.waiters().is_some()
            && self.l2_misses.likely()
    }

    /// Start a refresh of a fresh entry unless one is running; nobody waits for it.
    fn refresh_in_background<V, F, Fut, E>(
        self: &Arc<Self>,
        stored: String,
        opts: &EntryOptions,
        accept_absent: bool,
        current: Known<V>,
        loader: F,
        m: &PolicyMetrics,
    ) where
        V: CacheValue,
        F: FnOnce(LoadContext<V>) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Loaded<V>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let loads = Arc::clone(self);
        let log = self.tiers.log();
        let position = (log.mark(), log.broad());
        let (_, role) = self.flights.join_or_start(&stored, position, |progress| {
            let span = tracing::debug_span!("stratacache.refresh", key = %stored);
            let start = Start {
                accept_absent,
                mode: Mode::Refresh,
                seen: L2Seen::NotRead,
                read_or_lease: false,
                keep_out_of_l2: false,
                offer_known: false,
                scope: LoadScope::current(),
            };
            loads
                .resolve(
                    stored.clone(),
                    opts.clone(),
                    start,
                    Some(current),
                    loader,
                    progress,
                )
                .instrument(span)
        });
        if role == Role::Leader {
            m.refreshes.increment(1);
        }
    }
}

/// Count what a caller leaves with.
fn finish<V>(
    result: Result<Fetched<V>>,
    m: &PolicyMetrics,
    started: Option<Instant>,
) -> Result<Fetched<V>> {
    if matches!(&result, Ok(fetched) if fetched.stale) {
        m.stale_served.increment(1);
    }
    m.record_get(started);
    result
}

/// Judges entries found in L2 on a load's behalf.
pub(super) struct Judge<'a, V> {
    pub(super) loads: &'a Loads,
    pub(super) stored: &'a str,
    pub(super) opts: &'a EntryOptions,
    /// The log mark taken before the read: what L1 fills re-check.
    pub(super) since: u64,
    pub(super) accept_absent: bool,
    pub(super) mode: Mode,
    /// The flight's, to offer stale values early; `None` in the caller's task.
    pub(super) progress: Option<&'a Progress<Fetched<V>>>,
    pub(super) m: &'a PolicyMetrics,
}

impl<V: CacheValue> Judge<'_, V> {
    /// Whether `entry` answers the load. A stale entry newer than `known`
    /// replaces it (and is offered to callers that accept stale data).
    pub(super) fn entry(
        &self,
        entry: Known<V>,
        known: &mut Option<Known<V>>,
    ) -> Option<Fetched<V>> {
        let (found, meta, encoded_len) = entry;
        let tiers = &self.loads.tiers;
        let decision = decide::on_l2(
            &meta,
            found.is_some(),
            self.accept_absent,
            self.mode == Mode::Refresh,
            known.as_ref().map(|(_, k, _)| k.created_at_us),
            self.opts.fail_safe,
            tiers.clock().now_ms(),
        );
        let fill = |found: &Option<V>, meta| {
            tiers.fill_l1(self.stored, found, meta, encoded_len, self.opts, self.since)
        };
        match decision {
            OnL2::Serve => {
                self.m.l2_hits.increment(1);
                if found.is_none() {
                    self.m.negative_hits.increment(1);
                }
                fill(&found, meta);
                Some(Fetched::fresh(found))
            }
            // Another instance's fail-safe: do not call the failing source again yet.
            OnL2::ServeThrottled => {
                fill(&found, meta);
                Some(Fetched::stale(found))
            }
            OnL2::KeepStale => {
                self.m.l2_misses.increment(1);
                fill(&found, meta.clone());
                if let (Mode::Miss, Some(progress)) = (self.mode, self.progress) {
                    progress.offer_stale(Fetched::stale(found.clone()));
                }
                *known = Some((found, meta, encoded_len));
                None
            }
            OnL2::Load => {
                self.m.l2_misses.increment(1);
                None
            }
        }
    }
}
