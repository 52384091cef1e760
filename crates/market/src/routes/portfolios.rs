//! `GET /api/portfolios/{user_id}` (cache-aside, 60 s, composed from cached
//! parts: [`crate::parts`]) and `POST /api/orders` (not cached; writes the
//! order, then drops what it changed: [`crate::parts::after_order`]). Both
//! need the user's session: a portfolio is its user's alone, and an order is
//! placed for the signed-in user only.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::app::Shared;
use crate::auth::SignedIn;
use crate::db::orders;
use crate::error::{parse_id, ApiError, JsonBody, PathParams as Path};
use crate::model::NewOrder;
use crate::parts;
use crate::routes::private;

/// `GET /api/portfolios/{user_id}`: the user's own.
pub async fn portfolio(
    user: SignedIn,
    State(state): State<Shared>,
    Path(user_id): Path<String>,
) -> Result<Response, ApiError> {
    let user_id = parse_id(&user_id, "user id")?;
    user.owns(user_id)?;
    let portfolio = parts::cached_portfolio(&state.caching, &state.db, user_id, user.freshness)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("unknown user {user_id}")))?;
    Ok(private(Json(portfolio)))
}

/// `POST /api/orders` `{"user_id", "symbol", "side": "buy"|"sell", "quantity", "limit_price"?}`,
/// `user_id` the signed-in user's.
pub async fn place_order(
    user: SignedIn,
    State(state): State<Shared>,
    JsonBody(order): JsonBody<NewOrder>,
) -> Result<Response, ApiError> {
    user.owns(order.user_id)?;
    let placed = orders::place_order(&state.db, &order).await?;
    parts::after_order(&state.caching, &state.db, &placed).await;
    user.wrote().await?;
    let answer = private(Json(placed.filled));
    Ok((StatusCode::CREATED, answer).into_response())
}
