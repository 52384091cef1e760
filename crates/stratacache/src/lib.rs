//! # stratacache
//!
//! A two-tier cache for Rust services: an in-process tier (L1, on moka) in
//! every instance, a Redis tier (L2: one node, Sentinel or Cluster) shared by
//! all of them, and the database behind both — reached once per key, however
//! many callers miss at the same moment.
//!
//! ```no_run
//! # async fn demo() -> Result<(), stratacache::Error> {
//! use std::time::Duration;
//! use stratacache::{Cache, EntryOptions};
//!
//! let cache = Cache::builder()
//!     .namespace("shop")
//!     .redis_url("redis://127.0.0.1:6379")
//!     .build()
//!     .await?;
//!
//! let opts = EntryOptions::new().ttl(Duration::from_secs(60)).jitter(0.1);
//! let name: String = cache
//!     .get_or_load("product:42:name", &opts, || async {
//!         // the database query goes here
//!         Ok::<_, std::io::Error>("Teapot".to_string())
//!     })
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! What the library guarantees:
//! - **Single-flight.** One load per key per process at a time; every waiting
//!   caller gets its result or its error.
//! - **Redis is optional at run time.** Every Redis call has a timeout, a
//!   circuit breaker stops calling a failing Redis and probes it in the
//!   background; reads then come from L1 and the loader. No read fails because
//!   of Redis.
//! - **Bad data is a miss.** A corrupt or undecodable entry is deleted and
//!   counted, never a panic.
//! - **Bounded memory.** L1 is bounded in bytes and in entries; values over
//!   the maximum size are refused before anything is written.
//!
//! Write-behind ([`write_behind`]): writes acknowledged once Redis holds
//! them (cache entry and stream entry in one script), applied to a database in
//! coalesced batches, never lost and never applied twice across crashes
//! (`RELIABILITY.md`). The PostgreSQL sink is behind the `postgres` feature.
//!
//! See `ARCHITECTURE.md` for the map of the code.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

// Modules form a DAG (checked by tests/architecture.rs): leaves first, the
// public facade (`cache`) and what builds on it last.
mod breaker;
mod clock;
mod codec;
mod error;
mod freshness;
mod keys;
mod metrics;
mod options;
mod policy;

mod coalesce;
mod invalidation;
mod l1;
mod l2;
mod lease;
mod versioned;

mod tiers;

mod write;

mod read;

mod cache;
#[doc(hidden)]
pub mod fuzzing;
mod resource;
mod warm;
pub mod write_behind;

pub mod inspect;

pub use breaker::{BreakerConfig, BreakerState};
pub use cache::{Cache, CacheBuilder, L1Stats};
pub use codec::Codec;
pub use error::{BoxError, Error, RedisError, Result};
pub use freshness::EagerRefresh;
pub use l1::L1Config;
pub use l2::{RedisTls, RedisTopology};
pub use options::{Consistency, EntryOptions, MAX_DURATION};
pub use policy::{Policies, Policy};
pub use read::{Fetched, LoadContext, Loaded};
pub use resource::{Loader, Resource, ResourceKey};
pub use tiers::CacheValue;
pub use warm::{WarmProgress, WarmReport, WarmSettings};

/// A simulated Redis on a virtual clock, for the deterministic race
/// simulation of `stratacache-check`. Not for production use.
#[cfg(feature = "simulation")]
#[doc(hidden)]
pub mod simulation {
    pub use crate::l2::sim::{Health, SimRedis};
}

/// The README's quick start, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
