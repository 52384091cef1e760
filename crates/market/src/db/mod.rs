//! PostgreSQL: the pool, the database's creation and its migrations, the
//! seeder and every query the routes run.

// SQL shared by the uncached detail query and the cached side's price part,
// so that both compute the same figures. Macros, not consts: `concat!`
// takes literals only.
macro_rules! price_stats_lateral {
    () => {
        "
         CROSS JOIN LATERAL (
             SELECT max(p.price) AS high_all_time, min(p.price) AS low_all_time,
                    avg(p.price) AS average_price, sum(p.volume)::BIGINT AS total_volume
             FROM prices p WHERE p.instrument_id = i.id) AS stats
"
    };
}

/// Daily candles of the last `$2` hourly ticks, as a JSON array.
macro_rules! candles_lateral {
    () => {
        "
         CROSS JOIN LATERAL (
             SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'day', d.day, 'open', d.open, 'high', d.high, 'low', d.low,
                        'close', d.close, 'volume', d.volume) ORDER BY d.day), '[]') AS candles
             FROM (
                 SELECT date_trunc('day', t.ts)::DATE::TEXT AS day,
                        (array_agg(t.price ORDER BY t.ts))[1] AS open,
                        max(t.price) AS high, min(t.price) AS low,
                        (array_agg(t.price ORDER BY t.ts DESC))[1] AS close,
                        sum(t.volume)::BIGINT AS volume
                 FROM (SELECT ts, price, volume FROM prices
                       WHERE instrument_id = i.id ORDER BY ts DESC LIMIT $2) AS t
                 GROUP BY 1) AS d) AS candles
"
    };
}

/// The `candles` column of a row built with `candles_lateral!`.
fn decode_candles(
    row: &sqlx::postgres::PgRow,
) -> Result<Vec<crate::model::Candle>, crate::error::ApiError> {
    use sqlx::Row;
    let candles: serde_json::Value = row.get("candles");
    serde_json::from_value(candles).map_err(|e| crate::error::ApiError::Internal(e.to_string()))
}

pub mod orders;
pub mod parts;
pub mod queries;
pub mod seed;
pub mod snapshots;
pub mod writes;

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

/// The default database URL (`MARKET_DATABASE_URL` overrides it).
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/market";

/// The database and a count of the queries sent to it (for `/metrics` and the dashboard).
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    queries: Arc<AtomicU64>,
}

impl Db {
    /// Connect a pool of `max_connections` to `url`; queries wait at most
    /// `acquire_timeout` for a connection, so an outage answers 503 quickly.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        let options = PgConnectOptions::from_str(url)?.disable_statement_logging();
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            queries: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The pool, counting one query.
    pub fn counted(&self) -> &PgPool {
        self.queries.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("market_db_queries_total").increment(1);
        &self.pool
    }

    /// The pool, for statements that are not part of the service's traffic.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Queries sent since start.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Whether PostgreSQL answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Close every connection (flushes their statistics in PostgreSQL).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Create the database named in `url` unless it exists (connecting to the
/// `postgres` database of the same server to do so).
pub async fn create_database_if_missing(url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(url)?;
    let name = options.get_database().unwrap_or("postgres").to_string();
    let mut admin = options.clone().database("postgres").connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let quoted = name.replace('"', "\"\"");
        // A concurrent creator may win the race; that is as good as creating it.
        if let Err(err) = sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{quoted}\"")))
            .execute(&mut admin)
            .await
        {
            let already = err
                .as_database_error()
                .and_then(|e| e.code())
                .is_some_and(|code| code == "42P04" || code == "23505");
            if !already {
                return Err(err.into());
            }
        }
    }
    admin.close().await?;
    Ok(())
}

/// Drop the database named in `url` (tests use it for the databases they created).
pub async fn drop_database(url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(url)?;
    let name = options.get_database().unwrap_or("postgres").to_string();
    anyhow::ensure!(name != "postgres", "refusing to drop the postgres database");
    let mut admin = options.clone().database("postgres").connect().await?;
    let quoted = name.replace('"', "\"\"");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{quoted}\" WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    admin.close().await?;
    Ok(())
}

/// Apply the migrations in `crates/market/migrations`.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::migrate!("./migrations").run(pool).await?;
    Ok(())
}

/// The database's name in `url`.
pub fn database_name(url: &str) -> anyhow::Result<String> {
    let options = PgConnectOptions::from_str(url)?;
    Ok(options.get_database().unwrap_or("postgres").to_string())
}
