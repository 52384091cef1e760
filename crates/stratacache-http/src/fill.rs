//! Filling the cache from the handler: the loader of a miss, and what of a
//! handler's response is stored ([`Lookup::receive`], shared with
//! revalidation).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ETAG, LAST_MODIFIED};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body;
use stratacache::{EntryOptions, Loaded};
use tower::{Service, ServiceExt};

use crate::body::{self, BoxError, CacheBody, Collected};
use crate::cache_control::ResponseDirectives;
use crate::cached_response::{CachedResponse, Outcome, ResourceSpec};
use crate::freshness::{now_ms, Timing};
use crate::key;
use crate::lookup::{lock, Lookup, SharedSlot};
use crate::reuse::{self, StalePolicy};
use crate::storable::{self, NotStored};

/// How long a resource whose responses were not storable is passed straight
/// to the handler before the layer tries to store one again.
const UNSTORABLE_MEMORY: Duration = Duration::from_secs(30);

/// What became of a handler's response.
pub(crate) enum Received {
    /// To be stored, for `keep`.
    Storable {
        stored: CachedResponse,
        keep: Duration,
    },
    /// For the caller whose request it answered, and nobody else.
    NotStorable(Response<CacheBody>),
}

impl Lookup {
    /// The loader offered to the key's flight on a miss: call the handler
    /// and decide what of its response is stored.
    pub(crate) async fn load<S, ReqBody, ResBody>(
        self: Arc<Self>,
        inner: S,
        slot: SharedSlot<ReqBody, S::Error>,
        spec: Option<ResourceSpec>,
        assumed_vary: Vec<String>,
    ) -> Result<Loaded<Outcome>, Infallible>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        ReqBody: Send + 'static,
        ResBody: Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        let uncacheable = || Ok(Loaded::value(Outcome::Uncacheable).dont_cache());
        let request = {
            let mut slot = lock(&slot);
            slot.ran = true;
            slot.request.take()
        };
        let Some(request) = request else {
            return uncacheable();
        };
        let requested_at = now_ms();
        let response = match inner.oneshot(request).await {
            Ok(response) => response,
            Err(err) => {
                lock(&slot).answer = Some(Err(err));
                return uncacheable();
            }
        };
        let (stored, keep) = match self.receive(response, requested_at).await {
            Received::Storable { stored, keep } => (stored, keep),
            Received::NotStorable(response) => {
                lock(&slot).answer = Some(Ok(response));
                return uncacheable();
            }
        };
        let names = stored.vary_names();
        let known = ResourceSpec {
            vary: names.clone(),
            pass: false,
        };
        if spec.as_ref() != Some(&known) {
            // As long as the response it describes; a load that sees another
            // `Vary` rewrites it, so it is never wrong for long.
            self.remember(&known, keep).await;
        }
        if names != assumed_vary {
            // The response belongs under another key than this load's: store
            // it there, and hand it to this load's callers unstored (each
            // checks it against its own request).
            let response_key = key::response_key(&self.primary, &stored.vary);
            self.store(&response_key, &stored, keep).await;
            return Ok(Loaded::value(Outcome::Stored(stored)).dont_cache());
        }
        Ok(Loaded::value(Outcome::Stored(stored))
            .ttl(keep)
            .tags(self.tags()))
    }

    /// Decide what of a handler's response (to a request sent at
    /// `requested_at`) is stored: RFC 9111 §3 and this layer's rules
    /// ([`storable`]), its freshness ([`Timing`]), how long it is worth
    /// keeping ([`reuse::keep_ms`]), and a body within `max_body_bytes`.
    pub(crate) async fn receive<ResBody>(
        &self,
        response: Response<ResBody>,
        requested_at: u64,
    ) -> Received
    where
        ResBody: Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        let received_at = now_ms();
        let (head, handler_body) = response.into_parts();
        let stored_form = self.stored_form(head.status, &head.headers, requested_at, received_at);
        let (timing, stale, keep) = match stored_form {
            Ok(form) => form,
            Err(why) => {
                tracing::debug!(reason = why.as_str(), status = %head.status, "response not stored");
                // A server error says nothing lasting about the resource.
                if !head.status.is_server_error() {
                    self.remember_unstorable(&head.headers).await;
                }
                return Received::NotStorable(Response::from_parts(
                    head,
                    body::boxed(handler_body),
                ));
            }
        };
        let bytes =
            match body::collect_bounded(Box::pin(handler_body), self.config.max_body_bytes).await {
                Collected::Complete(bytes) => bytes,
                Collected::TooLarge(whole) => {
                    self.remember_unstorable(&head.headers).await;
                    return Received::NotStorable(Response::from_parts(head, body::boxed(whole)));
                }
                Collected::Failed(err) => {
                    tracing::warn!(error = %err, "handler body failed; answering 502");
                    let mut response = Response::new(body::empty());
                    *response.status_mut() = StatusCode::BAD_GATEWAY;
                    return Received::NotStorable(response);
                }
            };
        let names = key::vary_names(&head.headers);
        let vary = key::vary_values(&self.request_headers, &names);
        let stored = CachedResponse::new(
            head.status,
            head.headers,
            bytes,
            (self.primary.clone(), vary),
            timing,
            stale,
        );
        Received::Storable { stored, keep }
    }

    /// The timing, stale rules and keeping time of a response with this
    /// head, or why it is not stored.
    fn stored_form(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        requested_at: u64,
        received_at: u64,
    ) -> Result<(Timing, StalePolicy, Duration), NotStored> {
        let directives = ResponseDirectives::select(headers, &self.config.targeted_fields);
        storable::check(status, headers, &directives, self.per_user)?;
        let timing = Timing::of(
            status,
            headers,
            &directives,
            self.rule.unstated,
            requested_at,
            received_at,
        )
        .ok_or(NotStored::NoFreshness)?;
        let stale = StalePolicy::of(&directives, &self.rule);
        let has_validator = headers.contains_key(ETAG) || headers.contains_key(LAST_MODIFIED);
        let keep = reuse::keep_ms(
            &timing,
            &stale,
            has_validator,
            self.rule.keep_for_revalidation.as_millis() as u64,
            received_at,
        );
        if keep == 0 {
            return Err(NotStored::Expired);
        }
        Ok((timing, stale, Duration::from_millis(keep)))
    }

    /// Store `stored` under `response_key` outside the key's own load.
    pub(crate) async fn store(&self, response_key: &str, stored: &CachedResponse, keep: Duration) {
        let options = self.rule.options.clone().ttl(keep).tags(self.tags());
        let outcome = Outcome::Stored(stored.clone());
        if let Err(err) = self
            .config
            .cache
            .set(response_key, &outcome, &options)
            .await
        {
            tracing::warn!(error = %err, "could not store the response");
        }
    }

    /// Remember that this resource's responses are not storable, for a
    /// while: requests then go straight to the handler, in parallel, instead
    /// of each waiting for one load to find it out again.
    async fn remember_unstorable(&self, response_headers: &HeaderMap) {
        let spec = ResourceSpec {
            vary: key::vary_names(response_headers),
            pass: true,
        };
        let memory = self
            .rule
            .fixed_ttl()
            .filter(|ttl| !ttl.is_zero())
            .map_or(UNSTORABLE_MEMORY, |ttl| ttl.min(UNSTORABLE_MEMORY));
        self.remember(&spec, memory).await;
    }

    async fn remember(&self, spec: &ResourceSpec, lifetime: Duration) {
        let options = EntryOptions::new().ttl(lifetime);
        let spec_key = key::vary_spec_key(&self.primary);
        if let Err(err) = self.config.cache.set(&spec_key, spec, &options).await {
            tracing::warn!(error = %err, "could not store what is known of a resource");
        }
    }
}
