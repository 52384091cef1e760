//! What a loader returns ([`Loaded`]), what it is told ([`LoadContext`]),
//! and what a caller gets ([`Fetched`]).

use std::time::Duration;

/// What a loader found, and how it should be cached.
///
/// ```
/// use std::time::Duration;
/// use stratacache::Loaded;
///
/// let hot = Loaded::value(42).ttl(Duration::from_secs(5)).tags(["prices"]);
/// let versioned = Loaded::value(7).etag("row-v18");        // for conditional refresh
/// let missing: Loaded<u32> = Loaded::absent();              // cached as a negative entry
/// let volatile = Loaded::value(7).dont_cache();             // returned, never stored
/// let unchanged: Loaded<u32> = Loaded::not_modified();      // keep the cached value, renew its TTL
/// # let _ = (hot, versioned, missing, volatile, unchanged);
/// ```
#[derive(Debug, Clone)]
pub struct Loaded<V> {
    pub(crate) value: Option<V>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) tags: Option<Vec<String>>,
    pub(crate) etag: Option<String>,
    pub(crate) version: Option<u64>,
    pub(crate) cache: bool,
    pub(crate) not_modified: bool,
}

impl<V> Loaded<V> {
    /// The loader found `value`.
    pub fn value(value: V) -> Self {
        Self {
            value: Some(value),
            ttl: None,
            tags: None,
            etag: None,
            version: None,
            cache: true,
            not_modified: false,
        }
    }

    /// The value does not exist; cache that fact for `negative_ttl`.
    pub fn absent() -> Self {
        Self {
            value: None,
            ..Self::value_less()
        }
    }

    /// The cached value (see [`LoadContext::stale`]) is still current: keep
    /// it and renew its lifetime, without sending the value to Redis again.
    pub fn not_modified() -> Self {
        Self {
            not_modified: true,
            ..Self::value_less()
        }
    }

    fn value_less() -> Self {
        Self {
            value: None,
            ttl: None,
            tags: None,
            etag: None,
            version: None,
            cache: true,
            not_modified: false,
        }
    }

    /// From an `Option`: `None` is [`absent`](Self::absent).
    pub fn from_option(value: Option<V>) -> Self {
        match value {
            Some(v) => Self::value(v),
            None => Self::absent(),
        }
    }

    /// Cache this result for `ttl` instead of the options' TTL (jitter still applies).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Tag this entry with `tags` instead of the options' tags.
    pub fn tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags = Some(tags.into_iter().map(Into::into).collect());
        self
    }

    /// The source's version of this value (an ETag, a row version); the next
    /// refresh receives it in [`LoadContext::etag`].
    pub fn etag(mut self, etag: impl Into<String>) -> Self {
        self.etag = Some(etag.into());
        self
    }

    /// The version of the source row this value was read at (a version
    /// column, an `xmin`, a sequence). Under [`Consistency::Version`] the
    /// fill lands only if Redis knows no newer version of the key.
    ///
    /// [`Consistency::Version`]: crate::Consistency::Version
    pub fn version(mut self, version: u64) -> Self {
        self.version = Some(version);
        self
    }

    /// Return the result to the callers but do not store it.
    pub fn dont_cache(mut self) -> Self {
        self.cache = false;
        self
    }
}

/// What a loader is told about the entry it refreshes.
#[derive(Debug, Clone)]
pub struct LoadContext<V> {
    pub(crate) stale: Option<V>,
    pub(crate) etag: Option<String>,
}

impl<V> LoadContext<V> {
    /// The value cached before (past its TTL, or due for an early refresh).
    pub fn stale(&self) -> Option<&V> {
        self.stale.as_ref()
    }

    /// The version recorded with the cached value ([`Loaded::etag`]). A loader
    /// may compare it with the source and answer [`Loaded::not_modified`].
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }
}

/// A value with how fresh it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched<V> {
    pub(crate) value: Option<V>,
    pub(crate) stale: bool,
}

impl<V> Fetched<V> {
    pub(crate) fn fresh(value: Option<V>) -> Self {
        Self {
            value,
            stale: false,
        }
    }

    pub(crate) fn stale(value: Option<V>) -> Self {
        Self { value, stale: true }
    }

    /// The value; `None` when the source says it does not exist.
    pub fn value(&self) -> Option<&V> {
        self.value.as_ref()
    }

    /// The value, owned.
    pub fn into_value(self) -> Option<V> {
        self.value
    }

    /// Whether this is a stale value (served past its TTL: stale-while-
    /// revalidate, a soft timeout, or fail-safe after a failed load).
    pub fn is_stale(&self) -> bool {
        self.stale
    }
}
