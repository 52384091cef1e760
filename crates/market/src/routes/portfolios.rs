//! `GET /api/portfolios/{user_id}` (cache-aside, 60 s; with the cache on, a
//! miss values the user's cached positions at the instruments' cached price
//! windows, [`crate::parts`]) and `POST /api/orders` (not cached; writes the
//! order, invalidates the user's portfolio and the instrument's detail and
//! their parts, then, in the background, gives the cache the parts as the
//! order left them and composes the portfolio and the detail again).

use axum::extract::State;

use crate::error::PathParams as Path;
use axum::http::StatusCode;
use axum::Json;

use crate::app::Shared;
use crate::db::{orders, queries};
use crate::error::{parse_id, ApiError, JsonBody};
use crate::model::{NewOrder, OrderFilled, Portfolio};
use crate::parts::{self, ownership_key, positions_key};
use crate::routes::instruments::instrument_key;
use crate::routes::users::user_tag;

/// The cache key of a user's portfolio.
pub fn portfolio_key(user_id: i64) -> String {
    format!("user:{user_id}:portfolio")
}

/// `GET /api/portfolios/{user_id}`.
pub async fn portfolio(
    State(state): State<Shared>,
    Path(user_id): Path<String>,
) -> Result<Json<Portfolio>, ApiError> {
    let user_id = parse_id(&user_id, "user id")?;
    let opts = state
        .caching
        .options_tagged("portfolio", user_tag(user_id))?;
    let (caching, db) = (state.caching.clone(), state.db.clone());
    state
        .caching
        .read_composed(
            "portfolio",
            &portfolio_key(user_id),
            Some(opts),
            move || async move { parts::portfolio(&caching, &db, user_id).await },
            || queries::portfolio(&state.db, user_id),
        )
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("unknown user {user_id}")))
}

/// `POST /api/orders` `{"user_id", "symbol", "side": "buy"|"sell", "quantity", "limit_price"?}`.
pub async fn place_order(
    State(state): State<Shared>,
    JsonBody(order): JsonBody<NewOrder>,
) -> Result<(StatusCode, Json<OrderFilled>), ApiError> {
    let placed = orders::place_order(&state.db, &order).await?;
    let (user_id, symbol) = (placed.filled.user_id, placed.filled.symbol.clone());
    let caching = &state.caching;
    // Before answering, drop what the order changed: first the parts, whose
    // version floors rise to the order's (no load that read them before the
    // order can put them back), then the portfolio and the detail composed
    // from them (a composition that read the old parts loses its lease; one
    // that starts later finds the old parts gone). The parts the order
    // returned and the compositions follow in the background; a read that
    // comes first loads what it misses.
    let (positions_at, owners_at) = (positions_key(user_id), ownership_key(&symbol));
    tokio::join!(
        caching.invalidate_version(&positions_at, placed.positions.1),
        caching.invalidate_version(&owners_at, placed.ownership.1),
    );
    let (portfolio, detail) = (portfolio_key(user_id), instrument_key(&symbol));
    caching.invalidate_many(&[&portfolio, &detail]).await;
    if caching.cache().is_some() {
        parts::after_order(caching, &state.db, &placed);
    }
    Ok((StatusCode::CREATED, Json(placed.filled)))
}
