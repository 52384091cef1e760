//! `POST /api/instruments/{symbol}/views` (write-behind:
//! [`crate::patterns::write_behind`]), `GET /api/trending` (refresh-ahead:
//! [`crate::patterns::refresh_ahead`]) and `GET /api/market/overview`
//! (stale-while-revalidate: [`crate::patterns::stale_while_revalidate`]).
//! All public.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use crate::app::Shared;
use crate::error::{parse_symbol, ApiError, PathParams as Path};
use crate::model::{Overview, Trending};
use crate::patterns::{refresh_ahead, stale_while_revalidate};

/// Answer of `POST /api/instruments/{symbol}/views`.
#[derive(Debug, Serialize)]
pub struct Counted {
    symbol: String,
    views: i64,
}

/// `POST /api/instruments/{symbol}/views`.
pub async fn count_view(
    State(state): State<Shared>,
    Path(symbol): Path<String>,
) -> Result<Json<Counted>, ApiError> {
    let symbol = parse_symbol(&symbol)?;
    match state.views.increment(&symbol).await? {
        Some(views) => Ok(Json(Counted { symbol, views })),
        None => Err(ApiError::NotFound(format!("unknown symbol {symbol:?}"))),
    }
}

/// `GET /api/trending`: the ten most viewed instruments.
pub async fn trending(State(state): State<Shared>) -> Result<Json<Vec<Trending>>, ApiError> {
    Ok(Json(
        refresh_ahead::trending(&state.caching, &state.db).await?,
    ))
}

/// `GET /api/market/overview`.
pub async fn overview(State(state): State<Shared>) -> Result<Json<Overview>, ApiError> {
    Ok(Json(
        stale_while_revalidate::overview(&state.caching, &state.db).await?,
    ))
}
