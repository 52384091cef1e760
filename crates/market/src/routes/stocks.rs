//! `GET`/`PUT /api/stocks/{symbol}/price` and `/depth`, write-through
//! ([`crate::patterns::write_through`]). Reads are public; writes are
//! market data, the operator's ([`Operator`]).

use axum::extract::State;
use axum::Json;

use crate::app::Shared;
use crate::auth::Operator;
use crate::error::{parse_symbol, ApiError, JsonBody, PathParams as Path};
use crate::model::{Depth, NewDepth, NewPrice, Quote};
use crate::patterns::write_through;

fn unknown(symbol: &str) -> ApiError {
    ApiError::NotFound(format!("unknown symbol {symbol:?}"))
}

/// `GET /api/stocks/{symbol}/price`.
pub async fn price(
    State(state): State<Shared>,
    Path(symbol): Path<String>,
) -> Result<Json<Quote>, ApiError> {
    let symbol = parse_symbol(&symbol)?;
    write_through::price(&state.caching, &state.db, &symbol)
        .await?
        .map(Json)
        .ok_or_else(|| unknown(&symbol))
}

/// `PUT /api/stocks/{symbol}/price` `{"price": 101.5, "volume": 300}`.
pub async fn put_price(
    _: Operator,
    State(state): State<Shared>,
    Path(symbol): Path<String>,
    JsonBody(new): JsonBody<NewPrice>,
) -> Result<Json<Quote>, ApiError> {
    let symbol = parse_symbol(&symbol)?;
    let quote = write_through::put_price(&state.caching, &state.db, &symbol, &new).await?;
    Ok(Json(quote))
}

/// `GET /api/stocks/{symbol}/depth`.
pub async fn depth(
    State(state): State<Shared>,
    Path(symbol): Path<String>,
) -> Result<Json<Depth>, ApiError> {
    let symbol = parse_symbol(&symbol)?;
    write_through::depth(&state.caching, &state.db, &symbol)
        .await?
        .map(Json)
        .ok_or_else(|| unknown(&symbol))
}

/// `PUT /api/stocks/{symbol}/depth` `{"bids": [{"price", "quantity"}], "asks": [...]}`.
pub async fn put_depth(
    _: Operator,
    State(state): State<Shared>,
    Path(symbol): Path<String>,
    JsonBody(new): JsonBody<NewDepth>,
) -> Result<Json<Depth>, ApiError> {
    let symbol = parse_symbol(&symbol)?;
    let depth = write_through::put_depth(&state.caching, &state.db, &symbol, &new).await?;
    Ok(Json(depth))
}
