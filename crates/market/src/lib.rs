//! `market`: the reference service — the market platform the seed articles
//! describe, on PostgreSQL with stratacache in front of it.
//!
//! - [`db`]: schema (migrations), the deterministic seeder and every query.
//! - [`app`]: `market serve` — state, router, an in-process server.
//! - [`routes`]: one file per resource, each with the caching pattern of SPEC §8.
//! - [`caching`]: how the routes use the cache, and `--cache off`.
//! - [`parts`]: instrument details and portfolios composed from cached parts.
//! - [`feed`]: the market-data feed pushing quotes and order books into the cache.
//! - [`seams`]: where the HTTP response cache, write-behind and the session
//!   store plug in.
//! - [`load`]: `market load`, the load generator.
//! - [`demo`]: `market demo`, the before/after table.

pub mod app;
pub mod caching;
pub mod db;
pub mod demo;
pub mod error;
pub mod feed;
pub mod load;
pub mod model;
pub mod parts;
pub mod redis_link;
pub mod routes;
pub mod seams;
pub mod telemetry;
pub mod warm;
