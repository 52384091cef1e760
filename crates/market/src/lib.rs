//! `market`: the reference service — the market platform the seed articles
//! describe, on PostgreSQL with stratacache in front of it. Read it in this
//! order:
//!
//! - [`patterns`]: one plain file per caching pattern (cache-aside,
//!   read-through, write-through, write-behind, refresh-ahead,
//!   stale-while-revalidate, the HTTP response cache, sessions);
//! - [`parts`]: the showcase — details and portfolios composed from cached
//!   parts, each kept current by the writes that change it;
//! - [`caching`], [`policy`], [`keys`]: the one door to the cache, the
//!   policies by name, every key and tag;
//! - [`routes`] and [`router`]: the HTTP API, who may call what ([`auth`]),
//!   read-your-writes for a user across instances ([`read_your_writes`]);
//! - [`middleware`], [`serve`], [`logging`], [`error`]: what makes it a
//!   service to put on the internet — request ids, logs, limits, timeouts,
//!   JSON errors from every layer;
//! - [`feed`], [`warm`]: the market-data feed and the deploy-time warm-up;
//! - [`db`]: schema (migrations), the deterministic seeder and every query;
//! - [`app`], [`server`]: `market serve`'s configuration and state, and the
//!   running server (in-process for the tests and the demo);
//! - [`load`], [`demo`]: `market load` and `market demo`'s before/after table.

pub mod app;
pub mod auth;
pub mod caching;
pub mod db;
pub mod demo;
pub mod error;
pub mod feed;
pub mod keys;
pub mod load;
pub mod logging;
pub mod middleware;
pub mod model;
pub mod parts;
pub mod patterns;
pub mod policy;
pub mod read_your_writes;
pub mod redis_link;
pub mod router;
pub mod routes;
pub mod serve;
pub mod server;
pub mod telemetry;
pub mod warm;
