//! `market seed`: a deterministic data set, generated inside PostgreSQL
//! (`generate_series` and the hash-based `market_rand`), in batches with a
//! progress bar. `--scale 1` (the default) is 500 instruments with 4,000
//! price ticks each (2 M ticks), 10,000 users with 15 positions and 30
//! trades each (150 k positions, 300 k orders and trades).

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use sqlx::PgPool;

/// Price ticks per instrument (hourly, so about 166 days).
pub const TICKS_PER_INSTRUMENT: i64 = 4000;

/// The size of a data set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeedPlan {
    /// The `--scale` it was derived from.
    pub scale: f64,
    /// Number of instruments.
    pub instruments: i64,
    /// Number of users.
    pub users: i64,
}

impl SeedPlan {
    /// The data set of `scale` (1.0 = 500 instruments, 10,000 users).
    pub fn at_scale(scale: f64) -> anyhow::Result<Self> {
        anyhow::ensure!(
            scale.is_finite() && scale > 0.0 && scale <= 100.0,
            "--scale must be in (0, 100], got {scale}"
        );
        Ok(Self {
            scale,
            instruments: ((500.0 * scale).round() as i64).max(20),
            users: ((10_000.0 * scale).round() as i64).max(50),
        })
    }
}

/// What a seeded database holds, from its `seed_info` row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeedInfo {
    /// The scale it was seeded at.
    pub scale: f64,
    /// Number of instruments.
    pub instruments: i64,
    /// Number of users.
    pub users: i64,
}

/// The seed the database holds, if one finished.
pub async fn seeded(pool: &PgPool) -> anyhow::Result<Option<SeedInfo>> {
    let row: Option<(f64, i32, i64)> =
        sqlx::query_as("SELECT scale, instruments, users FROM seed_info WHERE id = 1")
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(scale, instruments, users)| SeedInfo {
        scale,
        instruments: instruments.into(),
        users,
    }))
}

/// Build the data set of `plan`, replacing whatever the tables held.
/// `progress` shows a bar on stderr.
pub async fn seed(pool: &PgPool, plan: SeedPlan, progress: bool) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut conn = pool.acquire().await?;
    let user_batch = 2_000i64;
    let instrument_batch = 25i64;
    let user_batches = (plan.users + user_batch - 1) / user_batch;
    let instrument_batches = (plan.instruments + instrument_batch - 1) / instrument_batch;
    // Steps: reference data, price batches, user batches, analyze.
    let total = 1 + instrument_batches + user_batches + 1;
    let bar = if progress {
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} steps, {elapsed}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    bar.set_message("reference");
    sqlx::query(
        "TRUNCATE seed_info, view_counts, trades, orders, positions, watchlists, profiles, users,
                  market_depth, prices, fundamentals, instruments, sectors, exchanges RESTART IDENTITY",
    )
    .execute(&mut *conn)
    .await?;
    for statement in REFERENCE {
        sqlx::query(*statement)
            .bind(plan.instruments)
            .execute(&mut *conn)
            .await?;
    }
    bar.inc(1);

    bar.set_message("prices");
    for b in 0..instrument_batches {
        let first = b * instrument_batch + 1;
        let last = ((b + 1) * instrument_batch).min(plan.instruments);
        sqlx::query(PRICES)
            .bind(first as i32)
            .bind(last as i32)
            .bind(TICKS_PER_INSTRUMENT)
            .execute(&mut *conn)
            .await?;
        bar.inc(1);
    }

    bar.set_message("users");
    for b in 0..user_batches {
        let first = b * user_batch + 1;
        let last = ((b + 1) * user_batch).min(plan.users);
        for statement in USERS {
            sqlx::query(*statement)
                .bind(first)
                .bind(last)
                .bind(plan.instruments)
                .execute(&mut *conn)
                .await?;
        }
        bar.inc(1);
    }

    bar.set_message("analyze");
    sqlx::query("ANALYZE").execute(&mut *conn).await?;
    sqlx::query(
        "INSERT INTO seed_info (id, scale, instruments, users, finished_at) VALUES (1, $1, $2, $3, now())",
    )
    .bind(plan.scale)
    .bind(plan.instruments as i32)
    .bind(plan.users)
    .execute(&mut *conn)
    .await?;
    bar.inc(1);
    bar.finish_with_message("seeded");
    Ok(started.elapsed())
}

/// Exchanges, sectors, instruments ($1 of them), fundamentals, order books, view counters.
const REFERENCE: &[&str] = &[
    "INSERT INTO exchanges (id, code, name, country, currency) SELECT * FROM (VALUES
        (1, 'NYSE', 'New York Stock Exchange', 'US', 'USD'),
        (2, 'NASDAQ', 'Nasdaq', 'US', 'USD'),
        (3, 'LSE', 'London Stock Exchange', 'GB', 'GBP'),
        (4, 'XETRA', 'Xetra', 'DE', 'EUR'),
        (5, 'TSE', 'Tokyo Stock Exchange', 'JP', 'JPY')) AS v WHERE $1::BIGINT > 0",
    "INSERT INTO sectors (id, code, name) SELECT * FROM (VALUES
        (1, 'TECH', 'Technology'), (2, 'FIN', 'Financials'), (3, 'HLTH', 'Health Care'),
        (4, 'ENRG', 'Energy'), (5, 'INDU', 'Industrials'), (6, 'CONS', 'Consumer Staples'),
        (7, 'DISC', 'Consumer Discretionary'), (8, 'MATR', 'Materials'), (9, 'UTIL', 'Utilities'),
        (10, 'REAL', 'Real Estate'), (11, 'COMM', 'Communication Services')) AS v WHERE $1::BIGINT > 0",
    "INSERT INTO instruments (id, symbol, name, exchange_id, sector_id, listed_on)
     SELECT g, market_symbol(g),
            initcap(market_symbol(g)) || ' ' || (ARRAY['Holdings', 'Group', 'Corp', 'Industries', 'Systems', 'Partners'])[1 + g % 6],
            1 + (market_rand(g * 11) * 5)::INTEGER % 5, 1 + (market_rand(g * 13) * 11)::INTEGER % 11,
            DATE '1980-01-01' + (market_rand(g * 17) * 15000)::INTEGER
     FROM generate_series(1, $1::INTEGER) AS g",
    "INSERT INTO fundamentals (instrument_id, market_cap, pe_ratio, dividend_yield, eps, shares_outstanding)
     SELECT g, round((1e8 + market_rand(g * 19) * 5e11)::NUMERIC, 0)::DOUBLE PRECISION,
            round((5 + market_rand(g * 23) * 45)::NUMERIC, 2)::DOUBLE PRECISION,
            round((market_rand(g * 29) * 6)::NUMERIC, 2)::DOUBLE PRECISION,
            round((market_rand(g * 31) * 20 - 2)::NUMERIC, 2)::DOUBLE PRECISION,
            (1e6 + market_rand(g * 37) * 5e9)::BIGINT
     FROM generate_series(1, $1::INTEGER) AS g",
    "INSERT INTO market_depth (instrument_id, side, level, price, quantity)
     SELECT g, side, lvl,
            round(((10 + market_rand(g * 41) * 490) * (1 + CASE side WHEN 'bid' THEN -1 ELSE 1 END * 0.001 * (lvl + 1)))::NUMERIC, 2)::DOUBLE PRECISION,
            (100 + market_rand(g * 1000 + lvl * 2 + (side = 'bid')::INTEGER) * 10000)::BIGINT
     FROM generate_series(1, $1::INTEGER) AS g, unnest(ARRAY['bid', 'ask']) AS side,
          generate_series(0, 9) AS lvl",
    "INSERT INTO view_counts (instrument_id, views)
     SELECT g, (market_rand(g * 43) * 1000)::BIGINT FROM generate_series(1, $1::INTEGER) AS g",
];

/// Hourly ticks for instruments $1..=$2, $3 per instrument: a slow wave
/// around a base price plus noise, ending one hour before 2026-06-01.
const PRICES: &str = "INSERT INTO prices (instrument_id, ts, price, volume)
     SELECT g, TIMESTAMPTZ '2026-06-01 00:00:00+00' - (($3 - s) * INTERVAL '1 hour'),
            round(((10 + market_rand(g * 41) * 490)
                   * (1 + 0.25 * sin(s / 300.0 + g) + 0.04 * (market_rand(g * 1000003 + s) - 0.5)))::NUMERIC, 2)::DOUBLE PRECISION,
            (100 + market_rand(g * 1000033 + s) * 100000)::BIGINT
     FROM generate_series($1::INTEGER, $2::INTEGER) AS g, generate_series(1, $3::BIGINT) AS s";

/// Users $1..=$2 with profiles, watchlists, positions, orders and trades over
/// $3 instruments. Passwords are 'password' || id.
const USERS: &[&str] = &[
    "INSERT INTO users (id, username, password_hash, created_at)
     SELECT u, 'user' || u, sha256(convert_to('market:user' || u || ':password' || u, 'UTF8')),
            TIMESTAMPTZ '2020-01-01 00:00:00+00' + (market_rand(u * 47) * 2000) * INTERVAL '1 day'
     FROM generate_series($1::BIGINT, $2::BIGINT) AS u WHERE $3::BIGINT > 0",
    "INSERT INTO profiles (user_id, display_name, email, country, risk_level, updated_at)
     SELECT u, 'Trader ' || u, 'user' || u || '@example.com',
            (ARRAY['US', 'GB', 'DE', 'FR', 'JP', 'CA', 'AU', 'NL'])[1 + (market_rand(u * 53) * 8)::INTEGER % 8],
            (ARRAY['low', 'medium', 'high'])[1 + (market_rand(u * 59) * 3)::INTEGER % 3],
            TIMESTAMPTZ '2026-01-01 00:00:00+00'
     FROM generate_series($1::BIGINT, $2::BIGINT) AS u WHERE $3::BIGINT > 0",
    // Distinct instruments per user: k-th pick is a stride through the list.
    "INSERT INTO watchlists (user_id, position, instrument_id)
     SELECT u, k, 1 + ((u * 7919 + k * (1 + u % 7) * 31) % $3)::INTEGER
     FROM generate_series($1::BIGINT, $2::BIGINT) AS u, generate_series(1, 8) AS k
     ON CONFLICT DO NOTHING",
    "INSERT INTO positions (user_id, instrument_id, quantity, cost_basis)
     SELECT u, 1 + ((u * 104729 + k * 37) % $3)::INTEGER,
            (1 + market_rand(u * 61 + k) * 500)::BIGINT,
            round((10 + market_rand(u * 67 + k) * 490)::NUMERIC, 2)::DOUBLE PRECISION
     FROM generate_series($1::BIGINT, $2::BIGINT) AS u, generate_series(1, 15) AS k
     ON CONFLICT DO NOTHING",
    "WITH placed AS (
         INSERT INTO orders (user_id, instrument_id, side, quantity, limit_price, status, created_at)
         SELECT p.user_id, p.instrument_id, 'buy', greatest(1, p.quantity / 2), NULL, 'filled',
                TIMESTAMPTZ '2026-01-01 00:00:00+00' + (market_rand(p.user_id * 71 + p.instrument_id * 3 + t) * 150) * INTERVAL '1 day'
         FROM positions p, generate_series(1, 2) AS t
         WHERE p.user_id BETWEEN $1 AND $2 AND $3::BIGINT > 0
         RETURNING id, user_id, instrument_id, side, quantity, created_at)
     INSERT INTO trades (order_id, user_id, instrument_id, side, quantity, price, executed_at)
     SELECT o.id, o.user_id, o.instrument_id, o.side, o.quantity,
            round((10 + market_rand(o.id * 73) * 490)::NUMERIC, 2)::DOUBLE PRECISION, o.created_at
     FROM placed o",
];

#[cfg(test)]
mod tests {
    use super::*;

    const POSITIONS_PER_USER: i64 = 15;
    const TRADES_PER_POSITION: i64 = 2;
    const WATCHLIST_LEN: i64 = 8;
    const DEPTH_LEVELS: i64 = 10;

    #[test]
    fn scale_sizes_the_data_set_and_refuses_nonsense() {
        let plan = SeedPlan::at_scale(1.0).unwrap();
        assert_eq!((plan.instruments, plan.users), (500, 10_000));
        assert_eq!(SeedPlan::at_scale(0.001).unwrap().instruments, 20);
        assert!(SeedPlan::at_scale(0.0).is_err());
        assert!(SeedPlan::at_scale(f64::NAN).is_err());
    }

    #[test]
    fn constants_match_the_statements() {
        assert!(USERS[2].contains(&format!("generate_series(1, {WATCHLIST_LEN})")));
        assert!(USERS[3].contains(&format!("generate_series(1, {POSITIONS_PER_USER})")));
        assert!(USERS[4].contains(&format!("generate_series(1, {TRADES_PER_POSITION})")));
        assert!(REFERENCE[4].contains(&format!("generate_series(0, {})", DEPTH_LEVELS - 1)));
    }
}
