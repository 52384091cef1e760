//! The seed articles' cache-aside, ported literally: GET; on a miss load
//! and SET; DEL on write. Nothing guards a fill against a write that lands
//! while it loads, which is the race the checker must be able to see.

use super::reader::load_version;
use super::{Error, Plan};

/// A plain redis-rs client doing naive cache-aside on the plan's Redis,
/// under the plan's namespace.
#[derive(Clone)]
pub enum NaiveCache {
    /// One Redis node.
    Single(redis::aio::MultiplexedConnection, String),
    /// A Redis Cluster.
    Cluster(redis::cluster_async::ClusterConnection, String),
}

impl NaiveCache {
    /// Connect to the plan's Redis.
    pub async fn connect(plan: &Plan) -> Result<NaiveCache, Error> {
        Ok(if plan.cluster {
            let client = redis::cluster::ClusterClient::new(plan.topology.clone())?;
            NaiveCache::Cluster(client.get_async_connection().await?, plan.namespace.clone())
        } else {
            let client = redis::Client::open(plan.topology[0].as_str())?;
            NaiveCache::Single(
                client.get_multiplexed_async_connection().await?,
                plan.namespace.clone(),
            )
        })
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            NaiveCache::Single(c, _) => cmd.query_async(&mut c.clone()).await,
            NaiveCache::Cluster(c, _) => cmd.query_async(&mut c.clone()).await,
        }
    }

    fn key(&self, key: &str) -> String {
        match self {
            NaiveCache::Single(_, ns) | NaiveCache::Cluster(_, ns) => format!("{ns}:naive:{key}"),
        }
    }

    /// Row `id` of `table` under `key`: from Redis, or loaded and SET for
    /// 60 s.
    pub async fn read(
        &self,
        key: &str,
        db: &tokio_postgres::Client,
        table: &str,
        id: i32,
    ) -> Result<i64, Error> {
        let key = self.key(key);
        if let Some(version) = self
            .query::<Option<i64>>(redis::cmd("GET").arg(&key))
            .await?
        {
            return Ok(version);
        }
        let version = load_version(db, table, id).await?;
        self.query::<()>(redis::cmd("SET").arg(&key).arg(version).arg("EX").arg(60))
            .await?;
        Ok(version)
    }

    /// DEL `key`.
    pub async fn invalidate(&self, key: &str) -> Result<(), Error> {
        self.query::<i64>(redis::cmd("DEL").arg(self.key(key)))
            .await?;
        Ok(())
    }
}
