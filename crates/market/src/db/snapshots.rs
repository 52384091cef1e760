//! Set-based reads of the market data for the feed ([`crate::feed`]): every
//! instrument's quote, every order book — one statement each, so every row
//! comes from the same snapshot of the database, versions included.

use super::queries::{depth_rows, quote_row};
use super::Db;
use crate::error::ApiError;
use crate::model::{Depth, Quote};

/// Every instrument's quote and version, as [`super::queries::quote`] reads one.
pub async fn all_quotes(db: &Db) -> Result<Vec<(Quote, u64)>, ApiError> {
    let rows = sqlx::query(
        "SELECT i.symbol, t.price, t.volume, t.ts::TEXT AS at,
                (extract(epoch FROM t.ts) * 1000000)::BIGINT AS version,
                coalesce((SELECT p.price FROM prices p WHERE p.instrument_id = i.id AND p.ts < t.ts
                          ORDER BY p.ts DESC LIMIT 1), t.price) AS previous
         FROM instruments i
         CROSS JOIN LATERAL (SELECT ts, price, volume FROM prices
                             WHERE instrument_id = i.id ORDER BY ts DESC LIMIT 1) AS t",
    )
    .fetch_all(db.counted())
    .await?;
    Ok(rows.iter().map(quote_row).collect())
}

/// Every instrument's order book and version, as [`super::queries::depth`] reads one.
pub async fn all_depths(db: &Db) -> Result<Vec<(Depth, u64)>, ApiError> {
    let rows = sqlx::query(
        "SELECT i.symbol, i.depth_version, d.side, d.price, d.quantity FROM instruments i
         LEFT JOIN market_depth d ON d.instrument_id = i.id
         ORDER BY i.symbol, d.side, d.level",
    )
    .fetch_all(db.counted())
    .await?;
    Ok(depth_rows(&rows))
}
