//! What the API sends and receives, and what the cache stores.

use serde::{Deserialize, Serialize};

/// One row of `GET /api/instruments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstrumentSummary {
    pub symbol: String,
    pub name: String,
    pub exchange: String,
    pub sector: String,
    pub market_cap: f64,
}

/// One trading day of an instrument, from its ticks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candle {
    pub day: String,
    pub open: f64,
    pub high: f64,
    pub low: f64,
    pub close: f64,
    pub volume: i64,
}

/// `GET /api/instruments/{symbol}`: the instrument with its exchange, sector,
/// fundamentals, price statistics, recent candles, holders and trades.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstrumentDetail {
    pub symbol: String,
    pub name: String,
    pub exchange: String,
    pub exchange_name: String,
    pub currency: String,
    pub sector: String,
    pub sector_name: String,
    pub listed_on: String,
    pub market_cap: f64,
    pub pe_ratio: f64,
    pub dividend_yield: f64,
    pub eps: f64,
    pub shares_outstanding: i64,
    pub high_all_time: f64,
    pub low_all_time: f64,
    pub average_price: f64,
    pub total_volume: i64,
    pub holders: i64,
    pub shares_held: i64,
    pub trade_count: i64,
    pub traded_quantity: i64,
    pub candles: Vec<Candle>,
}

/// `GET /api/stocks/{symbol}/price`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quote {
    pub symbol: String,
    pub price: f64,
    pub previous: f64,
    pub change_pct: f64,
    pub volume: i64,
    pub at: String,
}

/// One level of the order book.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepthLevel {
    pub price: f64,
    pub quantity: i64,
}

/// `GET /api/stocks/{symbol}/depth`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Depth {
    pub symbol: String,
    pub bids: Vec<DepthLevel>,
    pub asks: Vec<DepthLevel>,
}

/// One holding in a portfolio, valued at the last price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Holding {
    pub symbol: String,
    pub name: String,
    pub quantity: i64,
    pub cost_basis: f64,
    pub last_price: f64,
    pub market_value: f64,
    pub unrealized_pnl: f64,
    pub average_price_60d: f64,
    pub volatility_60d: f64,
    pub bought: i64,
    pub sold: i64,
}

/// `GET /api/portfolios/{user_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Portfolio {
    pub user_id: i64,
    pub holdings: Vec<Holding>,
    pub market_value: f64,
    pub cost: f64,
    pub unrealized_pnl: f64,
}

/// `GET /api/watchlists/{user_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Watchlist {
    pub user_id: i64,
    pub symbols: Vec<String>,
}

/// `GET /api/users/{id}/profile`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub user_id: i64,
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub country: String,
    pub risk_level: String,
}

impl Profile {
    /// What anyone may read of it: the private fields (email, country, risk
    /// level) are for the user alone.
    pub fn public(&self) -> PublicProfile {
        PublicProfile {
            user_id: self.user_id,
            username: self.username.clone(),
            display_name: self.display_name.clone(),
        }
    }
}

/// The public part of a profile: what `GET /api/users/{id}/profile`
/// answers anyone but the user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicProfile {
    pub user_id: i64,
    pub username: String,
    pub display_name: String,
}

/// One row of `GET /api/trending`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trending {
    pub symbol: String,
    pub name: String,
    pub views: i64,
}

/// One sector in the market overview.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SectorSummary {
    pub sector: String,
    pub instruments: i64,
    pub average_change_pct: f64,
    pub volume: i64,
}

/// A mover in the market overview.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mover {
    pub symbol: String,
    pub change_pct: f64,
}

/// `GET /api/market/overview`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overview {
    pub sectors: Vec<SectorSummary>,
    pub gainers: Vec<Mover>,
    pub losers: Vec<Mover>,
}

/// `POST /api/orders` body.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    pub user_id: i64,
    pub symbol: String,
    pub side: String,
    pub quantity: i64,
    #[serde(default)]
    pub limit_price: Option<f64>,
}

/// `POST /api/orders` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderFilled {
    pub order_id: i64,
    pub user_id: i64,
    pub symbol: String,
    pub side: String,
    pub quantity: i64,
    pub price: f64,
    pub status: String,
}

/// `PUT /api/stocks/{symbol}/price` body.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewPrice {
    pub price: f64,
    #[serde(default)]
    pub volume: Option<i64>,
}

/// `PUT /api/stocks/{symbol}/depth` body.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewDepth {
    pub bids: Vec<DepthLevel>,
    pub asks: Vec<DepthLevel>,
}

/// `PUT /api/watchlists/{user_id}` body.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewWatchlist {
    pub symbols: Vec<String>,
}

/// `PUT /api/users/{id}/profile` body: the fields to change.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpdate {
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
    #[serde(default)]
    pub risk_level: Option<String>,
}

/// `POST /login` body.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// The reference part of an instrument's detail (instrument, exchange,
/// sector, fundamentals): changed by administration only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstrumentRef {
    pub symbol: String,
    pub name: String,
    pub exchange: String,
    pub exchange_name: String,
    pub currency: String,
    pub sector: String,
    pub sector_name: String,
    pub listed_on: String,
    pub market_cap: f64,
    pub pe_ratio: f64,
    pub dividend_yield: f64,
    pub eps: f64,
    pub shares_outstanding: i64,
}

/// The price part of an instrument's detail (statistics over every tick,
/// the last 30 days' candles): changed by every tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceHistory {
    pub high_all_time: f64,
    pub low_all_time: f64,
    pub average_price: f64,
    pub total_volume: i64,
    pub candles: Vec<Candle>,
}

/// The ownership part of an instrument's detail (holders, trades): changed
/// by every order of the instrument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ownership {
    pub holders: i64,
    pub shares_held: i64,
    pub trade_count: i64,
    pub traded_quantity: i64,
}

impl InstrumentDetail {
    /// The detail from its three parts.
    pub fn from_parts(r: InstrumentRef, prices: PriceHistory, owners: Ownership) -> Self {
        Self {
            symbol: r.symbol,
            name: r.name,
            exchange: r.exchange,
            exchange_name: r.exchange_name,
            currency: r.currency,
            sector: r.sector,
            sector_name: r.sector_name,
            listed_on: r.listed_on,
            market_cap: r.market_cap,
            pe_ratio: r.pe_ratio,
            dividend_yield: r.dividend_yield,
            eps: r.eps,
            shares_outstanding: r.shares_outstanding,
            high_all_time: prices.high_all_time,
            low_all_time: prices.low_all_time,
            average_price: prices.average_price,
            total_volume: prices.total_volume,
            holders: owners.holders,
            shares_held: owners.shares_held,
            trade_count: owners.trade_count,
            traded_quantity: owners.traded_quantity,
            candles: prices.candles,
        }
    }
}

/// One position of a user, with the user's trade totals in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub symbol: String,
    pub name: String,
    pub quantity: i64,
    pub cost_basis: f64,
    pub bought: i64,
    pub sold: i64,
}

/// A user's positions, by symbol: what a portfolio is valued from; changed
/// by the user's orders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Positions {
    pub user_id: i64,
    pub positions: Vec<Position>,
}

/// An instrument's last price and the average and volatility of its newest
/// 1,440 ticks (a portfolio's 60-day window): changed by every tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceWindow {
    pub symbol: String,
    pub last_price: f64,
    pub average_price: f64,
    pub volatility: f64,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl Portfolio {
    /// The portfolio valued from the user's positions and the instruments'
    /// price windows (a position without a window is valued at 0, as the
    /// query does for an instrument without ticks).
    pub fn value(positions: &Positions, window: impl Fn(&str) -> Option<PriceWindow>) -> Self {
        let mut portfolio = Portfolio {
            user_id: positions.user_id,
            holdings: Vec::with_capacity(positions.positions.len()),
            market_value: 0.0,
            cost: 0.0,
            unrealized_pnl: 0.0,
        };
        for p in &positions.positions {
            let w = window(&p.symbol);
            let last_price = w.as_ref().map_or(0.0, |w| w.last_price);
            let market_value = round2(p.quantity as f64 * last_price);
            let cost = p.quantity as f64 * p.cost_basis;
            portfolio.market_value += market_value;
            portfolio.cost += cost;
            portfolio.holdings.push(Holding {
                symbol: p.symbol.clone(),
                name: p.name.clone(),
                quantity: p.quantity,
                cost_basis: round2(p.cost_basis),
                last_price,
                market_value,
                unrealized_pnl: round2(market_value - cost),
                average_price_60d: round2(w.as_ref().map_or(0.0, |w| w.average_price)),
                volatility_60d: round2(w.as_ref().map_or(0.0, |w| w.volatility)),
                bought: p.bought,
                sold: p.sold,
            });
        }
        portfolio.market_value = round2(portfolio.market_value);
        portfolio.cost = round2(portfolio.cost);
        portfolio.unrealized_pnl = round2(portfolio.market_value - portfolio.cost);
        portfolio
    }
}
