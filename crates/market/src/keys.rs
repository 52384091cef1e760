//! Every cache key and tag of the service, in one place: routes, parts, the
//! feed, the warm-up and the write-behind counter name their entries here,
//! so a reader finds what a key holds, and who writes it, in one hop.
//!
//! | key | holds | written by |
//! |---|---|---|
//! | `instrument:{symbol}` | an instrument's detail | read-through; invalidated by orders and ticks |
//! | `instrument_id:{symbol}` | an instrument's id (a view's symbol check) | cache-aside |
//! | `price:{symbol}` / `depth:{symbol}` | a quote / an order book | write-through, the feed |
//! | `user:{id}:portfolio` / `:watchlist` / `:profile` | a user's data, tag `user:{id}` | cache-aside |
//! | `instrument_ref:` / `price_history:` / `ownership:` / `price_window:{symbol}`, `positions:{id}` | the parts of details and portfolios | [`crate::parts`] |
//! | `trending`, `market:overview` | the market's figures | refresh-ahead, stale-while-revalidate |
//! | `views:{symbol}` | a view counter | write-behind |
//!
//! Keys are relative to the cache's namespace; the library prefixes them.

/// An instrument's detail (the read-through resource's key).
pub fn instrument(symbol: &str) -> String {
    format!("instrument:{symbol}")
}

/// An instrument's id, to check a viewed symbol exists.
pub fn instrument_id(symbol: &str) -> String {
    format!("instrument_id:{symbol}")
}

/// A symbol's quote.
pub fn price(symbol: &str) -> String {
    format!("price:{symbol}")
}

/// A symbol's order book.
pub fn depth(symbol: &str) -> String {
    format!("depth:{symbol}")
}

/// The tag on every `user:{id}:*` entry (profile, watchlist, portfolio):
/// a profile update drops them all with one O(1) tag invalidation rather
/// than a SCAN of Redis for the prefix.
pub fn user_tag(user_id: i64) -> String {
    format!("user:{user_id}")
}

/// A user's portfolio.
pub fn portfolio(user_id: i64) -> String {
    format!("user:{user_id}:portfolio")
}

/// A user's watchlist.
pub fn watchlist(user_id: i64) -> String {
    format!("user:{user_id}:watchlist")
}

/// A user's profile.
pub fn profile(user_id: i64) -> String {
    format!("user:{user_id}:profile")
}

/// Part: an instrument's reference data.
pub fn instrument_ref(symbol: &str) -> String {
    format!("instrument_ref:{symbol}")
}

/// Part: an instrument's price statistics and candles.
pub fn price_history(symbol: &str) -> String {
    format!("price_history:{symbol}")
}

/// Part: an instrument's holders and trades.
pub fn ownership(symbol: &str) -> String {
    format!("ownership:{symbol}")
}

/// Part: an instrument's price window.
pub fn price_window(symbol: &str) -> String {
    format!("price_window:{symbol}")
}

/// Part: a user's positions. Not a `user:{id}:*` key: positions do not
/// depend on the profile, so a profile update (which drops `user:{id}:*`)
/// has no reason to drop them.
pub fn positions(user_id: i64) -> String {
    format!("positions:{user_id}")
}

/// The ten most viewed instruments.
pub const TRENDING: &str = "trending";

/// The market overview (one hot key).
pub const MARKET_OVERVIEW: &str = "market:overview";

/// A symbol's view counter (write-behind).
pub fn views(symbol: &str) -> String {
    format!("views:{symbol}")
}

/// The symbol of a view counter's key.
pub fn symbol_of_views(key: &str) -> &str {
    key.strip_prefix("views:").unwrap_or(key)
}

/// The tag of every cached listing response: the response cache fills tags
/// from path parameters only, and the listing's filter is in the query.
pub const LISTING_TAG: &str = "instrument_list";

/// Whether an invalidation of `tag` must reach the listing too (a sector's
/// or an exchange's instruments are listed).
pub fn reaches_listing(tag: &str) -> bool {
    tag.starts_with("sector:") || tag.starts_with("exchange:")
}

/// The prefixes of every key above, for dropping a namespace's entries.
pub const PREFIXES: &[&str] = &[
    "user:",
    "instrument",
    "price",
    "depth:",
    "ownership:",
    "positions:",
    "trending",
    "market:",
    "views:",
];
