//! The demo's counts of a route behind the HTTP response cache, kept out of
//! its handler: a request reaching the layer is a lookup, a request the
//! layer passes on to the handler is a load (the response cache missed).
//! Other routes are counted where they read the cache
//! ([`crate::caching::Caching`]).

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::caching::CacheCounters;
use crate::policy::Policy;
use std::sync::Arc;

/// What a counting middleware counts, and under which policy.
#[derive(Clone)]
pub struct Counting {
    /// The counters.
    pub counters: Arc<CacheCounters>,
    /// The route's policy.
    pub policy: Policy,
}

/// Count a lookup (placed outside the response cache).
pub async fn lookups(State(c): State<Counting>, request: Request, next: Next) -> Response {
    c.counters.lookup(c.policy);
    next.run(request).await
}

/// Count a load (placed inside the response cache, before the handler).
pub async fn loads(State(c): State<Counting>, request: Request, next: Next) -> Response {
    c.counters.load(c.policy);
    next.run(request).await
}
