//! `GET /api/instruments?sector=&exchange=`: the listing.
//!
//! Today: the core library's `get_or_load`, one entry per filter, tagged
//! `sector:{code}` and `exchange:{code}` so `POST /admin/invalidate
//! {"tag": "sector:TECH"}` drops every listing of that sector.
//! Replacement: the HTTP response-cache layer (`stratacache-http`) wrapping
//! the route with the same tags; the route then calls [`DirectListing`].

use futures::future::BoxFuture;

use crate::caching::Caching;
use crate::db::{queries, Db};
use crate::error::ApiError;
use crate::model::InstrumentSummary;

/// A filter of the listing: sector and exchange codes, upper-cased.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListingFilter {
    /// Sector code (`TECH`), if filtered.
    pub sector: Option<String>,
    /// Exchange code (`NYSE`), if filtered.
    pub exchange: Option<String>,
}

/// Produces the listing for a filter.
pub trait InstrumentListing: Send + Sync {
    /// The instruments matching `filter`, by symbol.
    fn list(
        &self,
        filter: ListingFilter,
    ) -> BoxFuture<'_, Result<Vec<InstrumentSummary>, ApiError>>;
}

/// Straight from the database.
pub struct DirectListing {
    /// The database.
    pub db: Db,
}

impl InstrumentListing for DirectListing {
    fn list(
        &self,
        filter: ListingFilter,
    ) -> BoxFuture<'_, Result<Vec<InstrumentSummary>, ApiError>> {
        Box::pin(async move {
            queries::list_instruments(
                &self.db,
                filter.sector.as_deref(),
                filter.exchange.as_deref(),
            )
            .await
        })
    }
}

/// Through the core library, tagged by sector and exchange.
pub struct CachedListing {
    /// The database.
    pub db: Db,
    /// The cache.
    pub caching: Caching,
}

impl InstrumentListing for CachedListing {
    fn list(
        &self,
        filter: ListingFilter,
    ) -> BoxFuture<'_, Result<Vec<InstrumentSummary>, ApiError>> {
        Box::pin(async move {
            let sector = filter.sector.clone().unwrap_or_else(|| "*".into());
            let exchange = filter.exchange.clone().unwrap_or_else(|| "*".into());
            let key = format!("instruments:sector={sector}:exchange={exchange}");
            let opts = self
                .caching
                .options("instrument_list")?
                .tags([format!("sector:{sector}"), format!("exchange:{exchange}")]);
            let db = self.db.clone();
            self.caching
                .read("instrument_list", &key, Some(opts), move || async move {
                    queries::list_instruments(
                        &db,
                        filter.sector.as_deref(),
                        filter.exchange.as_deref(),
                    )
                    .await
                })
                .await
        })
    }
}
