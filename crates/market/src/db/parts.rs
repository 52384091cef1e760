//! The parts the cached side composes instrument details and portfolios
//! from ([`crate::parts`]), each read with the version it is at. The SQL of
//! each part is the matching part of the one-query detail and portfolio of
//! [`super::queries`] (what `--cache off` answers), so that both sides
//! aggregate the same rows in the same order and agree to the last bit.

use sqlx::postgres::PgRow;
use sqlx::Row;

use super::{decode_candles, Db};
use crate::error::ApiError;
use crate::model::*;

/// How many of an instrument's newest ticks a portfolio's statistics cover.
pub const WINDOW_TICKS: i64 = 1440;
/// Days of candles in an instrument's detail.
const DETAIL_CANDLE_DAYS: i64 = 30;

/// The reference part of a detail, `None` for an unknown symbol.
pub async fn instrument_ref(db: &Db, symbol: &str) -> Result<Option<InstrumentRef>, ApiError> {
    let row = sqlx::query(
        "SELECT i.symbol, i.name, e.code AS exchange, e.name AS exchange_name, e.currency,
                s.code AS sector, s.name AS sector_name, i.listed_on::TEXT AS listed_on,
                f.market_cap, f.pe_ratio, f.dividend_yield, f.eps, f.shares_outstanding
         FROM instruments i
         JOIN exchanges e ON e.id = i.exchange_id
         JOIN sectors s ON s.id = i.sector_id
         JOIN fundamentals f ON f.instrument_id = i.id
         WHERE i.symbol = $1",
    )
    .bind(symbol)
    .fetch_optional(db.counted())
    .await?;
    Ok(row.as_ref().map(instrument_ref_row))
}

/// The reference columns of a detail row.
pub(crate) fn instrument_ref_row(r: &PgRow) -> InstrumentRef {
    InstrumentRef {
        symbol: r.get("symbol"),
        name: r.get("name"),
        exchange: r.get("exchange"),
        exchange_name: r.get("exchange_name"),
        currency: r.get("currency"),
        sector: r.get("sector"),
        sector_name: r.get("sector_name"),
        listed_on: r.get("listed_on"),
        market_cap: r.get("market_cap"),
        pe_ratio: r.get("pe_ratio"),
        dividend_yield: r.get("dividend_yield"),
        eps: r.get("eps"),
        shares_outstanding: r.get("shares_outstanding"),
    }
}

/// The price part of a detail, `None` for an unknown symbol.
pub async fn price_history(db: &Db, symbol: &str) -> Result<Option<PriceHistory>, ApiError> {
    let row = sqlx::query(concat!(
        "SELECT stats.high_all_time, stats.low_all_time, stats.average_price, stats.total_volume,
                candles.candles
         FROM instruments i
",
        price_stats_lateral!(),
        candles_lateral!(),
        "         WHERE i.symbol = $1"
    ))
    .bind(symbol)
    .bind(DETAIL_CANDLE_DAYS * 24)
    .fetch_optional(db.counted())
    .await?;
    row.as_ref().map(price_history_row).transpose()
}

/// The price statistics and candles of a detail row.
pub(crate) fn price_history_row(r: &PgRow) -> Result<PriceHistory, ApiError> {
    Ok(PriceHistory {
        high_all_time: r.get::<Option<f64>, _>("high_all_time").unwrap_or(0.0),
        low_all_time: r.get::<Option<f64>, _>("low_all_time").unwrap_or(0.0),
        average_price: r.get::<Option<f64>, _>("average_price").unwrap_or(0.0),
        total_volume: r.get::<Option<i64>, _>("total_volume").unwrap_or(0),
        candles: decode_candles(r)?,
    })
}

/// The ownership part of a detail and its version (the instrument's newest
/// trade id), `None` for an unknown symbol.
pub async fn ownership(db: &Db, symbol: &str) -> Result<Option<(Ownership, u64)>, ApiError> {
    let row = sqlx::query(
        "SELECT o.* FROM instruments i CROSS JOIN LATERAL market_ownership(i.id) AS o
         WHERE i.symbol = $1",
    )
    .bind(symbol)
    .fetch_optional(db.counted())
    .await?;
    Ok(row.map(|r| ownership_row(&r)))
}

/// `holders, shares_held, trade_count, traded_quantity` and a version column.
pub(crate) fn ownership_row(r: &PgRow) -> (Ownership, u64) {
    let version: i64 = r.get("version");
    (ownership_columns(r), version.max(0) as u64)
}

/// `holders, shares_held, trade_count, traded_quantity`.
pub(crate) fn ownership_columns(r: &PgRow) -> Ownership {
    Ownership {
        holders: r.get("holders"),
        shares_held: r.get("shares_held"),
        trade_count: r.get("trade_count"),
        traded_quantity: r.get("traded_quantity"),
    }
}

/// A user's positions and their version (the user's newest order id),
/// `None` for an unknown user.
pub async fn positions(db: &Db, user_id: i64) -> Result<Option<(Positions, u64)>, ApiError> {
    let rows = sqlx::query("SELECT * FROM market_positions($1)")
        .bind(user_id)
        .fetch_all(db.counted())
        .await?;
    Ok(positions_rows(&rows).into_iter().next())
}

/// Every user's positions and their versions, for a warm-up.
pub async fn all_positions(db: &Db) -> Result<Vec<(Positions, u64)>, ApiError> {
    let rows = sqlx::query(
        "SELECT mp.* FROM users u CROSS JOIN LATERAL market_positions(u.id) AS mp
         ORDER BY u.id",
    )
    .fetch_all(db.counted())
    .await?;
    Ok(positions_rows(&rows))
}

/// Rows of `market_positions`, grouped by user in the order they come.
fn positions_rows(rows: &[PgRow]) -> Vec<(Positions, u64)> {
    let mut users: Vec<(Positions, u64)> = Vec::new();
    for r in rows {
        let user_id: i64 = r.get("user_id");
        if users.last().is_none_or(|(p, _)| p.user_id != user_id) {
            let version: i64 = r.get("version");
            let positions = Positions {
                user_id,
                positions: Vec::new(),
            };
            users.push((positions, version.max(0) as u64));
        }
        let Some(symbol) = r.get::<Option<String>, _>("symbol") else {
            continue; // the user holds nothing
        };
        let (positions, _) = users.last_mut().expect("pushed above");
        positions.positions.push(Position {
            symbol,
            name: r.get("name"),
            quantity: r.get("quantity"),
            cost_basis: r.get("cost_basis"),
            bought: r.get("bought"),
            sold: r.get("sold"),
        });
    }
    users
}

/// The statement of a price window, for one symbol or (`$1` NULL) all.
const WINDOWS: &str = "SELECT i.symbol, coalesce(last.price, 0) AS last_price,
            coalesce(w.average_price, 0) AS average_price, coalesce(w.volatility, 0) AS volatility,
            coalesce((extract(epoch FROM last.ts) * 1000000)::BIGINT, 0) AS version
     FROM instruments i
     LEFT JOIN LATERAL (SELECT price, ts FROM prices WHERE instrument_id = i.id
                        ORDER BY ts DESC LIMIT 1) AS last ON TRUE
     LEFT JOIN LATERAL (
         SELECT avg(x.price) AS average_price, coalesce(stddev_samp(x.price), 0) AS volatility
         FROM (SELECT price FROM prices WHERE instrument_id = i.id
               ORDER BY ts DESC LIMIT $2) AS x) AS w ON TRUE
     WHERE $1::TEXT IS NULL OR i.symbol = $1";

fn window_row(r: &PgRow) -> (PriceWindow, u64) {
    let version: i64 = r.get("version");
    let window = PriceWindow {
        symbol: r.get("symbol"),
        last_price: r.get("last_price"),
        average_price: r.get("average_price"),
        volatility: r.get("volatility"),
    };
    (window, version.max(0) as u64)
}

/// An instrument's price window and its version (the newest tick's time in
/// microseconds), `None` for an unknown symbol.
pub async fn price_window(db: &Db, symbol: &str) -> Result<Option<(PriceWindow, u64)>, ApiError> {
    let row = sqlx::query(WINDOWS)
        .bind(Some(symbol))
        .bind(WINDOW_TICKS)
        .fetch_optional(db.counted())
        .await?;
    Ok(row.as_ref().map(window_row))
}

/// Every instrument's price window and version (for the feed).
pub async fn all_price_windows(db: &Db) -> Result<Vec<(PriceWindow, u64)>, ApiError> {
    let rows = sqlx::query(WINDOWS)
        .bind(None::<String>)
        .bind(WINDOW_TICKS)
        .fetch_all(db.counted())
        .await?;
    Ok(rows.iter().map(window_row).collect())
}
