//! `GET`/`PUT /api/stocks/{symbol}/price` and `/depth`: write-through, so a
//! read after a write is answered from the cache with the written value.
//! Both are versioned (`consistency = "version"`): a quote's version is its
//! tick's time, a book's its `depth_version`, and the cache keeps the newest
//! of what the routes, the read-through loads and the market-data feed
//! ([`crate::feed`]) give it, whatever order they arrive in.
//! A new price also invalidates the instrument's detail and the price parts
//! it and portfolios are composed from ([`crate::parts`]); a cached
//! portfolio valued at the old price follows within its TTL (60 s), by
//! design of the portfolio policy.

use axum::extract::State;

use crate::error::PathParams as Path;
use axum::Json;

use crate::app::Shared;
use crate::db::{queries, writes};
use crate::error::{parse_symbol, ApiError, JsonBody};
use crate::model::{Depth, NewDepth, NewPrice, Quote};
use crate::parts::{history_key, window_key};
use crate::routes::instruments::instrument_key;

fn unknown(symbol: &str) -> ApiError {
    ApiError::NotFound(format!("unknown symbol {symbol:?}"))
}

/// The cache key of a symbol's quote.
pub fn price_key(symbol: &str) -> String {
    format!("price:{symbol}")
}

/// The cache key of a symbol's order book.
pub fn depth_key(symbol: &str) -> String {
    format!("depth:{symbol}")
}

/// `GET /api/stocks/{symbol}/price`.
pub async fn price(
    State(state): State<Shared>,
    Path(symbol): Path<String>,
) -> Result<Json<Quote>, ApiError> {
    let symbol = parse_symbol(&symbol)?;
    let db = state.db.clone();
    let s = symbol.clone();
    state
        .caching
        .read_versioned(
            "stock_price",
            &price_key(&symbol),
            None,
            move || async move { queries::quote(&db, &s).await },
        )
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
    let (quote, version) = writes::put_price(&state.db, &symbol, &new).await?;
    let caching = &state.caching;
    // The detail's price statistics and candles include the new tick, and
    // so does the window portfolios are valued at. The statistics and the
    // detail go in one deletion: a composition that read the old statistics
    // loses its lease with the detail's. The window is versioned: a feed
    // snapshot older than the tick must not bring it back.
    let (key, window) = (price_key(&symbol), window_key(&symbol));
    let (history, detail) = (history_key(&symbol), instrument_key(&symbol));
    let dropped = [history.as_str(), detail.as_str()];
    let (written, (), ()) = tokio::join!(
        caching.write_versioned("stock_price", &key, None, &quote, version),
        caching.invalidate_version(&window, version),
        caching.invalidate_many(&dropped),
    );
    written?;
    if caching.cache().is_some() {
        crate::parts::reload_after_tick(caching, &state.db, &symbol);
    }
    Ok(Json(quote))
}

/// `GET /api/stocks/{symbol}/depth`.
pub async fn depth(
    State(state): State<Shared>,
    Path(symbol): Path<String>,
) -> Result<Json<Depth>, ApiError> {
    let symbol = parse_symbol(&symbol)?;
    let db = state.db.clone();
    let s = symbol.clone();
    state
        .caching
        .read_versioned(
            "market_depth",
            &depth_key(&symbol),
            None,
            move || async move { queries::depth(&db, &s).await },
        )
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
    let (depth, version) = writes::put_depth(&state.db, &symbol, &new).await?;
    state
        .caching
        .write_versioned("market_depth", &depth_key(&symbol), None, &depth, version)
        .await?;
    Ok(Json(depth))
}
