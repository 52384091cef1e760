//! The service's reads: one function per resource, each one query (or a few
//! in one round of work), costed for real by joins and aggregation.

use sqlx::Row;

use super::{parts, Db};
use crate::error::ApiError;
use crate::model::*;

/// How many of an instrument's newest ticks the portfolio's statistics cover.
const PORTFOLIO_WINDOW_TICKS: i64 = 1440;
/// Days of candles in an instrument's detail.
const DETAIL_CANDLE_DAYS: i64 = 30;

/// Instruments, optionally of one sector and/or exchange (codes), by symbol.
pub async fn list_instruments(
    db: &Db,
    sector: Option<&str>,
    exchange: Option<&str>,
) -> Result<Vec<InstrumentSummary>, ApiError> {
    let rows = sqlx::query(
        "SELECT i.symbol, i.name, e.code AS exchange, s.code AS sector, f.market_cap
         FROM instruments i
         JOIN exchanges e ON e.id = i.exchange_id
         JOIN sectors s ON s.id = i.sector_id
         JOIN fundamentals f ON f.instrument_id = i.id
         WHERE ($1::TEXT IS NULL OR s.code = $1) AND ($2::TEXT IS NULL OR e.code = $2)
         ORDER BY i.symbol",
    )
    .bind(sector)
    .bind(exchange)
    .fetch_all(db.counted())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| InstrumentSummary {
            symbol: r.get("symbol"),
            name: r.get("name"),
            exchange: r.get("exchange"),
            sector: r.get("sector"),
            market_cap: r.get("market_cap"),
        })
        .collect())
}

/// The instrument's detail, or `None` for an unknown symbol.
pub async fn instrument_detail(
    db: &Db,
    symbol: &str,
) -> Result<Option<InstrumentDetail>, ApiError> {
    let row = sqlx::query(concat!(
        "SELECT i.symbol, i.name, e.code AS exchange, e.name AS exchange_name, e.currency,
                s.code AS sector, s.name AS sector_name, i.listed_on::TEXT AS listed_on,
                f.market_cap, f.pe_ratio, f.dividend_yield, f.eps, f.shares_outstanding,
                stats.high_all_time, stats.low_all_time, stats.average_price, stats.total_volume,
                holders.holders, holders.shares_held, traded.trade_count, traded.traded_quantity,
                candles.candles
         FROM instruments i
         JOIN exchanges e ON e.id = i.exchange_id
         JOIN sectors s ON s.id = i.sector_id
         JOIN fundamentals f ON f.instrument_id = i.id
",
        price_stats_lateral!(),
        "         CROSS JOIN LATERAL (
             SELECT count(*) AS holders, coalesce(sum(quantity), 0)::BIGINT AS shares_held
             FROM positions WHERE instrument_id = i.id) AS holders
         CROSS JOIN LATERAL (
             SELECT count(*) AS trade_count, coalesce(sum(quantity), 0)::BIGINT AS traded_quantity
             FROM trades WHERE instrument_id = i.id) AS traded
",
        candles_lateral!(),
        "         WHERE i.symbol = $1"
    ))
    .bind(symbol)
    .bind(DETAIL_CANDLE_DAYS * 24)
    .fetch_optional(db.counted())
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(InstrumentDetail::from_parts(
        parts::instrument_ref_row(&r),
        parts::price_history_row(&r)?,
        parts::ownership_columns(&r),
    )))
}

/// The newest tick of a symbol against the one before it, with its version
/// (the tick's time in microseconds: ticks of a symbol only move forward),
/// or `None` for an unknown symbol.
pub async fn quote(db: &Db, symbol: &str) -> Result<Option<(Quote, u64)>, ApiError> {
    let row = sqlx::query(
        "SELECT i.symbol, t.price, t.volume, t.ts::TEXT AS at,
                (extract(epoch FROM t.ts) * 1000000)::BIGINT AS version,
                coalesce((SELECT p.price FROM prices p WHERE p.instrument_id = i.id AND p.ts < t.ts
                          ORDER BY p.ts DESC LIMIT 1), t.price) AS previous
         FROM instruments i
         CROSS JOIN LATERAL (SELECT ts, price, volume FROM prices
                             WHERE instrument_id = i.id ORDER BY ts DESC LIMIT 1) AS t
         WHERE i.symbol = $1",
    )
    .bind(symbol)
    .fetch_optional(db.counted())
    .await?;
    Ok(row.map(|r| quote_row(&r)))
}

/// A row of `symbol, price, volume, at, version, previous` as a quote and its version.
pub(crate) fn quote_row(r: &sqlx::postgres::PgRow) -> (Quote, u64) {
    let price: f64 = r.get("price");
    let previous: f64 = r.get("previous");
    let version: i64 = r.get("version");
    let quote = Quote {
        symbol: r.get("symbol"),
        price,
        previous,
        change_pct: change_pct(previous, price),
        volume: r.get("volume"),
        at: r.get("at"),
    };
    (quote, version.max(0) as u64)
}

pub(crate) fn change_pct(from: f64, to: f64) -> f64 {
    if from == 0.0 {
        0.0
    } else {
        ((to - from) / from * 10_000.0).round() / 100.0
    }
}

/// The order book of a symbol with its version (`instruments.depth_version`,
/// raised by every replacement of the book), or `None` for an unknown symbol.
pub async fn depth(db: &Db, symbol: &str) -> Result<Option<(Depth, u64)>, ApiError> {
    let rows = sqlx::query(
        "SELECT i.symbol, i.depth_version, d.side, d.price, d.quantity FROM instruments i
         LEFT JOIN market_depth d ON d.instrument_id = i.id
         WHERE i.symbol = $1 ORDER BY d.side, d.level",
    )
    .bind(symbol)
    .fetch_all(db.counted())
    .await?;
    Ok(depth_rows(&rows).into_iter().next())
}

/// Rows of `symbol, depth_version, side, price, quantity`, ordered by symbol
/// then side and level, as one book per symbol with its version.
pub(crate) fn depth_rows(rows: &[sqlx::postgres::PgRow]) -> Vec<(Depth, u64)> {
    let mut books: Vec<(Depth, u64)> = Vec::new();
    for r in rows {
        let symbol: String = r.get("symbol");
        if books.last().is_none_or(|(d, _)| d.symbol != symbol) {
            let version: i64 = r.get("depth_version");
            let book = Depth {
                symbol,
                bids: Vec::new(),
                asks: Vec::new(),
            };
            books.push((book, version.max(0) as u64));
        }
        let (book, _) = books.last_mut().expect("pushed above");
        // An instrument without levels comes back as one row of NULLs.
        let Some(side) = r.get::<Option<String>, _>("side") else {
            continue;
        };
        let level = DepthLevel {
            price: r.get("price"),
            quantity: r.get("quantity"),
        };
        match side.as_str() {
            "bid" => book.bids.push(level),
            _ => book.asks.push(level),
        }
    }
    books
}

/// Whether the user exists.
pub async fn user_exists(db: &Db, user_id: i64) -> Result<bool, ApiError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM users WHERE id = $1)")
            .bind(user_id)
            .fetch_one(db.counted())
            .await?,
    )
}

/// The user's portfolio valued at the last prices, with 60-day statistics
/// per holding and the user's trades per holding; `None` for an unknown user.
pub async fn portfolio(db: &Db, user_id: i64) -> Result<Option<Portfolio>, ApiError> {
    let rows = sqlx::query(
        "SELECT u.id AS user_id, i.symbol, i.name, p.quantity, p.cost_basis,
                last.price AS last_price, w.average_price, w.volatility,
                coalesce(t.bought, 0)::BIGINT AS bought, coalesce(t.sold, 0)::BIGINT AS sold
         FROM users u
         LEFT JOIN positions p ON p.user_id = u.id
         LEFT JOIN instruments i ON i.id = p.instrument_id
         LEFT JOIN LATERAL (SELECT price FROM prices WHERE instrument_id = p.instrument_id
                            ORDER BY ts DESC LIMIT 1) AS last ON TRUE
         LEFT JOIN LATERAL (
             SELECT avg(x.price) AS average_price, coalesce(stddev_samp(x.price), 0) AS volatility
             FROM (SELECT price FROM prices WHERE instrument_id = p.instrument_id
                   ORDER BY ts DESC LIMIT $2) AS x) AS w ON TRUE
         LEFT JOIN LATERAL (
             SELECT sum(quantity) FILTER (WHERE side = 'buy') AS bought,
                    sum(quantity) FILTER (WHERE side = 'sell') AS sold
             FROM trades WHERE user_id = u.id AND instrument_id = p.instrument_id) AS t ON TRUE
         WHERE u.id = $1
         ORDER BY i.symbol",
    )
    .bind(user_id)
    .bind(PORTFOLIO_WINDOW_TICKS)
    .fetch_all(db.counted())
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut positions = Positions {
        user_id,
        positions: Vec::with_capacity(rows.len()),
    };
    let mut windows = std::collections::HashMap::with_capacity(rows.len());
    for r in rows {
        let Some(symbol) = r.get::<Option<String>, _>("symbol") else {
            continue; // the user holds nothing: the LEFT JOIN's one empty row
        };
        let window = PriceWindow {
            symbol: symbol.clone(),
            last_price: r.get::<Option<f64>, _>("last_price").unwrap_or(0.0),
            average_price: r.get::<Option<f64>, _>("average_price").unwrap_or(0.0),
            volatility: r.get::<Option<f64>, _>("volatility").unwrap_or(0.0),
        };
        windows.insert(symbol.clone(), window);
        positions.positions.push(Position {
            symbol,
            name: r.get("name"),
            quantity: r.get("quantity"),
            cost_basis: r.get("cost_basis"),
            bought: r.get("bought"),
            sold: r.get("sold"),
        });
    }
    // The same valuation as the cached side's, which composes the same
    // parts from the cache (`crate::parts`).
    Ok(Some(Portfolio::value(&positions, |symbol| {
        windows.get(symbol).cloned()
    })))
}

pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The user's watchlist, or `None` for an unknown user.
pub async fn watchlist(db: &Db, user_id: i64) -> Result<Option<Watchlist>, ApiError> {
    let rows = sqlx::query(
        "SELECT i.symbol FROM users u
         LEFT JOIN watchlists w ON w.user_id = u.id
         LEFT JOIN instruments i ON i.id = w.instrument_id
         WHERE u.id = $1 ORDER BY w.position",
    )
    .bind(user_id)
    .fetch_all(db.counted())
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(Watchlist {
        user_id,
        symbols: rows
            .into_iter()
            .filter_map(|r| r.get::<Option<String>, _>("symbol"))
            .collect(),
    }))
}

/// The user's profile, or `None` for an unknown user.
pub async fn profile(db: &Db, user_id: i64) -> Result<Option<Profile>, ApiError> {
    let row = sqlx::query(
        "SELECT u.id, u.username, p.display_name, p.email, p.country, p.risk_level
         FROM users u JOIN profiles p ON p.user_id = u.id WHERE u.id = $1",
    )
    .bind(user_id)
    .fetch_optional(db.counted())
    .await?;
    Ok(row.map(|r| Profile {
        user_id: r.get("id"),
        username: r.get("username"),
        display_name: r.get("display_name"),
        email: r.get("email"),
        country: r.get("country"),
        risk_level: r.get("risk_level"),
    }))
}

/// The ten most viewed instruments.
pub async fn trending(db: &Db) -> Result<Vec<Trending>, ApiError> {
    let rows = sqlx::query(
        "SELECT i.symbol, i.name, v.views FROM view_counts v
         JOIN instruments i ON i.id = v.instrument_id
         ORDER BY v.views DESC, i.symbol LIMIT 10",
    )
    .fetch_all(db.counted())
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Trending {
            symbol: r.get("symbol"),
            name: r.get("name"),
            views: r.get("views"),
        })
        .collect())
}

/// Sectors' moves over the last 24 ticks, and the biggest movers.
pub async fn overview(db: &Db) -> Result<Overview, ApiError> {
    let rows = sqlx::query(
        "WITH recent AS (
             SELECT i.symbol, s.code AS sector, w.first_price, w.last_price, w.volume
             FROM instruments i JOIN sectors s ON s.id = i.sector_id
             CROSS JOIN LATERAL (
                 SELECT (array_agg(x.price ORDER BY x.ts))[1] AS first_price,
                        (array_agg(x.price ORDER BY x.ts DESC))[1] AS last_price,
                        sum(x.volume)::BIGINT AS volume
                 FROM (SELECT ts, price, volume FROM prices WHERE instrument_id = i.id
                       ORDER BY ts DESC LIMIT 24) AS x) AS w)
         SELECT symbol, sector, first_price, last_price, volume FROM recent",
    )
    .fetch_all(db.counted())
    .await?;
    let mut sectors: std::collections::BTreeMap<String, (i64, f64, i64)> = Default::default();
    let mut movers = Vec::with_capacity(rows.len());
    for r in rows {
        let first: Option<f64> = r.get("first_price");
        let last: Option<f64> = r.get("last_price");
        let change = match (first, last) {
            (Some(f), Some(l)) => change_pct(f, l),
            _ => 0.0,
        };
        let entry = sectors.entry(r.get("sector")).or_default();
        entry.0 += 1;
        entry.1 += change;
        entry.2 += r.get::<Option<i64>, _>("volume").unwrap_or(0);
        movers.push(Mover {
            symbol: r.get("symbol"),
            change_pct: change,
        });
    }
    movers.sort_by(|a, b| {
        b.change_pct
            .total_cmp(&a.change_pct)
            .then(a.symbol.cmp(&b.symbol))
    });
    let gainers = movers.iter().take(5).cloned().collect();
    let losers = movers.iter().rev().take(5).cloned().collect();
    Ok(Overview {
        sectors: sectors
            .into_iter()
            .map(|(sector, (n, sum, volume))| SectorSummary {
                sector,
                instruments: n,
                average_change_pct: round2(sum / n.max(1) as f64),
                volume,
            })
            .collect(),
        gainers,
        losers,
    })
}

/// The user whose credentials these are, or `None`.
pub async fn authenticate(
    db: &Db,
    username: &str,
    password: &str,
) -> Result<Option<i64>, ApiError> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM users WHERE username = $1
           AND password_hash = sha256(convert_to('market:' || $1 || ':' || $2, 'UTF8'))",
    )
    .bind(username)
    .bind(password)
    .fetch_optional(db.counted())
    .await?)
}
