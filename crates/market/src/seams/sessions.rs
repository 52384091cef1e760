//! `POST /login`, `POST /logout`, `GET /api/me`: sessions.
//!
//! Today: [`RedisSessions`], a random 128-bit id in an `HttpOnly` cookie and
//! a Redis key `{namespace}:session:{id}` holding the user id, expiring with
//! the `session` policy's TTL (30 minutes).
//! Replacement: the tower-sessions store on the same Redis
//! (`stratacache-http`), with `tower_sessions::SessionManagerLayer` on the
//! router; the routes then read the user id from `tower_sessions::Session`.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rand::RngCore;

use crate::error::ApiError;
use crate::redis_link::RedisLink;

/// The cookie's name.
pub const COOKIE: &str = "market_session";

/// Creates, reads and ends sessions.
pub trait SessionStore: Send + Sync {
    /// A new session for `user_id`; the answer is its id.
    fn create(&self, user_id: i64) -> BoxFuture<'_, Result<String, ApiError>>;
    /// The user of session `id`, `None` when it does not exist or expired.
    fn user(&self, id: &str) -> BoxFuture<'_, Result<Option<i64>, ApiError>>;
    /// End session `id`.
    fn end(&self, id: &str) -> BoxFuture<'_, Result<(), ApiError>>;
    /// How long a session lives.
    fn ttl(&self) -> Duration;
}

/// Sessions as Redis keys with a TTL.
pub struct RedisSessions {
    /// The connection.
    pub redis: Arc<RedisLink>,
    /// Key prefix (the cache namespace).
    pub namespace: String,
    /// Session lifetime.
    pub ttl: Duration,
}

impl RedisSessions {
    fn key(&self, id: &str) -> String {
        format!("{}:session:{id}", self.namespace)
    }
}

fn unavailable(err: impl std::fmt::Display) -> ApiError {
    ApiError::Unavailable(format!("session store unavailable: {err}"))
}

/// Whether `id` has the form of an id this store issues (32 hex digits).
fn well_formed(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl SessionStore for RedisSessions {
    fn create(&self, user_id: i64) -> BoxFuture<'_, Result<String, ApiError>> {
        Box::pin(async move {
            let mut raw = [0u8; 16];
            rand::rng().fill_bytes(&mut raw);
            let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.key(&id))
                .arg(user_id)
                .arg("PX")
                .arg(self.ttl.as_millis() as u64);
            self.redis.query::<()>(&cmd).await.map_err(unavailable)?;
            Ok(id)
        })
    }

    fn user(&self, id: &str) -> BoxFuture<'_, Result<Option<i64>, ApiError>> {
        let id = id.to_string();
        Box::pin(async move {
            if !well_formed(&id) {
                return Ok(None);
            }
            // Reading a session slides its expiry, as tower-sessions does.
            let mut cmd = redis::cmd("GETEX");
            cmd.arg(self.key(&id))
                .arg("PX")
                .arg(self.ttl.as_millis() as u64);
            let user: Option<i64> = self.redis.query(&cmd).await.map_err(unavailable)?;
            Ok(user)
        })
    }

    fn end(&self, id: &str) -> BoxFuture<'_, Result<(), ApiError>> {
        let id = id.to_string();
        Box::pin(async move {
            if well_formed(&id) {
                let mut cmd = redis::cmd("DEL");
                cmd.arg(self.key(&id));
                self.redis.query::<()>(&cmd).await.map_err(unavailable)?;
            }
            Ok(())
        })
    }

    fn ttl(&self) -> Duration {
        self.ttl
    }
}
