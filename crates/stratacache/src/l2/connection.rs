//! One handle over the three deployments. It only moves commands: what to
//! send, timeouts and breaking live in the tier above.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, RedisResult};

use super::sentinel::SentinelMaster;
use super::topology::RedisTopology;

#[derive(Clone)]
pub(crate) enum Connection {
    Single {
        manager: ConnectionManager,
        client: redis::Client,
    },
    Cluster {
        connection: ClusterConnection,
        seeds: Arc<Vec<String>>,
        next_seed: Arc<std::sync::atomic::AtomicUsize>,
    },
    Sentinel(Arc<SentinelMaster>),
}

impl Connection {
    /// Connect without waiting for Redis where the client allows it, so a cache
    /// can be built (and serve from L1 and the loader) while Redis is down.
    pub(crate) async fn open(
        topology: &RedisTopology,
        response_timeout: Duration,
        connect_timeout: Duration,
    ) -> RedisResult<Self> {
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
                let client = redis::Client::open(url.as_str())?;
                Ok(Connection::Single {
                    manager: ConnectionManager::new_lazy_with_config(
                        client.clone(),
                        manager_config,
                    )?,
                    client,
                })
            }
            RedisTopology::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(connect_timeout)
                    .response_timeout(response_timeout)
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(200)
                    .build()?;
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(connect_timeout)
                    .set_response_timeout(response_timeout);
                Ok(Connection::Cluster {
                    connection: client.get_pending_async_connection_with_config(config),
                    seeds: Arc::new(nodes.clone()),
                    next_seed: Arc::default(),
                })
            }
            RedisTopology::Sentinel {
                sentinels,
                master_name,
                master_url,
            } => Ok(Connection::Sentinel(
                SentinelMaster::connect(sentinels, master_name, master_url, manager_config).await?,
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
            Connection::Single { client, .. } => Some(client.clone()),
            Connection::Cluster {
                seeds, next_seed, ..
            } => {
                let i = next_seed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                redis::Client::open(seeds.get(i % seeds.len().max(1))?.as_str()).ok()
            }
            Connection::Sentinel(s) => s.master_client(),
        }
    }

    pub(crate) async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> RedisResult<T> {
        match self {
            Connection::Single { manager, .. } => cmd.query_async(&mut manager.clone()).await,
            Connection::Cluster { connection, .. } => {
                cmd.query_async(&mut connection.clone()).await
            }
            Connection::Sentinel(s) => {
                let result = cmd.query_async(&mut s.connection()).await;
                self.observe(&result);
                result
            }
        }
    }

    /// Run a script (EVALSHA, loading it on NOSCRIPT).
    pub(crate) async fn invoke_script<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> RedisResult<T> {
        match self {
            Connection::Single { manager, .. } => {
                invocation.invoke_async(&mut manager.clone()).await
            }
            Connection::Cluster { connection, .. } => {
                invocation.invoke_async(&mut connection.clone()).await
            }
            Connection::Sentinel(s) => {
                let result = invocation.invoke_async(&mut s.connection()).await;
                self.observe(&result);
                result
            }
        }
    }

    /// Run a pipeline. On a Cluster every command must hash to one slot.
    pub(crate) async fn query_pipeline<T: FromRedisValue>(
        &self,
        pipe: &Pipeline,
    ) -> RedisResult<T> {
        match self {
            Connection::Single { manager, .. } => pipe.query_async(&mut manager.clone()).await,
            Connection::Cluster { connection, .. } => {
                pipe.query_async(&mut connection.clone()).await
            }
            Connection::Sentinel(s) => {
                let result = pipe.query_async(&mut s.connection()).await;
                self.observe(&result);
                result
            }
        }
    }

    /// Clients to every master: the node, the Sentinel master, or every
    /// Cluster master (from `CLUSTER NODES`), for per-node commands like SCAN.
    pub(crate) async fn master_clients(&self) -> RedisResult<Vec<redis::Client>> {
        match self {
            Connection::Single { client, .. } => Ok(vec![client.clone()]),
            Connection::Sentinel(s) => Ok(s.master_client().into_iter().collect()),
            Connection::Cluster {
                connection, seeds, ..
            } => {
                let nodes: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query_async(&mut connection.clone())
                    .await?;
                // Credentials and TLS as in the first seed URL.
                let seed = seeds.first().map(String::as_str).unwrap_or("redis://");
                let (scheme, rest) = seed.split_once("://").unwrap_or(("redis", ""));
                let userinfo = rest
                    .rsplit_once('@')
                    .map(|(u, _)| format!("{u}@"))
                    .unwrap_or_default();
                nodes
                    .lines()
                    .filter_map(|line| {
                        let mut fields = line.split_whitespace();
                        let addr = fields.nth(1)?;
                        let flags = fields.next()?;
                        let is_master = flags.split(',').any(|f| f == "master")
                            && !flags
                                .split(',')
                                .any(|f| f == "fail" || f == "handshake" || f == "noaddr");
                        is_master.then(|| addr.split('@').next().unwrap_or(addr).to_string())
                    })
                    .map(|addr| {
                        redis::Client::open(format!("{scheme}://{userinfo}{addr}").as_str())
                    })
                    .collect()
            }
        }
    }

    /// A call timed out: on Sentinel, the master may have moved.
    pub(crate) fn on_timeout(&self) {
        if let Connection::Sentinel(s) = self {
            s.maybe_resolve();
        }
    }

    fn observe<T>(&self, result: &Result<T, RedisError>) {
        if let (Connection::Sentinel(s), Err(err)) = (self, result) {
            s.on_error(err);
        }
    }
}
