//! Refresh-ahead: `GET /api/trending`, the ten most viewed instruments.
//!
//! The `trending` policy refreshes the entry in the background once half of
//! its TTL has passed (`eager_refresh = "0.5"` in `market-policies.toml`), while
//! readers keep getting the current value: a hot key that never expires
//! under load, and never makes a reader wait for the aggregation.

use crate::caching::Caching;
use crate::db::{queries, Db};
use crate::error::ApiError;
use crate::keys;
use crate::model::Trending;
use crate::policy::Policy;

/// The ten most viewed instruments.
pub async fn trending(caching: &Caching, db: &Db) -> Result<Vec<Trending>, ApiError> {
    let db = db.clone();
    caching
        .read(Policy::Trending, keys::TRENDING, None, move || async move {
            queries::trending(&db).await
        })
        .await
}
