//! Per-route rules: how long a route's responses live, their tags, whether
//! they may be served stale, and whose they are.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::HeaderName;
use stratacache::EntryOptions;

/// Identifies the user a request is served for, for routes whose responses
/// differ per user. Only a digest of what it returns enters cache keys.
///
/// ```
/// use stratacache_http::UserScope;
///
/// let by_session = UserScope::cookie("id");           // tower-sessions' default cookie
/// let by_token = UserScope::authorization();
/// let custom = UserScope::from_fn(|parts| {
///     parts.headers.get("x-user-id")?.to_str().ok().map(str::to_owned)
/// });
/// # let _ = (by_session, by_token, custom);
/// ```
#[derive(Clone)]
pub struct UserScope(Arc<Identify>);

/// A function naming the user of a request.
type Identify = dyn Fn(&Parts) -> Option<String> + Send + Sync;

impl UserScope {
    /// The user is whoever presents this `Authorization` header value.
    pub fn authorization() -> Self {
        Self::from_fn(|parts| {
            let value = parts.headers.get(http::header::AUTHORIZATION)?;
            Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
        })
    }

    /// The user is whoever presents this cookie (a session cookie).
    pub fn cookie(name: impl Into<String>) -> Self {
        let name = name.into();
        Self::from_fn(move |parts| crate::safety::cookie_value(&parts.headers, &name))
    }

    /// The user is named by the value of `header` (set by an authenticating
    /// proxy, say). A header the client can set itself identifies nobody:
    /// use this only behind a proxy that overwrites it.
    pub fn header(header: HeaderName) -> Self {
        Self::from_fn(move |parts| {
            let value = parts.headers.get(&header)?;
            Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
        })
    }

    /// Any function of the request head; `None` means an anonymous request.
    pub fn from_fn<F>(identify: F) -> Self
    where
        F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        Self(Arc::new(identify))
    }

    pub(crate) fn identify(&self, parts: &Parts) -> Option<String> {
        (self.0)(parts).filter(|id| !id.is_empty())
    }
}

impl fmt::Debug for UserScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UserScope(..)")
    }
}

/// How the responses of one route are cached.
///
/// ```
/// use std::time::Duration;
/// use stratacache_http::{RouteRule, UserScope};
///
/// let product = RouteRule::new()
///     .ttl(Duration::from_secs(60))
///     .stale_for(Duration::from_secs(300))   // serve stale at once, refresh in the background
///     .tag("products")
///     .tag("product:{id}");                  // filled from the route's `{id}`
/// let cart = RouteRule::new().ttl(Duration::from_secs(5)).per_user(UserScope::cookie("id"));
/// # let _ = (product, cart);
/// ```
#[derive(Debug, Clone)]
pub struct RouteRule {
    pub(crate) options: EntryOptions,
    pub(crate) ttl: Duration,
    pub(crate) stale_for: Duration,
    pub(crate) tags: Vec<String>,
    pub(crate) user_scope: Option<UserScope>,
    pub(crate) key_headers: Vec<HeaderName>,
}

impl Default for RouteRule {
    fn default() -> Self {
        Self::new()
    }
}

impl RouteRule {
    /// Fresh for 60 seconds, no stale window, no tags, shared by all users.
    pub fn new() -> Self {
        let ttl = Duration::from_secs(60);
        Self {
            options: EntryOptions::new().ttl(ttl),
            ttl,
            stale_for: Duration::ZERO,
            tags: Vec::new(),
            user_scope: None,
            key_headers: Vec::new(),
        }
    }

    /// Start from entry options (a named policy's, say); their TTL is the
    /// route's TTL and their tags are added to the route's. Set the stale
    /// window with [`stale_for`](Self::stale_for) on the rule, not in the
    /// options, so the layer knows it.
    pub fn from_options(options: EntryOptions) -> Self {
        Self {
            ttl: options.get_ttl(),
            tags: options.get_tags().to_vec(),
            options,
            ..Self::new()
        }
    }

    /// How long a response stays fresh when it does not say
    /// (`s-maxage` or `max-age` in its `Cache-Control` win).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self.options = self.options.ttl(ttl);
        self
    }

    /// Serve an expired response for this long (`X-Cache: STALE`) while one
    /// background call of the handler refreshes it.
    pub fn stale_for(mut self, window: Duration) -> Self {
        self.stale_for = window;
        self.options = self.options.stale_for(window);
        self
    }

    /// Tag the route's responses. `{name}` is replaced by the route
    /// parameter of that name; an unsafe request to a path of this route
    /// invalidates the same tags.
    pub fn tag(mut self, template: impl Into<String>) -> Self {
        self.tags.push(template.into());
        self
    }

    /// Key responses per user, as identified by `scope`. Requests carrying
    /// credentials are cached only on such routes; a `Cache-Control: private`
    /// response is stored only on such routes. The scope must name whatever
    /// the handler tells users apart by (the session cookie when the handler
    /// reads the session, the token when it reads `Authorization`).
    pub fn per_user(mut self, scope: UserScope) -> Self {
        self.user_scope = Some(scope);
        self
    }

    /// Make a request header part of the key, whether or not responses name
    /// it in `Vary`: any header the handler reads must be keyed one way or
    /// the other.
    pub fn key_header(mut self, name: HeaderName) -> Self {
        self.key_headers.push(name);
        self
    }
}
