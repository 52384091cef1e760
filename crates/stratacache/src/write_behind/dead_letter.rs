//! The operator's side of a queue: its state, and putting dead letters back.

use std::time::Duration;

use super::metrics::WbMetrics;
use super::sink::Sink;
use super::stream::{queue_state, REPLAY_SCRIPT};
use super::{WriteBehind, WriteBehindError};
use crate::clock::system_now_ms as now_ms;
use crate::error::Error;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A queue's state in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStatus {
    /// Stream entries not yet applied, read or not (an entry carries one
    /// write, or the writes of one group commit).
    pub depth: u64,
    /// Entries read by a worker and not yet acknowledged.
    pub pending: u64,
    /// Age of the oldest entry not yet applied.
    pub lag: Duration,
    /// Entries in the dead-letter stream.
    pub dead_letters: u64,
}

impl<S: Sink> WriteBehind<S> {
    async fn admin(
        &self,
        stream: &str,
    ) -> Result<redis::aio::MultiplexedConnection, WriteBehindError> {
        let client = self.shared.node_client(stream).await;
        let connect = client.get_multiplexed_async_connection();
        match tokio::time::timeout(ADMIN_TIMEOUT, connect).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(WriteBehindError::Redis(Error::redis(e))),
            Err(_) => Err(WriteBehindError::Redis(Error::RedisTimeout(ADMIN_TIMEOUT))),
        }
    }

    async fn admin_query<T>(
        &self,
        query: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, WriteBehindError> {
        match tokio::time::timeout(ADMIN_TIMEOUT, query).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(WriteBehindError::Redis(Error::redis(e))),
            Err(_) => Err(WriteBehindError::Redis(Error::RedisTimeout(ADMIN_TIMEOUT))),
        }
    }

    /// Depth, pending entries, lag and dead letters, read from Redis now
    /// (on a Cluster: added up over the shards).
    pub async fn queue_status(&self) -> Result<QueueStatus, WriteBehindError> {
        let mut total = QueueStatus {
            depth: 0,
            pending: 0,
            lag: Duration::ZERO,
            dead_letters: 0,
        };
        for keys in &self.shared.shards {
            let mut conn = self.admin(&keys.stream).await?;
            let read = queue_state(&mut conn, &keys.stream, &keys.dead);
            let state = self.admin_query(read).await?;
            // XPENDING's summary; an error means no group yet (no worker ran).
            let pending: u64 = redis::cmd("XPENDING")
                .arg(&keys.stream)
                .arg(&keys.group)
                .query_async::<(u64, redis::Value, redis::Value, redis::Value)>(&mut conn)
                .await
                .map_or(0, |(n, _, _, _)| n);
            let lag =
                Duration::from_millis(state.oldest.map_or(0, |id| now_ms().saturating_sub(id.ms)));
            total.depth += state.depth;
            total.pending += pending;
            total.dead_letters += state.dead_letters;
            total.lag = total.lag.max(lag);
        }
        Ok(total)
    }

    /// Put up to `max` dead letters back on the queue (oldest first), with
    /// their original write ids: a write the sink applied after all is not
    /// applied again. Returns how many were moved.
    pub async fn replay_dead_letters(&self, max: usize) -> Result<usize, WriteBehindError> {
        let mut moved = 0i64;
        for keys in &self.shared.shards {
            let left = max.max(1) as i64 - moved;
            if left <= 0 {
                break;
            }
            let mut conn = self.admin(&keys.stream).await?;
            let mut invocation = REPLAY_SCRIPT.redis().key(&keys.stream);
            invocation.key(&keys.dead).arg(left);
            moved += self
                .admin_query(invocation.invoke_async::<i64>(&mut conn))
                .await?;
        }
        let m = &self.shared.metrics;
        WbMetrics::count(&m.counts.replayed, &m.replayed, moved as u64);
        tracing::info!(moved, queue = %self.shared.config.name, "write-behind: dead letters replayed");
        Ok(moved as usize)
    }
}
