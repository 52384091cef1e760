//! The cache policies of the service, by name: one enum instead of strings
//! spelt again in the policy file, a list of required policies and every
//! call site. [`Policy::name`] is the one place a name is written in code;
//! `market-policies.toml` holds the options under the same names (a test
//! checks that the two agree).

use std::fmt;

/// The policy file compiled in, used unless `--policies` names another.
pub const FILE: &str = include_str!("../market-policies.toml");

/// A cache policy: the entry options of one kind of data (the pattern is
/// the call each route makes; `market-policies.toml` notes it per policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Policy {
    /// `GET /api/instruments?sector=&exchange=` (the HTTP response cache).
    InstrumentList,
    /// An instrument's detail (read-through, negatively cached).
    Instrument,
    /// Part: an instrument's reference data.
    InstrumentRef,
    /// Part: an instrument's price statistics and candles.
    PriceHistory,
    /// Part: an instrument's holders and trades (versioned).
    Ownership,
    /// Part: a user's positions (versioned).
    Positions,
    /// Part: an instrument's price window (versioned).
    PriceWindow,
    /// A quote (write-through, versioned).
    StockPrice,
    /// An order book (write-through, versioned).
    MarketDepth,
    /// A user's portfolio (cache-aside, composed from parts).
    Portfolio,
    /// A user's watchlist (cache-aside).
    Watchlist,
    /// A user's profile (cache-aside).
    Profile,
    /// The most viewed instruments (refresh-ahead).
    Trending,
    /// The market overview (stale-while-revalidate).
    MarketOverview,
    /// The session lifetime (sessions live in Redis, not in the cache).
    Session,
    /// An instrument's detail composed again after a write (a copy of
    /// [`Policy::Instrument`], counted apart).
    InstrumentRefresh,
    /// A portfolio composed again after an order (a copy of
    /// [`Policy::Portfolio`], counted apart).
    PortfolioRefresh,
}

impl Policy {
    /// The parts details and portfolios are composed from
    /// ([`crate::parts`]): read from Redis only, and not reads of a route.
    pub const PARTS: [Policy; 5] = [
        Policy::InstrumentRef,
        Policy::PriceHistory,
        Policy::Ownership,
        Policy::Positions,
        Policy::PriceWindow,
    ];

    /// Every policy the cache is built with.
    pub const ALL: [Policy; 17] = [
        Policy::InstrumentList,
        Policy::Instrument,
        Policy::InstrumentRef,
        Policy::PriceHistory,
        Policy::Ownership,
        Policy::Positions,
        Policy::PriceWindow,
        Policy::StockPrice,
        Policy::MarketDepth,
        Policy::Portfolio,
        Policy::Watchlist,
        Policy::Profile,
        Policy::Trending,
        Policy::MarketOverview,
        Policy::Session,
        Policy::InstrumentRefresh,
        Policy::PortfolioRefresh,
    ];

    /// The name in the policy file, the metrics and the demo's report.
    pub const fn name(self) -> &'static str {
        match self {
            Policy::InstrumentList => "instrument_list",
            Policy::Instrument => "instrument",
            Policy::InstrumentRef => "instrument_ref",
            Policy::PriceHistory => "price_history",
            Policy::Ownership => "ownership",
            Policy::Positions => "positions",
            Policy::PriceWindow => "price_window",
            Policy::StockPrice => "stock_price",
            Policy::MarketDepth => "market_depth",
            Policy::Portfolio => "portfolio",
            Policy::Watchlist => "watchlist",
            Policy::Profile => "profile",
            Policy::Trending => "trending",
            Policy::MarketOverview => "market_overview",
            Policy::Session => "session",
            Policy::InstrumentRefresh => "instrument_refresh",
            Policy::PortfolioRefresh => "portfolio_refresh",
        }
    }

    /// The policy named `name`, if the service has one.
    pub fn from_name(name: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.name() == name)
    }

    /// For a refresh copy, the policy whose options it copies.
    pub const fn refreshes(self) -> Option<Policy> {
        match self {
            Policy::InstrumentRefresh => Some(Policy::Instrument),
            Policy::PortfolioRefresh => Some(Policy::Portfolio),
            _ => None,
        }
    }

    /// The policies the policy file must define: all but the refresh
    /// copies, which are registered from their originals at start.
    pub fn in_file() -> impl Iterator<Item = Policy> {
        Policy::ALL.into_iter().filter(|p| p.refreshes().is_none())
    }

    /// Whether this is a part of a composed value.
    pub fn is_part(self) -> bool {
        Policy::PARTS.contains(&self)
    }

    /// Whether reads under this policy are the service's own rather than a
    /// route's: a part, or a composition after a write. The demo's headline
    /// hit rate leaves them out and lists them apart.
    pub fn is_internal(self) -> bool {
        self.is_part() || self.refreshes().is_some()
    }

    /// [`is_internal`](Self::is_internal) for a policy name as the metrics
    /// spell it; names of no policy of the service are not internal.
    pub fn name_is_internal(name: &str) -> bool {
        Policy::from_name(name).is_some_and(Policy::is_internal)
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_file_defines_exactly_the_policies_of_the_file() {
        let file: toml::Table = toml::from_str(FILE).unwrap();
        let mut in_file: Vec<&str> = file["policies"]
            .as_table()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        in_file.sort_unstable();
        let mut expected: Vec<&str> = Policy::in_file().map(Policy::name).collect();
        expected.sort_unstable();
        assert_eq!(in_file, expected);
    }

    #[test]
    fn the_policy_file_is_accepted_by_the_cache() {
        let policies = stratacache::Policies::from_toml_str(FILE).unwrap();
        assert!(policies.get(Policy::StockPrice.name()).is_ok());
    }

    #[test]
    fn names_round_trip_and_internal_policies_are_parts_and_refreshes() {
        for policy in Policy::ALL {
            assert_eq!(Policy::from_name(policy.name()), Some(policy));
        }
        assert!(Policy::Positions.is_internal() && Policy::PortfolioRefresh.is_internal());
        assert!(!Policy::Portfolio.is_internal() && !Policy::name_is_internal("unknown"));
    }
}
