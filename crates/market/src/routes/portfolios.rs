//! `GET /api/portfolios/{user_id}` (cache-aside, 60 s) and `POST /api/orders`
//! (not cached; invalidates the user's portfolio and the instrument's detail).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use crate::app::Shared;
use crate::db::{queries, writes};
use crate::error::{parse_id, ApiError, JsonBody};
use crate::model::{NewOrder, OrderFilled, Portfolio};
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
    let db = state.db.clone();
    let opts = state
        .caching
        .options_tagged("portfolio", user_tag(user_id))?;
    state
        .caching
        .read_optional(
            "portfolio",
            &portfolio_key(user_id),
            Some(opts),
            move || async move { queries::portfolio(&db, user_id).await },
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
    let filled = writes::place_order(&state.db, &order).await?;
    state
        .caching
        .invalidate(&portfolio_key(filled.user_id))
        .await;
    // The instrument's holders and trade totals changed too.
    state
        .caching
        .invalidate(&instrument_key(&filled.symbol))
        .await;
    Ok((StatusCode::CREATED, Json(filled)))
}
