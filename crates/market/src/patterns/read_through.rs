//! Read-through: `GET /api/instruments/{symbol}`, an instrument's detail.
//!
//! The route talks to a `stratacache::Resource` bound to a [`DetailLoader`]
//! and never to the database: a miss calls the loader (once per key across
//! every instance), and an unknown symbol is cached as absent for the
//! `instrument` policy's `negative_ttl`, so a scan of made-up symbols costs
//! the database one query per symbol per minute. The loader composes the
//! detail from its cached parts ([`crate::parts`]) rather than running the
//! one-query join; with `--cache off` the join answers directly.

use std::collections::HashMap;

use stratacache::{Loader, Resource};

use crate::caching::Caching;
use crate::db::{queries, Db};
use crate::error::ApiError;
use crate::model::InstrumentDetail;
use crate::policy::Policy;

/// The read-through resource of instrument details.
pub type InstrumentResource = Resource<String, InstrumentDetail, DetailLoader>;

/// Instrument details: through the resource with the cache on, from the
/// database with it off.
pub struct InstrumentDetails {
    resource: Option<InstrumentResource>,
    caching: Caching,
    db: Db,
}

impl InstrumentDetails {
    /// Details of `caching`'s cache (none with the cache off) from `db`.
    pub fn new(caching: &Caching, db: &Db) -> Result<Self, ApiError> {
        let resource = match caching.cache() {
            Some(cache) => Some(Resource::new(
                cache.clone(),
                Policy::Instrument.name(),
                caching.options(Policy::Instrument)?,
                DetailLoader {
                    db: db.clone(),
                    caching: caching.clone(),
                },
            )),
            None => None,
        };
        Ok(Self {
            resource,
            caching: caching.clone(),
            db: db.clone(),
        })
    }

    /// The detail of `symbol`; `None` for an unknown symbol.
    pub async fn get(&self, symbol: &str) -> Result<Option<InstrumentDetail>, ApiError> {
        let counters = self.caching.counters();
        counters.lookup(Policy::Instrument);
        match &self.resource {
            Some(resource) => Ok(resource.get(&symbol.to_string()).await?),
            None => {
                counters.load(Policy::Instrument);
                queries::instrument_detail(&self.db, symbol).await
            }
        }
    }
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
