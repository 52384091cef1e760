//! Loading on a miss: cache-aside (`get_or_load*`) with every protection, and
//! write-through.
//!
//! A caller first looks at L1 ([`Cache::load_through`]). A fresh entry is
//! answered at once (and may start an early refresh). Otherwise the caller
//! joins the key's flight ([`crate::coalesce`]) if one is running, or reads
//! L2 itself — a fresh entry is answered without any task or channel — and
//! only then starts (or joins) a flight, whose body is [`Inner::resolve`]:
//!
//! 1. read L2 unless the caller just did — fresh: done; stale: offer it to
//!    callers that accept stale data;
//! 2. take the key's lease in Redis ([`crate::lease`]) — lost: wait for the
//!    holder's fill (woken by its notification), or take over when it dies;
//! 3. call the loader (bounded by `hard_timeout`), fill both tiers through the
//!    lease, or — if the loader failed and a stale value exists — keep serving
//!    it for `fail_safe_throttle` (fail-safe).
//!
//! Once a Redis call of a load fails, the load makes no further Redis calls
//! (steps 2 and the L2 fill are skipped): a request pays one Redis timeout
//! at most, not one per step, before the breaker opens.
//!
//! Callers holding a stale value wait at most `soft_timeout` (zero: plain
//! stale-while-revalidate) before leaving with it; the flight goes on.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::cache::{entry_value, Cache, CacheValue, FillHints, Found, Inner};
use crate::coalesce::{Progress, Role};
use crate::codec::envelope::EntryMeta;
use crate::error::{BoxError, Error, Result};
use crate::freshness::{classify, Usability};
use crate::l2::{Write, L2};
use crate::lease::{self, Acquired, Lease};
use crate::metrics::PolicyMetrics;
use crate::options::{Consistency, EntryOptions};

tokio::task_local! {
    /// Set while a loader runs whose load found Redis failing: the cache
    /// calls that loader makes (a value composed from cached parts) skip
    /// Redis too, so the request still pays one Redis timeout, not one per
    /// nested call.
    static REDIS_FAILED_IN_THIS_LOAD: ();
}

/// Whether this task runs a loader whose load found Redis failing.
pub(crate) fn redis_failed_in_this_load() -> bool {
    REDIS_FAILED_IN_THIS_LOAD.try_with(|_| ()).is_ok()
}

/// How long a caller waits for another instance's load when it has no stale
/// value and the options set no `hard_timeout`.
const DEFAULT_WAIT_LIMIT: Duration = Duration::from_secs(30);
/// The longest pause between two checks of a key another instance is loading.
const MAX_WAIT_BACKOFF: Duration = Duration::from_millis(200);

/// What a loader found, and how it should be cached.
///
/// ```
/// use std::time::Duration;
/// use stratacache::Loaded;
///
/// let hot = Loaded::value(42).ttl(Duration::from_secs(5)).tags(["prices"]);
/// let versioned = Loaded::value(7).etag("row-v18");        // for conditional refresh
/// let missing: Loaded<u32> = Loaded::absent();              // cached as a negative entry
/// let volatile = Loaded::value(7).dont_cache();             // returned, never stored
/// let unchanged: Loaded<u32> = Loaded::not_modified();      // keep the cached value, renew its TTL
/// # let _ = (hot, versioned, missing, volatile, unchanged);
/// ```
#[derive(Debug, Clone)]
pub struct Loaded<V> {
    value: Option<V>,
    ttl: Option<Duration>,
    tags: Option<Vec<String>>,
    etag: Option<String>,
    version: Option<u64>,
    cache: bool,
    not_modified: bool,
}

impl<V> Loaded<V> {
    /// The loader found `value`.
    pub fn value(value: V) -> Self {
        Self {
            value: Some(value),
            ttl: None,
            tags: None,
            etag: None,
            version: None,
            cache: true,
            not_modified: false,
        }
    }

    /// The value does not exist; cache that fact for `negative_ttl`.
    pub fn absent() -> Self {
        Self {
            value: None,
            ..Self::value_less()
        }
    }

    /// The cached value (see [`LoadContext::stale`]) is still current: keep
    /// it and renew its lifetime, without sending the value to Redis again.
    pub fn not_modified() -> Self {
        Self {
            not_modified: true,
            ..Self::value_less()
        }
    }

    fn value_less() -> Self {
        Self {
            value: None,
            ttl: None,
            tags: None,
            etag: None,
            version: None,
            cache: true,
            not_modified: false,
        }
    }

    /// From an `Option`: `None` is [`absent`](Self::absent).
    pub fn from_option(value: Option<V>) -> Self {
        match value {
            Some(v) => Self::value(v),
            None => Self::absent(),
        }
    }

    /// Cache this result for `ttl` instead of the options' TTL (jitter still applies).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Tag this entry with `tags` instead of the options' tags.
    pub fn tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags = Some(tags.into_iter().map(Into::into).collect());
        self
    }

    /// The source's version of this value (an ETag, a row version); the next
    /// refresh receives it in [`LoadContext::etag`].
    pub fn etag(mut self, etag: impl Into<String>) -> Self {
        self.etag = Some(etag.into());
        self
    }

    /// The version of the source row this value was read at (a version
    /// column, an `xmin`, a sequence). Under [`Consistency::Version`] the
    /// fill lands only if Redis knows no newer version of the key.
    ///
    /// [`Consistency::Version`]: crate::Consistency::Version
    pub fn version(mut self, version: u64) -> Self {
        self.version = Some(version);
        self
    }

    /// Return the result to the callers but do not store it.
    pub fn dont_cache(mut self) -> Self {
        self.cache = false;
        self
    }
}

/// What a loader is told about the entry it refreshes.
#[derive(Debug, Clone)]
pub struct LoadContext<V> {
    stale: Option<V>,
    etag: Option<String>,
}

impl<V> LoadContext<V> {
    /// The value cached before (past its TTL, or due for an early refresh).
    pub fn stale(&self) -> Option<&V> {
        self.stale.as_ref()
    }

    /// The version recorded with the cached value ([`Loaded::etag`]). A loader
    /// may compare it with the source and answer [`Loaded::not_modified`].
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }
}

/// A value with how fresh it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched<V> {
    value: Option<V>,
    stale: bool,
}

impl<V> Fetched<V> {
    fn fresh(value: Option<V>) -> Self {
        Self {
            value,
            stale: false,
        }
    }

    fn stale(value: Option<V>) -> Self {
        Self { value, stale: true }
    }

    /// The value; `None` when the source says it does not exist.
    pub fn value(&self) -> Option<&V> {
        self.value.as_ref()
    }

    /// The value, owned.
    pub fn into_value(self) -> Option<V> {
        self.value
    }

    /// Whether this is a stale value (served past its TTL: stale-while-
    /// revalidate, a soft timeout, or fail-safe after a failed load).
    pub fn is_stale(&self) -> bool {
        self.stale
    }
}

/// A value found in a tier together with its metadata and stored size.
type Known<V> = (Found<V>, EntryMeta, usize);

/// Why a flight runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Callers need a value.
    Miss,
    /// A fresh value is due for an early refresh; nobody waits for it.
    Refresh,
}

impl Cache {
    /// Cache-aside: the value under `key`, or what `loader` returns for it,
    /// stored in both tiers.
    ///
    /// However many callers miss the same key at once — in this process and,
    /// through a lease in Redis, across instances — the loader runs once and
    /// all of them get its result, or its error.
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// use std::time::Duration;
    /// use stratacache::EntryOptions;
    ///
    /// let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    /// let price: f64 = cache
    ///     .get_or_load("price:ACME", &opts, || async {
    ///         // e.g. SELECT price FROM prices WHERE symbol = 'ACME'
    ///         Ok::<_, std::io::Error>(101.5)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn get_or_load<V, F, Fut, E>(
        &self,
        key: &str,
        opts: &EntryOptions,
        loader: F,
    ) -> Result<V>
    where
        V: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<V, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let load = |_: LoadContext<V>| async move { loader().await.map(Loaded::value) };
        match self.load_through(key, opts, false, load).await?.value {
            Some(value) => Ok(value),
            // Only reachable by joining another caller's optional load that
            // found nothing; this caller's own loader always yields a value.
            None => Err(Error::loader("the value is absent")),
        }
    }

    /// Cache-aside for values that may not exist: the loader returns
    /// `Ok(None)` for an absent value, which is cached as a negative entry
    /// for `negative_ttl`, so repeated lookups of missing ids stay off the database.
    pub async fn get_or_load_optional<V, F, Fut, E>(
        &self,
        key: &str,
        opts: &EntryOptions,
        loader: F,
    ) -> Result<Option<V>>
    where
        V: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<V>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let load = |_: LoadContext<V>| async move { loader().await.map(Loaded::from_option) };
        Ok(self.load_through(key, opts, true, load).await?.value)
    }

    /// Cache-aside with full control: the loader sees the stale value and its
    /// ETag ([`LoadContext`]) and decides how its result is cached — TTL,
    /// tags, ETag, not at all, or "not modified" ([`Loaded`]). The answer says
    /// whether the value is stale ([`Fetched::is_stale`]).
    pub async fn get_or_load_entry<V, F, Fut, E>(
        &self,
        key: &str,
        opts: &EntryOptions,
        loader: F,
    ) -> Result<Fetched<V>>
    where
        V: CacheValue,
        F: FnOnce(LoadContext<V>) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Loaded<V>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.load_through(key, opts, true, loader).await
    }

    /// Write-through: run `writer` (which persists the value, typically in the
    /// database, and returns it as stored), then put the value in both tiers.
    /// If the cache cannot take it, the key is invalidated instead, so the
    /// cache never keeps the value the write replaced.
    pub async fn write_through<V, F, Fut, E>(
        &self,
        key: &str,
        opts: &EntryOptions,
        writer: F,
    ) -> Result<V>
    where
        V: CacheValue,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<V, E>>,
        E: Into<BoxError>,
    {
        let stored = self.inner.keys.stored(key)?;
        let value = writer().await.map_err(Error::loader)?;
        match self
            .inner
            .prepare(&stored, Some(&value), opts, &FillHints::default())
        {
            Ok(prepared) => {
                self.inner
                    .store(stored, Some(value.clone()), prepared, opts)
                    .await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "write-through could not cache the value; invalidating");
                let _ = self.inner.remove(&[stored]).await;
            }
        }
        Ok(value)
    }

    async fn load_through<V, F, Fut, E>(
        &self,
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
        // See `Cache::get_with`: a loop of L1 hits must yield now and then.
        tokio::task::consume_budget().await;
        let m = self.inner.metrics.policy(opts.policy.as_ref());
        let started = m.start();
        let inner_key = self.inner.keys.inner_key(key)?;
        let mut stale_here: Option<Known<V>> = None;
        if let Some(entry) = self.inner.l1_entry_inner(&inner_key, opts) {
            if let Some(found) = entry_value::<V>(&entry) {
                let acceptable = found.is_some() || accept_absent;
                match classify(&entry.meta, self.inner.clock.now_ms(), opts.eager_refresh) {
                    Usability::Fresh { refresh_early } if acceptable => {
                        m.l1_hits.increment(1);
                        if found.is_none() {
                            m.negative_hits.increment(1);
                        }
                        if refresh_early {
                            let current = (found.clone(), entry.meta.clone(), entry.encoded_len());
                            let stored = self.inner.keys.stored(key)?;
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
                    Usability::Throttled if acceptable => {
                        m.l1_hits.increment(1);
                        m.stale_served.increment(1);
                        return Ok(Fetched::stale(found));
                    }
                    Usability::Stale if found.is_some() => {
                        stale_here = Some((found, entry.meta.clone(), entry.encoded_len()));
                    }
                    _ => {}
                }
            }
        }
        m.l1_misses.increment(1);

        let stored = self.inner.keys.stored(key)?;
        let patience =
            (!opts.stale_for.is_zero()).then(|| opts.soft_timeout.unwrap_or(Duration::ZERO));
        // A load of this key is running here: its L2 read and its load serve
        // this caller too.
        if let Some(flight) = self.inner.flights.join::<Fetched<V>>(&stored) {
            m.coalesced.increment(1);
            return finish(flight.wait(patience).await, &m, started);
        }
        // Read L2 in the caller's own task: a hit — the common case — then
        // costs no task, no channel and no flight. Only a miss starts a flight.
        // A caller holding a stale L1 value leaves that to the flight, which
        // can hand it the stale value at once (stale-while-revalidate).
        let mut seen = if redis_failed_in_this_load() {
            L2Seen::Failed
        } else {
            L2Seen::NotRead
        };
        let caller_reads = stale_here.is_none() && !opts.skip_l2 && seen == L2Seen::NotRead;
        if let Some(l2) = self.inner.l2.as_ref().filter(|_| caller_reads) {
            let verdict = Verdict {
                since: self.inner.invalidations.mark(),
                inner: &self.inner,
                stored: &stored,
                opts,
                accept_absent,
                mode: Mode::Miss,
                progress: None,
                m: &m,
            };
            seen = match self.inner.try_read_l2::<V>(l2, &stored).await {
                Ok(Some(entry)) => match verdict.judge(entry, &mut stale_here) {
                    Some(done) => return finish(Ok(done), &m, started),
                    None => L2Seen::Missed,
                },
                Ok(None) => {
                    m.l2_misses.increment(1);
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

        let inner = Arc::clone(&self.inner);
        let (flight, role) = self.inner.flights.join_or_start(&stored, |progress| {
            let span = tracing::debug_span!("stratacache.load", key = %stored, policy = opts.policy_name().unwrap_or("default"));
            let start = Start { accept_absent, mode: Mode::Miss, seen };
            inner
                .resolve(stored.clone(), opts.clone(), start, stale_here, loader, progress)
                .instrument(span)
        });
        if role == Role::Follower {
            m.coalesced.increment(1);
        }
        finish(flight.wait(patience).await, &m, started)
    }

    /// Start a refresh of a fresh entry unless one is running; nobody waits for it.
    fn refresh_in_background<V, F, Fut, E>(
        &self,
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
        let inner = Arc::clone(&self.inner);
        let (_, role) = self.inner.flights.join_or_start(&stored, |progress| {
            let span = tracing::debug_span!("stratacache.refresh", key = %stored);
            let start = Start {
                accept_absent,
                mode: Mode::Refresh,
                seen: L2Seen::NotRead,
            };
            inner
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

impl Inner {
    /// The body of a flight: L2 (unless the caller just read it), else the
    /// lease, else the loader; then fill.
    ///
    /// Once Redis fails to answer, the flight stops calling it — no lease, no
    /// fill — so a request pays at most one Redis timeout before its loader.
    async fn resolve<V, F, Fut, E>(
        self: Arc<Self>,
        stored: String,
        opts: EntryOptions,
        start: Start,
        mut known: Option<Known<V>>,
        loader: F,
        progress: Progress<Fetched<V>>,
    ) -> Result<Fetched<V>>
    where
        V: CacheValue,
        F: FnOnce(LoadContext<V>) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Loaded<V>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let m = self.metrics.policy(opts.policy.as_ref());
        if start.mode == Mode::Miss {
            if let Some((value, _, _)) = &known {
                progress.offer_stale(Fetched::stale(value.clone()));
            }
        }
        let mut l2 = self
            .l2
            .clone()
            .filter(|_| !opts.skip_l2 && start.seen != L2Seen::Failed);
        // Anything invalidated from here on must not enter L1 from this flight.
        let since = self.invalidations.mark();
        let verdict = Verdict {
            since,
            inner: &self,
            stored: &stored,
            opts: &opts,
            accept_absent: start.accept_absent,
            mode: start.mode,
            progress: Some(&progress),
            m: &m,
        };
        if let (Some(l2_ref), L2Seen::NotRead) = (&l2, start.seen) {
            match self.try_read_l2::<V>(l2_ref, &stored).await {
                Ok(Some(entry)) => {
                    if let Some(done) = verdict.judge(entry, &mut known) {
                        return Ok(done);
                    }
                }
                Ok(None) => m.l2_misses.increment(1),
                Err(err) => {
                    m.l2_misses.increment(1);
                    if err.is_unavailable() {
                        l2 = None;
                    }
                }
            }
        }
        let mut lease = None;
        if let Some(l2_ref) = l2.as_ref().filter(|_| opts.distributed_lease) {
            match self.lease_or_wait(l2_ref, &verdict, &mut known).await? {
                Next::Load(held) => lease = held,
                Next::RedisFailed => l2 = None,
                Next::Done(fetched) => return Ok(fetched),
            }
        }
        self.load_and_fill(&stored, &opts, known, loader, lease, l2.as_ref(), &m, since)
            .await
    }

    /// Take the key's lease, or wait for whoever holds it.
    async fn lease_or_wait<V: CacheValue>(
        &self,
        l2: &Arc<L2>,
        verdict: &Verdict<'_, V>,
        known: &mut Option<Known<V>>,
    ) -> Result<Next<V>> {
        let Some(waiters) = &self.waiters else {
            return Ok(Next::Load(None));
        };
        let opts = verdict.opts;
        let limit = opts.hard_timeout.unwrap_or(DEFAULT_WAIT_LIMIT);
        let deadline = tokio::time::Instant::now() + limit;
        let mut backoff = Duration::from_millis(2);
        let mut waited = false;
        let mut woken = false;
        loop {
            let wake = waiters.register(verdict.stored);
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Woken by a fill: read the value first. Taking (and then
            // releasing) the lease the holder just gave up would cost two
            // round trips and briefly block the others for nothing.
            if woken {
                if let Some(entry) = self.read_l2::<V>(l2, verdict.stored).await {
                    if let Some(done) = verdict.judge(entry, known) {
                        return Ok(Next::Done(done));
                    }
                }
            }
            let (lease, current) = match lease::acquire(l2, verdict.stored, opts.lock_timeout).await
            {
                // Redis is failing: load here rather than wait on it.
                Err(err) if err.is_unavailable() => return Ok(Next::RedisFailed),
                // Redis refused the script: load, without a lease.
                Err(_) => return Ok(Next::Load(None)),
                Ok(Acquired::Won { lease, current }) => (Some(lease), current),
                Ok(Acquired::Lost { current }) => (None, current),
            };
            if let Some(bytes) = current {
                if let Some(entry) = self.decode_valid::<V>(verdict.stored, &bytes).await {
                    if let Some(done) = verdict.judge(entry, known) {
                        if let Some(lease) = lease {
                            lease.release(l2).await;
                        }
                        return Ok(Next::Done(done));
                    }
                }
            }
            if lease.is_some() {
                return Ok(Next::Load(lease));
            }
            if verdict.mode == Mode::Refresh {
                // Another instance is refreshing this key already.
                let current = known.take().and_then(|(value, _, _)| value);
                return Ok(Next::Done(Fetched::fresh(current)));
            }
            if !waited {
                verdict.m.lease_waits.increment(1);
                waited = true;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return match known.take() {
                    Some((value, _, _)) => Ok(Next::Done(Fetched::stale(value))),
                    None => Err(Error::WaitTimeout(limit)),
                };
            }
            // A short, growing backoff bounds the wait when a notification
            // is lost (reconnect, failover) or the holder died.
            woken = tokio::select! {
                biased;
                _ = &mut notified => true,
                _ = tokio::time::sleep(backoff.min(deadline - now)) => false,
            };
            backoff = (backoff * 2).min(MAX_WAIT_BACKOFF);
        }
    }

    /// Call the loader and store what it says; fail-safe on failure.
    #[allow(clippy::too_many_arguments)]
    async fn load_and_fill<V, F, Fut, E>(
        &self,
        stored: &str,
        opts: &EntryOptions,
        known: Option<Known<V>>,
        loader: F,
        mut lease: Option<Lease>,
        l2: Option<&Arc<L2>>,
        m: &PolicyMetrics,
        since: u64,
    ) -> Result<Fetched<V>>
    where
        V: CacheValue,
        F: FnOnce(LoadContext<V>) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Loaded<V>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        m.loads.increment(1);
        let context = LoadContext {
            stale: known.as_ref().and_then(|(value, _, _)| value.clone()),
            etag: known.as_ref().and_then(|(_, meta, _)| meta.etag.clone()),
        };
        let started = Instant::now();
        let started_at_ms = self.clock.now_ms();
        let bounded = async {
            match opts.hard_timeout {
                Some(limit) => match tokio::time::timeout(limit, loader(context)).await {
                    Ok(result) => result.map_err(Error::loader),
                    Err(_) => Err(Error::LoaderTimeout(limit)),
                },
                None => loader(context).await.map_err(Error::loader),
            }
        };
        let outcome = match (&lease, l2) {
            (Some(lease), Some(l2)) => lease.hold_while(l2, bounded).await,
            // Redis failed (or this load skips it): so do the loader's own cache calls.
            (_, None) if self.l2.is_some() && !opts.skip_l2 => {
                REDIS_FAILED_IN_THIS_LOAD.scope((), bounded).await
            }
            _ => bounded.await,
        };
        let took = started.elapsed();
        m.load_seconds.record(took.as_secs_f64());
        let load_micros = took.as_micros().min(u32::MAX as u128) as u32;

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
                let renewed = self.renewed_meta(&old, opts, loaded.ttl, loaded.etag, load_micros);
                let l2_ttl = Duration::from_millis(
                    renewed.stale_until_ms.saturating_sub(self.clock.now_ms()),
                );
                self.retime_in_l2(l2, lease.as_ref(), stored, &old, &renewed, l2_ttl)
                    .await;
                self.fill_l1(stored, &value, renewed, encoded_len, opts, since);
                Ok(Fetched::fresh(value))
            }
            Ok(loaded) => {
                if loaded.cache {
                    let hints = FillHints {
                        ttl: loaded.ttl,
                        tags: loaded.tags,
                        etag: loaded.etag,
                        load_micros,
                        started_at_ms: Some(started_at_ms),
                    };
                    match self.prepare(stored, loaded.value.as_ref(), opts, &hints) {
                        Ok(prepared) => {
                            let write = Write {
                                key: stored.to_owned(),
                                bytes: prepared.bytes,
                                ttl_ms: prepared.l2_ttl.as_millis() as u64,
                            };
                            // Redis first: if the fill is refused (the key was
                            // invalidated while we loaded), L1 must not keep it either.
                            let keep = match (l2, opts.consistency) {
                                (Some(l2), Consistency::Lease) => {
                                    self.fill_l2(l2, lease.as_ref(), &write).await
                                }
                                (Some(l2), Consistency::Version) => {
                                    let version = loaded.version.unwrap_or(0);
                                    self.fill_l2_versioned(l2, lease.as_ref(), &write, version)
                                        .await
                                }
                                (None, _) => true,
                            };
                            // The fill script took the lease with it (or found it
                            // revoked); after a failed fill Redis is not called
                            // again. Either way there is nothing left to release.
                            drop(lease.take());
                            if let Some(l1) = self.l1.as_ref().filter(|_| keep && !opts.skip_l1) {
                                let inner_key = self.keys.inner_of(stored);
                                l1.insert_fill(
                                    stored,
                                    crate::l1::L1Entry::new(
                                        loaded.value.clone(),
                                        prepared.meta,
                                        prepared.l1_lifetime,
                                        stored.len(),
                                        write.bytes.len(),
                                    ),
                                    &self.metrics.global,
                                    || !self.invalidations.unchanged_since(inner_key, since),
                                );
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
                    Some((Some(value), old, encoded_len)) => {
                        m.fail_safe.increment(1);
                        tracing::warn!(key = stored, error = %err, "load failed; serving the stale value (fail-safe)");
                        let retry_at = (self.clock.now_ms()
                            + opts.fail_safe_throttle.as_millis() as u64)
                            .min(old.stale_until_ms);
                        let throttled = EntryMeta {
                            fresh_until_ms: retry_at.max(old.created_at_ms),
                            fail_safe: true,
                            ..old.clone()
                        };
                        let l2_ttl = Duration::from_millis(
                            old.stale_until_ms.saturating_sub(self.clock.now_ms()),
                        );
                        self.retime_in_l2(l2, lease.as_ref(), stored, &old, &throttled, l2_ttl)
                            .await;
                        let value = Some(value);
                        self.fill_l1(stored, &value, throttled, encoded_len, opts, since);
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

    /// The metadata of a value confirmed unchanged by its source: created now,
    /// with a new lifetime.
    fn renewed_meta(
        &self,
        old: &EntryMeta,
        opts: &EntryOptions,
        ttl: Option<Duration>,
        etag: Option<String>,
        load_micros: u32,
    ) -> EntryMeta {
        let ttl = opts.jittered_ttl(ttl.unwrap_or(opts.ttl));
        let now = self.clock.now_ms();
        let fresh_until_ms = now + ttl.as_millis() as u64;
        EntryMeta {
            created_at_ms: now,
            fresh_until_ms,
            stale_until_ms: fresh_until_ms + opts.stale_for.as_millis() as u64,
            load_micros,
            tags: old.tags.clone(),
            etag: etag.or_else(|| old.etag.clone()),
            fail_safe: false,
        }
    }

    /// Fill L2 through the lease; returns whether L1 may keep the value
    /// (false when the fill was refused because the key was invalidated or
    /// taken over meanwhile).
    async fn fill_l2(&self, l2: &L2, lease: Option<&Lease>, write: &Write) -> bool {
        let channel = self.waiters.as_ref().map_or("", |w| w.channel());
        match lease::fill(l2, lease, write, channel).await {
            Ok(landed) => {
                if !landed {
                    self.metrics.global.fills_refused_lease.increment(1);
                    tracing::debug!(key = %write.key, "fill refused: the key was invalidated or taken over");
                }
                landed
            }
            Err(err) => {
                tracing::warn!(key = %write.key, error = ?err, "redis fill failed; value kept in L1 only");
                true
            }
        }
    }

    async fn retime_in_l2(
        &self,
        l2: Option<&Arc<L2>>,
        lease: Option<&Lease>,
        stored: &str,
        old: &EntryMeta,
        new: &EntryMeta,
        ttl: Duration,
    ) {
        let Some(l2) = l2 else { return };
        let channel = self.waiters.as_ref().map_or("", |w| w.channel());
        if let Err(err) =
            lease::retime(l2, lease, stored, old.created_at_ms, new, ttl, channel).await
        {
            tracing::debug!(key = stored, error = ?err, "could not renew the entry in redis");
        }
    }

    async fn release(&self, lease: Option<Lease>) {
        if let (Some(lease), Some(l2)) = (lease, &self.l2) {
            lease.release(l2).await;
        }
    }
}

/// The outcome of the lease step.
enum Next<V> {
    /// Load, holding the lease if one was taken.
    Load(Option<Lease>),
    /// Redis did not answer: load without it, and do not fill it.
    RedisFailed,
    /// Another instance's fill (or a stale value at the deadline) answers.
    Done(Fetched<V>),
}

/// What the caller already learnt from L2 before starting a flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L2Seen {
    /// Nothing: the flight reads L2 first.
    NotRead,
    /// L2 had no usable fresh entry: go on to the lease.
    Missed,
    /// Redis failed to answer: do not call it again for this load.
    Failed,
}

/// How a flight begins.
#[derive(Debug, Clone, Copy)]
struct Start {
    accept_absent: bool,
    mode: Mode,
    seen: L2Seen,
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

/// Judges entries found in L2 on a flight's behalf.
struct Verdict<'a, V> {
    since: u64,
    inner: &'a Inner,
    stored: &'a str,
    opts: &'a EntryOptions,
    accept_absent: bool,
    mode: Mode,
    /// The flight's, to offer stale values early; `None` in the caller's task.
    progress: Option<&'a Progress<Fetched<V>>>,
    m: &'a PolicyMetrics,
}

impl<V: CacheValue> Verdict<'_, V> {
    /// Whether `entry` answers the flight. A stale entry newer than `known`
    /// replaces it (and is offered to callers that accept stale data).
    fn judge(&self, entry: Known<V>, known: &mut Option<Known<V>>) -> Option<Fetched<V>> {
        let (found, meta, encoded_len) = entry;
        let acceptable = found.is_some() || self.accept_absent;
        let newer = known
            .as_ref()
            .is_none_or(|(_, k, _)| meta.created_at_ms > k.created_at_ms);
        match classify(&meta, self.inner.clock.now_ms(), None) {
            // An early refresh that finds its own entry still there goes on.
            Usability::Fresh { .. } if self.mode == Mode::Refresh && !newer => None,
            Usability::Fresh { .. } if acceptable => {
                self.m.l2_hits.increment(1);
                if found.is_none() {
                    self.m.negative_hits.increment(1);
                }
                self.inner.fill_l1(
                    self.stored,
                    &found,
                    meta,
                    encoded_len,
                    self.opts,
                    self.since,
                );
                Some(Fetched::fresh(found))
            }
            // Another instance's fail-safe: do not call the failing source again yet.
            Usability::Throttled if acceptable => {
                self.inner.fill_l1(
                    self.stored,
                    &found,
                    meta,
                    encoded_len,
                    self.opts,
                    self.since,
                );
                Some(Fetched::stale(found))
            }
            Usability::Stale if found.is_some() && newer => {
                self.m.l2_misses.increment(1);
                self.inner.fill_l1(
                    self.stored,
                    &found,
                    meta.clone(),
                    encoded_len,
                    self.opts,
                    self.since,
                );
                if let (Mode::Miss, Some(progress)) = (self.mode, self.progress) {
                    progress.offer_stale(Fetched::stale(found.clone()));
                }
                *known = Some((found, meta, encoded_len));
                None
            }
            _ => {
                self.m.l2_misses.increment(1);
                None
            }
        }
    }
}
