//! A worker: one consumer in the queue's group. It reclaims entries of dead
//! consumers, reads batches (by size and by interval), hands them to the
//! sink with retries, acknowledges what the sink committed and dead-letters
//! what keeps failing.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamReadReply};
use redis::RedisError;

use super::coalesce::Batch;
use super::metrics::WbMetrics;
use super::sink::Sink;
use super::stream::{self, EntryId, StreamEntry, StreamKeys, ACK_SCRIPT, DEAD_LETTER_SCRIPT};
use super::Shared;
use crate::clock::system_now_ms as now_ms;
use crate::error::BoxError;

/// How long an idle read blocks: bounds how late a worker notices a stop.
const IDLE_BLOCK: Duration = Duration::from_millis(250);
/// How often the gauges (depth, lag, dead letters) are refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(1);
/// How often applied write ids are pruned from the sink.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Longest a Redis command may take beyond its own blocking time.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// A running worker. Dropping the handle leaves the worker running;
/// [`shutdown`](Self::shutdown) stops it gracefully.
pub struct WorkerHandle {
    stop: Arc<AtomicBool>,
    /// One task per stream of the queue (one per shard on a Cluster).
    tasks: Vec<tokio::task::JoinHandle<()>>,
    consumer: String,
}

impl WorkerHandle {
    /// Stop reading, apply and acknowledge what was already read, then return.
    pub async fn shutdown(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Stop at once, like a crash: what was read and not acknowledged stays
    /// pending and is claimed by another worker after `claim_idle`.
    pub fn abort(self) {
        for task in &self.tasks {
            task.abort();
        }
    }

    /// This worker's consumer name in the group.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }
}

pub(crate) fn spawn<S: Sink>(shared: Arc<Shared<S>>) -> WorkerHandle {
    let consumer = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = (0..shared.shards.len())
        .map(|index| {
            let worker = Worker {
                shared: Arc::clone(&shared),
                keys: shared.shards[index].clone(),
                index,
                consumer: consumer.clone(),
                stop: Arc::clone(&stop),
                conn: None,
            };
            tokio::spawn(worker.run())
        })
        .collect();
    WorkerHandle {
        stop,
        tasks,
        consumer,
    }
}

struct Worker<S> {
    shared: Arc<Shared<S>>,
    /// The stream this task consumes (the queue's, or one shard's).
    keys: StreamKeys,
    index: usize,
    consumer: String,
    stop: Arc<AtomicBool>,
    conn: Option<ConnectionManager>,
}

/// Why a batch was not applied.
enum Failed {
    /// The sink kept failing.
    Sink(BoxError),
    /// The worker is stopping; the entries stay pending.
    Stopping,
}

impl<S: Sink> Worker<S> {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    async fn run(mut self) {
        let mut failures = 0u32;
        let (mut claim_at, mut gauges_at, mut prune_at) =
            (Instant::now(), Instant::now(), Instant::now() + PRUNE_EVERY);
        while !self.stopping() {
            let step = async {
                if Instant::now() >= claim_at {
                    // Claim in rounds: more may be waiting behind this batch.
                    if !self.reclaim().await? {
                        claim_at = Instant::now() + self.shared.config.claim_idle / 2;
                    }
                }
                let entries = self.gather().await?;
                if !entries.is_empty() {
                    self.process(entries).await?;
                }
                if Instant::now() >= gauges_at {
                    gauges_at = Instant::now() + GAUGE_EVERY;
                    let oldest = self.refresh_gauges().await?;
                    if Instant::now() >= prune_at {
                        prune_at = Instant::now() + PRUNE_EVERY;
                        self.prune(oldest).await;
                    }
                }
                Ok::<_, RedisError>(())
            };
            match step.await {
                Ok(()) => failures = 0,
                Err(err) => {
                    failures += 1;
                    // The stream was deleted (or Redis restarted empty), a
                    // Sentinel failover moved the master, or a Cluster moved
                    // the stream's slot: connect afresh (to its new owner).
                    if matches!(
                        err.code(),
                        Some("NOGROUP" | "READONLY" | "MOVED" | "ASK" | "CLUSTERDOWN" | "TRYAGAIN")
                    ) || err.is_connection_dropped()
                        || err.is_io_error()
                    {
                        self.conn = None;
                    }
                    tracing::warn!(error = %err, consumer = %self.consumer, "write-behind worker: redis failed; retrying");
                    tokio::time::sleep(self.backoff(failures)).await;
                }
            }
        }
    }

    /// The worker's own connection (blocking reads must not hold up the
    /// cache's shared one), with the consumer group in place.
    async fn conn(&mut self) -> Result<ConnectionManager, RedisError> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(
                REDIS_TIMEOUT + IDLE_BLOCK + self.shared.config.batch_interval,
            ))
            .set_number_of_retries(2);
        let mut conn = tokio::time::timeout(
            REDIS_TIMEOUT,
            ConnectionManager::new_with_config(
                self.shared.node_client(&self.keys.stream).await,
                config,
            ),
        )
        .await
        .map_err(|_| RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut)))??;
        let keys = &self.keys;
        let created: Result<(), RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&keys.stream)
            .arg(&keys.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => return Err(e),
            _ => {}
        }
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// Claim entries idle past `claim_idle` (their consumer is presumed
    /// dead) and process them; whether a full batch was claimed.
    async fn reclaim(&mut self) -> Result<bool, RedisError> {
        let mut conn = self.conn().await?;
        let (keys, config) = (&self.keys, &self.shared.config);
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(&keys.stream)
            .arg(&keys.group)
            .arg(&self.consumer)
            .arg(config.claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(config.batch_size)
            .query_async(&mut conn)
            .await?;
        let full = reply.claimed.len() >= config.batch_size;
        if !reply.claimed.is_empty() {
            tracing::info!(entries = reply.claimed.len(), consumer = %self.consumer, "write-behind: claimed entries of a stalled worker");
            self.process(reply.claimed).await?;
        }
        Ok(full)
    }

    /// Read up to a batch: at most `batch_size` entries, and no longer than
    /// `batch_interval` after the first one arrived.
    async fn gather(&mut self) -> Result<Vec<StreamId>, RedisError> {
        let mut conn = self.conn().await?;
        let (keys, config) = (&self.keys, &self.shared.config);
        let mut out: Vec<StreamId> = Vec::new();
        let mut deadline: Option<Instant> = None;
        loop {
            let block = match deadline {
                None => IDLE_BLOCK,
                // Capped, so a stop is noticed while a long interval fills.
                Some(at) => at.saturating_duration_since(Instant::now()).min(IDLE_BLOCK),
            };
            if block.is_zero() || self.stopping() && !out.is_empty() {
                break;
            }
            let reply: Option<StreamReadReply> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&keys.group)
                .arg(&self.consumer)
                .arg("COUNT")
                .arg(config.batch_size - out.len())
                .arg("BLOCK")
                .arg((block.as_millis() as u64).max(1))
                .arg("STREAMS")
                .arg(&keys.stream)
                .arg(">")
                .query_async(&mut conn)
                .await?;
            let read: Vec<StreamId> = reply
                .into_iter()
                .flat_map(|r| r.keys)
                .flat_map(|k| k.ids)
                .collect();
            let got = !read.is_empty();
            out.extend(read);
            if out.len() >= config.batch_size || (!got && deadline.is_none()) {
                break;
            }
            if deadline.is_none() {
                deadline = Some(Instant::now() + config.batch_interval);
            }
        }
        Ok(out)
    }

    /// Apply entries and acknowledge them, or dead-letter what keeps failing.
    async fn process(&mut self, raw: Vec<StreamId>) -> Result<(), RedisError> {
        let mut writes = Vec::with_capacity(raw.len());
        for item in &raw {
            match stream::parse(item) {
                Ok(parsed) => writes.extend(parsed),
                Err(bad) => self.dead_letter(&bad.id, bad.why).await?,
            }
        }
        if writes.is_empty() {
            return Ok(());
        }
        let batch = Batch::from_entries(&writes);
        match self.apply_with_retries(&batch).await {
            Ok(()) => {
                self.count_applied(writes.len(), &batch);
                self.acknowledge(stream_ids(&writes)).await
            }
            Err(Failed::Stopping) => Ok(()),
            Err(Failed::Sink(err)) => {
                tracing::warn!(error = %err, writes = writes.len(), "write-behind: batch keeps failing; trying each key alone");
                self.isolate(writes).await
            }
        }
    }

    /// After the batch failed every attempt: each key alone, once. A stream
    /// entry is acknowledged if all its writes were applied, else it goes to
    /// the dead-letter stream whole (its applied writes are skipped by their
    /// write ids when it is replayed).
    async fn isolate(&mut self, writes: Vec<StreamEntry>) -> Result<(), RedisError> {
        let all_ids = stream_ids(&writes);
        let mut by_key: BTreeMap<String, Vec<StreamEntry>> = BTreeMap::new();
        for write in writes {
            by_key.entry(write.key.clone()).or_default().push(write);
        }
        let mut failed: BTreeMap<String, String> = BTreeMap::new();
        // Entries with a write not tried yet when the sink went down: neither
        // acknowledged nor dead-lettered, delivered again once claimed.
        let mut untried: HashSet<String> = HashSet::new();
        let mut sink_down = false;
        for (key, group) in by_key {
            if sink_down {
                untried.extend(group.iter().map(|w| w.stream_id.clone()));
                continue;
            }
            let batch = Batch::from_entries(&group);
            match self.shared.sink.apply(&batch).await {
                Ok(()) => self.count_applied(group.len(), &batch),
                // Down after all: this key is not the problem.
                Err(err) if self.shared.sink.is_unavailable(&err) => {
                    tracing::warn!(error = %err, "write-behind: the sink became unreachable while isolating keys");
                    untried.extend(group.iter().map(|w| w.stream_id.clone()));
                    sink_down = true;
                }
                Err(err) => {
                    tracing::error!(key, error = %err, writes = group.len(), "write-behind: a key keeps failing; its entries go to the dead-letter stream");
                    for write in &group {
                        failed.insert(write.stream_id.clone(), err.to_string());
                    }
                }
            }
        }
        for (id, reason) in failed.iter().filter(|(id, _)| !untried.contains(*id)) {
            self.dead_letter(id, reason).await?;
        }
        let applied: Vec<String> = all_ids
            .into_iter()
            .filter(|id| !failed.contains_key(id) && !untried.contains(id))
            .collect();
        if applied.is_empty() {
            return Ok(());
        }
        self.acknowledge(applied).await
    }

    async fn apply_with_retries(&self, batch: &Batch) -> Result<(), Failed> {
        let max = self.shared.config.max_attempts;
        let mut attempt = 1;
        loop {
            match self.shared.sink.apply(batch).await {
                Ok(()) => return Ok(()),
                // The sink is down: wait for it, however long; the entries
                // stay in the stream meanwhile.
                Err(err) if self.shared.sink.is_unavailable(&err) => {
                    let m = &self.shared.metrics;
                    WbMetrics::count(&m.counts.retries, &m.retries, 1);
                    tracing::warn!(error = %err, "write-behind: the sink is unreachable; retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    if self.stopping() {
                        return Err(Failed::Stopping);
                    }
                    attempt = (attempt + 1).min(max.max(1));
                }
                Err(err) if attempt >= max => return Err(Failed::Sink(err)),
                Err(err) => {
                    let m = &self.shared.metrics;
                    WbMetrics::count(&m.counts.retries, &m.retries, 1);
                    tracing::debug!(error = %err, attempt, "write-behind: sink failed; retrying");
                    tokio::time::sleep(self.backoff(attempt)).await;
                    if self.stopping() {
                        return Err(Failed::Stopping);
                    }
                    attempt += 1;
                }
            }
        }
    }

    fn count_applied(&self, writes: usize, batch: &Batch) {
        let m = &self.shared.metrics;
        WbMetrics::count(&m.counts.applied, &m.applied, writes as u64);
        m.counts.batches.fetch_add(1, Ordering::Relaxed);
        m.batch_size.record(batch.writes() as f64);
    }

    /// The sink committed: acknowledge (and delete) the entries, retrying
    /// while Redis fails. Given up only when stopping — a redelivery of a
    /// committed batch changes nothing.
    async fn acknowledge(&mut self, ids: Vec<String>) -> Result<(), RedisError> {
        let mut failures = 0;
        loop {
            let acked = async {
                let mut conn = self.conn().await?;
                let mut invocation = ACK_SCRIPT.redis().prepare_invoke();
                invocation.key(&self.keys.stream).arg(&self.keys.group);
                for id in &ids {
                    invocation.arg(id);
                }
                invocation.invoke_async::<i64>(&mut conn).await
            };
            match acked.await {
                Ok(_) => return Ok(()),
                Err(err) if self.stopping() => return Err(err),
                Err(err) => {
                    failures += 1;
                    tracing::warn!(error = %err, "write-behind: acknowledging an applied batch failed; retrying");
                    tokio::time::sleep(self.backoff(failures)).await;
                }
            }
        }
    }

    async fn dead_letter(&mut self, id: &str, reason: &str) -> Result<(), RedisError> {
        let mut conn = self.conn().await?;
        let keys = &self.keys;
        DEAD_LETTER_SCRIPT
            .redis()
            .key(&keys.stream)
            .key(&keys.dead)
            .arg(&keys.group)
            .arg(id)
            .arg(reason)
            .invoke_async::<i64>(&mut conn)
            .await?;
        let m = &self.shared.metrics;
        WbMetrics::count(&m.counts.dead_letters, &m.dead_letters, 1);
        Ok(())
    }

    /// Queue depth, lag and dead letters into the gauges; returns the
    /// oldest entry's id, if any.
    async fn refresh_gauges(&mut self) -> Result<Option<EntryId>, RedisError> {
        let mut conn = self.conn().await?;
        let state = stream::queue_state(&mut conn, &self.keys.stream, &self.keys.dead).await?;
        self.shared.record_shard_state(self.index, state);
        Ok(state.oldest)
    }

    /// Forget applied write ids that no delivery can concern any more: older
    /// than the oldest entry of every stream of the queue (known once each
    /// stream's worker reported), minus the retention.
    async fn prune(&self, oldest: Option<EntryId>) {
        let oldest = if self.shared.shards.len() == 1 {
            oldest
        } else {
            match self.shared.oldest_entry() {
                Some(oldest) => oldest,
                None => return,
            }
        };
        let horizon = oldest.map_or(now_ms(), |id| id.ms.min(now_ms()));
        let before =
            horizon.saturating_sub(self.shared.config.applied_retention.as_millis() as u64);
        if let Err(err) = self.shared.sink.prune_applied(before).await {
            tracing::debug!(error = %err, "write-behind: pruning applied ids failed");
        }
    }

    /// Exponential backoff with jitter for the `attempt`-th failure.
    fn backoff(&self, attempt: u32) -> Duration {
        let c = &self.shared.config;
        let exp = c
            .retry_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(c.max_backoff);
        capped.mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }
}

/// The distinct stream entries the writes came from, in order.
fn stream_ids(writes: &[StreamEntry]) -> Vec<String> {
    let mut ids: Vec<String> = writes.iter().map(|w| w.stream_id.clone()).collect();
    ids.dedup();
    ids.sort();
    ids.dedup();
    ids
}
