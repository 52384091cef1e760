//! `GET /api/instruments` (listing, through its seam) and
//! `GET /api/instruments/{symbol}` (read-through, negatively cached; with
//! the cache on, a miss composes the detail from its cached parts,
//! [`crate::parts`], rather than running the one-query join).

use std::collections::HashMap;

use axum::extract::{Query, State};

use crate::error::PathParams as Path;
use axum::Json;
use serde::Deserialize;
use stratacache::Loader;

use crate::app::Shared;
use crate::caching::Caching;
use crate::db::{queries, Db};
use crate::error::{parse_symbol, ApiError};
use crate::model::{InstrumentDetail, InstrumentSummary};
use crate::seams::listing::ListingFilter;

/// The cache key of an instrument's detail (the read-through resource's key).
pub fn instrument_key(symbol: &str) -> String {
    format!("instrument:{symbol}")
}

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

/// Counts a listing lookup, in front of the response cache.
pub async fn count_list_lookup(
    State(state): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    state.caching.counters().lookup("instrument_list");
    next.run(request).await
}

/// `GET /api/instruments?sector=&exchange=`.
pub async fn list(
    State(state): State<Shared>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<InstrumentSummary>>, ApiError> {
    let filter = ListingFilter {
        sector: filter_code(query.sector, "sector")?,
        exchange: filter_code(query.exchange, "exchange")?,
    };
    // Reaching the handler is a load: with the cache on, the response cache
    // in front of the route missed (lookups are counted in front of it).
    state.caching.counters().load("instrument_list");
    Ok(Json(state.listing.list(filter).await?))
}

/// `GET /api/instruments/{symbol}`.
pub async fn detail(
    State(state): State<Shared>,
    Path(symbol): Path<String>,
) -> Result<Json<InstrumentDetail>, ApiError> {
    let symbol = parse_symbol(&symbol)?;
    let found = match &state.instruments {
        Some(resource) => {
            state.caching.counters().lookup("instrument");
            resource.get(&symbol).await?
        }
        None => {
            state.caching.counters().lookup("instrument");
            state.caching.counters().load("instrument");
            queries::instrument_detail(&state.db, &symbol).await?
        }
    };
    found
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("unknown symbol {symbol:?}")))
}

/// Loads instrument details for the read-through resource, from their
/// parts (which count their own database loads).
pub struct DetailLoader {
    /// The database.
    pub db: Db,
    /// The cache the parts are in.
    pub caching: Caching,
}

impl Loader<String, InstrumentDetail> for DetailLoader {
    type Error = ApiError;

    async fn load(&self, symbol: &String) -> Result<Option<InstrumentDetail>, ApiError> {
        crate::parts::detail(&self.caching, &self.db, symbol).await
    }

    async fn load_many(
        &self,
        symbols: &[String],
    ) -> Result<HashMap<String, InstrumentDetail>, ApiError> {
        let mut found = HashMap::with_capacity(symbols.len());
        for symbol in symbols {
            if let Some(detail) = self.load(symbol).await? {
                found.insert(symbol.clone(), detail);
            }
        }
        Ok(found)
    }
}
