//! `POST /api/instruments/{symbol}/views`: the view counter.
//!
//! Today: [`SqlViewCounter`], one upsert per view.
//! Replacement: write-behind (`stratacache::write_behind`) — increments into
//! a Redis stream, summed per key and flushed to `view_counts` in batches.

use futures::future::BoxFuture;

use crate::db::Db;
use crate::error::ApiError;

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
