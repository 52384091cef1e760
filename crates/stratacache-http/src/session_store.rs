//! A [`tower_sessions_core::SessionStore`] on Redis.
//!
//! A session is one Redis string, `{prefix}{id}`, holding the record as
//! JSON, written with `PXAT` = the record's expiry: Redis expires it, so no
//! sweeper runs and every instance sees the same sessions. `create` writes
//! with `NX` and draws a new id on a collision, which is what makes
//! `Session::cycle_id` (rotation on login) safe.
//!
//! Sessions do not go through the two-tier cache: a logout must take effect
//! on every instance at once (no L1 copy may outlive it), and a Redis outage
//! must be an error the application sees, not a silent miss that logs
//! everyone out.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::AsyncCommands;
use tower_sessions_core::session::{Id, Record};
use tower_sessions_core::session_store::{self, SessionStore};

/// How many fresh ids `create` draws before giving up on collisions.
const CREATE_ATTEMPTS: usize = 8;

/// Sessions in Redis, shared by every instance that uses the same server and prefix.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use stratacache_http::RedisSessionStore;
/// use tower_sessions::{Expiry, SessionManagerLayer};
///
/// let client = redis::Client::open("redis://127.0.0.1:6379")?;
/// let connection = redis::aio::ConnectionManager::new(client).await?;
/// let store = RedisSessionStore::new(connection).with_prefix("shop:session:");
/// let sessions = SessionManagerLayer::new(store)
///     .with_expiry(Expiry::OnInactivity(time::Duration::hours(2)));
/// # let _ = sessions; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisSessionStore<C = redis::aio::ConnectionManager> {
    connection: C,
    prefix: String,
    timeout: Duration,
}

/// How long one store operation may wait for Redis by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

impl<C> std::fmt::Debug for RedisSessionStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSessionStore")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<C> RedisSessionStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    /// A store on `connection` (a `ConnectionManager`, which reconnects by
    /// itself, or a multiplexed connection), with keys `session:{id}`.
    pub fn new(connection: C) -> Self {
        Self {
            connection,
            prefix: "session:".to_string(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The longest one operation waits for Redis (2 s by default); past it
    /// the operation fails with a backend error rather than hold the request.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Run one Redis call under the store's timeout.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> session_store::Result<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(backend),
            Err(_) => Err(session_store::Error::Backend(format!(
                "redis did not answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// Prefix of the Redis keys (default `session:`).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The Redis key of session `id`.
    pub fn key(&self, id: &Id) -> String {
        format!("{}{}", self.prefix, id)
    }

    /// Write `record`; with `only_new`, only if no session has its id.
    /// Returns whether it was written. An already expired record is removed.
    async fn write(&self, record: &Record, only_new: bool) -> session_store::Result<bool> {
        let key = self.key(&record.id);
        let expires_at_ms = record.expiry_date.unix_timestamp_nanos() / 1_000_000;
        let mut connection = self.connection.clone();
        if expires_at_ms <= now_unix_ms() {
            let _: () = self.bounded(connection.del(&key)).await?;
            return Ok(!only_new);
        }
        let json = serde_json::to_string(record)
            .map_err(|err| session_store::Error::Encode(err.to_string()))?;
        let mut command = redis::cmd("SET");
        command
            .arg(&key)
            .arg(json)
            .arg("PXAT")
            .arg(expires_at_ms as i64);
        if only_new {
            command.arg("NX");
        }
        let written: Option<String> = self.bounded(command.query_async(&mut connection)).await?;
        Ok(written.is_some())
    }
}

#[async_trait::async_trait]
impl<C> SessionStore for RedisSessionStore<C>
where
    C: ConnectionLike + Clone + Send + Sync + 'static,
{
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        for _ in 0..CREATE_ATTEMPTS {
            if self.write(record, true).await? {
                return Ok(());
            }
            record.id = Id::default();
        }
        Err(session_store::Error::Backend(
            "could not find a free session id".to_string(),
        ))
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.write(record, false).await.map(|_| ())
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        let mut connection = self.connection.clone();
        let json: Option<String> = self.bounded(connection.get(self.key(session_id))).await?;
        let Some(json) = json else { return Ok(None) };
        let record: Record = serde_json::from_str(&json)
            .map_err(|err| session_store::Error::Decode(err.to_string()))?;
        // Redis expires the key; this guards against clocks and the key's
        // last millisecond.
        if record.expiry_date.unix_timestamp_nanos() / 1_000_000 <= now_unix_ms() {
            return Ok(None);
        }
        Ok(Some(record))
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        let mut connection = self.connection.clone();
        let _: () = self.bounded(connection.del(self.key(session_id))).await?;
        Ok(())
    }
}

fn backend(err: redis::RedisError) -> session_store::Error {
    session_store::Error::Backend(err.to_string())
}

fn now_unix_ms() -> i128 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000
}
