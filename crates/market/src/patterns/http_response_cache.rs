//! HTTP response cache: `GET /api/instruments?sector=&exchange=`.
//!
//! The `stratacache-http` layer wraps the route (cache on only): one handler
//! call per distinct request across every instance, keyed by method, host,
//! path and the normalised query (`?exchange=X&sector=Y` and
//! `?sector=Y&exchange=X` share an entry), with the `instrument_list`
//! policy's TTLs, answering `X-Cache: HIT | MISS | STALE`.
//!
//! - **Host.** The layer keys the `Host` header as sent, port included;
//!   [`crate::middleware::server_names`] rewrites the service's own names
//!   to one before the layer sees them, so instances addressed directly
//!   (`127.0.0.1:8081`, `127.0.0.1:8082`) share their entries.
//! - **Session cookie.** The listing does not read the session, so the
//!   session cookie is declared harmless: signed-in clients use the cache
//!   too. Any other cookie, or `Authorization`, still bypasses it.
//! - **Tags.** The layer fills tag templates from path parameters, and the
//!   filter is in the query, so listing responses carry the one tag
//!   [`LISTING_TAG`] rather than `sector:{code}`/`exchange:{code}`; an
//!   invalidation of a sector or exchange tag (`POST /admin/invalidate`)
//!   also invalidates [`LISTING_TAG`] — every listing (a few dozen
//!   responses) rather than one sector's. No API route changes what the
//!   listing shows (symbols, names, sectors, exchanges, market caps).

use stratacache::{Cache, EntryOptions};
use stratacache_http::{HttpCacheLayer, RouteRule};

use super::sessions::COOKIE;
use crate::keys::LISTING_TAG;

/// The response cache of `GET /api/instruments`, with the `instrument_list`
/// policy's entry options (TTL, L1 TTL, jitter) and [`LISTING_TAG`].
pub fn layer(
    cache: Cache,
    options: EntryOptions,
) -> Result<HttpCacheLayer, stratacache_http::Error> {
    HttpCacheLayer::builder(cache)
        .route(
            "/api/instruments",
            RouteRule::from_options(options).tag(LISTING_TAG),
        )
        .harmless_cookies([COOKIE])
        .build()
}
