//! The names of 0.1, kept for one release as thin aliases of the new ones
//! (see CHANGELOG.md). Delete this file in the release after 0.2.

use std::future::Future;

use super::Cache;
use crate::error::{BoxError, Result};
use crate::options::EntryOptions;
use crate::read::{Fetched, LoadContext, Loaded};
use crate::tiers::CacheValue;

impl Cache {
    /// Renamed [`get_with_options`](Self::get_with_options): in moka,
    /// `get_with` loads on a miss; this never does.
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// # let opts = stratacache::EntryOptions::new();
    /// let name: Option<String> = cache.get_with_options("user:42:name", &opts).await?;
    /// # let _ = name;
    /// # Ok(()) }
    /// ```
    #[deprecated(since = "0.1.0", note = "renamed to `get_with_options`")]
    pub async fn get_with<V: CacheValue>(
        &self,
        key: &str,
        opts: &EntryOptions,
    ) -> Result<Option<V>> {
        self.get_with_options(key, opts).await
    }

    /// Renamed [`get_many_with_options`](Self::get_many_with_options).
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// # let opts = stratacache::EntryOptions::new();
    /// let found: Vec<Option<u64>> = cache.get_many_with_options(&["a", "b"], &opts).await?;
    /// # let _ = found;
    /// # Ok(()) }
    /// ```
    #[deprecated(since = "0.1.0", note = "renamed to `get_many_with_options`")]
    pub async fn get_many_with<V: CacheValue>(
        &self,
        keys: &[&str],
        opts: &EntryOptions,
    ) -> Result<Vec<Option<V>>> {
        self.get_many_with_options(keys, opts).await
    }

    /// Renamed [`invalidate_all`](Self::invalidate_all): it invalidates the
    /// namespace in Redis and on every instance, not only this instance's L1
    /// ([`clear_l1`](Self::clear_l1)).
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// cache.invalidate_all().await?;
    /// # Ok(()) }
    /// ```
    #[deprecated(since = "0.1.0", note = "renamed to `invalidate_all`")]
    pub async fn clear(&self) -> Result<()> {
        self.invalidate_all().await
    }

    /// Renamed [`get_or_load_with_context`](Self::get_or_load_with_context).
    ///
    /// ```no_run
    /// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
    /// # let opts = stratacache::EntryOptions::new();
    /// use stratacache::Loaded;
    ///
    /// let fetched = cache
    ///     .get_or_load_with_context("quote:ACME", &opts, |_ctx| async {
    ///         Ok::<_, std::io::Error>(Loaded::value(191.2_f64))
    ///     })
    ///     .await?;
    /// # let _ = fetched;
    /// # Ok(()) }
    /// ```
    #[deprecated(since = "0.1.0", note = "renamed to `get_or_load_with_context`")]
    pub async fn get_or_load_entry<V, F, Fut, E>(
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
        self.get_or_load_with_context(key, opts, loader).await
    }
}
