//! The market-data feed: the cached service pushes quotes, order books and
//! price windows (the part portfolios are valued at, [`crate::parts`]) into
//! the cache instead of waiting for reads to pull them.
//!
//! A quote lives 2 s and a book 1 s (the policies' TTLs). Pulled, only the
//! few dozen most read of 500 symbols are read again within that time; every
//! other read misses and costs a query. So, as a ticker plant feeds a price
//! cache, one set-based query reads every quote (another every book) each
//! half TTL and writes them all with the routes' keys and policies; the
//! per-symbol read-through stays as the fallback (a feed stopped or late).
//! A half TTL leaves 40 % of it — jitter takes at most 10 % — for one push
//! to be late before entries expire.
//!
//! The writes are versioned ([`crate::patterns::write_through`]): a snapshot read
//! just before a `PUT` committed reaches the cache after the `PUT`'s own
//! write-through, and must not replace it. The feed's queries are counted
//! ([`crate::caching::CacheCounters::feed_query`]) and reach PostgreSQL's
//! statistics like any other.

use std::time::Duration;

use futures::stream::{self, StreamExt};
use stratacache::CacheValue;
use tokio::task::JoinHandle;

use crate::caching::Caching;
use crate::db::{parts, snapshots, Db};
use crate::error::ApiError;
use crate::keys;
use crate::model::{Depth, Quote};
use crate::policy::Policy;

/// Concurrent cache writes of one push: few, so that a push of 500 entries
/// does not queue ahead of the requests' own Redis calls.
const IN_FLIGHT: usize = 8;

/// What one push did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pushed {
    /// Entries written.
    pub written: usize,
    /// Entries not written because a newer version was there (a write won).
    pub superseded: usize,
    /// Entries Redis did not take (down, slow); they expire, reads load them.
    pub failed: usize,
}

async fn push<V: CacheValue>(
    caching: &Caching,
    policy: Policy,
    entries: Vec<(String, V, u64)>,
) -> Result<Pushed, ApiError> {
    let Some(cache) = caching.cache() else {
        return Ok(Pushed::default());
    };
    let mut opts = caching.options(policy)?;
    if policy.is_part() {
        // Parts are read from Redis only.
        opts = opts.skip_l1(true);
    }
    let results: Vec<_> = stream::iter(entries)
        .map(|(key, value, version)| {
            let (cache, opts) = (cache.clone(), opts.clone());
            async move { cache.set_versioned(&key, &value, version, &opts).await }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let mut pushed = Pushed::default();
    for result in results {
        match result {
            Ok(true) => pushed.written += 1,
            Ok(false) => pushed.superseded += 1,
            Err(_) => pushed.failed += 1,
        }
    }
    Ok(pushed)
}

/// Read every quote and write it to the cache.
pub async fn push_quotes(db: &Db, caching: &Caching) -> Result<Pushed, ApiError> {
    caching.counters().feed_query(Policy::StockPrice);
    write_quotes(caching, snapshots::all_quotes(db).await?).await
}

/// Write quotes read at their versions (a snapshot) to the cache.
pub async fn write_quotes(
    caching: &Caching,
    quotes: Vec<(Quote, u64)>,
) -> Result<Pushed, ApiError> {
    let entries = quotes
        .into_iter()
        .map(|(quote, version)| (keys::price(&quote.symbol), quote, version))
        .collect();
    push(caching, Policy::StockPrice, entries).await
}

/// Read every order book and write it to the cache.
pub async fn push_depths(db: &Db, caching: &Caching) -> Result<Pushed, ApiError> {
    caching.counters().feed_query(Policy::MarketDepth);
    write_depths(caching, snapshots::all_depths(db).await?).await
}

/// Write order books read at their versions (a snapshot) to the cache.
pub async fn write_depths(caching: &Caching, books: Vec<(Depth, u64)>) -> Result<Pushed, ApiError> {
    let entries = books
        .into_iter()
        .map(|(book, version)| (keys::depth(&book.symbol), book, version))
        .collect();
    push(caching, Policy::MarketDepth, entries).await
}

/// Read every instrument's price window and write it to the cache.
pub async fn push_windows(db: &Db, caching: &Caching) -> Result<Pushed, ApiError> {
    caching.counters().feed_query(Policy::PriceWindow);
    let windows = parts::all_price_windows(db).await?;
    let entries = windows
        .into_iter()
        .map(|(window, version)| (keys::price_window(&window.symbol), window, version))
        .collect();
    push(caching, Policy::PriceWindow, entries).await
}

/// The running feed; dropping it stops it.
pub struct Feed {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The interval of a feed for entries that live `ttl`.
pub fn interval_for(ttl: Duration) -> Duration {
    (ttl / 2).max(Duration::from_millis(50))
}

/// Start pushing quotes and books (nothing with the cache off).
pub fn spawn(db: &Db, caching: &Caching) -> Result<Option<Feed>, ApiError> {
    if caching.cache().is_none() {
        return Ok(None);
    }
    let quotes_every = interval_for(caching.options(Policy::StockPrice)?.configured_ttl());
    let books_every = interval_for(caching.options(Policy::MarketDepth)?.configured_ttl());
    let windows_every = interval_for(caching.options(Policy::PriceWindow)?.configured_ttl());
    let tasks = vec![
        tokio::spawn(run(Kind::Quotes, quotes_every, db.clone(), caching.clone())),
        tokio::spawn(run(Kind::Books, books_every, db.clone(), caching.clone())),
        tokio::spawn(run(
            Kind::Windows,
            windows_every,
            db.clone(),
            caching.clone(),
        )),
    ];
    Ok(Some(Feed { tasks }))
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Quotes,
    Books,
    Windows,
}

async fn run(kind: Kind, every: Duration, db: Db, caching: Caching) {
    let what = match kind {
        Kind::Quotes => "quotes",
        Kind::Books => "books",
        Kind::Windows => "windows",
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Said once per change: a push every half second would flood the log.
    let mut healthy = true;
    loop {
        tick.tick().await;
        let outcome = match kind {
            Kind::Quotes => push_quotes(&db, &caching).await,
            Kind::Books => push_depths(&db, &caching).await,
            Kind::Windows => push_windows(&db, &caching).await,
        };
        let ok = matches!(outcome, Ok(p) if p.failed == 0);
        if ok != healthy {
            match &outcome {
                Ok(p) if ok => {
                    tracing::info!(feed = what, written = p.written, "feed pushing again")
                }
                Ok(p) => tracing::warn!(
                    feed = what,
                    failed = p.failed,
                    "feed: the cache refused writes; reads load what expires"
                ),
                Err(err) => {
                    tracing::warn!(feed = what, error = %err, "feed: snapshot failed; reads load what expires")
                }
            }
            healthy = ok;
        }
    }
}
