//! `GET /api/instruments` (the listing, behind the HTTP response cache:
//! [`crate::patterns::http_response_cache`]) and
//! `GET /api/instruments/{symbol}` (read-through:
//! [`crate::patterns::read_through`]). Both public.

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;

use crate::app::Shared;
use crate::db::queries;
use crate::error::{parse_symbol, ApiError, PathParams as Path};
use crate::model::{InstrumentDetail, InstrumentSummary};

/// Query of the listing.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    sector: Option<String>,
    exchange: Option<String>,
}

fn filter_code(value: Option<String>, what: &str) -> Result<Option<String>, ApiError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(code) if code.len() <= 16 && code.chars().all(|c| c.is_ascii_alphanumeric()) => {
            Ok(Some(code.to_ascii_uppercase()))
        }
        Some(code) => Err(ApiError::BadRequest(format!(
            "invalid {what} code {code:?}"
        ))),
    }
}

/// `GET /api/instruments?sector=&exchange=`.
pub async fn list(
    State(state): State<Shared>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<InstrumentSummary>>, ApiError> {
    let sector = filter_code(query.sector, "sector")?;
    let exchange = filter_code(query.exchange, "exchange")?;
    let found =
        queries::list_instruments(&state.db, sector.as_deref(), exchange.as_deref()).await?;
    Ok(Json(found))
}

/// `GET /api/instruments/{symbol}`.
pub async fn detail(
    State(state): State<Shared>,
    Path(symbol): Path<String>,
) -> Result<Json<InstrumentDetail>, ApiError> {
    let symbol = parse_symbol(&symbol)?;
    state
        .instruments
        .get(&symbol)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("unknown symbol {symbol:?}")))
}
