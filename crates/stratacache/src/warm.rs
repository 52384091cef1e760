//! Cache warming: fill both tiers from a stream of entries, or from a
//! [`Resource`]'s loader, in pipelined batches at a bounded rate.
//!
//! A batch is read from the input, encoded, then written with one
//! `store_many`: L1 directly, Redis in one pipeline per hash slot. Entries the
//! cache refuses (an invalid key, a value over `max_value_bytes`, a value the
//! codec cannot encode) are counted as skipped; they never stop the warm-up.
//! If Redis refuses a batch, its entries stay in L1 and the batch is counted.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::time::Instant;

use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::options::EntryOptions;
use crate::resource::{Loader, Resource, ResourceKey};
use crate::tiers::CacheValue;

/// The callback of [`WarmSettings::progress`].
type ProgressFn = Arc<dyn Fn(WarmProgress) + Send + Sync>;

/// How a warm-up runs: batch size, rate limit, progress reporting.
///
/// ```
/// use stratacache::WarmSettings;
///
/// let settings = WarmSettings::new()
///     .batch_size(1_000)
///     .max_entries_per_sec(20_000)
///     .progress(|p| println!("{} entries done, {} skipped", p.done, p.skipped));
/// # let _ = settings;
/// ```
#[derive(Clone)]
pub struct WarmSettings {
    batch_size: usize,
    max_entries_per_sec: Option<u32>,
    progress: Option<ProgressFn>,
}

impl Default for WarmSettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            max_entries_per_sec: None,
            progress: None,
        }
    }
}

impl fmt::Debug for WarmSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WarmSettings")
            .field("batch_size", &self.batch_size)
            .field("max_entries_per_sec", &self.max_entries_per_sec)
            .field("progress", &self.progress.as_ref().map(|_| "<callback>"))
            .finish()
    }
}

impl WarmSettings {
    /// Defaults: batches of 500 entries, no rate limit, no progress callback.
    ///
    /// ```
    /// use stratacache::WarmSettings;
    ///
    /// let settings = WarmSettings::new();
    /// # let _ = settings;
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries per batch (at least 1): each batch is one write to L1 and one
    /// Redis round trip per hash slot. With a rate limit, a batch never holds
    /// more than one second's worth of entries.
    ///
    /// ```
    /// use stratacache::WarmSettings;
    ///
    /// let settings = WarmSettings::new().batch_size(2_000);
    /// # let _ = settings;
    /// ```
    pub fn batch_size(mut self, entries: usize) -> Self {
        self.batch_size = entries;
        self
    }

    /// Write at most this many entries per second (at least 1), to spare
    /// Redis (and, with a loader, the database). Pacing is by batch: at any
    /// moment since the start, no more than `entries × elapsed seconds` entries
    /// have been written, and after a pause in the input at most one batch
    /// goes out at once. Skipped entries do not count.
    ///
    /// ```
    /// use stratacache::WarmSettings;
    ///
    /// let settings = WarmSettings::new().max_entries_per_sec(5_000);
    /// # let _ = settings;
    /// ```
    pub fn max_entries_per_sec(mut self, entries: u32) -> Self {
        self.max_entries_per_sec = Some(entries);
        self
    }

    /// Call `callback` after every batch with the counts so far. It runs on
    /// the warming task, so it should be quick (log, update a gauge).
    ///
    /// ```
    /// use stratacache::WarmSettings;
    ///
    /// let settings = WarmSettings::new().progress(|p| {
    ///     eprintln!("warmed {} entries in {:?}", p.written, p.elapsed);
    /// });
    /// # let _ = settings;
    /// ```
    pub fn progress(mut self, callback: impl Fn(WarmProgress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(callback));
        self
    }

    fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::config("warm batch_size must be at least 1"));
        }
        if self.max_entries_per_sec == Some(0) {
            return Err(Error::config("warm max_entries_per_sec must be at least 1"));
        }
        Ok(())
    }

    /// The batch size in effect: at most one second's worth under a rate limit.
    fn effective_batch_size(&self) -> usize {
        match self.max_entries_per_sec {
            Some(rate) => self.batch_size.min(rate as usize).max(1),
            None => self.batch_size,
        }
    }
}

/// Where a warm-up stands, passed to the [`WarmSettings::progress`] callback
/// after every batch. Every count only grows from one call to the next.
///
/// ```
/// use stratacache::{WarmProgress, WarmSettings};
///
/// let settings = WarmSettings::new().progress(|p: WarmProgress| {
///     assert_eq!(p.done, p.written + p.skipped);
/// });
/// # let _ = settings;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WarmProgress {
    /// Entries (or keys) taken from the input so far: `written + skipped`.
    pub done: u64,
    /// Entries stored so far (see [`WarmReport::written`]).
    pub written: u64,
    /// Entries skipped so far (see [`WarmReport::skipped`]).
    pub skipped: u64,
    /// Batches completed so far, this one included.
    pub batches: u64,
    /// Batches Redis refused so far (see [`WarmReport::l2_failed_batches`]).
    pub l2_failed_batches: u64,
    /// Time since the warm-up started.
    pub elapsed: Duration,
}

/// The outcome of a warm-up.
///
/// ```no_run
/// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
/// use stratacache::{EntryOptions, WarmSettings};
///
/// let entries = futures::stream::iter((0..100).map(|i| (format!("n:{i}"), i)));
/// let report = cache
///     .warm(entries, &EntryOptions::new(), WarmSettings::new())
///     .await?;
/// if report.l2_failed_batches > 0 {
///     eprintln!("{} batches are in this instance's L1 only", report.l2_failed_batches);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WarmReport {
    /// [`Cache::warm`]: entries stored (in L1, and in Redis unless their batch
    /// failed there). [`Cache::warm_with_loader`]: keys that have a value,
    /// whether it was cached already or loaded now (a loaded value over
    /// `max_value_bytes` counts here although it is not cached).
    pub written: u64,
    /// [`Cache::warm`]: entries refused (invalid key, value over
    /// `max_value_bytes`, value the codec cannot encode); nothing was written
    /// for them. [`Cache::warm_with_loader`]: keys without a value (the loader
    /// does not know them); they are cached as absent.
    pub skipped: u64,
    /// Batches taken from the input.
    pub batches: u64,
    /// Batches whose Redis write failed (Redis down, timed out, breaker
    /// open): their entries are in this instance's L1 only. Always 0 for
    /// [`Cache::warm_with_loader`], whose writes are made by
    /// [`Resource::get_many`].
    pub l2_failed_batches: u64,
    /// Wall-clock time of the whole warm-up.
    pub elapsed: Duration,
}

impl Cache {
    /// Store every `(key, value)` of `entries` in both tiers, in batches of
    /// [`WarmSettings::batch_size`]: one Redis round trip per hash slot per
    /// batch, paced by [`WarmSettings::max_entries_per_sec`].
    ///
    /// An entry the cache refuses (invalid key, value over `max_value_bytes`,
    /// value the codec cannot encode) is skipped and counted; the others are
    /// written. If Redis cannot be written, the batch stays in L1 and
    /// [`WarmReport::l2_failed_batches`] counts it: warming never fails because
    /// of Redis. To fill Redis only, leaving this instance's L1 alone, pass
    /// options with [`skip_l1(true)`](EntryOptions::skip_l1).
    ///
    /// Fails only for invalid `opts` or `settings`, before anything is written.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), stratacache::Error> {
    /// use std::time::Duration;
    /// use stratacache::{Cache, EntryOptions, WarmSettings};
    ///
    /// let cache = Cache::builder()
    ///     .namespace("shop")
    ///     .redis_url("redis://127.0.0.1:6379")
    ///     .build()
    ///     .await?;
    /// let products = (0..10_000u32).map(|id| (format!("product:{id}"), format!("Product #{id}")));
    /// let report = cache
    ///     .warm(
    ///         futures::stream::iter(products),
    ///         &EntryOptions::new().ttl(Duration::from_secs(3600)).jitter(0.1),
    ///         WarmSettings::new().max_entries_per_sec(50_000),
    ///     )
    ///     .await?;
    /// assert_eq!(report.written + report.skipped, 10_000);
    /// # Ok(()) }
    /// ```
    pub async fn warm<V, S>(
        &self,
        entries: S,
        opts: &EntryOptions,
        settings: WarmSettings,
    ) -> Result<WarmReport>
    where
        V: CacheValue,
        S: Stream<Item = (String, V)>,
    {
        settings.validate()?;
        opts.validate()?;
        let mut run = Run::new(&settings);
        let mut entries = std::pin::pin!(entries);
        let batch_size = settings.effective_batch_size();
        loop {
            let taken = next_batch(&mut entries, batch_size).await;
            if taken.is_empty() {
                break;
            }
            let mut skipped = 0u64;
            let mut batch = Vec::with_capacity(taken.len());
            for (key, value) in taken {
                match self.key_write(&key, value, opts) {
                    Ok(write) => batch.push(write),
                    Err(err) => {
                        tracing::debug!(error = %err, "warm-up entry skipped");
                        skipped += 1;
                    }
                }
            }
            let written = batch.len() as u64;
            let mut l2_failed = false;
            if !batch.is_empty() {
                run.pace(batch.len()).await;
                l2_failed = !self.writes().put(batch, opts).await;
            }
            run.batch_done(written, skipped, l2_failed);
        }
        Ok(run.finish(self.namespace()))
    }

    /// Warm `resource` for every key of `keys`: in batches of
    /// [`WarmSettings::batch_size`], each through [`Resource::get_many`] — L1,
    /// then one MGET, then one [`Loader::load_many`] call with only the keys
    /// still missing, then one pipelined write. Keys already cached cost no
    /// load, so running it again after an interruption only loads what is
    /// still missing. Paced by [`WarmSettings::max_entries_per_sec`] (in keys).
    ///
    /// The entries go to the cache `resource` was built on (normally this one).
    /// Keys the loader does not know are cached as absent and counted as
    /// [`skipped`](WarmReport::skipped).
    ///
    /// Fails for invalid `settings`, and on the first loader error: the
    /// batches before it stay cached.
    ///
    /// ```no_run
    /// # use std::collections::HashMap;
    /// # struct Products;
    /// # impl stratacache::Loader<u32, String> for Products {
    /// #     type Error = std::io::Error;
    /// #     async fn load(&self, id: &u32) -> Result<Option<String>, Self::Error> { Ok(Some(id.to_string())) }
    /// # }
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// use stratacache::{EntryOptions, Resource, WarmSettings};
    ///
    /// let products = Resource::new(cache.clone(), "product", EntryOptions::new(), Products);
    /// let report = cache
    ///     .warm_with_loader(
    ///         &products,
    ///         futures::stream::iter(0..10_000u32),
    ///         WarmSettings::new().batch_size(1_000),
    ///     )
    ///     .await?;   // at most 10 load_many calls
    /// println!("{} products cached, {} unknown", report.written, report.skipped);
    /// # Ok(()) }
    /// ```
    pub async fn warm_with_loader<K, V, L>(
        &self,
        resource: &Resource<K, V, L>,
        keys: impl Stream<Item = K>,
        settings: WarmSettings,
    ) -> Result<WarmReport>
    where
        K: ResourceKey,
        V: CacheValue,
        L: Loader<K, V>,
    {
        settings.validate()?;
        let mut run = Run::new(&settings);
        let mut keys = std::pin::pin!(keys);
        let batch_size = settings.effective_batch_size();
        loop {
            let batch = next_batch(&mut keys, batch_size).await;
            if batch.is_empty() {
                break;
            }
            run.pace(batch.len()).await;
            let found = resource.get_many(&batch).await?;
            let written = batch.iter().filter(|k| found.contains_key(k)).count() as u64;
            run.batch_done(written, batch.len() as u64 - written, false);
        }
        Ok(run.finish(self.namespace()))
    }
}

/// Up to `size` items from `stream` (fewer only at its end).
async fn next_batch<S: Stream + Unpin>(stream: &mut S, size: usize) -> Vec<S::Item> {
    let mut batch = Vec::with_capacity(size);
    while batch.len() < size {
        match stream.next().await {
            Some(item) => batch.push(item),
            None => break,
        }
    }
    batch
}

/// The counts, pacing and progress reporting of one warm-up.
struct Run<'s> {
    settings: &'s WarmSettings,
    started: Instant,
    /// When the entries admitted so far are paid for at the rate limit.
    paid_until: Instant,
    report: WarmReport,
}

impl<'s> Run<'s> {
    fn new(settings: &'s WarmSettings) -> Self {
        let started = Instant::now();
        Self {
            settings,
            started,
            paid_until: started,
            report: WarmReport::default(),
        }
    }

    /// Wait until `entries` more may be written under the rate limit. The
    /// deadline advances by `entries / rate` from the previous one, or starts
    /// from now after the input paused: never ahead of the rate, and no
    /// catching up in a burst.
    async fn pace(&mut self, entries: usize) {
        let Some(rate) = self.settings.max_entries_per_sec else {
            return;
        };
        let cost = Duration::from_secs_f64(entries as f64 / f64::from(rate));
        let due = (self.paid_until + cost).max(Instant::now());
        tokio::time::sleep_until(due).await;
        self.paid_until = due;
    }

    fn batch_done(&mut self, written: u64, skipped: u64, l2_failed: bool) {
        let r = &mut self.report;
        r.written += written;
        r.skipped += skipped;
        r.batches += 1;
        r.l2_failed_batches += u64::from(l2_failed);
        r.elapsed = self.started.elapsed();
        if let Some(progress) = &self.settings.progress {
            progress(WarmProgress {
                done: r.written + r.skipped,
                written: r.written,
                skipped: r.skipped,
                batches: r.batches,
                l2_failed_batches: r.l2_failed_batches,
                elapsed: r.elapsed,
            });
        }
    }

    fn finish(mut self, namespace: &str) -> WarmReport {
        self.report.elapsed = self.started.elapsed();
        let r = self.report;
        if r.skipped > 0 || r.l2_failed_batches > 0 {
            tracing::warn!(
                cache = namespace,
                written = r.written,
                skipped = r.skipped,
                l2_failed_batches = r.l2_failed_batches,
                "warm-up finished with skipped entries or batches kept in L1 only"
            );
        } else {
            tracing::info!(
                cache = namespace,
                written = r.written,
                batches = r.batches,
                elapsed = ?r.elapsed,
                "warm-up finished"
            );
        }
        r
    }
}
