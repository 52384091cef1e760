//! Read-through: a typed [`Resource`] over a [`Loader`]; the application talks
//! only to the resource, never to the database directly.
//!
//! The batch read, [`Resource::get_many`], is what most caches lack: hits come
//! from L1, then from L2 in one round trip (MGET, split per slot on a Cluster),
//! and only the keys still missing reach the loader — in one call to
//! [`Loader::load_many`], so one `WHERE id = ANY($1)` instead of N queries.

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Instant;

use crate::cache::Cache;
use crate::error::{BoxError, Error, Result};
use crate::options::EntryOptions;
use crate::read::scope::LoadScope;
use crate::tiers::{CacheValue, FillHints, Found};
use crate::write::KeyWrite;

/// What a resource's keys must be: printable (they become cache keys) and hashable.
pub trait ResourceKey: Display + Clone + Eq + Hash + Send + Sync + 'static {}
impl<T> ResourceKey for T where T: Display + Clone + Eq + Hash + Send + Sync + 'static {}

/// The source of truth behind a [`Resource`].
///
/// ```
/// use std::collections::HashMap;
/// use stratacache::Loader;
///
/// struct Squares;
///
/// impl Loader<u64, u64> for Squares {
///     type Error = std::io::Error;
///     async fn load(&self, key: &u64) -> Result<Option<u64>, Self::Error> {
///         Ok((*key < 1000).then(|| key * key))
///     }
///     async fn load_many(&self, keys: &[u64]) -> Result<HashMap<u64, u64>, Self::Error> {
///         Ok(keys.iter().filter(|k| **k < 1000).map(|k| (*k, k * k)).collect())
///     }
/// }
/// ```
pub trait Loader<K: ResourceKey, V>: Send + Sync + 'static {
    /// The loader's error; callers receive it as [`Error::Loader`].
    type Error: Into<BoxError> + Send + 'static;

    /// Load one value; `Ok(None)` means it does not exist (and is negatively cached).
    fn load(&self, key: &K) -> impl Future<Output = Result<Option<V>, Self::Error>> + Send;

    /// Load many values in one go; keys absent from the map do not exist.
    /// The default calls [`load`](Self::load) for each key; override it with a
    /// batch query.
    fn load_many(
        &self,
        keys: &[K],
    ) -> impl Future<Output = Result<HashMap<K, V>, Self::Error>> + Send
    where
        V: Send,
    {
        async move {
            let mut found = HashMap::with_capacity(keys.len());
            for key in keys {
                if let Some(value) = self.load(key).await? {
                    found.insert(key.clone(), value);
                }
            }
            Ok(found)
        }
    }
}

/// A typed, read-through view of one kind of data in a [`Cache`].
///
/// ```no_run
/// # use std::collections::HashMap;
/// # struct Squares;
/// # impl stratacache::Loader<u64, u64> for Squares {
/// #     type Error = std::io::Error;
/// #     async fn load(&self, key: &u64) -> Result<Option<u64>, Self::Error> { Ok(Some(key * key)) }
/// # }
/// # async fn demo(cache: stratacache::Cache) -> Result<(), stratacache::Error> {
/// use stratacache::{EntryOptions, Resource};
///
/// let squares = Resource::new(cache, "square", EntryOptions::new(), Squares);
/// assert_eq!(squares.get(&12).await?, Some(144));
/// let many = squares.get_many(&[1, 2, 3]).await?;   // one MGET, one load_many
/// assert_eq!(many[&3], 9);
/// # Ok(()) }
/// ```
pub struct Resource<K, V, L> {
    cache: Cache,
    name: String,
    options: EntryOptions,
    loader: Arc<L>,
    _types: PhantomData<fn(K) -> V>,
}

impl<K, V, L> Clone for Resource<K, V, L> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            name: self.name.clone(),
            options: self.options.clone(),
            loader: Arc::clone(&self.loader),
            _types: PhantomData,
        }
    }
}

impl<K, V, L> Resource<K, V, L>
where
    K: ResourceKey,
    V: CacheValue,
    L: Loader<K, V>,
{
    /// A resource whose entries are stored under `"{name}:{key}"` with `options`.
    pub fn new(cache: Cache, name: &str, options: EntryOptions, loader: L) -> Self {
        Self {
            cache,
            name: name.to_string(),
            options,
            loader: Arc::new(loader),
            _types: PhantomData,
        }
    }

    /// The cache key of `key`.
    pub fn cache_key(&self, key: &K) -> String {
        format!("{}:{key}", self.name)
    }

    /// The value for `key`, loaded on a miss (once, however many callers miss together).
    pub async fn get(&self, key: &K) -> Result<Option<V>> {
        let loader = Arc::clone(&self.loader);
        let owned = key.clone();
        self.cache
            .get_or_load_optional(&self.cache_key(key), &self.options, move || async move {
                loader.load(&owned).await
            })
            .await
    }

    /// The values for `keys` (duplicates allowed): hits from L1, then from L2 in
    /// one round trip, and the rest from one [`Loader::load_many`] call, stored
    /// in one pipeline. Keys that do not exist are absent from the map.
    pub async fn get_many(&self, keys: &[K]) -> Result<HashMap<K, V>> {
        self.options.validate()?;
        let started = Instant::now();
        let tiers = self.cache.tiers();
        let m = tiers.metrics().policy(self.options.policy.as_ref());
        let mut seen = HashSet::with_capacity(keys.len());
        let unique: Vec<&K> = keys.iter().filter(|k| seen.insert(*k)).collect();
        let stored = unique
            .iter()
            .map(|k| tiers.keys().stored(&self.cache_key(k)))
            .collect::<Result<Vec<_>>>()?;
        let redis_allowed = !LoadScope::current().redis_failed();
        let found: Vec<Option<Found<V>>> = tiers
            .lookup_many::<V>(&stored, &self.options, &m, redis_allowed)
            .await;

        let mut result = HashMap::with_capacity(unique.len());
        let mut missing = Vec::new();
        for (i, entry) in found.into_iter().enumerate() {
            match entry {
                Some(Some(value)) => {
                    result.insert(unique[i].clone(), value);
                }
                Some(None) => {}
                None => missing.push(i),
            }
        }
        if missing.is_empty() {
            m.get_seconds.record(started.elapsed().as_secs_f64());
            return Ok(result);
        }

        let missing_keys: Vec<K> = missing.iter().map(|&i| unique[i].clone()).collect();
        m.loads.increment(1);
        let load_started = Instant::now();
        let started_at = tiers.clock().stamp();
        let outcome = self.loader.load_many(&missing_keys).await;
        let took = load_started.elapsed();
        m.load_seconds.record(took.as_secs_f64());
        let mut loaded = outcome.map_err(|e| {
            m.load_errors.increment(1);
            Error::loader(e)
        })?;

        let hints = FillHints {
            load_micros: took.as_micros().min(u32::MAX as u128) as u32,
            started_at: Some(started_at),
            ..FillHints::default()
        };
        let mut batch = Vec::with_capacity(missing.len());
        for (&i, key) in missing.iter().zip(&missing_keys) {
            let value = loaded.remove(key);
            match tiers.prepare(&stored[i], value.as_ref(), &self.options, &hints) {
                Ok(prepared) => batch.push(KeyWrite {
                    stored: stored[i].clone(),
                    value: value.clone(),
                    prepared,
                }),
                Err(err @ Error::ValueTooLarge { .. }) => {
                    tracing::warn!(error = %err, "loaded value not cached");
                }
                Err(err) => return Err(err),
            }
            if let Some(value) = value {
                result.insert(key.clone(), value);
            }
        }
        self.cache.writes().put(batch, &self.options).await;
        m.get_seconds.record(started.elapsed().as_secs_f64());
        Ok(result)
    }

    /// Write-through: `writer` persists the new value and returns it; the
    /// cache then holds it (or, if it cannot, forgets the old one).
    pub async fn write<F, Fut, E>(&self, key: &K, writer: F) -> Result<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<V, E>>,
        E: Into<BoxError>,
    {
        self.cache
            .write_through(&self.cache_key(key), &self.options, writer)
            .await
    }

    /// Forget `key` in both tiers.
    pub async fn invalidate(&self, key: &K) -> Result<()> {
        self.cache.delete(&self.cache_key(key)).await
    }
}
