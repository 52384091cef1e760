//! The one error type of the library.
//!
//! Every variant is cheap to clone, because a single-flight load hands the same
//! outcome — success or failure — to every caller that waited on it.

use std::sync::Arc;
use std::time::Duration;

/// A boxed error from application code (a loader, a writer).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in a cache call.
///
/// Redis being unavailable is deliberately *not* an error of reads: a read that
/// cannot reach Redis falls back to L1 and the loader, and is counted in metrics.
///
/// ```no_run
/// # async fn demo(cache: stratacache::Cache) {
/// use stratacache::{EntryOptions, Error};
///
/// let opts = EntryOptions::new();
/// let read = cache
///     .get_or_load("row:1", &opts, || async {
///         Err::<String, _>(std::io::Error::other("database down"))
///     })
///     .await;
/// match read {
///     Ok(value) => println!("{value}"),
///     Err(Error::Loader(cause)) => eprintln!("the database failed: {cause}"),
///     Err(Error::LoaderTimeout(after)) => eprintln!("the database took over {after:?}"),
///     Err(other) => eprintln!("{other}"),
/// }
/// # }
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key is empty or otherwise unusable.
    #[error("invalid cache key {key:?}: {reason}")]
    InvalidKey {
        /// The key as given (truncated to 64 characters).
        key: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The encoded value is bigger than the configured maximum; nothing was written.
    #[error("value for key {key:?} is {size} bytes encoded, over the maximum of {max} bytes; nothing was written")]
    ValueTooLarge {
        /// The key the value was meant for.
        key: String,
        /// Encoded (and, if enabled, compressed) size.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The value could not be serialized with the configured codec.
    #[error("could not encode value: {0}")]
    Encode(Arc<str>),
    /// The loader (or the writer of a write-through) failed; every coalesced
    /// caller receives this same error.
    #[error("loader failed: {0}")]
    Loader(Arc<dyn std::error::Error + Send + Sync + 'static>),
    /// The loader ran past the entry's `hard_timeout` and no stale value was
    /// at hand.
    #[error("loader did not finish within {0:?}")]
    LoaderTimeout(Duration),
    /// Another instance held the lease for this key and its value did not
    /// arrive in time (and no stale value was at hand).
    #[error("waited {0:?} for another instance to load the value")]
    WaitTimeout(Duration),
    /// A loader asked for the key it is loading (directly, or through the
    /// loaders of the keys it asked for): it would wait for itself forever.
    #[error("the loader of {key:?} asked for {key:?} itself: a load cannot wait for itself")]
    ReentrantLoad {
        /// The key (truncated to 64 characters).
        key: String,
    },
    /// The loader task panicked or was cancelled.
    #[error("loader task aborted: {0}")]
    LoaderAborted(Arc<str>),
    /// A Redis call failed. Only returned by operations whose whole point is
    /// Redis (for example an explicit invalidation); reads never return it.
    #[error("redis: {0}")]
    Redis(RedisError),
    /// A Redis call did not answer within the configured timeout.
    #[error("redis did not answer within {0:?}")]
    RedisTimeout(Duration),
    /// The circuit breaker is open, so Redis was not called.
    #[error("redis is unavailable (circuit breaker open)")]
    RedisUnavailable,
    /// The configuration (builder, TOML file or environment) is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// No policy of that name was registered.
    #[error("unknown cache policy {0:?}")]
    UnknownPolicy(String),
}

impl Error {
    pub(crate) fn loader(err: impl Into<BoxError>) -> Self {
        Error::Loader(Arc::from(err.into()))
    }

    pub(crate) fn config(msg: impl Into<String>) -> Self {
        Error::Config(msg.into())
    }

    /// Not a `From` impl: the Redis client's types stay out of the public API.
    pub(crate) fn redis(err: redis::RedisError) -> Self {
        Error::Redis(RedisError::new(Arc::new(err)))
    }
}

/// A failed Redis call, as carried by [`Error::Redis`].
///
/// Opaque on purpose: the Redis client library's error type is not part of
/// this crate's API, so upgrading that library is not a breaking change here.
/// It displays the client's message; [`source`](std::error::Error::source)
/// gives the error beneath it, if any (an I/O error, for example).
#[derive(Clone)]
pub struct RedisError(Arc<redis::RedisError>);

impl RedisError {
    pub(crate) fn new(err: Arc<redis::RedisError>) -> Self {
        Self(err)
    }

    /// Whether the call timed out (as opposed to being refused or failing).
    pub fn is_timeout(&self) -> bool {
        self.0.is_timeout()
    }

    /// Whether the connection to Redis was refused, dropped or is unusable.
    pub fn is_connection_error(&self) -> bool {
        self.0.is_connection_dropped() || self.0.is_connection_refusal() || self.0.is_io_error()
    }

    /// The error code Redis answered with (`READONLY`, `NOSCRIPT`, `WRONGTYPE`,
    /// …), if Redis itself answered with an error.
    pub fn code(&self) -> Option<&str> {
        self.0.code()
    }
}

impl std::fmt::Display for RedisError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&*self.0, f)
    }
}

impl std::fmt::Debug for RedisError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&*self.0, f)
    }
}

impl std::error::Error for RedisError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
