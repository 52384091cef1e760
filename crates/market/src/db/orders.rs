//! `POST /api/orders`: an order placed and filled at the last price, in one
//! round trip to PostgreSQL (the `market_place_order` function, migration
//! 0005): the checks, the order, its trade and the position change commit
//! together or not at all. The answer also carries the user's positions and
//! the instrument's ownership as the order left them, with their versions,
//! for the cache to take instead of loading them again.

use sqlx::Row;

use super::queries::round2;
use super::Db;
use crate::error::{parse_symbol, ApiError};
use crate::model::{NewOrder, OrderFilled, Ownership, Position, Positions};

const MAX_PRICE: f64 = 1e9;
const MAX_QUANTITY: i64 = 1_000_000_000;

/// A filled order and what it changed.
#[derive(Debug, Clone)]
pub struct Placed {
    /// The answer of the route.
    pub filled: OrderFilled,
    /// The user's positions after the order, and their version.
    pub positions: (Positions, u64),
    /// The instrument's ownership after the order, and its version.
    pub ownership: (Ownership, u64),
}

fn version(row: &sqlx::postgres::PgRow, column: &str) -> u64 {
    row.get::<Option<i64>, _>(column).unwrap_or(0).max(0) as u64
}

fn positions(row: &sqlx::postgres::PgRow, user_id: i64) -> Positions {
    let list = |c: &str| row.get::<Option<Vec<i64>>, _>(c).unwrap_or_default();
    let symbols = row
        .get::<Option<Vec<String>>, _>("symbols")
        .unwrap_or_default();
    let names = row
        .get::<Option<Vec<String>>, _>("names")
        .unwrap_or_default();
    let cost_bases = row
        .get::<Option<Vec<f64>>, _>("cost_bases")
        .unwrap_or_default();
    let (quantities, bought, sold) = (list("quantities"), list("bought"), list("sold"));
    let positions = symbols
        .into_iter()
        .enumerate()
        .map(|(k, symbol)| Position {
            symbol,
            name: names.get(k).cloned().unwrap_or_default(),
            quantity: quantities.get(k).copied().unwrap_or(0),
            cost_basis: cost_bases.get(k).copied().unwrap_or(0.0),
            bought: bought.get(k).copied().unwrap_or(0),
            sold: sold.get(k).copied().unwrap_or(0),
        })
        .collect();
    Positions { user_id, positions }
}

/// Place an order and fill it at the last price (a limit, if given, must be
/// marketable: at or above the last price to buy, at or below it to sell).
pub async fn place_order(db: &Db, order: &NewOrder) -> Result<Placed, ApiError> {
    let side = order.side.to_ascii_lowercase();
    if side != "buy" && side != "sell" {
        return Err(ApiError::BadRequest(
            "side must be \"buy\" or \"sell\"".into(),
        ));
    }
    if !(1..=MAX_QUANTITY).contains(&order.quantity) {
        return Err(ApiError::BadRequest(format!(
            "quantity must be between 1 and {MAX_QUANTITY}"
        )));
    }
    if let Some(limit) = order.limit_price {
        if !(limit.is_finite() && limit > 0.0 && limit < MAX_PRICE) {
            return Err(ApiError::BadRequest(
                "limit_price must be a positive number".into(),
            ));
        }
    }
    let symbol = parse_symbol(&order.symbol)?;
    let row = sqlx::query("SELECT * FROM market_place_order($1, $2, $3, $4, $5)")
        .bind(order.user_id)
        .bind(&symbol)
        .bind(&side)
        .bind(order.quantity)
        .bind(order.limit_price)
        .fetch_one(db.counted())
        .await?;
    let outcome: String = row.get("outcome");
    let last = || row.get::<Option<f64>, _>("last_price").unwrap_or(0.0);
    match outcome.as_str() {
        "filled" => Ok(Placed {
            positions: (
                positions(&row, order.user_id),
                version(&row, "positions_version"),
            ),
            ownership: (
                Ownership {
                    holders: row.get::<Option<i64>, _>("holders").unwrap_or(0),
                    shares_held: row.get::<Option<i64>, _>("shares_held").unwrap_or(0),
                    trade_count: row.get::<Option<i64>, _>("trade_count").unwrap_or(0),
                    traded_quantity: row.get::<Option<i64>, _>("traded_quantity").unwrap_or(0),
                },
                version(&row, "ownership_version"),
            ),
            filled: OrderFilled {
                order_id: row.get("order_id"),
                user_id: order.user_id,
                symbol,
                side,
                quantity: order.quantity,
                price: round2(row.get::<Option<f64>, _>("fill_price").unwrap_or(0.0)),
                status: "filled".into(),
            },
        }),
        "unknown_user" => Err(ApiError::NotFound(format!(
            "unknown user {}",
            order.user_id
        ))),
        "unknown_symbol" => Err(ApiError::NotFound(format!("unknown symbol {symbol:?}"))),
        "not_marketable" if side == "buy" => Err(ApiError::Conflict(format!(
            "limit {} is below the last price {}; only marketable orders are accepted",
            order.limit_price.unwrap_or_default(),
            last()
        ))),
        "not_marketable" => Err(ApiError::Conflict(format!(
            "limit {} is above the last price {}; only marketable orders are accepted",
            order.limit_price.unwrap_or_default(),
            last()
        ))),
        "not_held" => Err(ApiError::Conflict(format!(
            "cannot sell {} {symbol}: {} held",
            order.quantity,
            row.get::<Option<i64>, _>("held").unwrap_or(0)
        ))),
        other => Err(ApiError::Internal(format!(
            "market_place_order answered {other:?}"
        ))),
    }
}
