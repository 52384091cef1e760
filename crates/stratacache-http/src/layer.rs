//! The tower [`Layer`] and its configuration. The layer only builds; the
//! request flow is in [`crate::service`].

use std::sync::Arc;

use http::HeaderName;
use stratacache::Cache;
use tower::Layer;

use crate::error::Error;
use crate::policy::RouteRule;
use crate::route::{Params, RoutePattern};
use crate::safety::Safety;
use crate::service::HttpCache;

/// Caches the responses of the routes it is told about in a stratacache
/// [`Cache`] (L1 in process, L2 in Redis shared by every instance).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use axum::{routing::get, Router};
/// use stratacache::Cache;
/// use stratacache_http::{HttpCacheLayer, RouteRule};
///
/// let cache = Cache::builder().namespace("shop-http").redis_url("redis://127.0.0.1:6379").build().await?;
/// let layer = HttpCacheLayer::builder(cache)
///     .route("/products", RouteRule::new().ttl(Duration::from_secs(30)).tag("products"))
///     .route("/products/{id}", RouteRule::new().ttl(Duration::from_secs(60)).tag("product:{id}").tag("products"))
///     .build()?;
/// let app: Router = Router::new()
///     .route("/products", get(|| async { "[...]" }))
///     .route("/products/{id}", get(|| async { "{...}" }).put(|| async { "saved" }))
///     .layer(layer);
/// # let _ = app; Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpCacheLayer {
    config: Arc<Config>,
}

impl HttpCacheLayer {
    /// Start configuring a layer over `cache`.
    pub fn builder(cache: Cache) -> HttpCacheBuilder {
        HttpCacheBuilder {
            cache,
            routes: Vec::new(),
            default_rule: None,
            safety: Safety::default(),
            max_body_bytes: 1024 * 1024,
            path_tag_buckets: DEFAULT_PATH_TAG_BUCKETS,
            targeted_fields: Vec::new(),
        }
    }
}

/// How many tags path invalidation uses by default (see
/// [`HttpCacheBuilder::path_tag_buckets`]).
const DEFAULT_PATH_TAG_BUCKETS: u32 = 1024;

impl<S> Layer<S> for HttpCacheLayer {
    type Service = HttpCache<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpCache::new(inner, Arc::clone(&self.config))
    }
}

/// Configuration of an [`HttpCacheLayer`].
pub struct HttpCacheBuilder {
    cache: Cache,
    routes: Vec<(String, RouteRule)>,
    default_rule: Option<RouteRule>,
    safety: Safety,
    max_body_bytes: usize,
    path_tag_buckets: u32,
    targeted_fields: Vec<HeaderName>,
}

impl HttpCacheBuilder {
    /// Cache GET and HEAD responses of paths matching `pattern` (axum's
    /// syntax: `/products/{id}`, `/files/{*path}`) by `rule`. The first
    /// matching route wins. Unsafe requests to matching paths invalidate the
    /// rule's tags.
    pub fn route(mut self, pattern: &str, rule: RouteRule) -> Self {
        self.routes.push((pattern.to_string(), rule));
        self
    }

    /// The rule for paths no route matches. Without one they are not cached.
    pub fn default_rule(mut self, rule: RouteRule) -> Self {
        self.default_rule = Some(rule);
        self
    }

    /// Responses whose body is longer are streamed to their client and not
    /// stored (1 MiB by default). Keep it at or below the cache's
    /// `max_value_bytes`.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Cookies that identify nobody and that no handler reads (consent,
    /// analytics): a request carrying only these still uses the cache.
    /// Every other cookie counts as a credential.
    pub fn harmless_cookies<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.safety
            .harmless_cookies
            .extend(names.into_iter().map(Into::into));
        self
    }

    /// Key this request header on every route when present, like the
    /// forwarding headers of [`DEFAULT_KEYED_HEADERS`](crate::DEFAULT_KEYED_HEADERS).
    pub fn keyed_header(mut self, name: HeaderName) -> Self {
        self.safety.keyed_headers.push(name);
        self
    }

    /// Requests carrying this header bypass the cache, like the method
    /// overrides of [`DEFAULT_BYPASS_HEADERS`](crate::DEFAULT_BYPASS_HEADERS).
    pub fn bypass_header(mut self, name: HeaderName) -> Self {
        self.safety.bypass_headers.push(name);
        self
    }

    /// How many tags an unsafe request's path invalidation spreads paths
    /// over (1024 by default). Every invalidated tag keeps a timestamp in
    /// Redis for days, so a tag per path would leave a key behind for every
    /// distinct path ever written; with buckets there are at most this
    /// many, and a write also invalidates the paths that share its bucket
    /// (one in this many).
    pub fn path_tag_buckets(mut self, buckets: u32) -> Self {
        self.path_tag_buckets = buckets;
        self
    }

    /// Follow a cache-control field targeted at this cache (RFC 9213), such
    /// as `CDN-Cache-Control` for a cache in a CDN's place: when a response
    /// carries a valid one, its directives replace `Cache-Control` and
    /// `Expires` for this cache (they are still passed on). Several fields
    /// are tried in the order given.
    pub fn targeted_cache_control(mut self, field: HeaderName) -> Self {
        self.targeted_fields.push(field);
        self
    }

    /// Check the configuration and build the layer.
    pub fn build(self) -> Result<HttpCacheLayer, Error> {
        if self.max_body_bytes == 0 {
            return Err(Error::InvalidSetting(
                "max_body_bytes must be greater than zero",
            ));
        }
        if self.path_tag_buckets == 0 {
            return Err(Error::InvalidSetting(
                "path_tag_buckets must be greater than zero",
            ));
        }
        let routes = self
            .routes
            .into_iter()
            .map(|(pattern, rule)| Ok((RoutePattern::parse(&pattern)?, Arc::new(rule))))
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(HttpCacheLayer {
            config: Arc::new(Config {
                cache: self.cache,
                routes,
                default_rule: self.default_rule.map(Arc::new),
                safety: self.safety,
                max_body_bytes: self.max_body_bytes,
                path_tag_buckets: self.path_tag_buckets,
                targeted_fields: self.targeted_fields,
            }),
        })
    }
}

/// Everything a request needs, shared by all clones of the service.
pub(crate) struct Config {
    pub cache: Cache,
    routes: Vec<(RoutePattern, Arc<RouteRule>)>,
    default_rule: Option<Arc<RouteRule>>,
    pub safety: Safety,
    pub max_body_bytes: usize,
    pub path_tag_buckets: u32,
    pub targeted_fields: Vec<HeaderName>,
}

impl Config {
    /// The rule for a (percent-decoded) path, with the parameters it matched.
    pub fn rule_for(&self, path: &str) -> Option<(&Arc<RouteRule>, Params)> {
        self.routes
            .iter()
            .find_map(|(pattern, rule)| pattern.matches(path).map(|params| (rule, params)))
            .or_else(|| self.default_rule.as_ref().map(|rule| (rule, Vec::new())))
    }

    /// The path tag of a (percent-decoded) path.
    pub fn path_tag(&self, path: &str) -> String {
        crate::key::path_tag(path, self.path_tag_buckets)
    }
}
