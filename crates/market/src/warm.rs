//! Deploy-time warming of user data: every user's profile and watchlist
//! put in the cache, with the same keys, values and tags the routes use,
//! from two set-based queries (rather than 20,000 single-user loads).
//!
//! A service that has been running holds these entries; a fresh one would
//! otherwise answer the first read of each of 10,000 users from PostgreSQL.
//! The demo warms the cached side this way before its load and says so.
//! Run it before traffic: an entry read here and written to the cache after
//! a concurrent update of the same user would be older than that update
//! until its TTL (the update's invalidation may land first).
//! Portfolios are not warmed: each is valued from the user's positions and
//! the instruments' price windows (`crate::parts`) when first read.
//! [`positions`] warms every user's positions (one set-based query), the
//! windows come from the market-data feed.

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use futures::FutureExt;
use sqlx::Row;

use crate::app::AppState;
use crate::keys;
use crate::model::{Profile, Watchlist};
use crate::policy::Policy;

/// What a warm-up did.
#[derive(Debug, Clone, Copy)]
pub struct Warmed {
    /// Entries written.
    pub entries: usize,
    /// Entries the cache refused (logged).
    pub failed: usize,
    /// How long it took.
    pub took: Duration,
}

/// Concurrent cache writes.
const IN_FLIGHT: usize = 64;

/// Warm every user's profile and watchlist (nothing with the cache off).
pub async fn user_data(state: &AppState) -> anyhow::Result<Warmed> {
    let started = Instant::now();
    let Some(cache) = state.caching.cache() else {
        return Ok(Warmed {
            entries: 0,
            failed: 0,
            took: started.elapsed(),
        });
    };
    let pool = state.db.counted();
    let profiles: Vec<Profile> = sqlx::query(
        "SELECT u.id, u.username, p.display_name, p.email, p.country, p.risk_level
         FROM users u JOIN profiles p ON p.user_id = u.id",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| Profile {
        user_id: r.get("id"),
        username: r.get("username"),
        display_name: r.get("display_name"),
        email: r.get("email"),
        country: r.get("country"),
        risk_level: r.get("risk_level"),
    })
    .collect();
    // The same order and the same users as `queries::watchlist`: positions in
    // order, users without a watchlist with an empty one.
    let watchlists: Vec<Watchlist> = sqlx::query(
        "SELECT u.id,
                coalesce(array_agg(i.symbol ORDER BY w.position)
                         FILTER (WHERE i.symbol IS NOT NULL), '{}') AS symbols
         FROM users u
         LEFT JOIN watchlists w ON w.user_id = u.id
         LEFT JOIN instruments i ON i.id = w.instrument_id
         GROUP BY u.id",
    )
    .fetch_all(state.db.counted())
    .await?
    .into_iter()
    .map(|r| Watchlist {
        user_id: r.get("id"),
        symbols: r.get("symbols"),
    })
    .collect();

    let profile_opts = state.caching.options(Policy::Profile)?;
    let watchlist_opts = state.caching.options(Policy::Watchlist)?;
    let tagged = |opts: &stratacache::EntryOptions, user_id: i64| {
        let mut tags = opts.configured_tags().to_vec();
        tags.push(keys::user_tag(user_id));
        opts.clone().tags(tags)
    };
    let writes = profiles
        .iter()
        .map(|p| {
            let opts = tagged(&profile_opts, p.user_id);
            let key = keys::profile(p.user_id);
            FutureExt::boxed(async move { cache.set(&key, p, &opts).await })
        })
        .chain(watchlists.iter().map(|w| {
            let opts = tagged(&watchlist_opts, w.user_id);
            let key = keys::watchlist(w.user_id);
            FutureExt::boxed(async move { cache.set(&key, w, &opts).await })
        }));
    Ok(write_all(writes, started).await)
}

/// Warm every user's positions (nothing with the cache off), versioned as
/// the order route writes them, so a warm-up racing an order cannot put
/// older positions over the order's.
pub async fn positions(state: &AppState) -> anyhow::Result<Warmed> {
    let started = Instant::now();
    let Some(cache) = state.caching.cache() else {
        return Ok(Warmed {
            entries: 0,
            failed: 0,
            took: started.elapsed(),
        });
    };
    let all = crate::db::parts::all_positions(&state.db).await?;
    // Parts are read from Redis only (`crate::parts`).
    let opts = state.caching.options(Policy::Positions)?.skip_l1(true);
    let writes = all.iter().map(|(held, version)| {
        let key = keys::positions(held.user_id);
        let opts = &opts;
        async move { cache.set_versioned(&key, held, *version, opts).await }
    });
    Ok(write_all(writes, started).await)
}

/// Run the warm-up writes, [`IN_FLIGHT`] at a time, and count what failed.
async fn write_all<W, T, E>(writes: impl IntoIterator<Item = W>, started: Instant) -> Warmed
where
    W: std::future::Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let results: Vec<_> = stream::iter(writes)
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(err)) = results.iter().find(|r| r.is_err()) {
        tracing::warn!(error = %err, failed, "some warm-up writes failed");
    }
    Warmed {
        entries: results.len() - failed,
        failed,
        took: started.elapsed(),
    }
}
