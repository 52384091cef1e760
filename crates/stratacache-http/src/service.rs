//! The request flow of the layer.
//!
//! GET/HEAD on a cached route: admit (credentials, host tricks; see
//! [`crate::safety`]) → primary key → the resource spec (its `Vary` list, or "pass") → the stored
//! key → `get_or_load_entry`, whose loader calls the handler once for every
//! caller that misses the same key at once (and, through stratacache's lease,
//! for every instance). A stored response is checked against the request it
//! is about to answer before it is served.
//!
//! A response that may not be stored is never handed to another caller:
//! the load answers `Uncacheable`, the caller whose request ran gets the
//! handler's own response, and every caller that coalesced on it calls the
//! handler itself with its own request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{IF_MODIFIED_SINCE, IF_NONE_MATCH};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use stratacache::{EntryOptions, LoadContext, Loaded};
use tower::{Service, ServiceExt};

use crate::body::{self, BoxError, CacheBody, Collected};
use crate::cache_control;
use crate::cached_response::{now_ms, CachedResponse, Outcome, ResourceSpec, X_CACHE};
use crate::key;
use crate::layer::Config;
use crate::policy::RouteRule;
use crate::route::{fill_template, Params};
use crate::safety::Admission;

/// The service an [`HttpCacheLayer`](crate::HttpCacheLayer) wraps around a handler.
#[derive(Clone)]
pub struct HttpCache<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> HttpCache<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for HttpCache<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<CacheBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<CacheBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // The clone that was driven to readiness serves this call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(handle(Arc::clone(&self.config), inner, request))
    }
}

async fn handle<S, ReqBody, ResBody>(
    config: Arc<Config>,
    inner: S,
    request: Request<ReqBody>,
) -> Result<Response<CacheBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD {
        if crate::invalidate::is_unsafe(&method) {
            return crate::invalidate::after_unsafe(&config, inner, request).await;
        }
        return pass(inner, request, None).await;
    }
    let (mut parts, body) = request.into_parts();
    let path = key::decoded_path(parts.uri.path());
    let Some((rule, params)) = config.rule_for(&path) else {
        return pass(inner, Request::from_parts(parts, body), None).await;
    };
    let user = match config.safety.admit(&parts, rule) {
        Admission::Cache { user } => user,
        Admission::Bypass(reason) => {
            tracing::debug!(path = %path, reason, "request bypasses the HTTP cache");
            return pass(inner, Request::from_parts(parts, body), Some("BYPASS")).await;
        }
    };
    let primary = key::primary(&parts, rule, &config.safety.keyed_headers, user.as_deref());
    // The handler must answer in full: conditional requests are this layer's
    // job, and a 304 from the handler must never be stored.
    let conditionals = Conditionals::take(&mut parts.headers);
    let lookup = Lookup {
        rule: Arc::clone(rule),
        params,
        path,
        per_user: user.is_some(),
        request_headers: parts.headers.clone(),
        method,
        primary,
        arrival_ms: now_ms(),
        config,
    };
    lookup
        .run(inner, Request::from_parts(parts, body), conditionals)
        .await
}

/// The client's conditional headers, kept from the handler.
struct Conditionals {
    if_none_match: Option<HeaderValue>,
    if_modified_since: Option<HeaderValue>,
}

impl Conditionals {
    fn take(headers: &mut HeaderMap) -> Self {
        Self {
            if_none_match: headers.remove(IF_NONE_MATCH),
            if_modified_since: headers.remove(IF_MODIFIED_SINCE),
        }
    }

    fn restore(self, headers: &mut HeaderMap) {
        if let Some(value) = self.if_none_match {
            headers.insert(IF_NONE_MATCH, value);
        }
        if let Some(value) = self.if_modified_since {
            headers.insert(IF_MODIFIED_SINCE, value);
        }
    }
}

/// One caller's request, shared with the loader it offers to its key's
/// flight. If that loader runs it takes the request and, when the response
/// is not storable, leaves the handler's answer here.
struct Slot<ReqBody, E> {
    request: Option<Request<ReqBody>>,
    answer: Option<Result<Response<CacheBody>, E>>,
    ran: bool,
}

type SharedSlot<ReqBody, E> = Arc<Mutex<Slot<ReqBody, E>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A cacheable request on its way through the cache.
struct Lookup {
    config: Arc<Config>,
    method: Method,
    primary: String,
    rule: Arc<RouteRule>,
    /// The route parameters and decoded path, for the tags of a stored response.
    params: Params,
    path: String,
    per_user: bool,
    request_headers: HeaderMap,
    arrival_ms: u64,
}

/// How long a resource whose responses were not storable is passed straight
/// to the handler before the layer tries to store one again.
const UNSTORABLE_MEMORY: Duration = Duration::from_secs(30);

/// How many times a caller looks again after being handed a response made
/// for another variant (its resource's `Vary` was just learnt).
const ATTEMPTS: usize = 2;

impl Lookup {
    async fn run<S, ReqBody, ResBody>(
        self,
        inner: S,
        request: Request<ReqBody>,
        conditionals: Conditionals,
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
            let loader = {
                let (lookup, slot, inner) = (Arc::clone(&lookup), Arc::clone(&slot), inner.clone());
                move |_: LoadContext<Outcome>| lookup.load(inner, slot, spec, names)
            };
            let fetched = match cache
                .get_or_load_entry(&response_key, &lookup.rule.options, loader)
                .await
            {
                Ok(fetched) => fetched,
                Err(err) => {
                    tracing::warn!(error = %err, "HTTP cache lookup failed; calling the handler");
                    break;
                }
            };
            let stale = fetched.is_stale();
            let Some(Outcome::Stored(stored)) = fetched.into_value() else {
                break;
            };
            let wanted = key::vary_values(&lookup.request_headers, &stored.vary_names());
            if !stored.serves(&lookup.primary, &wanted) {
                continue;
            }
            // Made after this request arrived: it waited for that load (a
            // coalesced miss). Same millisecond counts as before: a hit.
            let x_cache = if stale {
                "STALE"
            } else if lock(&slot).ran || stored.stored_at_ms > lookup.arrival_ms {
                "MISS"
            } else {
                "HIT"
            };
            return Ok(stored.answer(&lookup.method, conditionals.if_none_match.as_ref(), x_cache));
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
            conditionals.restore(request.headers_mut());
            let x_cache = if known_unstorable { "PASS" } else { "MISS" };
            return pass(inner, request, Some(x_cache)).await;
        }
        // This caller's request went into a load that ended without an answer
        // (the handler panicked, say).
        let mut response = Response::new(body::empty());
        *response.status_mut() = StatusCode::BAD_GATEWAY;
        Ok(marked(response, "MISS"))
    }

    /// The loader offered to the key's flight: call the handler and decide
    /// what of its response is stored.
    async fn load<S, ReqBody, ResBody>(
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
        let response = match inner.oneshot(request).await {
            Ok(response) => response,
            Err(err) => {
                lock(&slot).answer = Some(Err(err));
                return uncacheable();
            }
        };
        let (head, handler_body) = response.into_parts();
        let ttl = match cache_control::storable(
            head.status,
            &head.headers,
            self.rule.ttl,
            self.per_user,
        ) {
            Ok(ttl) => ttl,
            Err(why) => {
                tracing::debug!(reason = why.as_str(), status = %head.status, "response not stored");
                // A server error says nothing lasting about the resource.
                if !head.status.is_server_error() {
                    self.remember_unstorable(&head.headers).await;
                }
                lock(&slot).answer =
                    Some(Ok(Response::from_parts(head, body::boxed(handler_body))));
                return uncacheable();
            }
        };
        let bytes =
            match body::collect_bounded(Box::pin(handler_body), self.config.max_body_bytes).await {
                Collected::Complete(bytes) => bytes,
                Collected::TooLarge(whole) => {
                    self.remember_unstorable(&head.headers).await;
                    lock(&slot).answer = Some(Ok(Response::from_parts(head, body::boxed(whole))));
                    return uncacheable();
                }
                Collected::Failed(err) => {
                    tracing::warn!(error = %err, "handler body failed; answering 502");
                    let mut response = Response::new(body::empty());
                    *response.status_mut() = StatusCode::BAD_GATEWAY;
                    lock(&slot).answer = Some(Ok(response));
                    return uncacheable();
                }
            };
        let names = key::vary_names(&head.headers);
        let vary = key::vary_values(&self.request_headers, &names);
        let stored =
            CachedResponse::new(head.status, head.headers, bytes, self.primary.clone(), vary);
        let cache = &self.config.cache;
        let known = ResourceSpec {
            vary: names.clone(),
            pass: false,
        };
        if spec.as_ref() != Some(&known) {
            // As long as the responses it describes; a load that sees another
            // `Vary` rewrites it, so it is never wrong for long.
            let lifetime = ttl.max(self.rule.ttl) + self.rule.stale_for;
            self.remember(&known, lifetime).await;
        }
        if names != assumed_vary {
            // The response belongs under another key than this load's: store
            // it there, and hand it to this load's callers unstored (each
            // checks it against its own request).
            let response_key = key::response_key(&self.primary, &stored.vary);
            let outcome = Outcome::Stored(stored.clone());
            if let Err(err) = cache
                .set(
                    &response_key,
                    &outcome,
                    &self.rule.options.clone().ttl(ttl).tags(self.tags()),
                )
                .await
            {
                tracing::warn!(error = %err, "could not store the response");
            }
            return Ok(Loaded::value(Outcome::Stored(stored)).dont_cache());
        }
        Ok(Loaded::value(Outcome::Stored(stored))
            .ttl(ttl)
            .tags(self.tags()))
    }

    /// Remember that this resource's responses are not storable, for a
    /// while: requests then go straight to the handler, in parallel, instead
    /// of each waiting for one load to find it out again.
    async fn remember_unstorable(&self, response_headers: &HeaderMap) {
        let spec = ResourceSpec {
            vary: key::vary_names(response_headers),
            pass: true,
        };
        self.remember(&spec, self.rule.ttl.min(UNSTORABLE_MEMORY))
            .await;
    }

    async fn remember(&self, spec: &ResourceSpec, lifetime: Duration) {
        let options = EntryOptions::new().ttl(lifetime);
        let spec_key = key::vary_spec_key(&self.primary);
        if let Err(err) = self.config.cache.set(&spec_key, spec, &options).await {
            tracing::warn!(error = %err, "could not store what is known of a resource");
        }
    }

    /// The tags of a stored response: the route's, filled from its
    /// parameters, and the path's own. Computed on loads only, not on hits.
    fn tags(&self) -> Vec<String> {
        let mut tags: Vec<String> = self
            .rule
            .tags
            .iter()
            .map(|t| fill_template(t, &self.params))
            .collect();
        tags.push(key::path_tag(&self.path));
        tags
    }
}

/// Call the handler without the cache.
pub(crate) async fn pass<S, ReqBody, ResBody>(
    inner: S,
    request: Request<ReqBody>,
    x_cache: Option<&'static str>,
) -> Result<Response<CacheBody>, S::Error>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    let response = inner.oneshot(request).await?.map(body::boxed);
    Ok(match x_cache {
        Some(x_cache) => marked(response, x_cache),
        None => response,
    })
}

fn marked(mut response: Response<CacheBody>, x_cache: &'static str) -> Response<CacheBody> {
    response
        .headers_mut()
        .insert(X_CACHE, HeaderValue::from_static(x_cache));
    response
}
