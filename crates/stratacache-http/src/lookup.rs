//! A cacheable request on its way through the cache.
//!
//! The resource spec (its `Vary` list, or "pass") → the stored key →
//! `get_or_load_with_context`, whose loader ([`crate::fill`]) calls the handler
//! once for every caller that misses the same key at once (and, through
//! stratacache's lease, for every instance). A stored response is checked
//! against the request it is about to answer, then [`crate::reuse`] says
//! whether it is fresh enough for this request, may be served stale, or
//! must be validated first ([`crate::revalidate`]).
//!
//! A response that may not be stored is never handed to another caller:
//! the load answers `Uncacheable`, the caller whose request ran gets the
//! handler's own response, and every caller that coalesced on it calls the
//! handler itself with its own request.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::Body;
use stratacache::LoadContext;
use tower::Service;

use crate::body::{self, BoxError, CacheBody};
use crate::cache_control::RequestDirectives;
use crate::cached_response::{CachedResponse, Outcome, ResourceSpec};
use crate::conditional::ClientConditionals;
use crate::freshness::now_ms;
use crate::key;
use crate::layer::Config;
use crate::policy::RouteRule;
use crate::reuse::{self, Use};
use crate::revalidate::Revalidated;
use crate::route::{fill_template, Params};
use crate::service::{marked, pass};

/// One caller's request, shared with the loaders it offers to its key's
/// flights. If a loader runs it takes the request and, when the response
/// cannot be shared, leaves the handler's answer here.
pub(crate) struct Slot<ReqBody, E> {
    pub request: Option<Request<ReqBody>>,
    pub answer: Option<Result<Response<CacheBody>, E>>,
    pub ran: bool,
}

pub(crate) type SharedSlot<ReqBody, E> = Arc<Mutex<Slot<ReqBody, E>>>;

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A cacheable request and what it was admitted with.
pub(crate) struct Lookup {
    pub config: Arc<Config>,
    pub method: Method,
    pub primary: String,
    pub rule: Arc<RouteRule>,
    /// The route parameters and decoded path, for the tags of a stored response.
    pub params: Params,
    pub path: String,
    pub per_user: bool,
    /// The request's headers, without the client's conditionals.
    pub request_headers: HeaderMap,
    pub directives: RequestDirectives,
    pub arrival_ms: u64,
}

/// How many times a caller looks again after being handed a response made
/// for another variant (its resource's `Vary` was just learnt).
const ATTEMPTS: usize = 2;

impl Lookup {
    pub(crate) async fn run<S, ReqBody, ResBody>(
        self,
        inner: S,
        request: Request<ReqBody>,
        client: ClientConditionals,
    ) -> Result<Response<CacheBody>, S::Error>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        ReqBody: Send + 'static,
        ResBody: Body<Data = Bytes> + Send + 'static,
        ResBody::Error: Into<BoxError>,
    {
        let lookup = Arc::new(self);
        let slot: SharedSlot<ReqBody, S::Error> = Arc::new(Mutex::new(Slot {
            request: Some(request),
            answer: None,
            ran: false,
        }));
        let cache = &lookup.config.cache;
        let spec_key = key::vary_spec_key(&lookup.primary);
        // Ranges and `only-if-cached` are answered from what is stored, or
        // not at all: the handler is never asked for them on the cache's behalf.
        let read_only = client.range.is_some() || lookup.directives.only_if_cached;
        let mut known_unstorable = false;
        for _ in 0..ATTEMPTS {
            let spec: Option<ResourceSpec> = cache.get(&spec_key).await.ok().flatten();
            if spec.as_ref().is_some_and(|spec| spec.pass) {
                known_unstorable = true;
                break;
            }
            let names = spec
                .as_ref()
                .map(|spec| spec.vary.clone())
                .unwrap_or_default();
            let vary = key::vary_values(&lookup.request_headers, &names);
            let response_key = key::response_key(&lookup.primary, &vary);
            if read_only {
                if let Some(answer) = lookup.answer_from_store(&response_key, &client).await {
                    return Ok(answer);
                }
                break;
            }
            let loader = {
                let (lookup, slot, inner) = (Arc::clone(&lookup), Arc::clone(&slot), inner.clone());
                move |_: LoadContext<Outcome>| lookup.load(inner, slot, spec, names)
            };
            let fetched = match cache
                .get_or_load_with_context(&response_key, &lookup.rule.options, loader)
                .await
            {
                Ok(fetched) => fetched,
                Err(err) => {
                    tracing::warn!(error = %err, "HTTP cache lookup failed; calling the handler");
                    break;
                }
            };
            let Some(Outcome::Stored(stored)) = fetched.into_value() else {
                break;
            };
            if !lookup.serves(&stored) {
                continue;
            }
            // Made after this request arrived: it waited for that load (a
            // coalesced miss). Same millisecond counts as before: a hit.
            if lock(&slot).ran || stored.stored_at_ms() > lookup.arrival_ms {
                return Ok(lookup.answer(stored, &client, "MISS"));
            }
            match reuse::decide(&stored.timing, &stored.stale, &lookup.directives, now_ms()) {
                Use::Fresh => return Ok(lookup.answer(stored, &client, "HIT")),
                Use::Stale { refresh } => {
                    if refresh {
                        lookup.revalidate_in_background(
                            inner.clone(),
                            Arc::clone(&slot),
                            stored.clone(),
                            response_key,
                        );
                    }
                    return Ok(lookup.answer(stored, &client, "STALE"));
                }
                Use::Validate { on_error } => {
                    // Boxed: kept inline, this rare path's state would make
                    // every request's future a few KB larger, which costs
                    // about a tenth of the throughput of hits under load.
                    let outcome = Box::pin(lookup.revalidate(
                        inner.clone(),
                        Arc::clone(&slot),
                        stored.clone(),
                        response_key,
                        on_error,
                    ))
                    .await;
                    match outcome {
                        Revalidated::Validated(fresh) if lookup.serves(&fresh) => {
                            return Ok(lookup.answer(fresh, &client, "REVALIDATED"))
                        }
                        Revalidated::Replaced(fresh) if lookup.serves(&fresh) => {
                            return Ok(lookup.answer(fresh, &client, "MISS"))
                        }
                        Revalidated::OriginFailed if on_error => {
                            return Ok(lookup.answer(stored, &client, "STALE"))
                        }
                        _ => break,
                    }
                }
            }
        }
        if lookup.directives.only_if_cached {
            return Ok(gateway_timeout());
        }
        // Not answered from the cache: this caller's own handler answer, or a
        // call of the handler with its own request.
        let (answer, request) = {
            let mut slot = lock(&slot);
            (slot.answer.take(), slot.request.take())
        };
        if let Some(answer) = answer {
            return answer.map(|response| marked(response, "MISS"));
        }
        if let Some(mut request) = request {
            client.restore(request.headers_mut());
            let x_cache = if known_unstorable { "PASS" } else { "MISS" };
            return pass(inner, request, Some(x_cache)).await;
        }
        // This caller's request went into a load that ended without an answer
        // (the handler panicked, say).
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::BAD_GATEWAY;
        Ok(marked(response, "MISS"))
    }

    /// The stored response for `response_key`, if it may answer this
    /// request without asking the handler (fresh, or stale as allowed).
    async fn answer_from_store(
        &self,
        response_key: &str,
        client: &ClientConditionals,
    ) -> Option<Response<CacheBody>> {
        let stored = match self.config.cache.get::<Outcome>(response_key).await {
            Ok(Some(Outcome::Stored(stored))) if self.serves(&stored) => stored,
            _ => return None,
        };
        match reuse::decide(&stored.timing, &stored.stale, &self.directives, now_ms()) {
            Use::Fresh => Some(self.answer(stored, client, "HIT")),
            Use::Stale { .. } => Some(self.answer(stored, client, "STALE")),
            Use::Validate { .. } => None,
        }
    }

    /// Whether `stored` was produced for a request like this one.
    pub(crate) fn serves(&self, stored: &CachedResponse) -> bool {
        let wanted = key::vary_values(&self.request_headers, &stored.vary_names());
        stored.serves(&self.primary, &wanted)
    }

    fn answer(
        &self,
        stored: CachedResponse,
        client: &ClientConditionals,
        x_cache: &'static str,
    ) -> Response<CacheBody> {
        stored.answer(&self.method, client, x_cache, now_ms())
    }

    /// The tags of a stored response: the route's, filled from its
    /// parameters, and the path's own. Computed on loads only, not on hits.
    pub(crate) fn tags(&self) -> Vec<String> {
        let mut tags: Vec<String> = self
            .rule
            .tags
            .iter()
            .map(|t| fill_template(t, &self.params))
            .collect();
        tags.push(self.config.path_tag(&self.path));
        tags
    }
}

/// The answer to `only-if-cached` when nothing stored may answer (§5.2.1.7).
fn gateway_timeout() -> Response<CacheBody> {
    let mut response = Response::new(body::empty());
    *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    marked(response, "MISS")
}
