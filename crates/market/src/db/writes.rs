//! The service's writes. Each changes the database in one transaction and
//! returns what the cache should hold (write-through) or what to invalidate.

use sqlx::Row;

use super::queries::{change_pct, round2};
use super::Db;
use crate::error::ApiError;
use crate::model::*;

const MAX_PRICE: f64 = 1e9;
const MAX_QUANTITY: i64 = 1_000_000_000;
const MAX_DEPTH_LEVELS: usize = 50;
const MAX_WATCHLIST: usize = 50;

fn unknown_symbol(symbol: &str) -> ApiError {
    ApiError::NotFound(format!("unknown symbol {symbol:?}"))
}

fn unknown_user(user_id: i64) -> ApiError {
    ApiError::NotFound(format!("unknown user {user_id}"))
}

/// Append a tick with the new price; the answer is the new quote and its
/// version (the tick's time in microseconds, as [`super::queries::quote`]).
pub async fn put_price(db: &Db, symbol: &str, new: &NewPrice) -> Result<(Quote, u64), ApiError> {
    if !(new.price.is_finite() && new.price > 0.0 && new.price < MAX_PRICE) {
        return Err(ApiError::BadRequest(format!(
            "price must be a positive number below {MAX_PRICE}"
        )));
    }
    let volume = new.volume.unwrap_or(0);
    if !(0..=MAX_QUANTITY).contains(&volume) {
        return Err(ApiError::BadRequest("volume out of range".into()));
    }
    let row = sqlx::query(
        "WITH i AS (SELECT id FROM instruments WHERE symbol = $1),
              last AS (SELECT p.ts, p.price FROM prices p, i WHERE p.instrument_id = i.id
                       ORDER BY p.ts DESC LIMIT 1)
         INSERT INTO prices (instrument_id, ts, price, volume)
         SELECT i.id, greatest(now(), coalesce((SELECT ts FROM last), now()) + interval '1 millisecond'),
                $2, $3
         FROM i
         RETURNING ts::TEXT AS at, (extract(epoch FROM ts) * 1000000)::BIGINT AS version,
                   (SELECT price FROM last) AS previous",
    )
    .bind(symbol)
    .bind(new.price)
    .bind(volume)
    .fetch_optional(db.counted())
    .await?
    .ok_or_else(|| unknown_symbol(symbol))?;
    let previous: f64 = row.get::<Option<f64>, _>("previous").unwrap_or(new.price);
    let version: i64 = row.get("version");
    let quote = Quote {
        symbol: symbol.to_string(),
        price: new.price,
        previous,
        change_pct: change_pct(previous, new.price),
        volume,
        at: row.get("at"),
    };
    Ok((quote, version.max(0) as u64))
}

/// Replace the order book; the answer is the new book and its version.
/// Raising the version locks the instrument's row, so writers of one book
/// commit one after the other, each with a higher version than the last.
pub async fn put_depth(db: &Db, symbol: &str, new: &NewDepth) -> Result<(Depth, u64), ApiError> {
    if new.bids.len() > MAX_DEPTH_LEVELS || new.asks.len() > MAX_DEPTH_LEVELS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_DEPTH_LEVELS} levels per side"
        )));
    }
    for level in new.bids.iter().chain(&new.asks) {
        let valid = level.price.is_finite()
            && level.price > 0.0
            && level.price < MAX_PRICE
            && (0..=MAX_QUANTITY).contains(&level.quantity);
        if !valid {
            return Err(ApiError::BadRequest(
                "every level needs a positive price and a non-negative quantity".into(),
            ));
        }
    }
    let mut tx = db.counted().begin().await?;
    let (id, version): (i32, i64) = sqlx::query_as(
        "UPDATE instruments SET depth_version = depth_version + 1 WHERE symbol = $1
         RETURNING id, depth_version",
    )
    .bind(symbol)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| unknown_symbol(symbol))?;
    sqlx::query("DELETE FROM market_depth WHERE instrument_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    for (side, levels) in [("bid", &new.bids), ("ask", &new.asks)] {
        for (level, l) in levels.iter().enumerate() {
            sqlx::query(
                "INSERT INTO market_depth (instrument_id, side, level, price, quantity)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(side)
            .bind(level as i32)
            .bind(l.price)
            .bind(l.quantity)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    let depth = Depth {
        symbol: symbol.to_string(),
        bids: new.bids.clone(),
        asks: new.asks.clone(),
    };
    Ok((depth, version.max(0) as u64))
}

/// Place an order and fill it at the last price (or the limit, if given and
/// marketable): the order, its trade and the position change in one transaction.
pub async fn place_order(db: &Db, order: &NewOrder) -> Result<OrderFilled, ApiError> {
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
    let symbol = crate::error::parse_symbol(&order.symbol)?;
    let mut tx = db.counted().begin().await?;
    let user: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1")
        .bind(order.user_id)
        .fetch_optional(&mut *tx)
        .await?;
    user.ok_or_else(|| unknown_user(order.user_id))?;
    let row = sqlx::query(
        "SELECT i.id, (SELECT price FROM prices WHERE instrument_id = i.id ORDER BY ts DESC LIMIT 1) AS price
         FROM instruments i WHERE i.symbol = $1",
    )
    .bind(&symbol)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| unknown_symbol(&symbol))?;
    let instrument_id: i32 = row.get("id");
    let last: f64 = row.get::<Option<f64>, _>("price").unwrap_or(0.0);
    let price = match order.limit_price {
        Some(limit) if side == "buy" && limit < last => {
            return Err(ApiError::Conflict(format!(
                "limit {limit} is below the last price {last}; only marketable orders are accepted"
            )))
        }
        Some(limit) if side == "sell" && limit > last => {
            return Err(ApiError::Conflict(format!(
                "limit {limit} is above the last price {last}; only marketable orders are accepted"
            )))
        }
        _ => last,
    };
    let held: Option<i64> = sqlx::query_scalar(
        "SELECT quantity FROM positions WHERE user_id = $1 AND instrument_id = $2 FOR UPDATE",
    )
    .bind(order.user_id)
    .bind(instrument_id)
    .fetch_optional(&mut *tx)
    .await?;
    if side == "sell" && held.unwrap_or(0) < order.quantity {
        return Err(ApiError::Conflict(format!(
            "cannot sell {} {symbol}: {} held",
            order.quantity,
            held.unwrap_or(0)
        )));
    }
    let order_id: i64 = sqlx::query_scalar(
        "INSERT INTO orders (user_id, instrument_id, side, quantity, limit_price, status, created_at)
         VALUES ($1, $2, $3, $4, $5, 'filled', now()) RETURNING id",
    )
    .bind(order.user_id)
    .bind(instrument_id)
    .bind(&side)
    .bind(order.quantity)
    .bind(order.limit_price)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO trades (order_id, user_id, instrument_id, side, quantity, price, executed_at)
         VALUES ($1, $2, $3, $4, $5, $6, now())",
    )
    .bind(order_id)
    .bind(order.user_id)
    .bind(instrument_id)
    .bind(&side)
    .bind(order.quantity)
    .bind(price)
    .execute(&mut *tx)
    .await?;
    if side == "buy" {
        sqlx::query(
            "INSERT INTO positions (user_id, instrument_id, quantity, cost_basis)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id, instrument_id) DO UPDATE SET
                 cost_basis = (positions.cost_basis * positions.quantity + EXCLUDED.cost_basis * EXCLUDED.quantity)
                              / (positions.quantity + EXCLUDED.quantity),
                 quantity = positions.quantity + EXCLUDED.quantity",
        )
        .bind(order.user_id)
        .bind(instrument_id)
        .bind(order.quantity)
        .bind(price)
        .execute(&mut *tx)
        .await?;
    } else if held == Some(order.quantity) {
        sqlx::query("DELETE FROM positions WHERE user_id = $1 AND instrument_id = $2")
            .bind(order.user_id)
            .bind(instrument_id)
            .execute(&mut *tx)
            .await?;
    } else {
        sqlx::query(
            "UPDATE positions SET quantity = quantity - $3 WHERE user_id = $1 AND instrument_id = $2",
        )
        .bind(order.user_id)
        .bind(instrument_id)
        .bind(order.quantity)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(OrderFilled {
        order_id,
        user_id: order.user_id,
        symbol,
        side,
        quantity: order.quantity,
        price: round2(price),
        status: "filled".into(),
    })
}

/// Replace the user's watchlist; unknown symbols are refused, all of them named.
pub async fn put_watchlist(
    db: &Db,
    user_id: i64,
    new: &NewWatchlist,
) -> Result<Watchlist, ApiError> {
    if new.symbols.len() > MAX_WATCHLIST {
        return Err(ApiError::BadRequest(format!(
            "a watchlist holds at most {MAX_WATCHLIST} symbols"
        )));
    }
    let mut symbols: Vec<String> = Vec::with_capacity(new.symbols.len());
    for s in &new.symbols {
        let s = crate::error::parse_symbol(s)
            .map_err(|_| ApiError::BadRequest(format!("invalid symbol {s:?}")))?;
        if !symbols.contains(&s) {
            symbols.push(s);
        }
    }
    let mut tx = db.counted().begin().await?;
    let user: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1 FOR UPDATE")
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await?;
    user.ok_or_else(|| unknown_user(user_id))?;
    let rows = sqlx::query("SELECT id, symbol FROM instruments WHERE symbol = ANY($1)")
        .bind(&symbols)
        .fetch_all(&mut *tx)
        .await?;
    let ids: std::collections::HashMap<String, i32> = rows
        .into_iter()
        .map(|r| (r.get("symbol"), r.get("id")))
        .collect();
    let unknown: Vec<&str> = symbols
        .iter()
        .filter(|s| !ids.contains_key(*s))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "unknown symbols: {}",
            unknown.join(", ")
        )));
    }
    sqlx::query("DELETE FROM watchlists WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    let instrument_ids: Vec<i32> = symbols.iter().map(|s| ids[s]).collect();
    sqlx::query(
        "INSERT INTO watchlists (user_id, position, instrument_id)
         SELECT $1, ord::INTEGER, id FROM unnest($2::INTEGER[]) WITH ORDINALITY AS t(id, ord)",
    )
    .bind(user_id)
    .bind(&instrument_ids)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Watchlist { user_id, symbols })
}

/// Change the given fields of a profile; the answer is the whole profile.
pub async fn update_profile(
    db: &Db,
    user_id: i64,
    update: &ProfileUpdate,
) -> Result<Profile, ApiError> {
    for (field, value) in [
        ("display_name", &update.display_name),
        ("email", &update.email),
        ("country", &update.country),
    ] {
        if let Some(v) = value {
            if v.trim().is_empty() || v.len() > 200 {
                return Err(ApiError::BadRequest(format!(
                    "{field} must be 1 to 200 characters"
                )));
            }
        }
    }
    if let Some(email) = &update.email {
        if !email.contains('@') {
            return Err(ApiError::BadRequest("email must contain '@'".into()));
        }
    }
    if let Some(risk) = &update.risk_level {
        if !["low", "medium", "high"].contains(&risk.as_str()) {
            return Err(ApiError::BadRequest(
                "risk_level must be low, medium or high".into(),
            ));
        }
    }
    let row = sqlx::query(
        "UPDATE profiles p SET
             display_name = coalesce($2, p.display_name), email = coalesce($3, p.email),
             country = coalesce($4, p.country), risk_level = coalesce($5, p.risk_level),
             updated_at = now()
         FROM users u WHERE u.id = p.user_id AND p.user_id = $1
         RETURNING u.id, u.username, p.display_name, p.email, p.country, p.risk_level",
    )
    .bind(user_id)
    .bind(&update.display_name)
    .bind(&update.email)
    .bind(&update.country)
    .bind(&update.risk_level)
    .fetch_optional(db.counted())
    .await?
    .ok_or_else(|| unknown_user(user_id))?;
    Ok(Profile {
        user_id: row.get("id"),
        username: row.get("username"),
        display_name: row.get("display_name"),
        email: row.get("email"),
        country: row.get("country"),
        risk_level: row.get("risk_level"),
    })
}
