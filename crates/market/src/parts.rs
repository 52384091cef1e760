//! Instrument details and portfolios composed from cached parts, each
//! cached for as long as what changes it allows, so that a detail or a
//! portfolio that expired or was invalidated is put together again from the
//! cache instead of by one aggregation query over the database.
//!
//! | part | key | changed by | kept current by |
//! |---|---|---|---|
//! | instrument, exchange, sector, fundamentals | `instrument_ref:{symbol}` | administration | TTL, the `instrument` tag |
//! | price statistics, 30 days of candles | `price_history:{symbol}` | every tick | `PUT …/price` (invalidation, then a reload in the background) |
//! | holders, trades | `ownership:{symbol}` | every order of it | `POST /api/orders` (versioned invalidation, then the order's values in the background) |
//! | positions with trade totals | `positions:{id}` | the user's orders | `POST /api/orders` (versioned invalidation, then the order's values in the background) |
//! | last price, 60-day average and volatility | `price_window:{symbol}` | every tick | the feed, `PUT …/price` (versioned invalidation, then a reload in the background) |
//!
//! Writers invalidate the parts first and the composed entry after, so a
//! composition that read an older part loses its lease and one that starts
//! later cannot find it; versioned parts get a floor no older load passes. Parts
//! are read from Redis, never from this instance's L1: another instance's
//! write reaches Redis before that instance drops the composed entry, but
//! reaches this L1 only when the backplane's message is applied here.
//!
//! The cache's counts of these reads are those of the parts' own policies
//! ([`Policy::PARTS`]); a composed read counts once, under its route's policy.

use std::collections::HashMap;

use futures::future::try_join_all;

use crate::caching::Caching;
use crate::db::orders::Placed;
use crate::db::{parts, queries, Db};
use crate::error::ApiError;
use crate::keys;
use crate::model::*;
use crate::policy::Policy;
use crate::read_your_writes::Freshness;

fn from_redis(caching: &Caching, policy: Policy) -> Result<stratacache::EntryOptions, ApiError> {
    Ok(caching.options(policy)?.skip_l1(true))
}

async fn instrument_ref(
    caching: &Caching,
    db: &Db,
    symbol: &str,
) -> Result<Option<InstrumentRef>, ApiError> {
    let (db, s) = (db.clone(), symbol.to_string());
    let opts = from_redis(caching, Policy::InstrumentRef)?;
    caching
        .read_optional(
            Policy::InstrumentRef,
            &keys::instrument_ref(symbol),
            Some(opts),
            move || async move { parts::instrument_ref(&db, &s).await },
        )
        .await
}

async fn price_history(
    caching: &Caching,
    db: &Db,
    symbol: &str,
) -> Result<Option<PriceHistory>, ApiError> {
    let (db, s) = (db.clone(), symbol.to_string());
    let opts = from_redis(caching, Policy::PriceHistory)?;
    caching
        .read_optional(
            Policy::PriceHistory,
            &keys::price_history(symbol),
            Some(opts),
            move || async move { parts::price_history(&db, &s).await },
        )
        .await
}

async fn ownership(
    caching: &Caching,
    db: &Db,
    symbol: &str,
) -> Result<Option<Ownership>, ApiError> {
    let (db, s) = (db.clone(), symbol.to_string());
    let opts = from_redis(caching, Policy::Ownership)?;
    caching
        .read_versioned(
            Policy::Ownership,
            &keys::ownership(symbol),
            Some(opts),
            move || async move { parts::ownership(&db, &s).await },
        )
        .await
}

async fn price_window(
    caching: &Caching,
    db: &Db,
    symbol: &str,
) -> Result<Option<PriceWindow>, ApiError> {
    let (db, s) = (db.clone(), symbol.to_string());
    let opts = from_redis(caching, Policy::PriceWindow)?;
    caching
        .read_versioned(
            Policy::PriceWindow,
            &keys::price_window(symbol),
            Some(opts),
            move || async move { parts::price_window(&db, &s).await },
        )
        .await
}

async fn positions(
    caching: &Caching,
    db: &Db,
    user_id: i64,
) -> Result<Option<Positions>, ApiError> {
    let db = db.clone();
    let opts = from_redis(caching, Policy::Positions)?;
    caching
        .read_versioned(
            Policy::Positions,
            &keys::positions(user_id),
            Some(opts),
            move || async move { parts::positions(&db, user_id).await },
        )
        .await
}

/// An instrument's detail from its parts; `None` for an unknown symbol
/// (found from the reference part alone: one load for a symbol that is not).
pub async fn detail(
    caching: &Caching,
    db: &Db,
    symbol: &str,
) -> Result<Option<InstrumentDetail>, ApiError> {
    let Some(reference) = instrument_ref(caching, db, symbol).await? else {
        return Ok(None);
    };
    let (history, owners) = tokio::try_join!(
        price_history(caching, db, symbol),
        ownership(caching, db, symbol)
    )?;
    Ok(match (history, owners) {
        (Some(history), Some(owners)) => {
            Some(InstrumentDetail::from_parts(reference, history, owners))
        }
        // Deleted between the reads.
        _ => None,
    })
}

/// A user's portfolio from the user's positions and the instruments' price
/// windows; `None` for an unknown user.
pub async fn portfolio(
    caching: &Caching,
    db: &Db,
    user_id: i64,
) -> Result<Option<Portfolio>, ApiError> {
    let Some(held) = positions(caching, db, user_id).await? else {
        return Ok(None);
    };
    // Every window in one read of Redis; the few missing (a new tick, an
    // expiry) are loaded one by one.
    let keys: Vec<String> = held
        .positions
        .iter()
        .map(|p| keys::price_window(&p.symbol))
        .collect();
    let found: Vec<Option<PriceWindow>> = match caching.cache() {
        Some(cache) => {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let opts = from_redis(caching, Policy::PriceWindow)?;
            cache.get_many_with_options(&keys, &opts).await?
        }
        None => vec![None; keys.len()],
    };
    let missing = held
        .positions
        .iter()
        .zip(&found)
        .filter(|(_, w)| w.is_none())
        .map(|(p, _)| price_window(caching, db, &p.symbol));
    let loaded = try_join_all(missing).await?;
    let hits = found.iter().filter(|w| w.is_some()).count();
    for _ in 0..hits {
        caching.counters().lookup(Policy::PriceWindow);
    }
    let windows: HashMap<String, PriceWindow> = found
        .into_iter()
        .flatten()
        .chain(loaded.into_iter().flatten())
        .map(|w| (w.symbol.clone(), w))
        .collect();
    Ok(Some(Portfolio::value(&held, |symbol| {
        windows.get(symbol).cloned()
    })))
}

async fn refresh_detail(caching: &Caching, db: &Db, symbol: &str) -> Result<(), ApiError> {
    let Some(cache) = caching.cache() else {
        return Ok(());
    };
    caching.counters().lookup(Policy::InstrumentRefresh);
    let opts = caching.options(Policy::InstrumentRefresh)?;
    let (c, d, s) = (caching.clone(), db.clone(), symbol.to_string());
    cache
        .get_or_load_optional(&keys::instrument(symbol), &opts, move || async move {
            detail(&c, &d, &s).await
        })
        .await?;
    Ok(())
}

async fn refresh_portfolio(caching: &Caching, db: &Db, user_id: i64) -> Result<(), ApiError> {
    let Some(cache) = caching.cache() else {
        return Ok(());
    };
    caching.counters().lookup(Policy::PortfolioRefresh);
    let opts = caching.options_tagged(Policy::PortfolioRefresh, keys::user_tag(user_id))?;
    let (c, d) = (caching.clone(), db.clone());
    cache
        .get_or_load_optional(&keys::portfolio(user_id), &opts, move || async move {
            portfolio(&c, &d, user_id).await
        })
        .await?;
    Ok(())
}

/// `GET /api/portfolios/{user_id}`: the cached portfolio, composed from
/// the user's positions and the instruments' price windows on a miss (with
/// the cache off, the one-query aggregation answers); `None` for an unknown
/// user.
pub async fn cached_portfolio(
    caching: &Caching,
    db: &Db,
    user_id: i64,
    freshness: Freshness,
) -> Result<Option<Portfolio>, ApiError> {
    let opts = caching.options_tagged(Policy::Portfolio, keys::user_tag(user_id))?;
    let (c, d) = (caching.clone(), db.clone());
    caching
        .read_composed(
            Policy::Portfolio,
            &keys::portfolio(user_id),
            Some(freshness.apply(opts)),
            move || async move { portfolio(&c, &d, user_id).await },
            || queries::portfolio(db, user_id),
        )
        .await
}

/// After a new tick of `symbol` at `version`: the detail's price statistics
/// and candles include it, and so does the window portfolios are valued at.
/// The statistics and the detail go in one deletion: a composition that
/// read the old statistics loses its lease with the detail's. The window is
/// versioned: a feed snapshot older than the tick must not bring it back.
/// Then, in the background, the detail is composed again and the window
/// loaded, so that the next reads find them — or join the load — instead of
/// running the aggregation themselves (a failure is left to those reads).
/// A portfolio valued at the old price follows within its TTL (60 s), by
/// design of the portfolio policy.
pub async fn after_tick(caching: &Caching, db: &Db, symbol: &str, version: u64) {
    let window = keys::price_window(symbol);
    let (history, detail) = (keys::price_history(symbol), keys::instrument(symbol));
    let dropped = [history.as_str(), detail.as_str()];
    tokio::join!(
        caching.invalidate_version(&window, version),
        caching.invalidate_many(&dropped),
    );
    if caching.cache().is_none() {
        return;
    }
    let (caching, db, symbol) = (caching.clone(), db.clone(), symbol.to_string());
    tokio::spawn(async move {
        let _ = tokio::join!(
            refresh_detail(&caching, &db, &symbol),
            price_window(&caching, &db, &symbol)
        );
    });
}

/// After an order, before it is answered: drop what it changed — first the
/// parts, whose version floors rise to the order's (no load that read them
/// before the order can put them back), then the portfolio and the detail
/// composed from them (a composition that read the old parts loses its
/// lease; one that starts later finds the old parts gone). In the
/// background, [`refill_after_order`] follows; a read that comes first
/// loads what it misses.
pub async fn after_order(caching: &Caching, db: &Db, placed: &Placed) {
    let (user_id, symbol) = (placed.filled.user_id, placed.filled.symbol.as_str());
    let (positions_at, owners_at) = (keys::positions(user_id), keys::ownership(symbol));
    tokio::join!(
        caching.invalidate_version(&positions_at, placed.positions.1),
        caching.invalidate_version(&owners_at, placed.ownership.1),
    );
    let (portfolio, detail) = (keys::portfolio(user_id), keys::instrument(symbol));
    caching.invalidate_many(&[&portfolio, &detail]).await;
    if caching.cache().is_some() {
        refill_after_order(caching, db, placed);
    }
}

/// In the background: write the parts the order returned (versioned: a read
/// that loaded them meanwhile at the same version, or a later order, wins),
/// then compose the portfolio and the detail again.
fn refill_after_order(caching: &Caching, db: &Db, placed: &Placed) {
    let (caching, db, placed) = (caching.clone(), db.clone(), placed.clone());
    tokio::spawn(async move {
        let (user_id, symbol) = (placed.filled.user_id, placed.filled.symbol.as_str());
        let (positions, version) = &placed.positions;
        let (owners, owners_version) = &placed.ownership;
        let (positions_at, owners_at) = (keys::positions(user_id), keys::ownership(symbol));
        let (Ok(held), Ok(owned)) = (
            from_redis(&caching, Policy::Positions),
            from_redis(&caching, Policy::Ownership),
        ) else {
            return;
        };
        let _ = tokio::join!(
            caching.write_versioned(
                Policy::Positions,
                &positions_at,
                Some(held),
                positions,
                *version
            ),
            caching.write_versioned(
                Policy::Ownership,
                &owners_at,
                Some(owned),
                owners,
                *owners_version
            ),
        );
        let _ = tokio::join!(
            refresh_detail(&caching, &db, symbol),
            refresh_portfolio(&caching, &db, user_id)
        );
    });
}
