//! Write-behind: writes return once Redis holds them, and reach the sink
//! (the database) in batches.
//!
//! A write updates the cache entry and appends to a Redis Stream in one Lua
//! script, so an acknowledged write is both readable and queued. Workers in a
//! consumer group read batches (by size and by interval), coalesce them per
//! key (the last value wins, counter deltas are summed), hand them to a
//! [`Sink`] and acknowledge only after the sink committed. The sink records
//! the ids of the writes it applied in the same transaction, so a batch
//! delivered again after a crash changes nothing. A dead worker's entries are
//! claimed by a live one (`XAUTOCLAIM`); a failing batch is retried with
//! exponential backoff, then split per key, and what still fails goes to a
//! dead-letter stream ([`WriteBehind::replay_dead_letters`] puts it back).
//! When Redis fails, a write goes to the sink synchronously instead.
//!
//! ```no_run
//! # async fn demo(cache: stratacache::Cache, pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
//! use stratacache::write_behind::{PostgresSink, WriteBehind};
//!
//! let sink = PostgresSink::new(pool, "views")?;
//! sink.create_tables().await?;
//! let views = WriteBehind::builder(cache, sink).name("views").build().await?;
//! let worker = views.spawn_worker();
//! views.incr("instrument:AAPL", 1).await?;
//! views.set("instrument:AAPL:last-viewer", &"ada".to_string()).await?;
//! assert_eq!(views.counter("instrument:AAPL").await?, 1);
//! worker.shutdown().await; // applies what it has read, then stops
//! # Ok(()) }
//! ```
//!
//! On a single node (or a Sentinel-managed master) the cache entry and the
//! stream entry are written by one script. On a Redis Cluster they live in
//! different hash slots: the queue is split into [`WriteBehindConfig::shards`]
//! streams (each its own hash slot, with its own consumer group and a worker
//! task per shard), and a write takes three steps, each atomic in its slot
//! (see `cluster.rs`). With [`WriteBehindBuilder::acknowledge_replicas`] a
//! write is acknowledged only once replicas have it (`WAIT`).

mod acks;
mod cluster;
mod coalesce;
mod combine;
mod dead_letter;
mod durability;
mod metrics;
#[cfg(feature = "postgres")]
mod postgres;
mod sink;
mod stream;
mod worker;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::cache::Cache;
use crate::clock::system_now_ms as now_ms;
use crate::error::{BoxError, Error};
use crate::keys::lease_key;
use crate::options::EntryOptions;
use crate::tiers::CacheValue;
use crate::write::Step;

pub use coalesce::{Batch, CounterWrite, ValueWrite};
pub use dead_letter::QueueStatus;
pub use durability::Durability;
pub use metrics::WriteBehindStats;
#[cfg(feature = "postgres")]
pub use postgres::{is_connection_error, PostgresSink};
pub use sink::Sink;
pub use stream::{EntryId, QueueState};
pub use worker::WorkerHandle;

use acks::ReplicaAcks;
use combine::{Answer, Combiner, Op, Seed};
use metrics::WbMetrics;
use stream::new_write_id;
pub(crate) use stream::{counter_key, queue_state, StreamKeys};

/// What can go wrong in a write-behind call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteBehindError {
    /// A bad key or value, or a cache misconfiguration; nothing was written.
    #[error(transparent)]
    Cache(#[from] Error),
    /// The value could not be turned into JSON; nothing was written.
    #[error("could not encode value as JSON: {0}")]
    Encode(#[from] serde_json::Error),
    /// Redis failed and the synchronous write to the sink failed too: the
    /// write is not acknowledged. If Redis timed out (rather than refused),
    /// the write may still be in the stream and be applied later, once.
    #[error("write not acknowledged: redis failed ({redis}) and so did the sink ({sink})")]
    NotApplied {
        /// Why Redis did not take the write.
        redis: Error,
        /// Why the sink did not take it either.
        sink: BoxError,
    },
    /// The sink failed on a read, or when seeding a counter's total.
    #[error("sink: {0}")]
    Sink(BoxError),
    /// A Redis call of an administrative operation failed.
    #[error("redis: {0}")]
    Redis(Error),
}

/// How a write was acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// In Redis (cache and stream, atomically), under this stream entry id.
    Queued(EntryId),
    /// Redis failed, so the sink applied it synchronously.
    Direct,
}

/// Settings of a write-behind queue and its workers.
#[derive(Debug, Clone)]
pub struct WriteBehindConfig {
    /// Queue name (part of the stream's key). Default `default`.
    pub name: String,
    /// Most stream entries in one batch (an entry carries one write, or the
    /// writes of one group commit under load). Default 1,000.
    pub batch_size: usize,
    /// Longest a worker waits to fill a batch after its first entry. Default 50 ms.
    pub batch_interval: Duration,
    /// Sink attempts per batch before it is split per key and what still
    /// fails is dead-lettered. Default 5.
    pub max_attempts: u32,
    /// Backoff before the second attempt; doubles per attempt, with jitter. Default 50 ms.
    pub retry_backoff: Duration,
    /// Backoff cap. Default 5 s.
    pub max_backoff: Duration,
    /// An entry delivered to a worker and not acknowledged for this long is
    /// claimed by another worker (its worker is presumed dead). Default 10 s.
    pub claim_idle: Duration,
    /// Applied write ids are kept this long past the oldest entry still in
    /// the stream, then pruned from the sink. Default 1 h.
    pub applied_retention: Duration,
    /// Lifetime of a counter's running total in Redis, renewed by each
    /// increment; when it lapses, the total is read from the sink again. Default 1 h.
    pub counter_ttl: Duration,
    /// Streams of the queue on a Redis Cluster (each in its own hash slot; a
    /// key always goes to the same one). Every process of a queue must use
    /// the same number. Ignored on a single node (one stream). Default 8.
    pub shards: usize,
    /// Acknowledge a write only once this many replicas have its stream
    /// entry (`WAIT`), within the timeout; else the write goes to the sink
    /// directly, as when Redis fails. Default: none (asynchronous replication).
    pub acknowledge_replicas: Option<(u32, Duration)>,
}

impl Default for WriteBehindConfig {
    fn default() -> Self {
        Self {
            name: "default".into(),
            batch_size: 1_000,
            batch_interval: Duration::from_millis(50),
            max_attempts: 5,
            retry_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            claim_idle: Duration::from_secs(10),
            applied_retention: Duration::from_secs(3_600),
            counter_ttl: Duration::from_secs(3_600),
            shards: 8,
            acknowledge_replicas: None,
        }
    }
}

/// Configures a [`WriteBehind`] queue.
pub struct WriteBehindBuilder<S> {
    cache: Cache,
    sink: S,
    config: WriteBehindConfig,
    options: Option<EntryOptions>,
}

impl<S: Sink> WriteBehindBuilder<S> {
    /// Queue name (part of the stream's key; letters, digits, `-`, `_`, `.`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }
    /// Most stream entries in one batch.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.config.batch_size = n;
        self
    }
    /// Longest wait to fill a batch after its first entry.
    pub fn batch_interval(mut self, d: Duration) -> Self {
        self.config.batch_interval = d;
        self
    }
    /// Sink attempts per batch before splitting and dead-lettering.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.config.max_attempts = n;
        self
    }
    /// First retry backoff (doubles per attempt) and its cap.
    pub fn retry_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.config.retry_backoff = first;
        self.config.max_backoff = max;
        self
    }
    /// Idle time after which another worker claims an entry.
    pub fn claim_idle(mut self, d: Duration) -> Self {
        self.config.claim_idle = d;
        self
    }
    /// Lifetime of counters' running totals in Redis.
    pub fn counter_ttl(mut self, d: Duration) -> Self {
        self.config.counter_ttl = d;
        self
    }
    /// Streams of the queue on a Cluster (see [`WriteBehindConfig::shards`]).
    pub fn shards(mut self, n: usize) -> Self {
        self.config.shards = n;
        self
    }
    /// Acknowledge a write only once `replicas` replicas have it (`WAIT`
    /// after the enqueue, bounded by `timeout`). A write the replicas did not
    /// confirm in time is applied to the sink before the call returns
    /// ([`Written::Direct`]), or fails with [`WriteBehindError::NotApplied`]
    /// if the sink fails too; its stream copy, if it survives, is skipped by
    /// write id. Closes the loss of acknowledged writes at a failover, at the
    /// cost of a round trip to the replicas per group commit.
    pub fn acknowledge_replicas(mut self, replicas: u32, timeout: Duration) -> Self {
        self.config.acknowledge_replicas = Some((replicas, timeout));
        self
    }
    /// Every setting at once.
    pub fn config(mut self, config: WriteBehindConfig) -> Self {
        self.config = config;
        self
    }
    /// Entry options of the cached values (default: the cache's defaults).
    /// Their TTL should exceed the longest expected lag: a value that expires
    /// from the cache before the sink has it is read from the sink, older.
    pub fn entry_options(mut self, options: EntryOptions) -> Self {
        self.options = Some(options);
        self
    }

    /// Check the settings and Redis (persistence, Cluster or not) and build
    /// the queue. Warns (via `tracing`) when Redis has no AOF. Builds while
    /// Redis is down (writes then go to the sink directly).
    pub async fn build(self) -> Result<WriteBehind<S>, WriteBehindError> {
        let c = &self.config;
        let name_ok = !c.name.is_empty()
            && c.name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
        if !name_ok {
            return Err(Error::config(format!(
                "write-behind queue name {:?} must be letters, digits, '-', '_' or '.'",
                c.name
            ))
            .into());
        }
        if c.batch_size == 0 || c.max_attempts == 0 || c.claim_idle.is_zero() || c.shards == 0 {
            return Err(Error::config(
                "write-behind batch_size, max_attempts, claim_idle and shards must be above zero",
            )
            .into());
        }
        let tiers = self.cache.tiers();
        let l2 = tiers
            .l2()
            .ok_or_else(|| Error::config("write-behind needs a cache with Redis (L2)"))?;
        let client = l2
            .node_client()
            .ok_or_else(|| Error::config("write-behind needs a Redis node to connect to"))?;
        let (durability, _) = durability::inspect(&client, Duration::from_secs(2)).await;
        durability::warn_if_weak(&durability, &c.name);
        let cluster = l2.is_cluster();
        let namespace = tiers.keys().namespace();
        let shards: Vec<StreamKeys> = if cluster {
            (0..c.shards)
                .map(|i| StreamKeys::shard(namespace, &c.name, i))
                .collect()
        } else {
            vec![StreamKeys::new(namespace, &c.name)]
        };
        let options = self
            .options
            .unwrap_or_else(|| self.cache.default_options().clone());
        options.validate()?;
        if options.skip_l2 {
            return Err(Error::config("write-behind options must not skip L2").into());
        }
        let metrics = WbMetrics::new(tiers.keys().namespace(), &c.name);
        let acks = c.acknowledge_replicas.map(|(replicas, timeout)| {
            let markers = shards.iter().map(|k| k.wait.clone()).collect();
            Arc::new(ReplicaAcks::new(Arc::clone(l2), markers, replicas, timeout))
        });
        let streams = shards.iter().map(|k| k.stream.clone()).collect();
        let combiner = Combiner::spawn(Arc::clone(l2), streams, cluster, acks);
        let shard_states = Mutex::new(vec![None; shards.len()]);
        Ok(WriteBehind {
            shared: Arc::new(Shared {
                cache: self.cache,
                sink: self.sink,
                shards,
                cluster,
                shard_states,
                config: self.config,
                options,
                metrics,
                client,
                durability,
                combiner,
                stale_totals: Mutex::new(HashSet::new()),
            }),
        })
    }
}

/// A write-behind queue: the write side, the read side, and its workers.
/// Cheap to clone.
pub struct WriteBehind<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for WriteBehind<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

pub(crate) struct Shared<S> {
    cache: Cache,
    sink: S,
    /// The queue's streams: one on a single node, `config.shards` on a Cluster.
    shards: Vec<StreamKeys>,
    cluster: bool,
    /// Per stream, as its worker last read it: depth, oldest entry, dead
    /// letters (the gauges add them up).
    shard_states: Mutex<Vec<Option<QueueState>>>,
    config: WriteBehindConfig,
    options: EntryOptions,
    metrics: WbMetrics,
    client: redis::Client,
    durability: Durability,
    /// Sends writes to Redis, many per script under load.
    combiner: Combiner,
    /// Counter totals in Redis that miss a direct increment (made while
    /// Redis failed): deleted once Redis answers, so they are re-read.
    stale_totals: Mutex<HashSet<String>>,
}

impl<S> Shared<S> {
    /// A client for the node that holds `stream`: on a Cluster the master
    /// of its slot (looked up now), the current master under Sentinel
    /// (re-resolved after a failover), else the one node.
    async fn node_client(&self, stream: &str) -> redis::Client {
        let l2 = self.cache.tiers().l2();
        if self.cluster {
            if let Some(l2) = l2 {
                // Right after a failover the answer may not be there yet.
                for _ in 0..3 {
                    if let Some(client) = l2
                        .shard_owner_url(stream)
                        .await
                        .and_then(|url| l2.client_for(&url))
                    {
                        return client;
                    }
                }
            }
        }
        l2.and_then(|l2| l2.node_client())
            .unwrap_or_else(|| self.client.clone())
    }

    /// Record a stream's state and set the gauges to the queue's totals.
    fn record_shard_state(&self, index: usize, state: QueueState) {
        let mut states = self.shard_states.lock().unwrap();
        states[index] = Some(state);
        let known = states.iter().flatten();
        let (depth, dead) = known
            .clone()
            .fold((0, 0), |(d, x), s| (d + s.depth, x + s.dead_letters));
        let oldest = known.filter_map(|s| s.oldest).min();
        let m = &self.metrics;
        m.depth.set(depth as f64);
        m.dead_depth.set(dead as f64);
        m.lag
            .set(oldest.map_or(0.0, |id| now_ms().saturating_sub(id.ms) as f64 / 1_000.0));
    }

    /// The oldest entry of the whole queue once every stream reported.
    fn oldest_entry(&self) -> Option<Option<EntryId>> {
        let states = self.shard_states.lock().unwrap();
        if states.iter().any(Option::is_none) {
            return None;
        }
        Some(states.iter().flatten().filter_map(|s| s.oldest).min())
    }
}

impl WriteBehind<()> {
    /// Start configuring a queue on `cache` (which must have Redis) and `sink`.
    pub fn builder<S: Sink>(cache: Cache, sink: S) -> WriteBehindBuilder<S> {
        WriteBehindBuilder {
            cache,
            sink,
            config: WriteBehindConfig::default(),
            options: None,
        }
    }
}

impl<S: Sink> WriteBehind<S> {
    /// Write `value` under `key`: the cache entry and the queue entry in one
    /// step in Redis; the sink gets it later. Reads through the cache see it
    /// at once. If Redis fails, the sink applies it before this returns.
    pub async fn set<V: CacheValue>(
        &self,
        key: &str,
        value: &V,
    ) -> Result<Written, WriteBehindError> {
        let s = &*self.shared;
        let opts = &s.options;
        let write = s.cache.key_write(key, value.clone(), opts)?;
        let json = serde_json::to_vec(value)?;
        let write_id = new_write_id();
        let op = Op::Set {
            stored: write.stored.clone(),
            lease: lease_key(&write.stored),
            envelope: write.prepared.bytes.clone(),
            ttl_ms: write.prepared.l2_ttl.as_millis() as u64,
            write_id: write_id.clone(),
            key: key.to_string(),
            json: json.clone(),
        };
        let direct = Batch {
            values: vec![ValueWrite {
                key: key.to_string(),
                json,
                version: direct_version(),
                write_id,
                superseded: Vec::new(),
            }],
            counters: Vec::new(),
        };
        // The cache takes the value through the write pipeline, the queue
        // entry in the same script as the entry. If Redis fails, the sink
        // applies it first; if the sink fails too, nothing was written and
        // the cache keeps the old value.
        let mut direct_failure = None;
        let outcome = s
            .cache
            .writes()
            .write_keys(vec![write], opts, |_, _| async {
                match s.combiner.submit(op).await {
                    Ok(answer) => Step::Landed(answer),
                    Err(redis) => match self.apply_direct(&direct, redis.clone().into()).await {
                        Ok(()) => Step::Failed(redis),
                        Err(err) => {
                            direct_failure = Some(err);
                            Step::Refused
                        }
                    },
                }
            })
            .await;
        match outcome {
            Some(Step::Landed(answer)) => {
                let id = match answer {
                    Answer::Queued(id) | Answer::Total(_, id) => id,
                    Answer::NeedsSeed => String::new(),
                };
                WbMetrics::count(&s.metrics.counts.queued, &s.metrics.queued, 1);
                self.retire_stale_totals().await;
                Ok(Written::Queued(id.parse().unwrap_or_default()))
            }
            Some(Step::Failed(_)) => Ok(Written::Direct),
            Some(Step::Refused) => Err(direct_failure
                .unwrap_or_else(|| Error::config("write-behind could not write").into())),
            None => Err(Error::config("write-behind options must not skip L2").into()),
        }
    }

    /// Add `delta` to the counter `key`; returns its new total, or `None`
    /// when the total is not known: Redis failed and the sink took the
    /// increment directly, or the sink could not be read to start the
    /// running total (the increment is queued all the same, and applied
    /// once the sink is back).
    pub async fn incr(&self, key: &str, delta: i64) -> Result<Option<i64>, WriteBehindError> {
        let s = &*self.shared;
        let total_key = counter_key(&s.cache.tiers().keys().stored(key)?);
        let write_id = new_write_id();
        let mut seed = Seed::Unknown;
        let outcome = loop {
            let answer = s
                .combiner
                .submit(Op::Incr {
                    total_key: total_key.clone(),
                    delta,
                    write_id: write_id.clone(),
                    key: key.to_string(),
                    seed,
                    ttl_ms: s.config.counter_ttl.as_millis() as u64,
                })
                .await;
            match answer {
                Ok(Answer::NeedsSeed) if seed == Seed::Unknown => {
                    // No running total in Redis: start it from the sink's —
                    // or, with the sink out of reach, queue the delta alone:
                    // a database outage must not refuse increments.
                    seed = match s.sink.read_counter(key).await {
                        Ok(base) => Seed::Total(base),
                        Err(err) => {
                            tracing::warn!(key, error = %err, "write-behind: the sink cannot seed the counter's total; queued without one");
                            Seed::Unreachable
                        }
                    };
                }
                other => break other,
            }
        };
        match outcome {
            Ok(Answer::Total(total, _id)) => {
                WbMetrics::count(&s.metrics.counts.queued, &s.metrics.queued, 1);
                self.retire_stale_totals().await;
                Ok(Some(total))
            }
            Ok(Answer::Queued(_id)) => {
                WbMetrics::count(&s.metrics.counts.queued, &s.metrics.queued, 1);
                Ok(None)
            }
            Ok(_) => Err(WriteBehindError::Redis(Error::config(
                "the counter script answered nothing after seeding",
            ))),
            Err(redis) => {
                let batch = Batch {
                    values: Vec::new(),
                    counters: vec![CounterWrite {
                        key: key.to_string(),
                        parts: vec![(write_id, direct_version(), delta)],
                    }],
                };
                self.apply_direct(&batch, redis.into()).await?;
                s.stale_totals.lock().unwrap().insert(total_key);
                Ok(None)
            }
        }
    }

    /// The newest value of `key`: from the cache (which holds every
    /// acknowledged write, also before it reached the sink), else the sink.
    pub async fn get<V: CacheValue>(&self, key: &str) -> Result<Option<V>, WriteBehindError> {
        let s = &*self.shared;
        if let Some(v) = s.cache.get_with_options::<V>(key, &s.options).await? {
            return Ok(Some(v));
        }
        match s
            .sink
            .read_value(key)
            .await
            .map_err(WriteBehindError::Sink)?
        {
            Some(json) => Ok(Some(serde_json::from_slice(&json)?)),
            None => Ok(None),
        }
    }

    /// The counter's current total: Redis's running total (every
    /// acknowledged increment), else the sink's.
    pub async fn counter(&self, key: &str) -> Result<i64, WriteBehindError> {
        let s = &*self.shared;
        let tiers = s.cache.tiers();
        let total_key = counter_key(&tiers.keys().stored(key)?);
        let l2 = tiers.l2().expect("checked at build");
        if let Ok(Some(bytes)) = l2.get(&total_key).await {
            if let Some(total) = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|t| t.parse().ok())
            {
                return Ok(total);
            }
        }
        s.sink
            .read_counter(key)
            .await
            .map_err(WriteBehindError::Sink)
    }

    /// Start a worker on this runtime; several may run in one process and in
    /// many processes (each is its own consumer in the group).
    pub fn spawn_worker(&self) -> WorkerHandle {
        worker::spawn(Arc::clone(&self.shared))
    }

    /// What Redis's persistence means for acknowledged writes (checked at build).
    pub fn durability(&self) -> &Durability {
        &self.shared.durability
    }

    /// In-process counts since this handle was built (shared by its workers).
    pub fn stats(&self) -> WriteBehindStats {
        self.shared.metrics.snapshot()
    }

    /// The stream's key in Redis (for operators: `XLEN`, `XINFO`); on a
    /// Cluster the first shard's (see [`stream_keys`](Self::stream_keys)).
    pub fn stream_key(&self) -> &str {
        &self.shared.shards[0].stream
    }

    /// Every stream of the queue: one on a single node, one per shard on a Cluster.
    pub fn stream_keys(&self) -> Vec<&str> {
        self.shared
            .shards
            .iter()
            .map(|k| k.stream.as_str())
            .collect()
    }

    /// The dead-letter stream's key in Redis; on a Cluster the first
    /// shard's (each shard has its own, `<stream>:dead`).
    pub fn dead_letter_key(&self) -> &str {
        &self.shared.shards[0].dead
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.shared.sink
    }

    async fn apply_direct(&self, batch: &Batch, redis: Error) -> Result<(), WriteBehindError> {
        let s = &*self.shared;
        match s.sink.apply(batch).await {
            Ok(()) => {
                tracing::debug!(error = %redis, "redis failed; write applied to the sink directly");
                WbMetrics::count(&s.metrics.counts.direct, &s.metrics.direct, 1);
                Ok(())
            }
            Err(sink) => Err(WriteBehindError::NotApplied { redis, sink }),
        }
    }

    /// Delete running totals that missed a direct increment, now that Redis
    /// answers again (best effort; they are re-read from the sink).
    async fn retire_stale_totals(&self) {
        let stale: Vec<String> = {
            let mut set = self.shared.stale_totals.lock().unwrap();
            if set.is_empty() {
                return;
            }
            set.drain().collect()
        };
        let l2 = self.shared.cache.tiers().l2().expect("checked at build");
        if l2.delete(&stale).await.is_err() {
            self.shared.stale_totals.lock().unwrap().extend(stale);
        }
    }
}

/// The version of a write applied directly: this process's clock (stream
/// entry ids use Redis's).
fn direct_version() -> EntryId {
    EntryId {
        ms: now_ms(),
        seq: 0,
    }
}
