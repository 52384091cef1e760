//! Cache-aside and write-through: the public entry points of the read path
//! (`read`) and of write-through.

use std::future::Future;
use std::sync::Arc;

use super::Cache;
use crate::error::{BoxError, Error, Result};
use crate::options::EntryOptions;
use crate::read::{Fetched, LoadContext, Loaded};
use crate::tiers::CacheValue;

impl Cache {
    /// Cache-aside: the value under `key`, or what `loader` returns for it,
    /// stored in both tiers.
    ///
    /// However many callers miss the same key at once — in this process and,
    /// through a lease in Redis, across instances — the loader runs once and
    /// all of them get its result, or its error.
    ///
    /// The loader is `'static` because a load may outlive this call (its
    /// caller gone while others wait, a stale answer, `hard_timeout`; see
    /// "Why a loader is `'static`" in ARCHITECTURE.md): move into it clones of
    /// the handles it uses. For data read in many places, a
    /// [`Resource`](crate::Resource) holds its [`Loader`](crate::Loader) once
    /// and lends it to every load (`Loader::load(&self, key)`).
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// use std::time::Duration;
    /// use stratacache::EntryOptions;
    ///
    /// let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    /// let price: f64 = cache
    ///     .get_or_load("price:ACME", &opts, || async {
    ///         // e.g. SELECT price FROM prices WHERE symbol = 'ACME'
    ///         Ok::<_, std::io::Error>(101.5)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn get_or_load<V, F, Fut, E>(
        &self,
        key: &str,
        opts: &EntryOptions,
        loader: F,
    ) -> Result<V>
    where
        V: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<V, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let load = |_: LoadContext<V>| async move { loader().await.map(Loaded::value) };
        match self
            .inner
            .loads
            .load_through(key, opts, false, load)
            .await?
            .value
        {
            Some(value) => Ok(value),
            // Only reachable by joining another caller's optional load that
            // found nothing; this caller's own loader always yields a value.
            None => Err(Error::loader("the value is absent")),
        }
    }

    /// [`get_or_load`](Self::get_or_load) answering with a shared pointer:
    /// an L1 hit hands out the very value L1 holds instead of a clone — for
    /// large values (rows with strings, lists) a hit then allocates nothing.
    /// A miss, a stale value or an early refresh take the ordinary path.
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use stratacache::EntryOptions;
    ///
    /// let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    /// let tags: Arc<Vec<String>> = cache
    ///     .get_or_load_shared("tags:ACME", &opts, || async {
    ///         // e.g. SELECT tag FROM instrument_tags WHERE symbol = 'ACME'
    ///         Ok::<_, std::io::Error>(vec!["equity".to_owned(), "nasdaq".to_owned()])
    ///     })
    ///     .await?;
    /// assert_eq!(tags.len(), 2);
    /// # Ok(()) }
    /// ```
    pub async fn get_or_load_shared<V, F, Fut, E>(
        &self,
        key: &str,
        opts: &EntryOptions,
        loader: F,
    ) -> Result<Arc<V>>
    where
        V: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<V, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        opts.validate()?;
        // See `read::caller`: a loop of L1 hits must yield now and then.
        tokio::task::consume_budget().await;
        if let Some(shared) = self.inner.loads.l1_shared_hit::<V>(key, opts)? {
            return Ok(shared);
        }
        self.get_or_load(key, opts, loader).await.map(Arc::new)
    }

    /// Cache-aside for values that may not exist: the loader returns
    /// `Ok(None)` for an absent value, which is cached as a negative entry
    /// for `negative_ttl`, so repeated lookups of missing ids stay off the database.
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// use std::time::Duration;
    /// use stratacache::EntryOptions;
    ///
    /// let opts = EntryOptions::new()
    ///     .ttl(Duration::from_secs(300))
    ///     .negative_ttl(Duration::from_secs(30));
    /// let user: Option<String> = cache
    ///     .get_or_load_optional("user:404", &opts, || async {
    ///         Ok::<_, std::io::Error>(None) // SELECT … found no row
    ///     })
    ///     .await?;
    /// assert_eq!(user, None); // and the next 30 s of lookups do not reach the database
    /// # Ok(()) }
    /// ```
    pub async fn get_or_load_optional<V, F, Fut, E>(
        &self,
        key: &str,
        opts: &EntryOptions,
        loader: F,
    ) -> Result<Option<V>>
    where
        V: CacheValue,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Option<V>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        let load = |_: LoadContext<V>| async move { loader().await.map(Loaded::from_option) };
        Ok(self
            .inner
            .loads
            .load_through(key, opts, true, load)
            .await?
            .value)
    }

    /// Cache-aside where the loader works with the cache entry rather than
    /// a bare value: it is given a [`LoadContext`] — the value cached before
    /// (stale, or due for an early refresh) and the ETag stored with it — and
    /// returns [`Loaded`], which says how its result is cached: its own TTL,
    /// tags, ETag or row version, not at all, or "not modified" (keep the
    /// cached value and renew it without sending it to Redis again). The
    /// answer, [`Fetched`], says whether the value is stale
    /// ([`Fetched::is_stale`]) and holds `None` for a value cached as absent.
    ///
    /// Named for what the loader is given; [`get_or_load`](Self::get_or_load)
    /// is the same read for a loader that only returns a value.
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// use std::time::Duration;
    /// use stratacache::{EntryOptions, Loaded};
    ///
    /// let opts = EntryOptions::new().ttl(Duration::from_secs(60)).stale_for(Duration::from_secs(600));
    /// let fetched = cache
    ///     .get_or_load_with_context("quote:ACME", &opts, |ctx| async move {
    ///         // A conditional fetch: the source says whether the value changed.
    ///         if ctx.etag() == Some("v7") {
    ///             return Ok::<_, std::io::Error>(Loaded::not_modified());
    ///         }
    ///         Ok(Loaded::value(191.2_f64).etag("v7").ttl(Duration::from_secs(5)).tags(["ACME"]))
    ///     })
    ///     .await?;
    /// println!("{:?} (stale: {})", fetched.value(), fetched.is_stale());
    /// # Ok(()) }
    /// ```
    pub async fn get_or_load_with_context<V, F, Fut, E>(
        &self,
        key: &str,
        opts: &EntryOptions,
        loader: F,
    ) -> Result<Fetched<V>>
    where
        V: CacheValue,
        F: FnOnce(LoadContext<V>) -> Fut + Send + 'static,
        Fut: Future<Output = std::result::Result<Loaded<V>, E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.inner.loads.load_through(key, opts, true, loader).await
    }

    /// Write-through: run `writer` (which persists the value, typically in the
    /// database, and returns it as stored), then put the value in both tiers.
    /// If the cache cannot take it, the key is invalidated instead, so the
    /// cache never keeps the value the write replaced.
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// use std::time::Duration;
    /// use stratacache::EntryOptions;
    ///
    /// let opts = EntryOptions::new().ttl(Duration::from_secs(60));
    /// let saved: String = cache
    ///     .write_through("user:42:name", &opts, || async {
    ///         // UPDATE users SET name = 'Ada' WHERE id = 42 RETURNING name
    ///         Ok::<_, std::io::Error>("Ada".to_string())
    ///     })
    ///     .await?;
    /// assert_eq!(cache.get::<String>("user:42:name").await?, Some(saved));
    /// # Ok(()) }
    /// ```
    pub async fn write_through<V, F, Fut, E>(
        &self,
        key: &str,
        opts: &EntryOptions,
        writer: F,
    ) -> Result<V>
    where
        V: CacheValue,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<V, E>>,
        E: Into<BoxError>,
    {
        opts.validate()?;
        let stored = self.tiers().keys().stored(key)?;
        let value = writer().await.map_err(Error::loader)?;
        match self.key_write(key, value.clone(), opts) {
            Ok(write) => {
                self.writes().put(vec![write], opts).await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "write-through could not cache the value; invalidating");
                let _ = self.writes().delete(&[stored]).await;
            }
        }
        Ok(value)
    }
}
