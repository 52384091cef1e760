//! Write-through: quotes (`/api/stocks/{symbol}/price`, 2 s) and order books
//! (`/depth`, 1 s).
//!
//! A write goes to PostgreSQL, then its new value replaces the cached one in
//! both tiers, so a read after the write is answered from the cache with
//! the written value. Both are versioned (`consistency = "version"`): a
//! quote's version is its tick's time, a book's its `depth_version`, and
//! the cache keeps the newest of what the writes, the read-through loads
//! and the market-data feed ([`crate::feed`]) give it, whatever order they
//! arrive in. A read that misses loads the row with its version.
//!
//! A new price also changes what details and portfolios are composed from:
//! [`crate::parts::after_tick`] drops those parts.

use crate::caching::Caching;
use crate::db::{queries, writes, Db};
use crate::error::ApiError;
use crate::keys;
use crate::model::{Depth, NewDepth, NewPrice, Quote};
use crate::policy::Policy;

/// A symbol's quote; `None` for an unknown symbol.
pub async fn price(caching: &Caching, db: &Db, symbol: &str) -> Result<Option<Quote>, ApiError> {
    let (db, s) = (db.clone(), symbol.to_string());
    caching
        .read_versioned(
            Policy::StockPrice,
            &keys::price(symbol),
            None,
            move || async move { queries::quote(&db, &s).await },
        )
        .await
}

/// A new tick: PostgreSQL, then the cache, then the parts it changes.
pub async fn put_price(
    caching: &Caching,
    db: &Db,
    symbol: &str,
    new: &NewPrice,
) -> Result<Quote, ApiError> {
    let (quote, version) = writes::put_price(db, symbol, new).await?;
    let key = keys::price(symbol);
    let (written, ()) = tokio::join!(
        caching.write_versioned(Policy::StockPrice, &key, None, &quote, version),
        crate::parts::after_tick(caching, db, symbol, version),
    );
    written?;
    Ok(quote)
}

/// A symbol's order book; `None` for an unknown symbol.
pub async fn depth(caching: &Caching, db: &Db, symbol: &str) -> Result<Option<Depth>, ApiError> {
    let (db, s) = (db.clone(), symbol.to_string());
    caching
        .read_versioned(
            Policy::MarketDepth,
            &keys::depth(symbol),
            None,
            move || async move { queries::depth(&db, &s).await },
        )
        .await
}

/// A new order book: PostgreSQL, then the cache.
pub async fn put_depth(
    caching: &Caching,
    db: &Db,
    symbol: &str,
    new: &NewDepth,
) -> Result<Depth, ApiError> {
    let (depth, version) = writes::put_depth(db, symbol, new).await?;
    caching
        .write_versioned(
            Policy::MarketDepth,
            &keys::depth(symbol),
            None,
            &depth,
            version,
        )
        .await?;
    Ok(depth)
}
