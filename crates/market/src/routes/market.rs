//! `POST /api/instruments/{symbol}/views` (the view counter seam),
//! `GET /api/trending` (refresh-ahead from the counters) and
//! `GET /api/market/overview` (one hot key, stale-while-revalidate).

use axum::extract::State;

use crate::error::PathParams as Path;
use axum::Json;
use serde::Serialize;

use crate::app::Shared;
use crate::db::queries;
use crate::error::{parse_symbol, ApiError};
use crate::model::{Overview, Trending};

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
    let db = state.db.clone();
    Ok(Json(
        state
            .caching
            .read("trending", "trending", None, move || async move {
                queries::trending(&db).await
            })
            .await?,
    ))
}

/// `GET /api/market/overview`.
pub async fn overview(State(state): State<Shared>) -> Result<Json<Overview>, ApiError> {
    let db = state.db.clone();
    Ok(Json(
        state
            .caching
            .read(
                "market_overview",
                "market:overview",
                None,
                move || async move { queries::overview(&db).await },
            )
            .await?,
    ))
}
