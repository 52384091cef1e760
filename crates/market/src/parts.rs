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
//! ([`POLICIES`]); a composed read counts once, under its route's policy.

use std::collections::HashMap;

use futures::future::try_join_all;

use crate::caching::Caching;
use crate::db::orders::Placed;
use crate::db::{parts, Db};
use crate::error::ApiError;
use crate::model::*;
use crate::routes::instruments::instrument_key;
use crate::routes::portfolios::portfolio_key;
use crate::routes::users::user_tag;

/// The policies of the parts (not reads of a route: the demo's headline hit
/// rate leaves them out and lists them apart).
pub const POLICIES: &[&str] = &[
    "instrument_ref",
    "price_history",
    "ownership",
    "positions",
    "price_window",
];

/// Composed resources a write refreshes in the background once it has
/// invalidated them; the refreshes read under `{name}_refresh`, a copy of
/// the resource's policy registered at start, so the cache counts them
/// apart from the routes' reads.
pub const REFRESHED: &[&str] = &["instrument", "portfolio"];

/// Whether `policy` is read by the service itself rather than by a route:
/// a part, or a refresh after a write.
pub fn is_internal(policy: &str) -> bool {
    POLICIES.contains(&policy)
        || policy
            .strip_suffix("_refresh")
            .is_some_and(|name| REFRESHED.contains(&name))
}

/// The key of an instrument's reference part.
pub fn ref_key(symbol: &str) -> String {
    format!("instrument_ref:{symbol}")
}

/// The key of an instrument's price statistics and candles.
pub fn history_key(symbol: &str) -> String {
    format!("price_history:{symbol}")
}

/// The key of an instrument's holders and trades.
pub fn ownership_key(symbol: &str) -> String {
    format!("ownership:{symbol}")
}

/// The key of an instrument's price window.
pub fn window_key(symbol: &str) -> String {
    format!("price_window:{symbol}")
}

/// The key of a user's positions. Not a `user:{id}:*` key: positions do not
/// depend on the profile, so a profile update (which drops `user:{id}:*`)
/// has no reason to drop them.
pub fn positions_key(user_id: i64) -> String {
    format!("positions:{user_id}")
}

fn from_redis(caching: &Caching, policy: &str) -> Result<stratacache::EntryOptions, ApiError> {
    Ok(caching.options(policy)?.skip_l1(true))
}

async fn instrument_ref(
    caching: &Caching,
    db: &Db,
    symbol: &str,
) -> Result<Option<InstrumentRef>, ApiError> {
    let (db, s) = (db.clone(), symbol.to_string());
    let opts = from_redis(caching, "instrument_ref")?;
    caching
        .read_optional(
            "instrument_ref",
            &ref_key(symbol),
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
    let opts = from_redis(caching, "price_history")?;
    caching
        .read_optional(
            "price_history",
            &history_key(symbol),
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
    let opts = from_redis(caching, "ownership")?;
    caching
        .read_versioned(
            "ownership",
            &ownership_key(symbol),
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
    let opts = from_redis(caching, "price_window")?;
    caching
        .read_versioned(
            "price_window",
            &window_key(symbol),
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
    let opts = from_redis(caching, "positions")?;
    caching
        .read_versioned(
            "positions",
            &positions_key(user_id),
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
        .map(|p| window_key(&p.symbol))
        .collect();
    let found: Vec<Option<PriceWindow>> = match caching.cache() {
        Some(cache) => {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let opts = from_redis(caching, "price_window")?;
            cache.get_many_with(&keys, &opts).await?
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
        caching.counters().lookup("price_window");
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
    caching.counters().lookup("instrument_refresh");
    let opts = caching.options("instrument_refresh")?;
    let (c, d, s) = (caching.clone(), db.clone(), symbol.to_string());
    cache
        .get_or_load_optional(&instrument_key(symbol), &opts, move || async move {
            detail(&c, &d, &s).await
        })
        .await?;
    Ok(())
}

async fn refresh_portfolio(caching: &Caching, db: &Db, user_id: i64) -> Result<(), ApiError> {
    let Some(cache) = caching.cache() else {
        return Ok(());
    };
    caching.counters().lookup("portfolio_refresh");
    let opts = caching.options_tagged("portfolio_refresh", user_tag(user_id))?;
    let (c, d) = (caching.clone(), db.clone());
    cache
        .get_or_load_optional(&portfolio_key(user_id), &opts, move || async move {
            portfolio(&c, &d, user_id).await
        })
        .await?;
    Ok(())
}

/// After a new tick of `symbol` (its detail, price history and window
/// invalidated): compose the detail again and load the window, in the
/// background, so that the next reads find them — or join the load —
/// instead of running the aggregation themselves. A failure is left to
/// those reads. The composition goes through the cache's read path: a
/// write that invalidates the detail meanwhile makes it lose its lease.
pub fn reload_after_tick(caching: &Caching, db: &Db, symbol: &str) {
    let (caching, db, symbol) = (caching.clone(), db.clone(), symbol.to_string());
    tokio::spawn(async move {
        let _ = tokio::join!(
            refresh_detail(&caching, &db, &symbol),
            price_window(&caching, &db, &symbol)
        );
    });
}

/// After an order (the user's portfolio and the instrument's detail
/// invalidated, and their parts, up to the order's versions), in the
/// background: write the parts the order returned (versioned: a read that
/// loaded them meanwhile at the same version, or a later order, wins), then
/// compose the portfolio and the detail again, as [`reload_after_tick`] does.
pub fn after_order(caching: &Caching, db: &Db, placed: &Placed) {
    let (caching, db, placed) = (caching.clone(), db.clone(), placed.clone());
    tokio::spawn(async move {
        let (user_id, symbol) = (placed.filled.user_id, placed.filled.symbol.as_str());
        let (positions, version) = &placed.positions;
        let (owners, owners_version) = &placed.ownership;
        let (positions_at, owners_at) = (positions_key(user_id), ownership_key(symbol));
        let (Ok(held), Ok(owned)) = (
            from_redis(&caching, "positions"),
            from_redis(&caching, "ownership"),
        ) else {
            return;
        };
        let _ = tokio::join!(
            caching.write_versioned("positions", &positions_at, Some(held), positions, *version),
            caching.write_versioned(
                "ownership",
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
