//! One handle over the three deployments. It only moves commands: what to
//! send, timeouts and breaking live in the tier above.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManagerConfig;
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, RedisResult};

use super::endpoint::Endpoint;
use super::managed::ManagedConnection;
use super::pipelined::PipelinedConnection;
use super::sentinel::SentinelMaster;
use super::tls::{self, RedisTls};
use super::topology::RedisTopology;

/// How long `CLUSTER NODES` may take from one node.
const SEED_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub(crate) enum Connection {
    Single {
        link: SingleLink,
        /// Shared: with TLS material a client is large, and the handle is
        /// cloned per call (a clone must not copy the client).
        client: Arc<redis::Client>,
    },
    Cluster {
        connection: ClusterConnection,
        seeds: Arc<Vec<String>>,
        next_seed: Arc<std::sync::atomic::AtomicUsize>,
        /// For the extra connections to single nodes (backplane, SCAN).
        tls: Option<Arc<RedisTls>>,
    },
    Sentinel(Arc<SentinelMaster>),
    /// A simulated server (the race simulation).
    #[cfg(feature = "simulation")]
    Simulated(super::sim::SimConnection),
}

/// How commands reach a single node.
#[derive(Clone)]
pub(crate) enum SingleLink {
    Pipelined(PipelinedConnection),
    Manager(ManagedConnection),
}

impl Connection {
    /// Connect without waiting for Redis where the client allows it, so a cache
    /// can be built (and serve from L1 and the loader) while Redis is down.
    pub(crate) async fn open(
        topology: &RedisTopology,
        response_timeout: Duration,
        (connect_timeout, auto_pipelining): (Duration, bool),
        tls: Option<&RedisTls>,
    ) -> RedisResult<Self> {
        tls::install_crypto_provider();
        let manager_config = ConnectionManagerConfig::new()
            // The tier above bounds every call (retry included) with the same
            // timeout; a second timer per request inside the client only costs.
            .set_response_timeout(None)
            .set_connection_timeout(Some(connect_timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(500));
        match topology {
            RedisTopology::Single(url) => {
                let client = Arc::new(tls::client(url, tls)?);
                // Plain TCP: our own pipelined connection (see `pipelined`);
                // TLS, Unix sockets, RESP3: redis-rs's connection manager.
                let link = match Endpoint::of(&client).filter(|_| auto_pipelining) {
                    Some(endpoint) => SingleLink::Pipelined(PipelinedConnection::new(
                        endpoint,
                        connect_timeout,
                        response_timeout,
                    )),
                    None => SingleLink::Manager(ManagedConnection::new(
                        Arc::clone(&client),
                        manager_config,
                        response_timeout,
                    )?),
                };
                Ok(Connection::Single { link, client })
            }
            RedisTopology::Cluster(nodes) => {
                let builder = ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(connect_timeout)
                    .response_timeout(response_timeout)
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(200);
                let builder = match tls {
                    None => builder,
                    #[cfg(feature = "tls")]
                    Some(tls) => builder.certs(tls::cluster_certificates(tls)),
                    #[cfg(not(feature = "tls"))]
                    Some(_) => return Err(tls::not_built_with_tls()),
                };
                let client = builder.build()?;
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(connect_timeout)
                    .set_response_timeout(response_timeout);
                Ok(Connection::Cluster {
                    connection: client.get_pending_async_connection_with_config(config),
                    seeds: Arc::new(nodes.clone()),
                    next_seed: Arc::default(),
                    tls: tls.cloned().map(Arc::new),
                })
            }
            RedisTopology::Sentinel {
                sentinels,
                master_name,
                master_url,
            } => Ok(Connection::Sentinel(
                SentinelMaster::connect(
                    sentinels,
                    master_name,
                    master_url,
                    (manager_config, response_timeout),
                    tls,
                )
                .await?,
            )),
        }
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Connection::Cluster { .. })
    }

    /// A plain client to one node, for a dedicated pub/sub connection. On a
    /// Cluster any node will do (PUBLISH reaches every node); successive calls
    /// rotate through the seeds so a dead node is not retried forever.
    pub(crate) fn node_client(&self) -> Option<redis::Client> {
        match self {
            Connection::Single { client, .. } => Some((**client).clone()),
            Connection::Cluster {
                seeds,
                next_seed,
                tls,
                ..
            } => {
                let i = next_seed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let seed = seeds.get(i % seeds.len().max(1))?;
                tls::client(seed, tls.as_deref()).ok()
            }
            Connection::Sentinel(s) => s.master_client(),
            #[cfg(feature = "simulation")]
            Connection::Simulated(_) => None,
        }
    }

    /// The simulated server's connection, if this is one.
    #[cfg(feature = "simulation")]
    pub(crate) fn simulated(&self) -> Option<&super::sim::SimConnection> {
        match self {
            Connection::Simulated(sim) => Some(sim),
            _ => None,
        }
    }

    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Connection::Single { link, .. } => match link {
                SingleLink::Pipelined(c) => cmd.query_async(&mut c.clone()).await,
                SingleLink::Manager(m) => m.watch(cmd.query_async(&mut m.connection())).await,
            },
            Connection::Cluster { connection, .. } => {
                cmd.query_async(&mut connection.clone()).await
            }
            Connection::Sentinel(s) => {
                let result = s.watch(cmd.query_async(&mut s.connection())).await;
                self.observe(&result);
                result
            }
            #[cfg(feature = "simulation")]
            Connection::Simulated(sim) => sim.query(cmd).await,
        }
    }

    /// Run a script (EVALSHA, loading it on NOSCRIPT).
    pub(crate) async fn invoke_script<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        match self {
            Connection::Single { link, .. } => match link {
                SingleLink::Pipelined(c) => invocation.invoke_async(&mut c.clone()).await,
                SingleLink::Manager(m) => {
                    m.watch(invocation.invoke_async(&mut m.connection())).await
                }
            },
            Connection::Cluster { connection, .. } => {
                invocation.invoke_async(&mut connection.clone()).await
            }
            Connection::Sentinel(s) => {
                let result = s.watch(invocation.invoke_async(&mut s.connection())).await;
                self.observe(&result);
                result
            }
            #[cfg(feature = "simulation")]
            Connection::Simulated(_) => Err(RedisError::from((
                redis::ErrorKind::Client,
                "a simulated server runs scripts from their source (L2::run_script)",
            ))),
        }
    }

    /// Run a script by digest on a single node's pipelined connection, its
    /// keys and arguments written without copies. `None`: this connection
    /// is another kind, or Redis does not know the script (restarted or
    /// flushed) — run it through [`invoke_script`](Self::invoke_script),
    /// which loads it.
    pub(crate) async fn run_script_direct<T: FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Option<RedisResult<T>> {
        let Connection::Single {
            link: SingleLink::Pipelined(c),
            ..
        } = self
        else {
            return None;
        };
        let reply = c
            .evalsha(script.get_hash(), keys, args)
            .await
            .and_then(redis::Value::extract_error);
        match reply {
            Err(err)
                if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                None
            }
            Ok(value) => Some(redis::from_redis_value(value).map_err(Into::into)),
            Err(err) => Some(Err(err)),
        }
    }

    /// Run a pipeline. On a Cluster every command must hash to one slot.
    pub(crate) async fn query_pipeline<T: FromRedisValue>(
        &self,
        pipe: &Pipeline,
    ) -> RedisResult<T> {
        match self {
            Connection::Single { link, .. } => match link {
                SingleLink::Pipelined(c) => pipe.query_async(&mut c.clone()).await,
                SingleLink::Manager(m) => m.watch(pipe.query_async(&mut m.connection())).await,
            },
            Connection::Cluster { connection, .. } => {
                pipe.query_async(&mut connection.clone()).await
            }
            Connection::Sentinel(s) => {
                let result = s.watch(pipe.query_async(&mut s.connection())).await;
                self.observe(&result);
                result
            }
            #[cfg(feature = "simulation")]
            Connection::Simulated(sim) => sim.query_pipeline(pipe).await,
        }
    }

    /// Clients to every master: the node, the Sentinel master, or every
    /// Cluster master (from `CLUSTER NODES`), for per-node commands like SCAN.
    pub(crate) async fn master_clients(&self) -> RedisResult<Vec<redis::Client>> {
        match self {
            Connection::Single { client, .. } => Ok(vec![(**client).clone()]),
            Connection::Sentinel(s) => Ok(s.master_client().into_iter().collect()),
            #[cfg(feature = "simulation")]
            Connection::Simulated(_) => Ok(Vec::new()),
            Connection::Cluster { .. } => self
                .cluster_masters()
                .await?
                .into_iter()
                .map(|m| self.client_for(&m.url))
                .collect(),
        }
    }

    /// A client for one node of this deployment, with its TLS material.
    pub(crate) fn client_for(&self, url: &str) -> RedisResult<redis::Client> {
        match self {
            Connection::Cluster { tls, .. } => tls::client(url, tls.as_deref()),
            _ => redis::Client::open(url),
        }
    }

    /// The URL of the master serving `slot` on a Cluster, `None` elsewhere
    /// or while no master serves it.
    pub(crate) async fn slot_owner_url(&self, slot: u16) -> RedisResult<Option<String>> {
        if !self.is_cluster() {
            return Ok(None);
        }
        Ok(self
            .cluster_masters()
            .await?
            .into_iter()
            .find(|m| m.slots.iter().any(|&(lo, hi)| (lo..=hi).contains(&slot)))
            .map(|m| m.url))
    }

    /// The live masters of a Cluster (`CLUSTER NODES`), with the credentials
    /// and scheme of the first seed URL.
    async fn cluster_masters(&self) -> RedisResult<Vec<ClusterMaster>> {
        let Connection::Cluster {
            connection, seeds, ..
        } = self
        else {
            return Ok(Vec::new());
        };
        let routed = tokio::time::timeout(
            SEED_TIMEOUT,
            redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async::<String>(&mut connection.clone()),
        )
        .await
        .unwrap_or_else(|_| {
            Err(RedisError::from(std::io::Error::from(
                std::io::ErrorKind::TimedOut,
            )))
        });
        let nodes = match routed {
            Ok(nodes) => nodes,
            // Sent to any node, it can go to a dead one for a while after a
            // failover (redis-rs keeps picking it): ask the seeds instead.
            Err(err) => self.cluster_nodes_from_seeds().await.ok_or(err)?,
        };
        let seed = seeds.first().map(String::as_str).unwrap_or("redis://");
        let (scheme, rest) = seed.split_once("://").unwrap_or(("redis", ""));
        let userinfo = rest
            .rsplit_once('@')
            .map(|(u, _)| format!("{u}@"))
            .unwrap_or_default();
        Ok(parse_masters(&nodes)
            .into_iter()
            .map(|(addr, slots)| ClusterMaster {
                url: format!("{scheme}://{userinfo}{addr}"),
                slots,
            })
            .collect())
    }

    /// `CLUSTER NODES` from the first seed that answers in time.
    async fn cluster_nodes_from_seeds(&self) -> Option<String> {
        let Connection::Cluster { seeds, tls, .. } = self else {
            return None;
        };
        for seed in seeds.iter() {
            let Ok(client) = tls::client(seed, tls.as_deref()) else {
                continue;
            };
            let ask = async {
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query_async::<String>(&mut conn)
                    .await
            };
            if let Ok(Ok(nodes)) = tokio::time::timeout(SEED_TIMEOUT, ask).await {
                return Some(nodes);
            }
        }
        None
    }

    /// Wakes when the connection moves to another master (Sentinel only).
    pub(crate) fn master_moves(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        match self {
            Connection::Sentinel(s) => Some(s.moves()),
            _ => None,
        }
    }

    /// When the connection last moved to another master (ms; 0: never).
    pub(crate) fn master_moved_at_ms(&self) -> u64 {
        match self {
            Connection::Sentinel(s) => s.moved_at_ms(),
            _ => 0,
        }
    }

    /// A call timed out: on Sentinel, the master may have moved; on a single
    /// node or a Sentinel master, the connection may have gone silent.
    pub(crate) fn on_timeout(&self) {
        match self {
            Connection::Sentinel(s) => s.on_timeout(),
            Connection::Single { link, .. } => match link {
                SingleLink::Pipelined(c) => c.on_timeout(),
                SingleLink::Manager(m) => m.on_timeout(),
            },
            _ => {}
        }
    }

    fn observe<T>(&self, result: &Result<T, RedisError>) {
        if let (Connection::Sentinel(s), Err(err)) = (self, result) {
            s.on_error(err);
        }
    }
}

struct ClusterMaster {
    url: String,
    slots: Vec<(u16, u16)>,
}

/// Live masters in `CLUSTER NODES` output: address and slot ranges
/// (migration markers such as `[93->-id]` are skipped).
fn parse_masters(nodes: &str) -> Vec<(String, Vec<(u16, u16)>)> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (addr, flags) = (fields.get(1)?, fields.get(2)?);
            let flags: Vec<&str> = flags.split(',').collect();
            let live_master = flags.contains(&"master")
                && !flags
                    .iter()
                    .any(|f| matches!(*f, "fail" | "handshake" | "noaddr"));
            if !live_master {
                return None;
            }
            let slots = fields
                .iter()
                .skip(8)
                .filter(|s| !s.starts_with('['))
                .filter_map(|range| match range.split_once('-') {
                    Some((lo, hi)) => Some((lo.parse().ok()?, hi.parse().ok()?)),
                    None => range.parse().ok().map(|slot| (slot, slot)),
                })
                .collect();
            Some((addr.split('@').next().unwrap_or(addr).to_string(), slots))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::parse_masters;

    #[test]
    fn masters_and_their_slots_are_read_from_cluster_nodes() {
        let nodes = "\
a1 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7002@17002 master - 0 0 2 connected 5461-10922 [10923->-c3]
c3 127.0.0.1:7003@17003 master,fail - 0 0 3 connected 10923-16383
d4 127.0.0.1:7004@17004 slave a1 0 0 1 connected
e5 127.0.0.1:7005@17005 master - 0 0 5 connected 42
";
        assert_eq!(
            parse_masters(nodes),
            vec![
                ("127.0.0.1:7001".to_string(), vec![(0, 5460)]),
                ("127.0.0.1:7002".to_string(), vec![(5461, 10922)]),
                ("127.0.0.1:7005".to_string(), vec![(42, 42)]),
            ]
        );
    }
}
