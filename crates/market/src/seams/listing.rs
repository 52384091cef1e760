//! `GET /api/instruments?sector=&exchange=`: the listing.
//!
//! The route always answers through [`DirectListing`]; with the cache on,
//! [`http_layer`] (the `stratacache-http` response cache) wraps the route,
//! keyed by the normalised query (`?exchange=X&sector=Y` and
//! `?sector=Y&exchange=X` share an entry), with the `instrument_list`
//! policy's TTLs, answering `X-Cache: HIT | MISS | STALE`.
//!
//! Tags: the layer fills tag templates from path parameters, and the filter
//! is in the query, so listing responses carry the one tag
//! [`LISTING_TAG`] rather than `sector:{code}`/`exchange:{code}`; an
//! invalidation of a sector or exchange tag (`POST /admin/invalidate`) also
//! invalidates [`LISTING_TAG`] — every listing (a few dozen responses)
//! rather than one sector's. No API route changes what the listing shows
//! (symbols, names, sectors, exchanges, market caps); an unsafe request to
//! `/api/instruments` itself would invalidate the tag.

use futures::future::BoxFuture;
use stratacache::{Cache, EntryOptions};
use stratacache_http::{HttpCacheLayer, RouteRule};

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

/// The tag of every cached listing response.
pub const LISTING_TAG: &str = "instrument_list";

/// Whether an invalidation of `tag` must reach the listing too.
pub fn reaches_listing(tag: &str) -> bool {
    tag.starts_with("sector:") || tag.starts_with("exchange:")
}

/// The response cache of `GET /api/instruments`, with the `instrument_list`
/// policy's entry options (TTL, L1 TTL, jitter) and [`LISTING_TAG`].
pub fn http_layer(
    cache: Cache,
    options: EntryOptions,
) -> Result<HttpCacheLayer, stratacache_http::Error> {
    HttpCacheLayer::builder(cache)
        .route(
            "/api/instruments",
            RouteRule::from_options(options).tag(LISTING_TAG),
        )
        .build()
}
