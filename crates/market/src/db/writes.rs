//! The service's writes. Each changes the database in one transaction and
//! returns what the cache should hold (write-through) or what to invalidate.

use sqlx::Row;

use super::queries::change_pct;
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

/// Replace the user's watchlist; unknown symbols are refused, all of them
/// named, and nothing changes.
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
    // One round trip: the `market_put_watchlist` function (migration 0006).
    let row = sqlx::query("SELECT outcome, unknown FROM market_put_watchlist($1, $2)")
        .bind(user_id)
        .bind(&symbols)
        .fetch_one(db.counted())
        .await?;
    let outcome: String = row.get("outcome");
    match outcome.as_str() {
        "replaced" => Ok(Watchlist { user_id, symbols }),
        "unknown_user" => Err(unknown_user(user_id)),
        "unknown_symbols" => {
            let unknown: Vec<String> = row
                .get::<Option<Vec<String>>, _>("unknown")
                .unwrap_or_default();
            Err(ApiError::BadRequest(format!(
                "unknown symbols: {}",
                unknown.join(", ")
            )))
        }
        other => Err(ApiError::Internal(format!(
            "market_put_watchlist answered {other:?}"
        ))),
    }
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
