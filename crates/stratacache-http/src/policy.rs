//! Per-route rules: where freshness comes from when a response states
//! none, when stale answers are allowed, the tags of stored responses, and
//! whose they are.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::HeaderName;
use stratacache::EntryOptions;

use crate::freshness::Unstated;

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
/// By default a route follows RFC 9111 as a shared cache: a response is
/// fresh for its `s-maxage`, `max-age` or `Expires`, and one that states
/// none gets heuristic freshness (a tenth of the time since its
/// `Last-Modified`, §4.2.2) or is not reused. The rule can override that
/// for an application's own handlers, allow stale answers where responses
/// do not forbid them, tag responses and key them per user.
///
/// ```
/// use std::time::Duration;
/// use stratacache_http::{RouteRule, UserScope};
///
/// let product = RouteRule::new()
///     .ttl(Duration::from_secs(60))            // for responses that state no freshness
///     .stale_for(Duration::from_secs(300))     // serve stale at once, refresh in the background
///     .stale_if_error(Duration::from_secs(3600))
///     .tag("products")
///     .tag("product:{id}");                    // filled from the route's `{id}`
/// let cart = RouteRule::new().ttl(Duration::from_secs(5)).per_user(UserScope::cookie("id"));
/// let strict = RouteRule::new().explicit_freshness_only();
/// # let _ = (product, cart, strict);
/// ```
#[derive(Debug, Clone)]
pub struct RouteRule {
    /// The options of stored entries (never the core's stale window: the
    /// layer decides what may be served stale).
    pub(crate) options: EntryOptions,
    pub(crate) unstated: Unstated,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) keep_for_revalidation: Duration,
    pub(crate) tags: Vec<String>,
    pub(crate) user_scope: Option<UserScope>,
    pub(crate) key_headers: Vec<HeaderName>,
}

impl Default for RouteRule {
    fn default() -> Self {
        Self::new()
    }
}

/// How long a stale response with a validator is kept by default, to be
/// revalidated with a conditional request.
const DEFAULT_KEEP_FOR_REVALIDATION: Duration = Duration::from_secs(600);

impl RouteRule {
    /// RFC 9111 freshness, heuristics as §4.2.2 allows, no stale answers
    /// beyond what responses allow, no tags, shared by all users.
    pub fn new() -> Self {
        Self {
            options: EntryOptions::new(),
            unstated: Unstated::Heuristic,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            keep_for_revalidation: DEFAULT_KEEP_FOR_REVALIDATION,
            tags: Vec::new(),
            user_scope: None,
            key_headers: Vec::new(),
        }
    }

    /// Start from entry options (a named policy's, say): their TTL becomes
    /// the route's [`ttl`](Self::ttl) and their tags are added to the
    /// route's. Their stale window is not used: set
    /// [`stale_for`](Self::stale_for) on the rule, where the layer can
    /// check it against what each response allows.
    pub fn from_options(options: EntryOptions) -> Self {
        let ttl = options.configured_ttl();
        Self {
            tags: options.configured_tags().to_vec(),
            options: options.stale_for(Duration::ZERO),
            ..Self::new()
        }
        .ttl(ttl)
    }

    /// How long a response that states no freshness (no `s-maxage`,
    /// `max-age` or `Expires`) is fresh, instead of heuristic freshness: for
    /// an application's own handlers, whose data the application knows.
    /// A response's own freshness always wins.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.unstated = Unstated::Fixed(ttl);
        self
    }

    /// Store only responses with explicit freshness (`s-maxage`, `max-age`
    /// or `Expires`; `no-cache` and `max-age=0` count, and are validated on
    /// every use): no heuristic freshness, no route TTL.
    pub fn explicit_freshness_only(mut self) -> Self {
        self.unstated = Unstated::NotStored;
        self
    }

    /// Serve a response up to this long past its freshness at once
    /// (`X-Cache: STALE`) while one background request revalidates it —
    /// unless the response forbids stale answers (`no-cache`,
    /// `must-revalidate`, `proxy-revalidate`, `s-maxage`) or states its own
    /// `stale-while-revalidate`, which then applies instead.
    pub fn stale_for(mut self, window: Duration) -> Self {
        self.stale_while_revalidate = window;
        self
    }

    /// Serve a response up to this long past its freshness when the handler
    /// fails or answers 500, 502, 503 or 504 — unless the response forbids
    /// stale answers or states its own `stale-if-error`, which then applies
    /// instead.
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = window;
        self
    }

    /// How long a response that is no longer fresh, but has a validator
    /// (`ETag` or `Last-Modified` from the handler), is kept to be
    /// revalidated with a conditional request (10 minutes by default).
    pub fn keep_for_revalidation(mut self, window: Duration) -> Self {
        self.keep_for_revalidation = window;
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

    /// The route's TTL, if it set one.
    pub(crate) fn fixed_ttl(&self) -> Option<Duration> {
        match self.unstated {
            Unstated::Fixed(ttl) => Some(ttl),
            _ => None,
        }
    }
}
