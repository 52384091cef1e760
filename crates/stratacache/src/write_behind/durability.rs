//! What survives a Redis restart: checked once when a queue is built.

use std::time::Duration;

/// How durable an acknowledged write-behind write is in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Durability {
    /// AOF is on; `fsync` is the `appendfsync` policy when Redis would tell
    /// (`always`: an acknowledged write survives a Redis crash; `everysec`:
    /// up to about a second of writes can be lost; `no`: the OS decides).
    Aof {
        /// The `appendfsync` setting, if `CONFIG GET` is allowed.
        fsync: Option<String>,
    },
    /// No AOF: acknowledged writes still in the stream are lost if Redis
    /// restarts (RDB snapshots, if any, lose everything since the last one).
    NoAof,
    /// Redis could not be asked (down, or `INFO` refused).
    Unknown(String),
}

/// The node's persistence and whether it is part of a Cluster.
pub(crate) async fn inspect(client: &redis::Client, timeout: Duration) -> (Durability, bool) {
    let probe = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .arg("cluster")
            .query_async(&mut conn)
            .await?;
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        let cluster = field("cluster_enabled").as_deref() == Some("1");
        if field("aof_enabled").as_deref() != Some("1") {
            return Ok::<_, redis::RedisError>((Durability::NoAof, cluster));
        }
        let fsync: Option<(String, String)> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendfsync")
            .query_async(&mut conn)
            .await
            .ok();
        Ok((
            Durability::Aof {
                fsync: fsync.map(|(_, v)| v),
            },
            cluster,
        ))
    };
    match tokio::time::timeout(timeout, probe).await {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => (Durability::Unknown(e.to_string()), false),
        Err(_) => (
            Durability::Unknown(format!("no answer within {timeout:?}")),
            false,
        ),
    }
}

/// Warn when acknowledged writes would not survive a Redis restart.
pub(crate) fn warn_if_weak(durability: &Durability, queue: &str) {
    match durability {
        Durability::Aof { fsync } if fsync.as_deref() == Some("always") => {}
        Durability::Aof { fsync } => tracing::warn!(
            queue,
            appendfsync = fsync.as_deref().unwrap_or("unknown"),
            "write-behind: Redis AOF is not fsynced on every write; a Redis crash can lose the last acknowledged writes (appendfsync always closes that window)"
        ),
        Durability::NoAof => tracing::warn!(
            queue,
            "write-behind: Redis has no AOF (appendonly no); acknowledged writes not yet in the database are lost if Redis restarts"
        ),
        Durability::Unknown(why) => tracing::warn!(
            queue,
            reason = %why,
            "write-behind: could not check Redis persistence; acknowledged writes may not survive a Redis restart"
        ),
    }
}
