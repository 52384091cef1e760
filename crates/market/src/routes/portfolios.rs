//! `GET /api/portfolios/{user_id}` (cache-aside, 60 s; with the cache on, a
//! miss values the user's cached positions at the instruments' cached price
//! windows, [`crate::parts`]) and `POST /api/orders` (not cached; writes the
//! order, then gives the cache the user's positions and the instrument's
//! ownership as the order left them, and invalidates the user's portfolio
//! and the instrument's detail).

use axum::extract::{Path, State};
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
    // The parts first, then what is composed from them: a composition that
    // read the older parts meanwhile loses its lease to the invalidation.
    let (positions, version) = &placed.positions;
    let (owners, owners_version) = &placed.ownership;
    let (positions_at, owners_at) = (positions_key(user_id), ownership_key(&symbol));
    let opts = parts::positions_options(caching, user_id)?;
    let (held, owned) = tokio::join!(
        caching.write_versioned("positions", &positions_at, Some(opts), positions, *version),
        caching.write_versioned("ownership", &owners_at, None, owners, *owners_version),
    );
    held?;
    owned?;
    let (portfolio, detail) = (portfolio_key(user_id), instrument_key(&symbol));
    caching.invalidate_many(&[&portfolio, &detail]).await;
    Ok((StatusCode::CREATED, Json(placed.filled)))
}
