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
//! What a response cache must get right, and how this one does:
//!
//! - **Keys.** Method, host, path, the query with its parameters sorted and
//!   re-encoded, forwarding headers when present, headers a route keys, a
//!   digest of the user on per-user routes, and the request headers the
//!   response's `Vary` names.
//! - **Never someone else's response.** A response that sets a cookie, says
//!   `no-store`, `no-cache` or (outside per-user routes) `private`, or has a
//!   status other than 200/203/204/300/301/308/404/410 (so never a 5xx) is
//!   not stored, and is not handed to callers that waited for the same key:
//!   they call the handler themselves. Requests with `Authorization` or a
//!   cookie use the cache only on per-user routes. Every stored response
//!   carries the key and varied header values it was made for, checked
//!   before it is served. See [`safety`](crate#safety) below.
//! - **Freshness.** `s-maxage`, else `max-age`, else the route's TTL; a
//!   route's `stale_for` serves expired responses at once (`X-Cache: STALE`)
//!   while one handler call refreshes them.
//! - **One handler call per key.** Concurrent requests for the same key are
//!   answered by one call of the handler — per process by stratacache's
//!   single-flight, across instances by its Redis lease.
//! - **Headers.** `X-Cache: HIT | MISS | STALE`, `BYPASS` for requests that
//!   may not use the cache, `PASS` for resources whose last response could
//!   not be stored (they go straight to the handler for up to 30 s rather
//!   than queue behind one load to learn it again); `Age`; an `ETag` (the
//!   handler's or a digest of the body) and `304 Not Modified` for a
//!   matching `If-None-Match`.
//! - **Invalidation.** POST, PUT, PATCH, DELETE (any unsafe method) that
//!   succeed invalidate the path's responses and the tags of its route.
//! - **Bounded bodies.** Bodies over `max_body_bytes` are streamed to their
//!   client, never buffered whole and never stored.
//!
//! # Features
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
