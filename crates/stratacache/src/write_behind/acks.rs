//! Acknowledgement by replicas (`WriteBehindBuilder::acknowledge_replicas`):
//! after a stream entry was written, `WAIT` until `replicas` replicas have
//! it, or fail the writes it carried (they then go to the sink directly;
//! their write ids keep the stream's copy from being applied twice).
//!
//! `WAIT` counts the writes of the connection it is sent on, and blocks that
//! connection meanwhile; the cache's shared connection must not block. So
//! each stream has a connection of its own to its node, which writes a
//! marker (`<stream>:ack`) and waits for it: a node replicates in one ordered
//! stream, so a replica that has the marker has every write before it —
//! the entry included, whose script had returned before the marker was sent.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::RedisError;
use tokio::sync::Mutex;

use crate::l2::{L2Error, L2};

/// The replica acknowledgement of a queue's streams.
pub(crate) struct ReplicaAcks {
    l2: Arc<L2>,
    replicas: u32,
    timeout: Duration,
    /// Per stream: its marker key, and the connection to its node.
    streams: Vec<(String, Mutex<Option<ConnectionManager>>)>,
}

impl ReplicaAcks {
    pub(crate) fn new(l2: Arc<L2>, markers: Vec<String>, replicas: u32, timeout: Duration) -> Self {
        Self {
            l2,
            replicas,
            timeout,
            streams: markers.into_iter().map(|m| (m, Mutex::new(None))).collect(),
        }
    }

    /// Wait until `replicas` replicas have everything written to stream
    /// `index`'s node so far.
    pub(crate) async fn confirm(&self, index: usize) -> Result<(), L2Error> {
        let (marker, slot) = &self.streams[index];
        let mut conn = slot.lock().await;
        let bound = self.timeout + self.l2.timeout();
        let attempt = async {
            if conn.is_none() {
                *conn = Some(self.connect(marker).await?);
            }
            let c = conn.as_mut().expect("connected above");
            let (_, acked): ((), u32) = redis::pipe()
                .cmd("SET")
                .arg(marker)
                .arg(crate::clock::system_now_ms())
                .arg("PX")
                .arg(60_000)
                .cmd("WAIT")
                .arg(self.replicas)
                .arg(self.timeout.as_millis() as u64)
                .query_async(c)
                .await?;
            Ok::<_, RedisError>(acked)
        };
        let failed = match tokio::time::timeout(bound, attempt).await {
            Ok(Ok(acked)) if acked >= self.replicas => return Ok(()),
            Ok(Ok(acked)) => {
                return Err(L2Error::Redis(Arc::new(RedisError::from((
                    redis::ErrorKind::Io,
                    "replicas did not acknowledge the write-behind entry in time",
                    format!("{acked} of {} within {:?}", self.replicas, self.timeout),
                )))))
            }
            Ok(Err(err)) => L2Error::Redis(Arc::new(err)),
            Err(_) => L2Error::Timeout(bound),
        };
        // A failover or a moved slot: find the node again next time.
        *conn = None;
        Err(failed)
    }

    /// A connection to the node that holds `marker` (and its stream).
    async fn connect(&self, marker: &str) -> Result<ConnectionManager, RedisError> {
        let client = if self.l2.is_cluster() {
            self.l2
                .shard_owner_url(marker)
                .await
                .and_then(|url| self.l2.client_for(&url))
        } else {
            self.l2.node_client()
        };
        let client = client.ok_or_else(|| {
            RedisError::from((
                redis::ErrorKind::Io,
                "no Redis node holds the write-behind stream",
            ))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.l2.timeout()))
            .set_response_timeout(None)
            .set_number_of_retries(1);
        ConnectionManager::new_with_config(client, config).await
    }
}
