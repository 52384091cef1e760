//! `GET`/`PUT /api/stocks/{symbol}/price` and `/depth`: write-through, so a
//! read after a write is answered from the cache with the written value.
//! A new price also invalidates the instrument's detail; portfolios valued
//! at it follow within their TTL (60 s), by design of the portfolio policy.

use axum::extract::{Path, State};
use axum::Json;

use crate::app::Shared;
use crate::db::{queries, writes};
use crate::error::{parse_symbol, ApiError, JsonBody};
use crate::model::{Depth, NewDepth, NewPrice, Quote};
use crate::routes::instruments::instrument_key;

fn unknown(symbol: &str) -> ApiError {
    ApiError::NotFound(format!("unknown symbol {symbol:?}"))
}

/// `GET /api/stocks/{symbol}/price`.
pub async fn price(
    State(state): State<Shared>,
    Path(symbol): Path<String>,
) -> Result<Json<Quote>, ApiError> {
    let symbol = parse_symbol(&symbol)?;
    let db = state.db.clone();
    let key = format!("price:{symbol}");
    let s = symbol.clone();
    state
        .caching
        .read_optional("stock_price", &key, None, move || async move {
            queries::quote(&db, &s).await
        })
        .await?
        .map(Json)
        .ok_or_else(|| unknown(&symbol))
}

/// `PUT /api/stocks/{symbol}/price` `{"price": 101.5, "volume": 300}`.
pub async fn put_price(
    State(state): State<Shared>,
    Path(symbol): Path<String>,
    JsonBody(new): JsonBody<NewPrice>,
) -> Result<Json<Quote>, ApiError> {
    let symbol = parse_symbol(&symbol)?;
    let key = format!("price:{symbol}");
    let quote = state
        .caching
        .write_through("stock_price", &key, || {
            writes::put_price(&state.db, &symbol, &new)
        })
        .await?;
    // The detail's price statistics and candles include the new tick.
    state.caching.invalidate(&instrument_key(&symbol)).await;
    Ok(Json(quote))
}

/// `GET /api/stocks/{symbol}/depth`.
pub async fn depth(
    State(state): State<Shared>,
    Path(symbol): Path<String>,
) -> Result<Json<Depth>, ApiError> {
    let symbol = parse_symbol(&symbol)?;
    let db = state.db.clone();
    let key = format!("depth:{symbol}");
    let s = symbol.clone();
    state
        .caching
        .read_optional("market_depth", &key, None, move || async move {
            queries::depth(&db, &s).await
        })
        .await?
        .map(Json)
        .ok_or_else(|| unknown(&symbol))
}

/// `PUT /api/stocks/{symbol}/depth` `{"bids": [{"price", "quantity"}], "asks": [...]}`.
pub async fn put_depth(
    State(state): State<Shared>,
    Path(symbol): Path<String>,
    JsonBody(new): JsonBody<NewDepth>,
) -> Result<Json<Depth>, ApiError> {
    let symbol = parse_symbol(&symbol)?;
    let key = format!("depth:{symbol}");
    let depth = state
        .caching
        .write_through("market_depth", &key, || {
            writes::put_depth(&state.db, &symbol, &new)
        })
        .await?;
    Ok(Json(depth))
}
