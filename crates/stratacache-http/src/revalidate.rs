//! Validating a stored response with the handler (RFC 9111 §4.3): one
//! conditional request per stale version of a response, whatever the number
//! of callers and instances that found it stale, and a `304` that refreshes
//! the stored headers (§4.3.4).
//!
//! The revalidation runs as the load of its own key (the response's key and
//! the version it found stale), so stratacache's single-flight and lease
//! make it one request; its outcome is kept there for a few seconds for
//! callers that read the same version a little late (another instance, an
//! L1 copy not yet replaced). The refreshed response replaces the stored one
//! with `Cache::set`, outside the response key's own load: if an
//! invalidation ran while the conditional request was out, the
//! revalidation's own entry does not survive it, and the replacement is
//! dropped again ([`Lookup::revalidate`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AGE, ETAG, LAST_MODIFIED};
use http::{Request, Response, StatusCode};
use http_body::Body;
use serde::{Deserialize, Serialize};
use stratacache::{LoadContext, Loaded};
use tower::{Service, ServiceExt};

use crate::body::BoxError;
use crate::cache_control::ResponseDirectives;
use crate::cached_response::CachedResponse;
use crate::fill::Received;
use crate::freshness::{now_ms, Timing};
use crate::key;
use crate::lookup::{lock, Lookup, SharedSlot};
use crate::reuse::{self, StalePolicy};
use crate::storable;

/// How long the outcome of a revalidation is kept under its own key.
const REVALIDATION_MEMORY: Duration = Duration::from_secs(10);

/// What validating a stored response gave.
// Nearly every value carries a response; boxing would add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Revalidated {
    /// The handler confirmed it (`304`): the stored response, updated.
    Validated(CachedResponse),
    /// The handler sent a new response, stored in its place.
    Replaced(CachedResponse),
    /// The handler failed, or answered 500, 502, 503 or 504, and the caller
    /// that ran the validation may serve the stored response instead.
    OriginFailed,
    /// Nothing another caller can use; the handler's answer, if any, is in
    /// the slot of the caller that ran the validation.
    Unusable,
}

impl Lookup {
    /// Validate `stored`, found stale (or not fresh enough) under
    /// `response_key`. `on_error`: whether this caller may serve `stored`
    /// when the handler fails.
    pub(crate) async fn revalidate<S, ReqBody, ResBody>(
        self: &Arc<Self>,
        inner: S,
        slot: SharedSlot<ReqBody, S::Error>,
        stored: CachedResponse,
        response_key: String,
        on_error: bool,
    ) -> Revalidated
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        ReqBody: Send + 'static,
        ResBody: Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        let validation_key = key::revalidation_key(&response_key, stored.stored_at_ms());
        let options = self.rule.options.clone().ttl(REVALIDATION_MEMORY);
        let loader = {
            let (lookup, slot) = (Arc::clone(self), Arc::clone(&slot));
            let response_key = response_key.clone();
            move |_: LoadContext<Revalidated>| {
                lookup.validate(inner, slot, stored, response_key, on_error)
            }
        };
        let cache = &self.config.cache;
        let outcome = match cache
            .get_or_load_with_context(&validation_key, &options, loader)
            .await
        {
            Ok(fetched) => fetched.into_value().unwrap_or(Revalidated::Unusable),
            Err(err) => {
                tracing::warn!(error = %err, "revalidation failed in the cache");
                Revalidated::Unusable
            }
        };
        let replaced = matches!(
            outcome,
            Revalidated::Validated(_) | Revalidated::Replaced(_)
        );
        if replaced && lock(&slot).ran {
            // Did an invalidation run while the request was out? Then the
            // revalidation's own entry (created when it began) is gone.
            if !matches!(cache.get::<Revalidated>(&validation_key).await, Ok(Some(_))) {
                tracing::debug!("invalidated during its revalidation; dropping the response");
                let _ = cache.delete(&response_key).await;
            }
        }
        outcome
    }

    /// Serve `stored` stale now; validate it in the background.
    pub(crate) fn revalidate_in_background<S, ReqBody, ResBody>(
        self: &Arc<Self>,
        inner: S,
        slot: SharedSlot<ReqBody, S::Error>,
        stored: CachedResponse,
        response_key: String,
    ) where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        ReqBody: Send + 'static,
        ResBody: Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        let lookup = Arc::clone(self);
        // A failure keeps the stale response; nobody waits for the answer.
        tokio::spawn(async move {
            lookup
                .revalidate(inner, slot, stored, response_key, true)
                .await
        });
    }

    /// The loader of a revalidation: a conditional request with the stored
    /// response's validators, then store what it gave.
    async fn validate<S, ReqBody, ResBody>(
        self: Arc<Self>,
        inner: S,
        slot: SharedSlot<ReqBody, S::Error>,
        stored: CachedResponse,
        response_key: String,
        on_error: bool,
    ) -> Result<Loaded<Revalidated>, Infallible>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        ReqBody: Send + 'static,
        ResBody: Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        let unshared = |outcome| Ok(Loaded::value(outcome).dont_cache());
        let request = {
            let mut slot = lock(&slot);
            slot.ran = true;
            slot.request.take()
        };
        let Some(mut request) = request else {
            return unshared(Revalidated::Unusable);
        };
        for (name, value) in stored.validators() {
            request.headers_mut().insert(name, value);
        }
        let requested_at = now_ms();
        let response = match inner.oneshot(request).await {
            Ok(response) => response,
            Err(_) if on_error => return unshared(Revalidated::OriginFailed),
            Err(err) => {
                lock(&slot).answer = Some(Err(err));
                return unshared(Revalidated::Unusable);
            }
        };
        let status = response.status();
        if status == StatusCode::NOT_MODIFIED {
            let (refreshed, keep) = self.refreshed(stored, response.headers(), requested_at);
            if let Some(keep) = keep {
                self.store(&response_key, &refreshed, keep).await;
            }
            return Ok(self.remembered(Revalidated::Validated(refreshed)));
        }
        // RFC 5861 §4: errors that a stale response may stand in for.
        let error = matches!(status.as_u16(), 500 | 502 | 503 | 504);
        if error && on_error {
            return unshared(Revalidated::OriginFailed);
        }
        match self.receive(response, requested_at).await {
            Received::Storable { stored, keep } => {
                self.store(&response_key, &stored, keep).await;
                Ok(self.remembered(Revalidated::Replaced(stored)))
            }
            Received::NotStorable(response) => {
                lock(&slot).answer = Some(Ok(response));
                unshared(Revalidated::Unusable)
            }
        }
    }

    /// `stored` updated by a `304` with `headers`, its age and freshness
    /// computed afresh, and how long to keep it (`None`: not to be stored,
    /// as the updated fields now forbid).
    fn refreshed(
        &self,
        stored: CachedResponse,
        headers: &http::HeaderMap,
        requested_at: u64,
    ) -> (CachedResponse, Option<Duration>) {
        let received_at = now_ms();
        let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
        let mut updated = stored.updated_by(headers);
        // The 304's own `Age` counts towards the refreshed response's age.
        let mut fields = updated.headers().clone();
        if let Some(age) = headers.get(AGE) {
            fields.insert(AGE, age.clone());
        }
        let directives = ResponseDirectives::select(&fields, &self.config.targeted_fields);
        let timing = Timing::of(
            status,
            &fields,
            &directives,
            self.rule.unstated,
            requested_at,
            received_at,
        );
        updated.stale = StalePolicy::of(&directives, &self.rule);
        updated.timing = timing.unwrap_or(Timing {
            response_time_ms: received_at,
            corrected_initial_age_ms: 0,
            lifetime_ms: 0,
        });
        let storable = storable::check(status, &fields, &directives, self.per_user).is_ok();
        let has_validator = fields.contains_key(ETAG) || fields.contains_key(LAST_MODIFIED);
        let keep = reuse::keep_ms(
            &updated.timing,
            &updated.stale,
            has_validator,
            self.rule.keep_for_revalidation.as_millis() as u64,
            received_at,
        );
        let keep = (storable && timing.is_some() && keep > 0).then(|| Duration::from_millis(keep));
        (updated, keep)
    }

    fn remembered(&self, outcome: Revalidated) -> Loaded<Revalidated> {
        Loaded::value(outcome)
            .ttl(REVALIDATION_MEMORY)
            .tags(self.tags())
    }
}
