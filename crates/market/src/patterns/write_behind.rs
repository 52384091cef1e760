//! Write-behind: `POST /api/instruments/{symbol}/views`, the view counter.
//!
//! With the cache on, [`WriteBehindViews`]: each view is an increment on a
//! Redis Stream (`stratacache::write_behind`), answered with the running
//! total in Redis; a worker spawned by `market serve` sums the increments per
//! instrument and adds them to `view_counts` in batches through
//! [`ViewCountSink`]. With the cache off, [`SqlViewCounter`]: one upsert per view.

use std::collections::HashSet;

use futures::future::BoxFuture;
use stratacache::write_behind::{is_connection_error, Batch, Sink, WriteBehind, WriteBehindError};
use stratacache::BoxError;

use crate::caching::Caching;
use crate::db::Db;
use crate::error::ApiError;
use crate::keys;
use crate::policy::Policy;

/// Counts views of instruments.
pub trait ViewCounter: Send + Sync {
    /// Count one view of `symbol`; the answer is the count after it, `None`
    /// for an unknown symbol.
    fn increment(&self, symbol: &str) -> BoxFuture<'_, Result<Option<i64>, ApiError>>;
}

/// One `INSERT … ON CONFLICT DO UPDATE` per view.
pub struct SqlViewCounter {
    /// The database.
    pub db: Db,
}

impl ViewCounter for SqlViewCounter {
    fn increment(&self, symbol: &str) -> BoxFuture<'_, Result<Option<i64>, ApiError>> {
        let symbol = symbol.to_string();
        Box::pin(async move {
            Ok(sqlx::query_scalar(
                "INSERT INTO view_counts (instrument_id, views)
                 SELECT id, 1 FROM instruments WHERE symbol = $1
                 ON CONFLICT (instrument_id) DO UPDATE SET views = view_counts.views + 1
                 RETURNING views",
            )
            .bind(symbol)
            .fetch_optional(self.db.counted())
            .await?)
        })
    }
}

/// Applies summed view increments to `view_counts`, recording each
/// increment's write id in `view_count_writes` in the same transaction (an
/// increment delivered twice counts once). Every statement counts as a
/// database query of the service.
#[derive(Clone)]
pub struct ViewCountSink {
    /// The database.
    pub db: Db,
}

impl Sink for ViewCountSink {
    /// PostgreSQL out of reach: the increments wait in the stream, however
    /// long the outage, rather than going to the dead-letter stream.
    fn is_unavailable(&self, err: &BoxError) -> bool {
        is_connection_error(err)
    }

    async fn apply(&self, batch: &Batch) -> Result<(), BoxError> {
        let (write_ids, entry_ms): (Vec<String>, Vec<i64>) = batch
            .write_ids()
            .into_iter()
            .map(|(w, id)| (w, id.ms as i64))
            .unzip();
        let mut tx = self.db.counted().begin().await?;
        let new: Vec<String> = sqlx::query_scalar(
            "INSERT INTO view_count_writes (write_id, entry_ms)
             SELECT * FROM UNNEST($1::text[], $2::bigint[])
             ON CONFLICT (write_id) DO NOTHING RETURNING write_id",
        )
        .bind(write_ids)
        .bind(entry_ms)
        .fetch_all(&mut *tx)
        .await?;
        let todo = batch.new_writes(&new.into_iter().collect::<HashSet<_>>());
        if !todo.counters.is_empty() {
            let (symbols, deltas): (Vec<String>, Vec<i64>) = todo
                .counters
                .iter()
                .map(|c| (keys::symbol_of_views(&c.key).to_string(), c.total()))
                .unzip();
            self.db.counted();
            // Symbols are checked before they are counted; one deleted since
            // is dropped by the join rather than failing the batch.
            sqlx::query(
                "INSERT INTO view_counts (instrument_id, views)
                 SELECT i.id, u.delta FROM UNNEST($1::text[], $2::bigint[]) AS u(symbol, delta)
                 JOIN instruments i ON i.symbol = u.symbol
                 ON CONFLICT (instrument_id) DO UPDATE SET views = view_counts.views + EXCLUDED.views",
            )
            .bind(symbols)
            .bind(deltas)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn read_value(&self, _key: &str) -> Result<Option<Vec<u8>>, BoxError> {
        // The queue carries counters only.
        Ok(None)
    }

    async fn read_counter(&self, key: &str) -> Result<i64, BoxError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT v.views FROM view_counts v JOIN instruments i ON i.id = v.instrument_id
             WHERE i.symbol = $1",
        )
        .bind(keys::symbol_of_views(key))
        .fetch_optional(self.db.counted())
        .await?;
        Ok(found.unwrap_or(0))
    }

    async fn prune_applied(&self, before_ms: u64) -> Result<u64, BoxError> {
        let done = sqlx::query("DELETE FROM view_count_writes WHERE entry_ms < $1")
            .bind(before_ms as i64)
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected())
    }
}

/// Views as write-behind increments; the symbol is checked first against a
/// cached id (the `instrument` policy, negatively cached), so unknown
/// symbols never reach the queue.
pub struct WriteBehindViews {
    /// The queue.
    pub queue: WriteBehind<ViewCountSink>,
    /// The database (symbol check on a miss).
    pub db: Db,
    /// The cache (symbol check).
    pub caching: Caching,
}

fn unavailable(err: WriteBehindError) -> ApiError {
    ApiError::unavailable("view counter unavailable", err)
}

impl ViewCounter for WriteBehindViews {
    fn increment(&self, symbol: &str) -> BoxFuture<'_, Result<Option<i64>, ApiError>> {
        let symbol = symbol.to_string();
        Box::pin(async move {
            let db = self.db.clone();
            let s = symbol.clone();
            let known: Option<i32> = self
                .caching
                .read_optional(
                    Policy::Instrument,
                    &keys::instrument_id(&symbol),
                    None,
                    move || async move {
                        Ok(
                            sqlx::query_scalar("SELECT id FROM instruments WHERE symbol = $1")
                                .bind(s)
                                .fetch_optional(db.counted())
                                .await?,
                        )
                    },
                )
                .await?;
            if known.is_none() {
                return Ok(None);
            }
            let key = keys::views(&symbol);
            match self.queue.incr(&key, 1).await.map_err(unavailable)? {
                Some(total) => Ok(Some(total)),
                // Redis failed and the increment went to PostgreSQL directly.
                None => {
                    Ok(Some(self.queue.sink().read_counter(&key).await.map_err(
                        |e| ApiError::unavailable("database unavailable", e),
                    )?))
                }
            }
        })
    }
}
