//! The five in-process sides of `peers`, each answering "give me product
//! `id`" with its own cache in front of the same 1 ms "database".

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use cached::{AsyncRedisCache, ConcurrentCachedAsync};
use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use stratacache::{Cache, EntryOptions};

use crate::report::{stored_key, Product};

/// One way of reading product `id` through a cache.
pub trait Peer: Send + Sync + 'static {
    fn fetch(&self, id: u64) -> impl Future<Output = Result<()>> + Send;

    /// Loader calls so far.
    fn loads(&self) -> u64;
}

/// The "database" every side shares: `loader_ms`, then the row. Counts its calls.
#[derive(Clone)]
pub struct Database {
    loads: Arc<AtomicU64>,
    latency: Duration,
}

impl Database {
    pub fn new(loader_ms: u64) -> Self {
        Self {
            loads: Arc::new(AtomicU64::new(0)),
            latency: Duration::from_millis(loader_ms),
        }
    }

    pub async fn load(&self, id: u64) -> Product {
        self.loads.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(self.latency).await;
        Product::sample(id)
    }

    fn count(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }
}

/// The caller's key of product `id` (what an application would pass).
fn product_key(id: u64) -> String {
    format!("product:{id}")
}

/// The L1 of a stratacache side.
#[derive(Debug, Clone, Copy)]
pub enum L1 {
    Off,
    /// The library's default bound.
    Default,
    /// A byte bound in MiB.
    Mib(u64),
}

/// stratacache `get_or_load_shared` (or `get_or_load`: `clone_reads`),
/// with or without L1, filling in the foreground (or background).
pub struct Stratacache {
    cache: Cache,
    opts: EntryOptions,
    db: Database,
    clone_reads: bool,
}

impl Stratacache {
    pub async fn build(
        url: &str,
        ns: &str,
        l1: L1,
        ttl: Duration,
        db: Database,
        (clone_reads, fill_in_background): (bool, bool),
    ) -> Result<Self> {
        // Connected before the round, as the other sides' connections are.
        let builder = crate::report::cache_builder()
            .namespace(ns)
            .redis_url(url)
            .wait_for_backplane(Duration::from_secs(5));
        let builder = match l1 {
            L1::Off => builder.without_l1(),
            L1::Default => builder,
            L1::Mib(mib) => builder.l1_max_bytes(mib << 20),
        };
        Ok(Self {
            cache: builder.build().await.context("building stratacache")?,
            opts: EntryOptions::new()
                .ttl(ttl)
                .fill_in_background(fill_in_background),
            db,
            clone_reads,
        })
    }

    /// Every key this side may have written for ids `0..n`.
    pub fn written_keys(ns: &str, n: u64) -> Vec<String> {
        (0..n)
            .flat_map(|id| {
                let stored = stored_key(ns, &product_key(id));
                [
                    format!("{stored}:lease"),
                    format!("{stored}:waiting"),
                    format!("{stored}:ver"),
                    stored,
                ]
            })
            .collect()
    }
}

impl Peer for Stratacache {
    async fn fetch(&self, id: u64) -> Result<()> {
        let db = self.db.clone();
        let load = move || async move { Ok::<_, Infallible>(db.load(id).await) };
        let key = product_key(id);
        if self.clone_reads {
            black_box(self.cache.get_or_load(&key, &self.opts, load).await?);
        } else {
            black_box(
                self.cache
                    .get_or_load_shared(&key, &self.opts, load)
                    .await?,
            );
        }
        Ok(())
    }

    fn loads(&self) -> u64 {
        self.db.count()
    }
}

/// The seed articles' cache-aside ported literally to redis-rs: `GET`; on a
/// hit parse the JSON; on a miss load, `SETEX` the JSON, return. One shared
/// multiplexed connection, as the articles share one ioredis client.
pub struct Naive {
    conn: MultiplexedConnection,
    ns: String,
    ttl_secs: u64,
    db: Database,
}

impl Naive {
    pub fn new(conn: MultiplexedConnection, ns: &str, ttl: Duration, db: Database) -> Self {
        Self {
            conn,
            ns: ns.to_string(),
            ttl_secs: ttl.as_secs(),
            db,
        }
    }

    /// `GET`; on a miss load and `SETEX`. The row, from Redis or the database.
    async fn read(&self, id: u64) -> Result<Product> {
        let key = format!("{}:{}", self.ns, product_key(id));
        let mut conn = self.conn.clone();
        let cached: Option<Vec<u8>> = conn.get(&key).await?;
        if let Some(json) = cached {
            return Ok(serde_json::from_slice::<Product>(&json)?);
        }
        let data = self.db.load(id).await;
        let json = serde_json::to_vec(&data)?;
        let () = conn.set_ex(&key, json, self.ttl_secs).await?;
        Ok(data)
    }
}

impl Peer for Naive {
    async fn fetch(&self, id: u64) -> Result<()> {
        black_box(self.read(id).await?);
        Ok(())
    }

    fn loads(&self) -> u64 {
        self.db.count()
    }
}

/// The same hand-rolled code with a moka cache in front, as a team adds an
/// in-process tier by hand: moka, else the naive `GET`/load/`SETEX`, then
/// insert the row. No coalescing, no invalidation. Each call takes a unit of
/// tokio's cooperative budget, as stratacache does: a loop of in-memory hits
/// that never yields would starve every miss of its worker.
pub struct NaiveTwoTier {
    l1: moka::sync::Cache<String, Arc<Product>>,
    l2: Naive,
}

impl NaiveTwoTier {
    /// `keys`: the entry bound (the whole key space fits, as it does in
    /// stratacache's default byte bound); entries live as long as in Redis.
    pub fn new(l2: Naive, keys: u64) -> Self {
        let ttl = Duration::from_secs(l2.ttl_secs);
        Self {
            l1: moka::sync::Cache::builder()
                .max_capacity(keys)
                .time_to_live(ttl)
                .build(),
            l2,
        }
    }
}

impl Peer for NaiveTwoTier {
    async fn fetch(&self, id: u64) -> Result<()> {
        tokio::task::consume_budget().await;
        // Keyed as the application names the row, as stratacache's side is.
        let key = product_key(id);
        if let Some(row) = self.l1.get(&key) {
            black_box(row);
            return Ok(());
        }
        let row = Arc::new(self.l2.read(id).await?);
        self.l1.insert(key, Arc::clone(&row));
        black_box(row);
        Ok(())
    }

    fn loads(&self) -> u64 {
        self.l2.loads()
    }
}

/// The `cached` crate's `AsyncRedisCache`, used as its `#[io_cached]` macro
/// uses it: `async_cache_get`; on a miss load and `async_cache_set`.
pub struct CachedCrate {
    cache: AsyncRedisCache<u64, Product>,
    db: Database,
}

/// The prefix the `cached` side's keys carry after the namespace.
const CACHED_PREFIX: &str = "product";

impl CachedCrate {
    pub async fn build(url: &str, ns: &str, ttl: Duration, db: Database) -> Result<Self> {
        let cache = AsyncRedisCache::builder(CACHED_PREFIX)
            .namespace(ns)
            .connection_string(url)
            .ttl(ttl)
            .build()
            .await
            .context("building the cached crate's AsyncRedisCache")?;
        Ok(Self { cache, db })
    }

    /// The keys the store writes: `{namespace}:{prefix}:{key}` (no field
    /// here holds a `:` or `%`, so none is escaped).
    pub fn written_keys(ns: &str, n: u64) -> Vec<String> {
        (0..n)
            .map(|id| format!("{ns}:{CACHED_PREFIX}:{id}"))
            .collect()
    }
}

impl Peer for CachedCrate {
    async fn fetch(&self, id: u64) -> Result<()> {
        if let Some(product) = self.cache.async_cache_get(&id).await? {
            black_box(product);
            return Ok(());
        }
        let product = self.db.load(id).await;
        self.cache.async_cache_set(id, product.clone()).await?;
        black_box(product);
        Ok(())
    }

    fn loads(&self) -> u64 {
        self.db.count()
    }
}

/// The keys the naive side and the Node.js side write: `{ns}:product:{id}`.
pub fn plain_keys(ns: &str, n: u64) -> Vec<String> {
    (0..n)
        .map(|id| format!("{ns}:{}", product_key(id)))
        .collect()
}
