//! L2: the shared Redis tier.
//!
//! Every call goes through [`L2::call`], which owns the three degradation
//! rules: skip Redis while the breaker is open; bound every call by the
//! configured timeout; retry an idempotent read once when the connection was
//! dropped (the client reconnects underneath, but fails the command that saw
//! the drop). Callers above see an [`L2Error`] and treat it as a miss.

mod batch;
mod connection;
mod endpoint;
mod managed;
mod pipelined;
mod resp;
mod script;
mod sentinel;
#[cfg(feature = "simulation")]
pub(crate) mod sim;
mod tls;
mod topology;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::{Cmd, RedisError};

pub(crate) use script::LuaScript;
pub use tls::RedisTls;
pub use topology::RedisTopology;

use crate::breaker::{Breaker, BreakerConfig, BreakerState};
use crate::error::Error;
use crate::keys::{hash_slot, lease_key};

use crate::metrics::CacheMetrics;
use connection::Connection;

/// Why an L2 call produced no answer.
#[derive(Debug, Clone)]
pub(crate) enum L2Error {
    /// The breaker is open; Redis was not called.
    Unavailable,
    /// No answer within the timeout.
    Timeout(Duration),
    /// Redis (or the connection to it) failed.
    Redis(Arc<RedisError>),
}

impl L2Error {
    /// Whether Redis itself failed to answer (breaker open, timeout, a
    /// broken connection) rather than answering with an error of its own.
    pub(crate) fn is_unavailable(&self) -> bool {
        match self {
            L2Error::Unavailable | L2Error::Timeout(_) => true,
            L2Error::Redis(err) => is_infrastructure(err),
        }
    }
}

/// Whether a timeout was noticed so long after its deadline that the
/// process, not Redis, held the call up: half the timeout late (at least
/// 10 ms). On an idle runtime a timer fires within a millisecond or two.
fn noticed_late(deadline: tokio::time::Instant, timeout: Duration) -> bool {
    let late = tokio::time::Instant::now().saturating_duration_since(deadline);
    late > (timeout / 2).max(Duration::from_millis(10))
}

/// Errors that say nothing about the command and everything about the
/// connection or the server's state.
fn is_infrastructure(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || err.is_cluster_error()
        // Redis refusing who we are (a wrong or rotated password, a removed
        // ACL user): no command succeeds until the credentials or the server
        // change, as if Redis were down. Counted as an answer instead, every
        // call would open a connection only to be refused again — a storm of
        // connections and failed AUTHs against the Redis that refuses them.
        // The breaker's probe reconnects, so it closes once they match.
        || err.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(
            err.code(),
            Some(
                "LOADING"
                    | "MASTERDOWN"
                    | "READONLY"
                    | "TRYAGAIN"
                    | "CLUSTERDOWN"
                    | "NOAUTH"
                    | "WRONGPASS"
            )
        )
}

impl From<L2Error> for Error {
    fn from(err: L2Error) -> Self {
        match err {
            L2Error::Unavailable => Error::RedisUnavailable,
            L2Error::Timeout(t) => Error::RedisTimeout(t),
            L2Error::Redis(e) => Error::Redis(crate::error::RedisError::new(e)),
        }
    }
}

/// One value write: stored key, encoded envelope, Redis TTL in milliseconds.
pub(crate) struct Write {
    pub(crate) key: String,
    pub(crate) bytes: Vec<u8>,
    pub(crate) ttl_ms: u64,
}

/// Cheap to clone: clones share the connection, the breaker and the read queue.
#[derive(Clone)]
pub(crate) struct L2 {
    connection: Connection,
    timeout: Duration,
    breaker: Arc<Breaker>,
    metrics: Arc<CacheMetrics>,
    reads: Arc<batch::ReadBatcher>,
}

impl L2 {
    pub(crate) async fn connect(
        topology: &RedisTopology,
        timeout: Duration,
        (connect_timeout, auto_pipelining): (Duration, bool),
        breaker: BreakerConfig,
        metrics: Arc<CacheMetrics>,
        tls: Option<&RedisTls>,
    ) -> Result<Self, Error> {
        let connection =
            Connection::open(topology, timeout, (connect_timeout, auto_pipelining), tls)
                .await
                .map_err(|e| Error::config(format!("cannot set up redis ({topology:?}): {e}")))?;
        Ok(Self {
            connection,
            timeout,
            breaker: Arc::new(Breaker::new(breaker)),
            metrics,
            reads: Arc::default(),
        })
    }

    /// An L2 on a simulated server.
    #[cfg(feature = "simulation")]
    pub(crate) fn simulated(
        redis: &sim::SimRedis,
        timeout: Duration,
        breaker: BreakerConfig,
        metrics: Arc<CacheMetrics>,
    ) -> Self {
        Self {
            connection: Connection::Simulated(redis.connect()),
            timeout,
            breaker: Arc::new(Breaker::new(breaker)),
            metrics,
            reads: Arc::default(),
        }
    }

    /// The simulated server's connection, if this L2 is simulated.
    #[cfg(feature = "simulation")]
    pub(crate) fn simulated_connection(&self) -> Option<&sim::SimConnection> {
        self.connection.simulated()
    }

    /// The timeout of every call.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn breaker_allows_calls(&self) -> bool {
        self.breaker.allows_calls()
    }

    pub(crate) fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    /// Run one Redis operation under the degradation rules.
    async fn call<T, F, Fut>(&self, idempotent: bool, op: F) -> Result<T, L2Error>
    where
        F: Fn(Connection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        if !self.breaker.allows_calls() {
            self.metrics.redis_skipped.increment(1);
            return Err(L2Error::Unavailable);
        }
        let attempt = async {
            match op(self.connection.clone()).await {
                Err(err) if idempotent && (err.is_connection_dropped() || err.is_io_error()) => {
                    op(self.connection.clone()).await
                }
                other => other,
            }
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(Ok(value)) => {
                self.breaker.record_success();
                Ok(value)
            }
            Ok(Err(err)) => {
                if is_infrastructure(&err) {
                    self.metrics.redis_io_errors.increment(1);
                    self.failed(&err);
                } else {
                    // Redis answered: the connection is healthy, the command was wrong.
                    self.metrics.redis_server_errors.increment(1);
                    self.breaker.record_success();
                }
                tracing::debug!(error = %err, "redis call failed");
                Err(L2Error::Redis(Arc::new(err)))
            }
            Err(_) => {
                self.metrics.redis_timeouts.increment(1);
                if noticed_late(deadline, self.timeout) {
                    // The call was not polled until long after its deadline:
                    // this process is too busy to read replies in time (its
                    // own backlog), which says nothing of Redis. Opening the
                    // breaker would send every load around Redis and
                    // multiply the database's work just when the process is
                    // overloaded. The caller still gets its timeout.
                    self.metrics.redis_timeouts_late.increment(1);
                } else {
                    // Only a timeout Redis is to blame for says anything
                    // about the connection (a reader this busy process did
                    // not poll is not a silent peer).
                    self.connection.on_timeout();
                    self.failed(&format_args!("no reply within {:?}", self.timeout));
                }
                Err(L2Error::Timeout(self.timeout))
            }
        }
    }

    /// Count a failure Redis is to blame for; `why` (the failure that
    /// opens the breaker) goes in the log, since callers then only see
    /// "Redis unavailable".
    fn failed(&self, why: &dyn std::fmt::Display) {
        if self.breaker.record_failure() {
            self.metrics.breaker_open.set(1.0);
            self.metrics.breaker_opened.increment(1);
            tracing::warn!(error = %why, "redis circuit breaker opened; serving from L1 and loaders");
            self.spawn_probe();
        }
    }

    /// While open, ping Redis in the background; the first answer closes the breaker.
    fn spawn_probe(&self) {
        let connection = self.connection.clone();
        let breaker = Arc::clone(&self.breaker);
        let metrics = Arc::clone(&self.metrics);
        let timeout = self.timeout;
        let interval = breaker.config().probe_interval;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let ping = redis::cmd("PING");
                match tokio::time::timeout(timeout, connection.query::<String>(&ping)).await {
                    Ok(Ok(_)) => {
                        breaker.close();
                        metrics.breaker_open.set(0.0);
                        tracing::info!("redis answered again; circuit breaker closed");
                        return;
                    }
                    Ok(Err(err)) => tracing::debug!(error = %err, "redis probe failed"),
                    Err(_) => connection.on_timeout(),
                }
            }
        });
    }

    /// Read one key: a GET, or — while enough reads are in flight already —
    /// a place in the next MGET (see [`batch`]).
    pub(crate) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, L2Error> {
        if self.reads.busy() && self.breaker.allows_calls() {
            self.metrics.redis_batched_reads.increment(1);
            return self.get_queued(key).await;
        }
        let _in_flight = self.reads.direct();
        let cmd = redis::cmd("GET").arg(key).to_owned();
        let cmd = &cmd;
        self.call(true, |c| async move { c.query(cmd).await }).await
    }

    /// Read many keys in one round trip (MGET; on a Cluster the client splits
    /// it per slot and runs the parts concurrently).
    pub(crate) async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, L2Error> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let cmd = redis::cmd("MGET").arg(keys).to_owned();
        let cmd = &cmd;
        self.call(true, |c| async move { c.query(cmd).await }).await
    }

    /// Write one entry (and revoke its lease, see [`set_many`](Self::set_many)).
    pub(crate) async fn set(&self, write: &Write) -> Result<(), L2Error> {
        self.set_many(std::slice::from_ref(write)).await
    }

    /// Write many entries: one pipeline on a single node, one pipeline per
    /// hash slot (run concurrently) on a Cluster. Each write also deletes the
    /// key's lease: a load that began before this write must not land after it.
    pub(crate) async fn set_many(&self, writes: &[Write]) -> Result<(), L2Error> {
        let groups = self.group_by_slot(writes.iter().map(|w| w.key.as_str()));
        let pipelines: Vec<redis::Pipeline> = groups
            .into_values()
            .map(|indices| {
                let mut pipe = redis::pipe();
                for i in indices {
                    pipe.add_command(set_cmd(&writes[i])).ignore();
                    pipe.cmd("DEL").arg(lease_key(&writes[i].key)).ignore();
                }
                pipe
            })
            .collect();
        self.call(false, |c| {
            let pipelines = pipelines.clone();
            async move {
                let runs = pipelines.iter().map(|p| c.query_pipeline::<()>(p));
                futures::future::try_join_all(runs).await.map(|_| ())
            }
        })
        .await
    }

    /// Delete keys and their leases (UNLINK: the memory is reclaimed off
    /// Redis's main thread). Deleting the lease revokes any load in progress.
    pub(crate) async fn delete(&self, keys: &[String]) -> Result<(), L2Error> {
        if keys.is_empty() {
            return Ok(());
        }
        let groups = self.group_by_slot(keys.iter().map(String::as_str));
        let cmds: Vec<Cmd> = groups
            .into_values()
            .map(|indices| {
                let mut cmd = redis::cmd("UNLINK");
                for i in indices {
                    cmd.arg(&keys[i]).arg(lease_key(&keys[i]));
                }
                cmd
            })
            .collect();
        self.call(true, |c| {
            let cmds = cmds.clone();
            async move {
                let runs = cmds.iter().map(|cmd| c.query::<i64>(cmd));
                futures::future::try_join_all(runs).await.map(|_| ())
            }
        })
        .await
    }

    /// Delete `key` only if it still holds `expected` (compare-and-delete).
    pub(crate) async fn delete_if_unchanged(
        &self,
        key: &str,
        expected: &[u8],
    ) -> Result<bool, L2Error> {
        static SCRIPT: std::sync::LazyLock<LuaScript> = std::sync::LazyLock::new(|| {
            LuaScript::new(
                "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('UNLINK', KEYS[1]) end return 0",
            )
        });
        self.run_script::<i64>(&SCRIPT, &[key], &[expected], true)
            .await
            .map(|n| n == 1)
    }

    /// Run plain commands as one pipeline (one round trip; not a
    /// transaction — other clients' commands may run between them). On a
    /// Cluster every key must hash to one slot.
    pub(crate) async fn pipeline<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
        idempotent: bool,
    ) -> Result<T, L2Error> {
        self.call(idempotent, |c| async move { c.query_pipeline(pipe).await })
            .await
    }

    /// Run a Lua script (EVALSHA, loading it on NOSCRIPT). All `keys` must
    /// share a hash slot. `idempotent` allows the retry after a dropped connection.
    pub(crate) async fn run_script<T: redis::FromRedisValue>(
        &self,
        script: &LuaScript,
        keys: &[&str],
        args: &[&[u8]],
        idempotent: bool,
    ) -> Result<T, L2Error> {
        self.call(idempotent, |c| async move {
            #[cfg(feature = "simulation")]
            if let Some(sim) = c.simulated() {
                return sim.eval(script.code(), keys, args).await;
            }
            if let Some(result) = c.run_script_direct(script.redis(), keys, args).await {
                return result;
            }
            let mut invocation = script.redis().prepare_invoke();
            for key in keys {
                invocation.key(*key);
            }
            for arg in args {
                invocation.arg(*arg);
            }
            c.invoke_script::<T>(&invocation).await
        })
        .await
    }

    pub(crate) fn is_cluster(&self) -> bool {
        self.connection.is_cluster()
    }

    /// On a Cluster, the URL of the master serving `channel`'s slot: where a
    /// sharded subscription to it must be made.
    pub(crate) async fn shard_owner_url(&self, channel: &str) -> Option<String> {
        let slot = crate::keys::hash_slot(channel.as_bytes());
        // Room for asking the seeds one by one when the routed query fails.
        tokio::time::timeout(self.timeout * 3, self.connection.slot_owner_url(slot))
            .await
            .ok()?
            .ok()?
    }

    /// A client for one node of this deployment (with its TLS material).
    pub(crate) fn client_for(&self, url: &str) -> Option<redis::Client> {
        self.connection.client_for(url).ok()
    }

    /// A plain client to one node, for the fill-notification subscriber.
    pub(crate) fn node_client(&self) -> Option<redis::Client> {
        self.connection.node_client()
    }

    /// When the connection last moved to another master (ms; 0: never).
    pub(crate) fn master_moved_at_ms(&self) -> u64 {
        self.connection.master_moved_at_ms()
    }

    /// Wakes when the connection moves to another master (Sentinel).
    pub(crate) fn master_moves(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.connection.master_moves()
    }

    /// Publish `payload` on `channel`: PUBLISH, or on a Cluster SPUBLISH —
    /// delivered within the channel's shard instead of to every node over
    /// the cluster bus (see `invalidate::backplane`).
    pub(crate) async fn publish(&self, channel: &str, payload: &str) -> Result<(), L2Error> {
        let verb = if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        };
        let cmd = &redis::cmd(verb).arg(channel).arg(payload).to_owned();
        self.call(
            false,
            |c| async move { c.query::<i64>(cmd).await.map(|_| ()) },
        )
        .await
    }

    /// Delete every key matching `pattern` (except those `spare` names) on
    /// every master (SCAN in batches, UNLINK per batch — never KEYS); returns
    /// how many were deleted.
    pub(crate) async fn delete_matching(
        &self,
        pattern: &str,
        batch: usize,
        spare: impl Fn(&str) -> bool,
    ) -> Result<u64, Error> {
        if !self.breaker.allows_calls() {
            return Err(Error::RedisUnavailable);
        }
        let mut deleted = 0u64;
        for mut node in self.masters().await? {
            let mut cursor: u64 = 0;
            loop {
                let scan = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(batch)
                    .to_owned();
                let (next, mut keys): (u64, Vec<String>) = self.on_node(&mut node, &scan).await?;
                keys.retain(|k| !spare(k));
                // On a Cluster one node's keys span many slots; UNLINK per slot.
                for (_, indices) in self.group_by_slot(keys.iter().map(String::as_str)) {
                    let mut unlink = redis::cmd("UNLINK");
                    for i in &indices {
                        unlink.arg(&keys[*i]);
                    }
                    let removed: u64 = self.on_node(&mut node, &unlink).await?;
                    deleted += removed;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(deleted)
    }

    /// A connection to every master, for per-node commands (SCAN).
    async fn masters(&self) -> Result<Vec<Node>, Error> {
        #[cfg(feature = "simulation")]
        if let Some(sim) = self.connection.simulated() {
            return Ok(vec![Node::Simulated(sim.clone())]);
        }
        let mut nodes = Vec::new();
        for client in self
            .connection
            .master_clients()
            .await
            .map_err(Error::redis)?
        {
            let conn =
                tokio::time::timeout(self.timeout, client.get_multiplexed_async_connection())
                    .await
                    .map_err(|_| Error::RedisTimeout(self.timeout))?
                    .map_err(Error::redis)?;
            nodes.push(Node::Redis(conn));
        }
        Ok(nodes)
    }

    /// Run `cmd` on one node, bounded by the timeout.
    async fn on_node<T: redis::FromRedisValue>(
        &self,
        node: &mut Node,
        cmd: &Cmd,
    ) -> Result<T, Error> {
        let run = async {
            match node {
                Node::Redis(conn) => cmd.query_async(conn).await,
                #[cfg(feature = "simulation")]
                Node::Simulated(sim) => sim.query(cmd).await,
            }
        };
        tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| Error::RedisTimeout(self.timeout))?
            .map_err(Error::redis)
    }

    /// Ask Redis whether it answers. While the breaker is open this still
    /// asks (bounded by the timeout, like the breaker's own probe) instead of
    /// answering "unavailable": a health check wants the reason — refused
    /// credentials, a connection refused, a timeout — and one PING per check
    /// is no load. The breaker is left to its probe.
    pub(crate) async fn ping(&self) -> Result<(), L2Error> {
        let ping = || async {
            let cmd = redis::cmd("PING");
            self.connection.query::<String>(&cmd).await.map(|_| ())
        };
        if self.breaker.allows_calls() {
            return self.call(true, |_| ping()).await;
        }
        match tokio::time::timeout(self.timeout, ping()).await {
            Ok(result) => result.map_err(|err| L2Error::Redis(Arc::new(err))),
            Err(_) => {
                self.connection.on_timeout();
                Err(L2Error::Timeout(self.timeout))
            }
        }
    }

    /// Indices of `keys` grouped by hash slot; one group when not on a Cluster.
    fn group_by_slot<'a>(&self, keys: impl Iterator<Item = &'a str>) -> BTreeMap<u16, Vec<usize>> {
        let cluster = self.connection.is_cluster();
        let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, key) in keys.enumerate() {
            let slot = if cluster {
                hash_slot(key.as_bytes())
            } else {
                0
            };
            groups.entry(slot).or_default().push(i);
        }
        groups
    }
}

/// A connection to one node.
enum Node {
    Redis(redis::aio::MultiplexedConnection),
    #[cfg(feature = "simulation")]
    Simulated(sim::SimConnection),
}

fn set_cmd(write: &Write) -> Cmd {
    let mut cmd = redis::cmd("SET");
    cmd.arg(&write.key)
        .arg(&write.bytes)
        .arg("PX")
        .arg(write.ttl_ms.max(1));
    cmd
}
