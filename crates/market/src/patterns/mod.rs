//! One plain file per caching pattern, each the few lines a service of your
//! own would copy, in the order worth reading them:
//!
//! | pattern | file | routes |
//! |---|---|---|
//! | cache-aside, invalidated on update | [`cache_aside`] | watchlists, profiles |
//! | read-through, negative caching | [`read_through`] | instrument details |
//! | write-through, versioned | [`write_through`] | quotes, order books |
//! | write-behind | [`write_behind`] | view counters |
//! | refresh-ahead | [`refresh_ahead`] | trending |
//! | stale-while-revalidate | [`stale_while_revalidate`] | market overview |
//! | HTTP response cache | [`http_response_cache`] | the instrument listing |
//! | sessions on Redis, surviving its outages | [`sessions`], [`session_fallback`] | login, logout, every signed-in route |
//!
//! Then the showcase, [`crate::parts`]: details and portfolios composed from
//! cached parts, each kept current by the writes that change it.
//!
//! Every read goes through [`crate::caching::Caching`] with a
//! [`crate::policy::Policy`] and a key from [`crate::keys`]; the options of
//! each policy (TTL, jitter, stale window, refresh-ahead …) are in
//! `market-policies.toml`, so a pattern's file holds the calls and the
//! policy file the knobs.

pub mod cache_aside;
pub mod http_response_cache;
pub mod read_through;
pub mod refresh_ahead;
pub mod session_fallback;
pub mod sessions;
pub mod stale_while_revalidate;
pub mod write_behind;
pub mod write_through;
