//! Instrument details and portfolios composed from cached parts, each
//! cached for as long as what changes it allows, so that a detail or a
//! portfolio that expired or was invalidated is put together again from the
//! cache instead of by one aggregation query over the database.
//!
//! | part | key | changed by | kept current by |
//! |---|---|---|---|
//! | instrument, exchange, sector, fundamentals | `instrument_ref:{symbol}` | administration | TTL, the `instrument` tag |
//! | price statistics, 30 days of candles | `price_history:{symbol}` | every tick | `PUT …/price` (invalidation, then a reload in the background) |
//! | holders, trades | `ownership:{symbol}` | every order of it | `POST /api/orders` (versioned write-through) |
//! | positions with trade totals | `user:{id}:positions` | the user's orders | `POST /api/orders` (versioned write-through), the user's tag |
//! | last price, 60-day average and volatility | `price_window:{symbol}` | every tick | the feed, `PUT …/price` (versioned invalidation, then a reload in the background) |
//!
//! Writers update or invalidate the parts first and the composed entry
//! after, so a composition that read an older part loses its lease. Parts
//! are read from Redis, never from this instance's L1: another instance's
//! write reaches Redis before that instance drops the composed entry, but
//! reaches this L1 only when the backplane's message is applied here.
//!
//! The cache's counts of these reads are those of the parts' own policies
//! ([`POLICIES`]); a composed read counts once, under its route's policy.

use std::collections::HashMap;

use futures::future::try_join_all;

use crate::caching::Caching;
use crate::db::{parts, Db};
use crate::error::ApiError;
use crate::model::*;
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

/// The key of a user's positions (a `user:{id}:*` key, tagged `user:{id}`).
pub fn positions_key(user_id: i64) -> String {
    format!("user:{user_id}:positions")
}

fn from_redis(caching: &Caching, policy: &str) -> Result<stratacache::EntryOptions, ApiError> {
    Ok(caching.options(policy)?.skip_l1(true))
}

/// The options a user's positions are cached with.
pub fn positions_options(
    caching: &Caching,
    user_id: i64,
) -> Result<stratacache::EntryOptions, ApiError> {
    caching.options_tagged("positions", user_tag(user_id))
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
    let opts = positions_options(caching, user_id)?.skip_l1(true);
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
    let windows = try_join_all(
        held.positions
            .iter()
            .map(|p| price_window(caching, db, &p.symbol)),
    )
    .await?;
    let windows: HashMap<String, PriceWindow> = windows
        .into_iter()
        .flatten()
        .map(|w| (w.symbol.clone(), w))
        .collect();
    Ok(Some(Portfolio::value(&held, |symbol| {
        windows.get(symbol).cloned()
    })))
}

/// After a new tick of `symbol` (its price parts invalidated), load them
/// again in the background: the next detail or portfolio read that needs
/// them then finds them, or joins the load, instead of running the
/// aggregation itself. Failures are left to that read.
pub fn reload_after_tick(caching: &Caching, db: &Db, symbol: &str) {
    let (caching, db, symbol) = (caching.clone(), db.clone(), symbol.to_string());
    tokio::spawn(async move {
        let _ = tokio::join!(
            price_history(&caching, &db, &symbol),
            price_window(&caching, &db, &symbol)
        );
    });
}
