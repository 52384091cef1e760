//! The service's own Redis connection (`INFO` for the dashboard, the health
//! check, the watch that logs Redis going away and coming back), apart from
//! the cache's and the sessions'. Connected on first use, every call bounded
//! by a timeout, so Redis being down costs a request at most that long and
//! never a panic.

use std::sync::Arc;
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
    /// Where, without credentials (for log lines).
    shown: String,
    client: redis::Client,
    connection: Mutex<Option<ConnectionManager>>,
    timeout: Duration,
}

impl RedisLink {
    /// A link to `url`; nothing is connected yet.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, RedisLinkError> {
        Ok(Self {
            shown: without_credentials(url),
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

impl RedisLink {
    /// The URL, without credentials.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Say at start whether Redis answers: without it the service answers
    /// from PostgreSQL alone and sign-ins are refused, which an operator
    /// should learn from the first lines of the log, not from the first
    /// complaint.
    pub async fn check_at_start(&self) -> bool {
        let answers = self.ping().await;
        if !answers {
            tracing::warn!(
                redis = %self.shown,
                "Redis does not answer: serving from PostgreSQL without the shared cache; sign-ins are refused until it answers"
            );
        }
        answers
    }

    /// Ping Redis every `every` while the link lives and log each change:
    /// Redis gone (warning) and back (info), with or without traffic.
    pub fn watch(
        self: &Arc<Self>,
        mut answered: bool,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(link) = weak.upgrade() else { return };
                let answers = link.ping().await;
                match (answered, answers) {
                    (true, false) => tracing::warn!(redis = %link.shown, "Redis stopped answering"),
                    (false, true) => tracing::info!(redis = %link.shown, "Redis answers again"),
                    _ => {}
                }
                answered = answers;
            }
        })
    }
}

/// `url` without a user name or password: `redis://:secret@host:6379/0` →
/// `redis://host:6379/0`.
pub fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    // The last '@' anywhere: a password with an unescaped '/' or '@' must
    // not leave a piece of itself behind (showing too little is harmless).
    match rest.rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_the_shown_url() {
        assert_eq!(
            without_credentials("redis://user:s3cret@127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(without_credentials("rediss://:p@ss@h:1"), "rediss://h:1");
        assert_eq!(
            without_credentials("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(without_credentials("not a url"), "not a url");
        assert_eq!(without_credentials("redis://:a/b@h:1/0"), "redis://h:1/0");
    }
}
