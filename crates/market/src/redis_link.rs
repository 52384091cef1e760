//! The service's own Redis connection (sessions, `INFO` for the dashboard,
//! the health check), apart from the cache's. Connected on first use, every
//! call bounded by a timeout, so Redis being down costs a request at most
//! that long and never a panic.

use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::Mutex;

/// Why a Redis call failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisLinkError {
    /// Connecting or the command failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// No answer within the timeout.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// A lazily connected, timeout-bounded Redis connection.
pub struct RedisLink {
    client: redis::Client,
    connection: Mutex<Option<ConnectionManager>>,
    timeout: Duration,
}

impl RedisLink {
    /// A link to `url`; nothing is connected yet.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, RedisLinkError> {
        Ok(Self {
            client: redis::Client::open(url)?,
            connection: Mutex::new(None),
            timeout,
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, RedisLinkError> {
        let mut slot = self.connection.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(
            self.timeout,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| RedisLinkError::Timeout(self.timeout))??;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Run `cmd`, bounded by the timeout.
    pub async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, RedisLinkError> {
        let mut conn = self.connection().await?;
        tokio::time::timeout(self.timeout, cmd.query_async(&mut conn))
            .await
            .map_err(|_| RedisLinkError::Timeout(self.timeout))?
            .map_err(RedisLinkError::from)
    }

    /// Whether Redis answers `PING`.
    pub async fn ping(&self) -> bool {
        self.query::<String>(&redis::cmd("PING")).await.is_ok()
    }

    /// Used memory and evicted keys, from `INFO`.
    pub async fn memory(&self) -> Option<RedisMemory> {
        let info: String = self.query(redis::cmd("INFO").arg("all")).await.ok()?;
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Some(RedisMemory {
            used_memory_bytes: field("used_memory")?,
            evicted_keys: field("evicted_keys").unwrap_or(0),
        })
    }
}

/// Redis memory figures for the dashboard.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct RedisMemory {
    /// `used_memory`.
    pub used_memory_bytes: u64,
    /// `evicted_keys` (maxmemory evictions since Redis started).
    pub evicted_keys: u64,
}
