//! Stale-while-revalidate: `GET /api/market/overview`, one hot key.
//!
//! Once the entry's TTL has passed, the `market_overview` policy's
//! `stale_for` window lets the cache answer the expired value at once while
//! one background load (one per key across every instance) replaces it; the
//! same window serves it while PostgreSQL is down (fail-safe).

use crate::caching::Caching;
use crate::db::{queries, Db};
use crate::error::ApiError;
use crate::keys;
use crate::model::Overview;
use crate::policy::Policy;

/// Sectors, gainers and losers of the market.
pub async fn overview(caching: &Caching, db: &Db) -> Result<Overview, ApiError> {
    let db = db.clone();
    caching
        .read(
            Policy::MarketOverview,
            keys::MARKET_OVERVIEW,
            None,
            move || async move { queries::overview(&db).await },
        )
        .await
}
