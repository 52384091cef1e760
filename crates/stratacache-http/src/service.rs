//! The tower [`Service`] of the layer, and where each request goes.
//!
//! GET/HEAD on a cached route: admit (credentials, host tricks; see
//! [`crate::safety`]) → the request's own directives (`no-store` bypasses)
//! → primary key → take the client's conditional and range headers (the
//! layer answers them) → [`crate::lookup`]. Unsafe methods go to
//! [`crate::invalidate`]; everything else straight to the handler.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response};
use http_body::Body;
use tower::{Service, ServiceExt};

use crate::body::{self, BoxError, CacheBody};
use crate::cache_control::RequestDirectives;
use crate::cached_response::X_CACHE;
use crate::conditional::ClientConditionals;
use crate::freshness::now_ms;
use crate::key;
use crate::layer::Config;
use crate::lookup::Lookup;
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
    let directives = RequestDirectives::parse(&parts.headers);
    if directives.no_store {
        // Nothing of this exchange may be stored (§5.2.1.5).
        return pass(inner, Request::from_parts(parts, body), Some("BYPASS")).await;
    }
    let primary = key::primary(&parts, rule, &config.safety.keyed_headers, user.as_deref());
    let client = ClientConditionals::take(&mut parts.headers, &method);
    let lookup = Lookup {
        rule: Arc::clone(rule),
        params,
        path,
        per_user: user.is_some(),
        request_headers: parts.headers.clone(),
        directives,
        method,
        primary,
        arrival_ms: now_ms(),
        config,
    };
    lookup
        .run(inner, Request::from_parts(parts, body), client)
        .await
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

pub(crate) fn marked(
    mut response: Response<CacheBody>,
    x_cache: &'static str,
) -> Response<CacheBody> {
    response
        .headers_mut()
        .insert(X_CACHE, HeaderValue::from_static(x_cache));
    response
}
