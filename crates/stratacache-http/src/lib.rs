//! # stratacache-http
//!
//! An HTTP response cache for tower and axum on [stratacache],
//! and a [tower-sessions](https://crates.io/crates/tower-sessions) store on
//! the same Redis.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use stratacache::Cache;
//! use stratacache_http::{HttpCacheLayer, RouteRule, UserScope};
//!
//! let cache = Cache::builder().namespace("shop-http").redis_url("redis://127.0.0.1:6379").build().await?;
//! let layer = HttpCacheLayer::builder(cache)
//!     .route("/products/{id}", RouteRule::new()
//!         .ttl(Duration::from_secs(60))
//!         .stale_for(Duration::from_secs(600))
//!         .tag("product:{id}"))
//!     .route("/me", RouteRule::new().ttl(Duration::from_secs(5)).per_user(UserScope::cookie("id")))
//!     .build()?;
//! let app: Router = Router::new()
//!     .route("/products/{id}", get(|| async { "teapot" }).put(|| async { "saved" }))
//!     .layer(layer);
//! # let _ = app; Ok(()) }
//! ```
//!
//! In front of any origin, as a shared cache that follows RFC 9111 — the
//! `reverse_proxy` example is a caching reverse proxy whose cache every
//! instance shares through Redis:
//!
//! ```no_run
//! # async fn demo(forward_to_origin: axum::Router) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use stratacache::Cache;
//! use stratacache_http::{HttpCacheLayer, RouteRule};
//!
//! let cache = Cache::builder().namespace("edge").redis_url("redis://127.0.0.1:6379").build().await?;
//! let layer = HttpCacheLayer::builder(cache)
//!     .default_rule(RouteRule::new().stale_if_error(Duration::from_secs(3600)))
//!     .build()?;
//! let proxy = forward_to_origin.layer(layer);
//! # let _ = proxy; Ok(()) }
//! ```
//!
//! What a response cache must get right, and how this one does:
//!
//! - **Keys.** Method, host, path, the query with its parameters sorted and
//!   re-encoded, forwarding headers when present, headers a route keys, a
//!   digest of the user on per-user routes, and the request headers the
//!   response's `Vary` names.
//! - **Never someone else's response.** A response that sets a cookie, says
//!   `no-store` or (outside per-user routes) `private`, or has `Vary: *` is
//!   not stored, and is not handed to callers that waited for the same key:
//!   they call the handler themselves. Requests with `Authorization` or a
//!   cookie use the cache only on per-user routes. Every stored response
//!   carries the key and varied header values it was made for, checked
//!   before it is served. See [`safety`](crate#safety) below.
//! - **Freshness as the origin states it.** `s-maxage`, else `max-age`,
//!   else `Expires` against `Date`; the age a response arrives with (its
//!   `Age`, the round trip, the time since its `Date`) counts against it
//!   and is passed on in `Age`. A response that states no freshness gets
//!   heuristic freshness only as RFC 9111 allows, none on a route with
//!   [`RouteRule::explicit_freshness_only`], or the route's
//!   [`ttl`](RouteRule::ttl), an explicit override for an application's
//!   own handlers.
//! - **Validation.** A response that is no longer fresh — or `no-cache`,
//!   `max-age=0`, or not fresh enough for the request's own directives — is
//!   validated with one conditional request (`If-None-Match`,
//!   `If-Modified-Since`) per stale version, across instances; a `304`
//!   refreshes the stored headers.
//! - **Stale answers only where allowed.** The response's own
//!   `stale-while-revalidate` and `stale-if-error`, else the route's
//!   [`stale_for`](RouteRule::stale_for) and
//!   [`stale_if_error`](RouteRule::stale_if_error), or the request's
//!   `max-stale` — never for `no-cache`, `must-revalidate`,
//!   `proxy-revalidate` or `s-maxage` responses.
//! - **One handler call per key.** Concurrent requests for the same key are
//!   answered by one call of the handler — per process by stratacache's
//!   single-flight, across instances by its Redis lease.
//! - **Headers.** `X-Cache: HIT | MISS | STALE | REVALIDATED`, `BYPASS` for
//!   requests that may not use the cache, `PASS` for resources whose last
//!   response could not be stored (they go straight to the handler for up
//!   to 30 s rather than queue behind one load to learn it again); `Age`; an
//!   `ETag` (the handler's or a digest of the body) and `304 Not Modified`
//!   for a matching `If-None-Match` or `If-Modified-Since`; `206` for a
//!   `Range` of a stored whole response.
//! - **Invalidation.** POST, PUT, PATCH, DELETE (any unsafe method) that
//!   succeed invalidate the path's responses, those of the paths their
//!   `Location` and `Content-Location` name on the same host, and the tags
//!   of their routes.
//! - **Bounded bodies.** Bodies over `max_body_bytes` are streamed to their
//!   client, never buffered whole and never stored.
//!
//! # RFC 9111, section by section
//!
//! Implemented, as a shared cache:
//!
//! - §2, §4.1 keys and `Vary` (values compared as sent, lines joined; no
//!   further normalisation).
//! - §3 storing: final statuses but `206` and `304`; `no-store` (overridden
//!   by `must-understand` for statuses it understands); `private` and
//!   `Authorization` only on per-user routes; explicit freshness, `public`
//!   or a heuristically cacheable status. §3.1: connection-specific fields,
//!   and those `Connection` names, are not stored. §3.2: a `304` replaces
//!   every field it carries but `Content-Length`.
//! - §4.2.1 freshness lifetime; §4.2.2 heuristic freshness (a tenth of the
//!   time since `Last-Modified`, at most a day, for heuristically cacheable
//!   statuses or `public` responses); §4.2.3 age; §4.2.4 stale responses
//!   (above).
//! - §4.3.1–§4.3.4 validation: conditional requests with the handler's
//!   validators (never the ETag this layer made up), the client's own
//!   conditionals answered from the stored response (`If-Modified-Since`
//!   against `Last-Modified`, else `Date`), `304`s freshening the one stored
//!   response of the key.
//! - §4.4 invalidation (of the target path with every query, wider than the
//!   URI the section names, and of `Location`/`Content-Location` on the
//!   same host).
//! - §5.1 `Age`; §5.2 `Cache-Control` (directive names case-insensitive,
//!   quoted strings, an invalid `max-age` read as stale, values capped at
//!   2^31): request `max-age`, `max-stale`, `min-fresh`, `no-cache`,
//!   `no-store` (bypassed), `only-if-cached` (`504` when nothing stored may
//!   answer); response `max-age`, `s-maxage`, `must-revalidate`,
//!   `proxy-revalidate`, `must-understand`, `no-cache`, `no-store`,
//!   `private`, `public` (`no-cache` and `private` with field names are read
//!   as unqualified, the cautious reading). §5.3 `Expires` (invalid, or
//!   more than one, means already expired). §5.4 `Pragma: no-cache` in
//!   requests without `Cache-Control`.
//! - RFC 5861 `stale-while-revalidate` and `stale-if-error`; RFC 9110 §14
//!   ranges of a stored whole response (one range: `206`; several: the whole
//!   response; none satisfiable: `416`; `If-Range`); RFC 9213 targeted
//!   fields such as `CDN-Cache-Control`, when
//!   [`HttpCacheBuilder::targeted_cache_control`] names them.
//!
//! Not implemented, and why:
//!
//! - Storing `Set-Cookie` responses (§3 allows it): one client's cookie must
//!   never reach another, whatever the handler's `Cache-Control` says.
//! - Storing `Authorization` requests' responses on shared routes when they
//!   say `public`, `s-maxage` or `must-revalidate` (§3.5 allows it): which
//!   user a response is for is decided by [`RouteRule::per_user`], not by
//!   the response.
//! - §3.3, §3.4 storing and combining partial responses: a `Range` that
//!   misses is passed to the handler unchanged and its `206` not stored;
//!   the whole response is stored by the next plain request.
//! - §4.3.5 freshening with `HEAD`: GET and HEAD are stored apart, and a
//!   HEAD never refreshes the GET's response.
//! - `no-transform` needs nothing (no response is transformed); `immutable`
//!   only spares a client's revalidation; `Warning` is obsolete (RFC 9111
//!   removed it) and not generated.
//!
//! //! # Features
//!
//! `sessions` (on by default): `RedisSessionStore`, a tower-sessions
//! store on Redis. Without it the crate does not depend on
//! tower-sessions-core.
//!
//! # Safety
//!
//! Headers that must be keyed: any request header a handler reads to build
//! its response. The layer keys the host, the forwarding headers of
//! [`DEFAULT_KEYED_HEADERS`] and the user on per-user routes itself; a handler
//! that reads another header (`Accept-Language`, `Accept`, a tenant header)
//! must name it in `Vary`, or the route must name it with
//! [`RouteRule::key_header`]. The cache cannot see what a handler reads: an
//! unkeyed header that changes the body would let one client's variant
//! reach another.
//!
//! Layer order: the layer sees only the `Set-Cookie` headers of the layers
//! and handlers inside it. A sessions layer placed outside it (as in the
//! `storefront` example, so per-user pages stay storable) must not create
//! or change sessions on shared routes; otherwise place it inside.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod body;
mod cache_control;
mod cached_response;
mod conditional;
mod error;
mod fill;
mod freshness;
mod invalidate;
mod key;
mod layer;
mod lookup;
mod policy;
mod range;
mod reuse;
mod revalidate;
mod route;
mod safety;
mod service;
#[cfg(feature = "sessions")]
mod session_store;
mod storable;

pub use body::{BoxError, CacheBody};
pub use cached_response::X_CACHE;
pub use error::Error;
pub use layer::{HttpCacheBuilder, HttpCacheLayer};
pub use policy::{RouteRule, UserScope};
pub use safety::{DEFAULT_BYPASS_HEADERS, DEFAULT_KEYED_HEADERS};
pub use service::HttpCache;
#[cfg(feature = "sessions")]
pub use session_store::RedisSessionStore;

/// The README's quick start, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
